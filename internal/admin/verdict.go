package admin

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Level is how bad a node's view of the cluster is. Levels are ordered:
// a larger one is worse.
type Level int

// Levels of a verdict.
const (
	// LevelOK: every VIP has one agreed holder, every member is alive and
	// eligible, every server is up and every frontend listens.
	LevelOK Level = iota
	// LevelDegraded: clients are served, but redundancy is lost (a server
	// or member down, a member in maintenance, configs or versions that
	// differ, panic routing, a check rejected for credentials), so the
	// next failure may be an outage.
	LevelDegraded
	// LevelFail: clients are not served, or not reliably: a VIP without a
	// holder or with two, a frontend without a usable server or listener.
	LevelFail
)

// Exit codes of `halb status`. They follow the monitoring-plugin
// convention (Nagios, Icinga, Sensu, check_mk), so the command can be used
// as a check as it is, and every problem is still non-zero for scripts.
const (
	CodeOK          = 0 // LevelOK
	CodeDegraded    = 1 // LevelDegraded: WARNING
	CodeFail        = 2 // LevelFail: CRITICAL
	CodeUnreachable = 3 // halb could not be reached or the command was misused: UNKNOWN
)

// String is the level's name in the admin API: ok, degraded or fail.
func (l Level) String() string {
	switch l {
	case LevelOK:
		return "ok"
	case LevelDegraded:
		return "degraded"
	case LevelFail:
		return "fail"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// MarshalText encodes the level by name.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText decodes a level name.
func (l *Level) UnmarshalText(b []byte) error {
	for _, c := range []Level{LevelOK, LevelDegraded, LevelFail} {
		if c.String() == string(b) {
			*l = c
			return nil
		}
	}
	return fmt.Errorf("parse verdict %q: want ok, degraded or fail", b)
}

// Code is the exit status of `halb status` for the level.
func (l Level) Code() int {
	switch l {
	case LevelOK:
		return CodeOK
	case LevelDegraded:
		return CodeDegraded
	}
	return CodeFail
}

// Problem is one thing wrong in a snapshot. Text starts with what it is
// about ("VIP 192.168.66.160:", "frontend talos:", "backend talos:",
// "member lb2 ..."), so views can place it next to that thing.
type Problem struct {
	Level Level  `json:"severity"` // LevelDegraded or LevelFail
	Text  string `json:"text"`
}

// Assessment is the verdict on a snapshot: the worst level of its
// problems, worst problems first.
type Assessment struct {
	Verdict  Level     `json:"verdict"`
	Code     int       `json:"exit_code"` // what `halb status` exits with
	Problems []Problem `json:"problems"`
}

// Status is GET /v1/status (and the stats page's /status.json): the
// snapshot with its verdict.
type Status struct {
	Snapshot
	Assessment
}

// NewStatus returns s with its verdict.
func NewStatus(s Snapshot) Status { return Status{Snapshot: s, Assessment: Assess(s)} }

// Texts returns the problems' texts in order.
func (a Assessment) Texts() []string {
	out := make([]string, len(a.Problems))
	for i, p := range a.Problems {
		out[i] = p.Text
	}
	return out
}

// Verdict judges s and returns the exit status of `halb status` and one
// line per problem, worst first. Assess has the level of each.
func Verdict(s Snapshot) (code int, problems []string) {
	a := Assess(s)
	if len(a.Problems) == 0 {
		return a.Code, nil
	}
	return a.Code, a.Texts()
}

// Assess judges s as seen by the node that took it. It is a pure function
// of the snapshot; the rules are in docs/operations.md ("halb status").
func Assess(s Snapshot) Assessment {
	j := judge{s: s}
	for _, v := range s.VIPs {
		j.vip(v)
	}
	j.members()
	j.bgp()
	for _, b := range s.Backends {
		j.servers(b)
	}
	for _, f := range s.Frontends {
		j.frontend(f)
	}
	a := Assessment{Verdict: LevelOK, Problems: j.problems}
	if a.Problems == nil {
		a.Problems = []Problem{}
	}
	// Failures first; within a level, the order things were found in
	// (VIPs, members, servers, frontends) is kept.
	slices.SortStableFunc(a.Problems, func(x, y Problem) int { return cmp.Compare(y.Level, x.Level) })
	for i := range a.Problems {
		a.Problems[i].Text = Printable(a.Problems[i].Text)
		a.Verdict = max(a.Verdict, a.Problems[i].Level)
	}
	a.Code = a.Verdict.Code()
	return a
}

// HandoverGrace is how long after the election changed two members may
// both hold a VIP before it counts as split brain: a planned move keeps the
// old holder until the new one has claimed and gossiped (a few hundred
// milliseconds; about a second when a gossip update has to be pulled).
const HandoverGrace = 5 * time.Second

// ClaimGrace is how long after the election changed a member elected
// elsewhere may not yet be heard holding a VIP before it counts as an
// outage: it claims at once, and its claim reaches the others with its
// next gossiped state (milliseconds; about a second when it has to be
// pulled).
const ClaimGrace = 2 * time.Second

// judge collects problems while Assess walks a snapshot.
type judge struct {
	s        Snapshot
	problems []Problem
}

func (j *judge) add(l Level, format string, args ...any) {
	j.problems = append(j.problems, Problem{Level: l, Text: fmt.Sprintf(format, args...)})
}

// vip judges one VIP: nobody holding it, or two members holding it, fails
// clients; members that disagree on the holder, or a holder other than the
// elected one, are a cluster that does not see itself whole.
func (j *judge) vip(v VIP) {
	s := j.s
	var says, holders []string
	views := map[string]bool{}
	for _, m := range s.Members {
		if !m.Alive {
			continue
		}
		if view, ok := MemberView(m, v); ok {
			views[view] = true
			says = append(says, m.Name+" says "+orNone(view))
		} else {
			says = append(says, m.Name+" has no view")
			views["\x00unknown"] = true
		}
		for _, h := range m.Holds {
			if BareIP(h) == BareIP(v.Address) {
				holders = append(holders, m.Name)
				break
			}
		}
	}
	if localMember(s) == nil {
		views[v.Holder] = true
		says = append(says, orDash(s.Node.Name)+" says "+orNone(v.Holder))
	}
	agreed := ""
	if len(views) > 1 {
		j.add(LevelDegraded, "VIP %s: members disagree on the holder: %s", v.Address, strings.Join(says, ", "))
	} else {
		for view := range views {
			agreed = view
		}
	}
	switch {
	case len(holders) == 0 && len(views) <= 1 && agreed == "":
		j.add(LevelFail, "VIP %s: no member holds it: no member is eligible", v.Address)
	case len(holders) == 0 && len(views) <= 1 && j.claiming(v, agreed):
		j.add(LevelDegraded, "VIP %s: %s was elected %s ago and is claiming it: not heard holding it yet",
			v.Address, agreed, s.Time.Sub(v.Elected).Round(time.Millisecond))
	case len(holders) == 0 && len(views) <= 1:
		j.add(LevelFail, "VIP %s: no member holds it (elected: %s)", v.Address, agreed)
	case len(holders) == 0:
		j.add(LevelFail, "VIP %s: no member holds it", v.Address)
	case len(holders) > 1:
		j.manyHolders(v, holders, len(views) <= 1)
	case len(views) <= 1 && agreed != holders[0]:
		j.add(LevelDegraded, "VIP %s: %s holds it but the members elected %s", v.Address, holders[0], orNone(agreed))
	}
}

// claiming reports whether the agreed holder of v is another member that
// was elected less than ClaimGrace ago: its claim is on its way in gossip
// (a start, a failover seen from a third member), not missing. This node
// knows its own addresses, so its own missing claim never waits.
func (j *judge) claiming(v VIP, agreed string) bool {
	took := j.s.Time.Sub(v.Elected)
	return agreed != j.s.Node.Name && v.Holder == agreed && !v.Elected.IsZero() && !j.s.Time.IsZero() && took < ClaimGrace
}

// manyHolders judges a VIP that several members hold. When this node
// elected one of them, the others are letting go, as every planned move
// does for a moment (make before break; members may also disagree until
// the last one's view arrives): only an overlap that outlasts
// HandoverGrace is stuck. Otherwise it is split brain.
func (j *judge) manyHolders(v VIP, holders []string, agree bool) {
	s := j.s
	all := strings.Join(holders, ", ")
	if !slices.Contains(holders, v.Holder) {
		j.add(LevelFail, "VIP %s: held by %d members at once: %s", v.Address, len(holders), all)
		return
	}
	from := strings.Join(slices.DeleteFunc(slices.Clone(holders), func(h string) bool { return h == v.Holder }), ", ")
	switch took := s.Time.Sub(v.Elected); {
	case !v.Elected.IsZero() && !s.Time.IsZero() && took < HandoverGrace:
		j.add(LevelDegraded, "VIP %s: handing over from %s to %s: both hold it until %s lets go (make before break)",
			v.Address, from, v.Holder, from)
	case agree:
		j.add(LevelFail, "VIP %s: held by %d members at once: %s (%s has not let go since %s was elected)",
			v.Address, len(holders), all, from, v.Holder)
	default:
		j.add(LevelFail, "VIP %s: held by %d members at once: %s", v.Address, len(holders), all)
	}
}

// members judges the standbys: each member that could not take the VIPs
// over if the holder failed is redundancy lost, and so is a cluster whose
// members run different configs or builds.
func (j *judge) members() {
	s := j.s
	local := localMember(s)
	if s.Node.Maintenance && (local == nil || !local.Maintenance) {
		j.add(LevelDegraded, "member %s (this node) is in maintenance: it will not take a VIP", orDash(s.Node.Name))
	}
	for _, m := range s.Members {
		j.member(m)
	}
}

// member judges one member as a standby for the VIPs.
func (j *judge) member(m Member) {
	s := j.s
	who := "member " + m.Name
	if m.Local {
		who += " (this node)"
	}
	if !m.Alive {
		if !m.Local { // this node answers, whatever gossip says
			heard := "never heard from"
			if !m.LastHeard.IsZero() && !s.Time.IsZero() {
				heard = "last heard " + Duration(s.Time.Sub(m.LastHeard)) + " ago"
			}
			j.add(LevelDegraded, "%s (%s) is not reachable (%s): no failover to it", who, m.Address, heard)
		}
		return
	}
	switch {
	case m.Maintenance:
		j.add(LevelDegraded, "%s is in maintenance: it will not take a VIP", who)
	case m.StateErr != "":
		j.add(LevelDegraded, "%s: its gossiped state cannot be read (%s): it counts as not eligible", who, m.StateErr)
	case !m.Eligible:
		why := ""
		if bad := UnhealthyFrontends(m); len(bad) > 0 {
			why = " (no healthy server for " + strings.Join(bad, ", ") + ")"
		}
		j.add(LevelDegraded, "%s is not eligible%s: no failover to it", who, why)
	}
	if m.HeardVia != "" {
		j.add(LevelDegraded, "%s is unreachable from this node but heard by %s: the path between them is broken", who, m.HeardVia)
	}
	if m.Disputed {
		j.add(LevelDegraded, "%s: gossip says failed, heartbeats say alive", who)
	}
	if m.Local {
		return
	}
	if m.Fingerprint != "" && s.Node.Fingerprint != "" && m.Fingerprint != s.Node.Fingerprint {
		j.add(LevelDegraded, "%s runs another config (fingerprint %s, this node %s): members may elect differently", who, m.Fingerprint, s.Node.Fingerprint)
	}
	if m.Version != "" && s.Node.Version != "" && m.Version != s.Node.Version {
		j.add(LevelDegraded, "%s runs version %s, this node %s", who, m.Version, s.Node.Version)
	}
}

// servers judges each server of b that cannot take connections: one
// fewer place for them to go.
func (j *judge) servers(b Backend) {
	for _, sv := range b.Servers {
		what := fmt.Sprintf("backend %s: server %s (%s)", b.Name, sv.Name, sv.Address)
		switch {
		case sv.CheckFailure == CheckRejected && !sv.LastCheckOK:
			// The server lives, but the check cannot tell whether it is
			// healthy: a misconfiguration to fix, not a dead server.
			j.add(LevelDegraded, "%s: check rejected: credentials: %s", what, sv.LastCheck)
		case sv.State == StateUp:
		case sv.State == StateDown && sv.LastCheck != "":
			j.add(LevelDegraded, "%s is down: %s", what, sv.LastCheck)
		case sv.State == StateDown:
			j.add(LevelDegraded, "%s is down", what)
		case sv.State == StateDrain:
			j.add(LevelDegraded, "%s is drained by an operator", what)
		case sv.State == StateDisabled:
			j.add(LevelDegraded, "%s is disabled by an operator", what)
		default:
			j.add(LevelDegraded, "%s has no check result yet", what)
		}
	}
}

// frontend judges whether f can serve. A frontend this node cannot serve
// fails clients unless another member, holding a VIP, serves it: then it
// is only this node that cannot take over.
func (j *judge) frontend(f Frontend) {
	b, ok := findBackend(j.s, f.Backend)
	var why string
	switch {
	case f.ListenError != "":
		why = fmt.Sprintf("not listening on %s: %s; this node is not eligible", f.Bind, f.ListenError)
	case !ok:
		why = fmt.Sprintf("backend %s is not in the status", f.Backend)
	case b.Panic:
		// Panic routing is a last resort that may still work: degraded
		// whoever holds the VIP.
		j.add(LevelDegraded, "frontend %s: backend %s is in PANIC: every server is down by its checks, new connections go to them anyway (panic_routing); this node is not eligible for the VIP", f.Name, b.Name)
		return
	case !backendHealthy(b):
		var states []string
		for _, sv := range b.Servers {
			states = append(states, sv.Name+" "+orDash(sv.State))
		}
		detail := "no servers"
		if len(states) > 0 {
			detail = strings.Join(states, ", ")
		}
		why = fmt.Sprintf("backend %s has no healthy server (%s)", b.Name, detail)
	default:
		return
	}
	if by := servedElsewhere(j.s, f.Name); by != "" {
		j.add(LevelDegraded, "frontend %s: %s; %s holds the VIP and serves it", f.Name, why, by)
		return
	}
	j.add(LevelFail, "frontend %s: %s", f.Name, why)
}

// servedElsewhere names an alive, eligible member other than this node
// that holds a VIP and reports a healthy server for the frontend; "" if
// none does.
func servedElsewhere(s Snapshot, frontend string) string {
	for _, m := range s.Members {
		if m.Local || !m.Alive || !m.Eligible || len(m.Holds) == 0 {
			continue
		}
		if m.Frontends[frontend] {
			return m.Name
		}
	}
	return ""
}

func localMember(s Snapshot) *Member {
	for i := range s.Members {
		if s.Members[i].Local {
			return &s.Members[i]
		}
	}
	return nil
}

func findBackend(s Snapshot, name string) (Backend, bool) {
	for _, b := range s.Backends {
		if b.Name == name {
			return b, true
		}
	}
	return Backend{}, false
}
