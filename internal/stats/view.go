package stats

import (
	"fmt"
	"strings"
	"time"

	"halb/internal/admin"
)

// page is what the dashboard template shows: the snapshot digested into
// cells with their colours, so the template only lays them out.
type page struct {
	Node        admin.NodeInfo
	Uptime      string
	Updated     string
	Verdict     string // admin.Level name: ok, degraded or fail
	Problems    []problemView
	VIPs        []vipView
	Members     []memberView
	ViewHeaders []string // one column per VIP in the members table
	Frontends   []frontendView
	Backends    []backendView
	Refresh     int // seconds
}

// problemView is one verdict line; Fail marks those that fail clients.
type problemView struct {
	Text string
	Fail bool
}

type vipView struct {
	Address, Interface, Holder string
	HeldHere, Agreed           bool
	Problems                   []string
	Since, LastGARP            string
	GARPs, Moves               uint64
	Role, LastError            string
}

type memberView struct {
	Name, Address           string
	Local, Alive            bool
	Heard                   string
	Priority                int
	Eligible                bool
	Unhealthy               string // frontends without a healthy server
	Holds                   string
	HoldsShared             bool // another alive member holds one of the same VIPs
	Views                   []cellView
	Disagrees, ConfigDiffer bool
	Maintenance             bool
	Fingerprint, Version    string
	StateErr                string
}

// cellView is text with a class: ok, bad, warn or "".
type cellView struct {
	Text, Class string
}

type frontendView struct {
	Name, Bind, Backend string
	Conns               string
	Total, Rejected     int64
	Rate                string
	In, Out             string
	Problems            []string
}

type backendView struct {
	Name, Balance string
	Up, Count     int
	Healthy       bool
	Panic         bool
	Servers       []serverView
	Totals        backendTotals
}

// backendTotals is the backend's summary row, as on HAProxy's page: sums
// over its servers.
type backendTotals struct {
	Current, Total, Fails, Retries int64
	FailedChecks, Transitions      int64
	In, Out                        string
	Weight                         int // of the servers that are up
}

type serverView struct {
	Name, Address string
	Backup        bool
	Weight        int
	State         string
	StateClass    string
	Since         string
	SinceAt       string // the state change's clock time, for the tooltip
	Check         string
	CheckOK       bool
	CheckKind     string // admin.CheckGone, CheckNotReady, CheckRejected or ""
	CheckLabel    string // "check rejected: credentials", "not ready" or ""
	Latency       string
	Current       int64
	Peak          int64
	Total         int64
	In, Out       string
	Fails         int64
	Retries       int64
	FailedChecks  int64
	Transitions   int64
	Downtime      string
}

// newPage digests s; refresh is the auto-refresh period.
func newPage(s admin.Snapshot, refresh time.Duration) page {
	a := admin.Assess(s)
	problems := a.Texts()
	p := page{
		Node:    s.Node,
		Uptime:  admin.Duration(time.Duration(s.Node.Uptime * float64(time.Second))),
		Updated: s.Time.Format("15:04:05"),
		Verdict: a.Verdict.String(),
		Refresh: max(1, int(refresh.Round(time.Second)/time.Second)),
	}
	for _, pr := range a.Problems {
		p.Problems = append(p.Problems, problemView{Text: pr.Text, Fail: pr.Level == admin.LevelFail})
	}
	p.VIPs = vipViews(s, problems)
	for _, v := range s.VIPs {
		p.ViewHeaders = append(p.ViewHeaders, admin.BareIP(v.Address))
	}
	ref := admin.ReferenceViews(s)
	many := admin.HeldByMany(s.Members)
	for _, m := range s.Members {
		p.Members = append(p.Members, newMemberView(s, m, ref, many))
	}
	for _, f := range s.Frontends {
		conns := fmt.Sprint(f.Current)
		if f.MaxConn > 0 {
			conns += fmt.Sprintf(" / %d", f.MaxConn)
		}
		p.Frontends = append(p.Frontends, frontendView{
			Name: f.Name, Bind: f.Bind, Backend: f.Backend, Conns: conns, Total: f.Total,
			Rejected: f.Rejected, Rate: fmt.Sprintf("%.1f/s", f.Rate), In: bytesIEC(f.BytesIn), Out: bytesIEC(f.BytesOut),
			Problems: problemsAbout(problems, "frontend "+f.Name+":"),
		})
	}
	for _, b := range s.Backends {
		p.Backends = append(p.Backends, newBackendView(b, s.Time))
	}
	return p
}

// vipViews digests the VIPs with the problems the verdict found about
// each and this node's role for it.
func vipViews(s admin.Snapshot, problems []string) []vipView {
	roles := map[string]admin.VIPRole{}
	for _, r := range s.Node.Roles {
		roles[admin.BareIP(r.VIP)] = r
	}
	var out []vipView
	for _, v := range s.VIPs {
		vp := problemsAbout(problems, "VIP "+v.Address+":")
		vv := vipView{
			Address: v.Address, Interface: v.Interface, Holder: v.Holder, HeldHere: v.HeldHere,
			Agreed: len(vp) == 0, Problems: vp, Since: ago(s.Time, v.Since), LastGARP: ago(s.Time, v.LastGARP),
			GARPs: v.GARPsSent, Moves: v.Transitions, LastError: v.LastError,
		}
		if r, ok := roles[admin.BareIP(v.Address)]; ok {
			vv.Role = r.Role
			if r.Why != "" {
				vv.Role += ": " + r.Why
			}
		}
		out = append(out, vv)
	}
	return out
}

// newMemberView digests m, comparing its view of each VIP with ref
// (admin.ReferenceViews) and its holds with many (admin.HeldByMany).
func newMemberView(s admin.Snapshot, m admin.Member, ref map[string]string, many map[string]bool) memberView {
	mv := memberView{
		Name: m.Name, Address: m.Address, Local: m.Local, Alive: m.Alive, Priority: m.Priority,
		Eligible: m.Eligible, Holds: strings.Join(m.Holds, ", "), Maintenance: m.Maintenance,
		Fingerprint: m.Fingerprint, Version: m.Version, StateErr: m.StateErr,
		ConfigDiffer: m.Fingerprint != "" && s.Node.Fingerprint != "" && m.Fingerprint != s.Node.Fingerprint,
		HoldsShared:  admin.HoldsShared(m, many),
	}
	if !m.Alive && !m.LastHeard.IsZero() {
		mv.Heard = ago(s.Time, m.LastHeard)
	}
	if !m.Eligible {
		mv.Unhealthy = strings.Join(admin.UnhealthyFrontends(m), ", ")
	}
	for _, v := range s.VIPs {
		view, ok := admin.MemberView(m, v)
		c := cellView{Text: orNone(view)}
		switch {
		case !ok:
			c = cellView{Text: "no view", Class: "warn"}
		case m.Alive && view != ref[v.Address]:
			c.Class = "bad"
			mv.Disagrees = true
		}
		mv.Views = append(mv.Views, c)
	}
	return mv
}

// newBackendView digests b and sums its servers' counters; now is the
// snapshot's time, for how long ago states changed.
func newBackendView(b admin.Backend, now time.Time) backendView {
	bv := backendView{Name: b.Name, Balance: b.Balance, Count: len(b.Servers), Healthy: b.Healthy, Panic: b.Panic}
	var in, out int64
	for _, sv := range b.Servers {
		if sv.State == admin.StateUp {
			bv.Up++
			bv.Healthy = true
			bv.Totals.Weight += sv.Weight
		}
		tot := &bv.Totals
		tot.Current += sv.Current
		tot.Total += sv.Total
		tot.Fails += sv.ConnectFailures
		tot.Retries += sv.Retries
		tot.FailedChecks += sv.FailedChecks
		tot.Transitions += sv.DownTransitions
		in += sv.BytesIn
		out += sv.BytesOut
		bv.Servers = append(bv.Servers, newServerView(sv, now))
	}
	bv.Totals.In, bv.Totals.Out = bytesIEC(in), bytesIEC(out)
	return bv
}

// newServerView digests one server; now is the snapshot's time.
func newServerView(sv admin.BackendServer, now time.Time) serverView {
	lat := "–"
	if sv.CheckLatencyMS > 0 {
		lat = fmt.Sprintf("%.1f ms", sv.CheckLatencyMS)
	}
	return serverView{
		Name: sv.Name, Address: sv.Address, Backup: sv.Backup, Weight: sv.Weight,
		State: orDash(sv.State), StateClass: stateClass(sv.State), Since: ago(now, sv.Since), SinceAt: clock(sv.Since),
		Check: orDash(sv.LastCheck), CheckOK: sv.LastCheck == "" || sv.LastCheckOK, Latency: lat,
		CheckKind: sv.CheckFailure, CheckLabel: checkLabel(sv.CheckFailure),
		Current: sv.Current, Peak: sv.Peak, Total: sv.Total, In: bytesIEC(sv.BytesIn), Out: bytesIEC(sv.BytesOut),
		Fails: sv.ConnectFailures, Retries: sv.Retries,
		FailedChecks: sv.FailedChecks, Transitions: sv.DownTransitions, Downtime: downtime(sv.Downtime),
	}
}

// checkLabel names a failed check's kind where it changes what an operator
// does: a rejected check is a credentials fix, not a dead server.
func checkLabel(kind string) string {
	switch kind {
	case admin.CheckRejected:
		return "check rejected: credentials"
	case admin.CheckNotReady:
		return "not ready"
	}
	return ""
}

// stateClass colours a server state: green up, red down, amber for the
// rest (drain, disabled, unknown, or a state this page does not know).
func stateClass(state string) string {
	switch state {
	case admin.StateUp:
		return "ok"
	case admin.StateDown:
		return "bad"
	}
	return "warn"
}

// problemsAbout picks the verdict lines about one VIP or frontend, which
// admin.Verdict starts with "VIP <address>:" or "frontend <name>:".
func problemsAbout(problems []string, prefix string) []string {
	var out []string
	for _, p := range problems {
		if strings.HasPrefix(p, prefix) {
			out = append(out, strings.TrimSpace(strings.TrimPrefix(p, prefix)))
		}
	}
	return out
}

// downtime shows a server's total downtime; none reads as a dash, as on
// HAProxy's page.
func downtime(seconds float64) string {
	if seconds < 0.5 {
		return "–"
	}
	return admin.Duration(time.Duration(seconds * float64(time.Second)))
}

// clock is t as a full date and time, for tooltips; "" when unknown.
func clock(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.DateTime + " MST")
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	return admin.Duration(d) + " ago"
}

func bytesIEC(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	unit := ""
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= 1024
		unit = u
		if v < 1024 {
			break
		}
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
