package haproxy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"halb/internal/config"
)

// Keepalived is what a keepalived.conf says about the VIP and the election.
type Keepalived struct {
	VIPs         []KeepalivedVIP
	Priority     *int             // this host's VRRP priority
	SrcIP        netip.Addr       // unicast_src_ip: this host, if set
	State        string           // MASTER or BACKUP; "" when not given
	RouterID     string           // global_defs router_id, often the host name
	NoPreempt    bool             // nopreempt: the holder keeps the VIP → policy sticky
	PreemptDelay *time.Duration   // preempt_delay
	Hooks        []KeepalivedHook // notify scripts (notify.go)
	Warnings     []Warning
}

// KeepalivedVIP is one virtual_ipaddress entry.
type KeepalivedVIP struct {
	Line      int
	Prefix    netip.Prefix
	Interface string
}

// kaBlock is a keepalived keyword with its arguments and, for "{ … }"
// blocks, the lines inside.
type kaBlock struct {
	line     int
	args     []string
	children []*kaBlock
}

// ParseKeepalived reads the vrrp_instance sections of a keepalived.conf.
// Only one VRRP instance is supported: halb elects one holder for all its
// VIPs. A refusal is an Errors listing every mistake, each with its line.
func ParseKeepalived(data []byte) (*Keepalived, error) {
	root, blockErrs := parseKeepalivedBlocks(string(data))
	if len(blockErrs) > 0 {
		return nil, blockErrs
	}
	k := &Keepalived{}
	// now "" files a warning as dropped; otherwise it says what halb
	// does instead of the directive.
	warn := func(b *kaBlock, now, format string, args ...any) {
		w := Warning{Line: b.line, Directive: directiveText(b.args), Message: fmt.Sprintf(format, args...), Now: now}
		if now == "" {
			w.Effect = Dropped
		}
		k.Warnings = append(k.Warnings, w)
	}
	instances := 0
	var errs Errors
	for _, b := range root {
		switch b.args[0] {
		case "vrrp_instance":
			instances++
			if instances > 1 {
				warn(b, "not imported", "halb elects one holder for all VIPs; only the first vrrp_instance is imported")
				continue
			}
			errs = append(errs, k.instance(b, warn)...)
		case "virtual_server", "virtual_server_group":
			warn(b, "not carried over", "LVS virtual servers are not carried over: halb's frontends proxy instead")
		case "vrrp_script", "vrrp_sync_group":
			warn(b, "eligible while its backends are healthy", "not carried over: a node is eligible for the VIP while its backends are healthy (cluster.eligibility)")
		case "global_defs":
			for _, c := range b.children {
				if c.args[0] == "router_id" && len(c.args) > 1 {
					k.RouterID = c.args[1]
				}
			}
			warn(b, "", "global settings are not carried over (router_id only helps to tell which host this file came from)")
		default:
			warn(b, "not carried over", "%s", whyNone)
		}
	}
	if instances == 0 {
		return nil, Errors{{Err: fmt.Errorf("no vrrp_instance found")}}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return k, nil
}

// instance reads one vrrp_instance and returns every error in it, so an
// operator fixes the file in one pass.
func (k *Keepalived) instance(inst *kaBlock, warn func(*kaBlock, string, string, ...any)) Errors {
	var errs Errors
	fail := func(line int, err error) { errs = append(errs, &LineError{Line: line, Err: err}) }
	iface := ""
	for _, b := range inst.children {
		if b.args[0] == "interface" && len(b.args) > 1 {
			iface = b.args[1]
			if err := config.CheckInterface(iface); err != nil {
				fail(b.line, fmt.Errorf("interface %w", err))
			}
		}
	}
	for _, b := range inst.children {
		arg := argAt(b.args, 1)
		switch b.args[0] {
		case "interface":
		case "state":
			switch s := strings.ToUpper(arg); s {
			case "MASTER", "BACKUP":
				k.State = s
			default:
				warn(b, "taken as BACKUP", "keepalived knows only MASTER and BACKUP")
			}
		case "priority":
			n, err := strconv.Atoi(arg)
			if err != nil || n < 1 || n > 255 {
				fail(b.line, fmt.Errorf("priority %q: want 1-255", arg))
				continue
			}
			k.Priority = &n
		case "nopreempt":
			k.NoPreempt = true
		case "preempt_delay":
			secs, err := strconv.ParseFloat(arg, 64)
			if err != nil || secs < 0 || secs > 3600 {
				fail(b.line, fmt.Errorf("preempt_delay %q: want seconds", arg))
				continue
			}
			d := time.Duration(secs * float64(time.Second))
			k.PreemptDelay = &d
		case "unicast_src_ip":
			a, err := netip.ParseAddr(arg)
			if err != nil {
				fail(b.line, fmt.Errorf("unicast_src_ip %q is not an IP address", arg))
				continue
			}
			k.SrcIP = a
		case "virtual_ipaddress", "virtual_ipaddress_excluded":
			for _, v := range b.children {
				vip, err := parseKeepalivedVIP(v, iface)
				if err != nil {
					fail(v.line, err)
					continue
				}
				k.VIPs = append(k.VIPs, vip)
			}
		case "notify_master", "notify_backup", "notify_fault", "notify_stop", "notify":
			k.notify(b, argAt(inst.args, 1))
		case "advert_int":
			warn(b, "", "halb has no adverts: gossip detects a dead node well under a second (cluster.profile)")
		case "virtual_router_id":
			warn(b, "", "halb needs no router id: nodes find each other through cluster.nodes")
		case "authentication":
			warn(b, "", "not carried over (and not shown): halb encrypts gossip with cluster.key_file")
		case "unicast_peer":
			warn(b, "", "peers are the --node hosts: halb gossips between cluster.nodes")
		case "track_script", "track_interface", "track_process", "track_file":
			warn(b, "eligible while its backends are healthy", "not carried over: a node is eligible for the VIP while its backends are healthy")
		case "garp_master_delay", "garp_master_repeat", "garp_master_refresh":
			warn(b, "vips[].garp_count, garp_interval and garp_refresh (3 × 250ms, every 10s)", "not carried over")
		default:
			warn(b, "not carried over", "%s", whyNone)
		}
	}
	return errs
}

// parseKeepalivedVIP reads "ADDRESS[/LEN] [dev IFACE] [label …]".
func parseKeepalivedVIP(b *kaBlock, iface string) (KeepalivedVIP, error) {
	s := b.args[0]
	v := KeepalivedVIP{Line: b.line, Interface: iface}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return v, fmt.Errorf("virtual_ipaddress %q is not an address", s)
		}
		s = fmt.Sprintf("%s/%d", a, a.BitLen())
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return v, fmt.Errorf("virtual_ipaddress %q is not ADDRESS/LENGTH", b.args[0])
	}
	if err := config.CheckHostAddress(p.Addr()); err != nil {
		return v, fmt.Errorf("virtual_ipaddress %s %w", p.Addr(), err)
	}
	v.Prefix = p
	for i := 1; i+1 < len(b.args); i++ {
		if b.args[i] == "dev" {
			v.Interface = b.args[i+1]
			if err := config.CheckInterface(v.Interface); err != nil {
				return v, fmt.Errorf("virtual_ipaddress dev %w", err)
			}
		}
	}
	return v, nil
}

// parseKeepalivedBlocks builds the keyword tree; "#" and "!" start
// comments and braces may share a line with words.
func parseKeepalivedBlocks(text string) ([]*kaBlock, Errors) {
	var (
		root  []*kaBlock
		stack []*kaBlock // open blocks
		last  *kaBlock   // the most recent keyword at the current depth
		errs  Errors
	)
	add := func(b *kaBlock) {
		if len(stack) == 0 {
			root = append(root, b)
		} else {
			top := stack[len(stack)-1]
			top.children = append(top.children, b)
		}
		last = b
	}
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		if j := strings.IndexAny(line, "#!"); j >= 0 {
			line = line[:j]
		}
		line = strings.ReplaceAll(strings.ReplaceAll(line, "{", " { "), "}", " } ")
		var cur *kaBlock
		for _, w := range strings.Fields(line) {
			switch w {
			case "{":
				if last == nil {
					errs = append(errs, &LineError{Line: n, Err: fmt.Errorf("{ without a keyword")})
					return nil, errs
				}
				stack = append(stack, last)
				last, cur = nil, nil
			case "}":
				if len(stack) == 0 {
					errs = append(errs, &LineError{Line: n, Err: fmt.Errorf("} without a matching {")})
					return nil, errs
				}
				stack = stack[:len(stack)-1]
				last, cur = nil, nil
			default:
				if cur == nil {
					cur = &kaBlock{line: n}
					add(cur)
				}
				cur.args = append(cur.args, w)
			}
		}
	}
	if len(stack) > 0 {
		errs = append(errs, &LineError{Line: stack[len(stack)-1].line, Err: fmt.Errorf("%s { is never closed", stack[len(stack)-1].args[0])})
	}
	return root, errs
}
