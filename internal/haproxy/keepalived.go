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

// kaWarn files a warning about a keepalived keyword; now "" files it as
// dropped, otherwise it says what halb does instead.
type kaWarn func(b *kaBlock, now, format string, args ...any)

// instanceReader reads the keywords of one vrrp_instance into k.
type instanceReader struct {
	k     *Keepalived
	name  string // the instance's name, for its notify scripts
	iface string // its interface, the default for its VIPs
	warn  kaWarn
	errs  Errors
}

func (r *instanceReader) fail(line int, err error) {
	r.errs = append(r.errs, &LineError{Line: line, Err: err})
}

// instance reads one vrrp_instance and returns every error in it, so an
// operator fixes the file in one pass.
func (k *Keepalived) instance(inst *kaBlock, warn kaWarn) Errors {
	r := &instanceReader{k: k, name: argAt(inst.args, 1), warn: warn}
	// The interface is read first: VIPs listed above it still default
	// to it.
	for _, b := range inst.children {
		if b.args[0] == "interface" && len(b.args) > 1 {
			r.iface = b.args[1]
			if err := config.CheckInterface(r.iface); err != nil {
				r.fail(b.line, fmt.Errorf("interface %w", err))
			}
		}
	}
	for _, b := range inst.children {
		kw := b.args[0]
		if read, ok := instanceKeywords[kw]; ok {
			read(r, b)
		} else if n, ok := instanceNotes[kw]; ok {
			warn(b, n.now, "%s", n.why)
		} else {
			warn(b, "not carried over", "%s", whyNone)
		}
	}
	return r.errs
}

// instanceKeywords are the vrrp_instance keywords halb carries over.
var instanceKeywords = map[string]func(*instanceReader, *kaBlock){
	"interface":                  func(*instanceReader, *kaBlock) {}, // read before the others
	"state":                      (*instanceReader).state,
	"priority":                   (*instanceReader).priority,
	"nopreempt":                  func(r *instanceReader, _ *kaBlock) { r.k.NoPreempt = true },
	"preempt_delay":              (*instanceReader).preemptDelay,
	"unicast_src_ip":             (*instanceReader).srcIP,
	"virtual_ipaddress":          (*instanceReader).vips,
	"virtual_ipaddress_excluded": (*instanceReader).vips,
	"notify_master":              (*instanceReader).notify,
	"notify_backup":              (*instanceReader).notify,
	"notify_fault":               (*instanceReader).notify,
	"notify_stop":                (*instanceReader).notify,
	"notify":                     (*instanceReader).notify,
}

// kaNote is why a keepalived keyword is not carried over and, unless it
// is merely dropped, what halb does instead.
type kaNote struct{ now, why string }

var (
	noteTrack = kaNote{"eligible while its backends are healthy", "not carried over: a node is eligible for the VIP while its backends are healthy"}
	noteGARP  = kaNote{"vips[].garp_count, garp_interval and garp_refresh (3 × 250ms, every 10s)", "not carried over"}
)

// instanceNotes are the vrrp_instance keywords halb does without.
var instanceNotes = map[string]kaNote{
	"advert_int":          {"", "halb has no adverts: gossip detects a dead node well under a second (cluster.profile)"},
	"virtual_router_id":   {"", "halb needs no router id: nodes find each other through cluster.nodes"},
	"authentication":      {"", "not carried over (and not shown): halb encrypts gossip with cluster.key_file"},
	"unicast_peer":        {"", "peers are the --node hosts: halb gossips between cluster.nodes"},
	"track_script":        noteTrack,
	"track_interface":     noteTrack,
	"track_process":       noteTrack,
	"track_file":          noteTrack,
	"garp_master_delay":   noteGARP,
	"garp_master_repeat":  noteGARP,
	"garp_master_refresh": noteGARP,
}

func (r *instanceReader) state(b *kaBlock) {
	switch s := strings.ToUpper(argAt(b.args, 1)); s {
	case "MASTER", "BACKUP":
		r.k.State = s
	default:
		r.warn(b, "taken as BACKUP", "keepalived knows only MASTER and BACKUP")
	}
}

func (r *instanceReader) priority(b *kaBlock) {
	arg := argAt(b.args, 1)
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 || n > 255 {
		r.fail(b.line, fmt.Errorf("priority %q: want 1-255", arg))
		return
	}
	r.k.Priority = &n
}

func (r *instanceReader) preemptDelay(b *kaBlock) {
	arg := argAt(b.args, 1)
	secs, err := strconv.ParseFloat(arg, 64)
	if err != nil || secs < 0 || secs > 3600 {
		r.fail(b.line, fmt.Errorf("preempt_delay %q: want seconds", arg))
		return
	}
	d := time.Duration(secs * float64(time.Second))
	r.k.PreemptDelay = &d
}

func (r *instanceReader) srcIP(b *kaBlock) {
	arg := argAt(b.args, 1)
	a, err := netip.ParseAddr(arg)
	if err != nil {
		r.fail(b.line, fmt.Errorf("unicast_src_ip %q is not an IP address", arg))
		return
	}
	r.k.SrcIP = a
}

func (r *instanceReader) vips(b *kaBlock) {
	for _, v := range b.children {
		vip, err := parseKeepalivedVIP(v, r.iface)
		if err != nil {
			r.fail(v.line, err)
			continue
		}
		r.k.VIPs = append(r.k.VIPs, vip)
	}
}

func (r *instanceReader) notify(b *kaBlock) { r.k.notify(b, r.name) }

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
