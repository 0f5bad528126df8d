package haproxy

import (
	"fmt"
	"path/filepath"
	"strings"
)

// KeepalivedHook is a keepalived notify script carried over as a halb hook.
type KeepalivedHook struct {
	Line    int
	On      []string // halb event kinds
	Command []string
}

// notifyEvents maps keepalived's notify directives to halb's events.
// notify (the generic script) is handled apart: it gets the state as an
// argument, so it becomes one hook per state.
func notifyEvents(directive string) (on, note string, effect Effect) {
	switch directive {
	case "notify_master":
		return "vip_claimed", "runs when this node has claimed a VIP (once per VIP), with HALB_VIP and friends in its environment", Confirm
	case "notify_backup":
		return "vip_released", "runs when this node has released a VIP, not at start as keepalived's BACKUP transition does", Confirm
	case "notify_fault":
		return "vip_released", "halb has no FAULT state: a node whose backends fail becomes ineligible and releases the VIP, and the hook runs then", Changes
	}
	return "", "", Changes
}

// notify reads one notify* line of a vrrp_instance named instance.
func (k *Keepalived) notify(b *kaBlock, instance string) {
	directive := b.args[0]
	argv := notifyCommand(b.args[1:])
	text := directiveText(b.args)
	add := func(w Warning) {
		w.Line, w.Directive = b.line, text
		k.Warnings = append(k.Warnings, w)
	}
	switch {
	case len(argv) == 0:
		add(Warning{Message: "no script given", Effect: Dropped})
		return
	case !filepath.IsAbs(argv[0]):
		add(Warning{Message: fmt.Sprintf("%q is not an absolute path; halb hooks run without a shell or PATH: add it to hooks: by hand", argv[0]),
			Was: text, Now: "not carried over", Effect: Changes})
		return
	case directive == "notify_stop":
		add(Warning{Message: "halb hands its VIPs over when it stops; no hook runs for the stop itself",
			Was: text, Now: "not carried over", Effect: Changes})
		return
	case directive == "notify":
		// keepalived calls it as SCRIPT INSTANCE NAME STATE PRIORITY.
		prio := "0"
		if k.Priority != nil {
			prio = fmt.Sprint(*k.Priority)
		}
		for _, st := range []struct{ on, state string }{{"vip_claimed", "MASTER"}, {"vip_released", "BACKUP"}} {
			cmd := append(append([]string(nil), argv...), "INSTANCE", instance, st.state, prio)
			k.Hooks = append(k.Hooks, KeepalivedHook{Line: b.line, On: []string{st.on}, Command: cmd})
		}
		add(Warning{Message: fmt.Sprintf("hooks on vip_claimed and vip_released call it as keepalived did (INSTANCE %s MASTER|BACKUP %s); FAULT and STOP are not reported", instance, prio),
			Effect: Confirm})
		return
	}
	on, note, effect := notifyEvents(directive)
	k.Hooks = append(k.Hooks, KeepalivedHook{Line: b.line, On: []string{on}, Command: argv})
	w := Warning{Message: "hooks: on " + on + ": " + note, Effect: effect}
	if effect == Changes {
		w.Was, w.Now = text, "hooks: on "+on
	}
	add(w)
}

// notifyCommand splits a notify script as keepalived does: one quoted
// string or bare words, split at blanks.
func notifyCommand(args []string) []string {
	s := strings.Join(args, " ")
	s = strings.TrimSpace(strings.Trim(s, `"'`))
	return strings.Fields(s)
}
