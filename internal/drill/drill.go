package drill

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"halb/internal/admin"
	"halb/internal/probe"
)

// Node is the admin API of the node a drill is run from; *admin.Client
// is one.
type Node interface {
	Status(ctx context.Context) (admin.Snapshot, error)
	StartDrill(ctx context.Context, req admin.DrillRequest) (admin.DrillStart, error)
	EndDrill(ctx context.Context) error
}

// Options tune the measurement.
type Options struct {
	MaxOutage time.Duration // longest acceptable gap between successful probes
	Mode      string        // probe kind: probe.ModeTCP, ModeTLS or ModeHTTPS
	Interval  time.Duration // between probe connections
	Timeout   time.Duration // longest wait for the VIP to move
	Settle    time.Duration // probing after the move, to catch late failures
	// RequestTimeout bounds one admin request.
	RequestTimeout time.Duration
}

// Report is one drill's outcome; `halb drill -o json` prints it.
type Report struct {
	VIP  string `json:"vip"`
	From string `json:"from"`
	To   string `json:"to"`
	Hard bool   `json:"hard"`
	// Mode is "bgp" for a withdrawal drill of a BGP VIP.
	Mode     string         `json:"mode,omitempty"`
	Timeline []Event        `json:"timeline"`
	Outage   time.Duration  `json:"outage_ns"` // longest gap between successes, any frontend
	Detected time.Duration  `json:"detected_ns,omitempty"`
	Failed   int            `json:"failed_probes"`
	Probes   []probe.Report `json:"probes"`
	Pass     bool           `json:"pass"`
	Verdict  string         `json:"verdict"`
	Back     *Report        `json:"back,omitempty"`
	// LongLived says what happened to the old holder's long-lived client
	// connections (tickle ACKs, docs/tickle.md), where this node knows.
	LongLived string `json:"long_lived,omitempty"`
	// Handoff is the flow hand-off of this move as the node the drill ran
	// on saw it (docs/handoff.md); absent when that node took no part.
	Handoff *admin.Handoff `json:"handoff,omitempty"`
}

// Event is one step of a drill, timed from the request.
type Event struct {
	What  string        `json:"what"`
	After time.Duration `json:"after_ns"`
}

// pollEvery is how often the drill reads the node's status.
const pollEvery = 20 * time.Millisecond

// Run runs one drill and measures it.
func Run(ctx context.Context, n Node, o Options, req admin.DrillRequest) (Report, error) {
	snap, err := status(ctx, n, o)
	if err != nil {
		return Report{}, err
	}
	targets, err := targetsOn(snap, req.VIP)
	if err != nil {
		return Report{}, err
	}
	if req.To != "" {
		if snap, err = awaitEligible(ctx, n, o, snap, req.To); err != nil {
			return Report{}, err
		}
	}
	pr, err := startProbes(ctx, targets, o)
	if err != nil {
		return Report{}, err
	}
	defer pr.stop()
	// The node may move the VIP before the request returns: anything the
	// drill caused started after this.
	requested := time.Now()
	rctx, cancel := context.WithTimeout(ctx, o.RequestTimeout)
	start, err := n.StartDrill(rctx, req)
	cancel()
	if err != nil {
		return Report{}, err
	}
	rep := Report{VIP: start.VIP, From: start.From, To: start.To, Hard: start.Hard}
	if start.Hard && start.From == snap.Node.Name {
		rep.Timeline = append(rep.Timeline, Event{What: "note: this node is the holder and goes deaf during the drill; run hard drills from another node"})
	}
	w := watch{rep: &rep, t0: time.Now(), start: start}
	var moved bool
	if start.Mode == ModeBGP {
		rep.Mode = ModeBGP
		w.event("requested: " + start.From + " withdraws; still announcing: " + start.To)
		if local(start.VIP) {
			w.event("note: this host has the VIP on an interface itself, so the probes do not cross the routers; run the drill from a client host (admin socket forwarded, e.g. ssh -L) to measure what clients see")
		}
		moved = w.followBGP(ctx, n, o)
	} else {
		w.event("requested: " + start.From + " -> " + start.To)
		moved = w.follow(ctx, n, o, pr)
	}
	if moved {
		select {
		case <-ctx.Done():
		case <-time.After(o.Settle):
		}
	}
	rep.Probes = pr.stop()
	if moved {
		if s, err := status(ctx, n, o); err == nil {
			rep.LongLived = longLived(s, rep.VIP, rep.To, w.t0)
		}
		rep.Handoff = handoffSince(ctx, n, o, start.VIP, requested)
	}
	// End the drill so the old holder rejoins the election; a failure here
	// only means the drill's own bound will end it.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.RequestTimeout)
	_ = n.EndDrill(ectx)
	cancel()
	judge(&rep, moved, o)
	return rep, nil
}

// targetsOn lists the frontends listening on vip, the node's first VIP
// for "".
func targetsOn(snap admin.Snapshot, vip string) ([]netip.AddrPort, error) {
	if vip == "" && len(snap.VIPs) > 0 {
		vip = snap.VIPs[0].Address
	}
	if vip == "" && snap.BGP != nil && len(snap.BGP.VIPs) > 0 {
		vip = snap.BGP.VIPs[0].Address
	}
	var targets []netip.AddrPort
	for _, f := range snap.Frontends {
		ap, err := netip.ParseAddrPort(f.Bind)
		if err == nil && ap.Addr().String() == vip {
			targets = append(targets, ap)
		}
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("no frontend listens on VIP %q: nothing to probe", vip)
	}
	return targets, nil
}

// awaitEligible waits, bounded by o.Timeout, until node is eligible:
// moving back, the old holder rejoins the election a gossip round after
// the first drill ended.
func awaitEligible(ctx context.Context, n Node, o Options, snap admin.Snapshot, node string) (admin.Snapshot, error) {
	for deadline := time.Now().Add(o.Timeout); !eligible(snap, node) && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return snap, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if s, err := status(ctx, n, o); err == nil {
			snap = s
		}
	}
	return snap, nil
}

// probes are the probes running against every target.
type probes struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	reports []probe.Report
	once    sync.Once
	// lastOK is the latest success of any probe, to place "first success
	// after the new holder took the VIP" on the timeline.
	mu     sync.Mutex
	lastOK time.Time
}

// startProbes starts a probe per target and returns once every one runs.
func startProbes(ctx context.Context, targets []netip.AddrPort, o Options) (*probes, error) {
	pctx, cancel := context.WithCancel(ctx)
	p := &probes{cancel: cancel, reports: make([]probe.Report, len(targets))}
	started := make(chan struct{}, len(targets))
	for i, t := range targets {
		p.wg.Go(func() {
			p.reports[i] = probe.Run(pctx, probe.Options{Target: t, Mode: o.Mode, Interval: o.Interval,
				Timeout: 500 * time.Millisecond, Started: func() { started <- struct{}{} }, Succeeded: p.succeeded})
		})
	}
	for range targets {
		select {
		case <-started:
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		}
	}
	return p, nil
}

func (p *probes) succeeded(at time.Time) {
	p.mu.Lock()
	p.lastOK = at
	p.mu.Unlock()
}

func (p *probes) last() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastOK
}

// stop ends the probes and returns their reports; it may be called again.
func (p *probes) stop() []probe.Report {
	p.once.Do(func() {
		p.cancel()
		p.wg.Wait()
	})
	return p.reports
}

// watch follows a drill's steps on the node's status.
type watch struct {
	rep   *Report
	t0    time.Time
	start admin.DrillStart

	added, released, detected, served bool
	addedAt                           time.Time
}

func (w *watch) event(what string) {
	w.rep.Timeline = append(w.rep.Timeline, Event{What: what, After: time.Since(w.t0)})
}

// follow polls until the VIP moved and was served, or o.Timeout; it
// reports whether the VIP moved.
func (w *watch) follow(ctx context.Context, n Node, o Options, pr *probes) bool {
	deadline := time.Now().Add(o.Timeout)
	for (!w.added || !w.released || !w.served) && time.Now().Before(deadline) && ctx.Err() == nil {
		if w.added && !w.served {
			if at := pr.last(); at.After(w.addedAt) {
				w.served = true
				w.rep.Timeline = append(w.rep.Timeline, Event{What: "first successful probe since " + w.start.To + " took the VIP", After: at.Sub(w.t0)})
			}
		}
		if s, err := status(ctx, n, o); err == nil {
			for _, m := range s.Members {
				w.see(m)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollEvery):
		}
	}
	return w.added && w.released && w.served
}

// see puts what one member's status shows on the timeline.
func (w *watch) see(m admin.Member) {
	holds := slices.Contains(m.Holds, w.start.VIP)
	switch {
	case m.Name == w.start.To && m.Alive && holds && !w.added:
		w.added, w.addedAt = true, time.Now()
		w.event(w.start.To + " holds the VIP and has announced it (gratuitous ARP)")
	case m.Name == w.start.From && !m.Alive && w.start.Hard && !w.detected:
		w.detected = true
		w.rep.Detected = time.Since(w.t0)
		w.event(w.start.From + " declared dead by this node")
	case m.Name == w.start.From && (!holds || !m.Alive) && !w.released:
		w.released = true
		w.event(w.start.From + " released the VIP")
	}
}

// handoffSince returns the VIP's hand-off as the node shows it, if one
// started at or after t0.
func handoffSince(ctx context.Context, n Node, o Options, vip string, t0 time.Time) *admin.Handoff {
	s, err := status(ctx, n, o)
	if err != nil {
		return nil
	}
	for _, v := range s.VIPs {
		if admin.BareIP(v.Address) == vip && v.Handoff != nil && !v.Handoff.Since.Before(t0) {
			return v.Handoff
		}
	}
	return nil
}

// judge sums the probes up and gives the verdict.
func judge(rep *Report, moved bool, o Options) {
	for _, r := range rep.Probes {
		rep.Outage = max(rep.Outage, r.LongestGap)
		rep.Failed += r.Failures
	}
	switch {
	case !moved && rep.Mode == ModeBGP:
		rep.Verdict = fmt.Sprintf("FAIL: %s did not withdraw the VIP within %s", rep.From, o.Timeout)
	case !moved:
		rep.Verdict = fmt.Sprintf("FAIL: the VIP did not move within %s", o.Timeout)
	case rep.Outage > o.MaxOutage:
		rep.Verdict = fmt.Sprintf("FAIL: outage %s exceeds --max-outage %s", rep.Outage.Round(time.Millisecond), o.MaxOutage)
	case !rep.Hard && rep.Failed > 0:
		rep.Verdict = fmt.Sprintf("FAIL: %d probe(s) failed during a planned move, want 0", rep.Failed)
	default:
		rep.Pass = true
		rep.Verdict = fmt.Sprintf("PASS: outage %s within %s, %d failed probe(s)", rep.Outage.Round(time.Millisecond), o.MaxOutage, rep.Failed)
	}
}

// eligible reports whether node is an alive, eligible member in s.
func eligible(s admin.Snapshot, node string) bool {
	for _, m := range s.Members {
		if m.Name == node {
			return m.Alive && m.Eligible
		}
	}
	return false
}

func status(ctx context.Context, n Node, o Options) (admin.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, o.RequestTimeout)
	defer cancel()
	return n.Status(ctx)
}

// longLived says what happened to the long-lived client connections of
// the old holder, from the status of the node the drill ran on: the new
// holder's last takeover, if it is that node and the takeover came after
// since (the drill's request). Tickled connections are reset; the ones
// the clients acknowledged were still open at their end. Another node
// does not know the new holder's count: then it says where to look.
func longLived(snap admin.Snapshot, vip, to string, since time.Time) string {
	if snap.Node.Name != to {
		return "long-lived connections: counted on " + to + " (its halb status shows the last takeover's tickles)"
	}
	for _, v := range snap.VIPs {
		if admin.BareIP(v.Address) != admin.BareIP(vip) {
			continue
		}
		if v.LastTakeover.Before(since) {
			return "long-lived connections: no takeover seen here"
		}
		if v.LastTickled == 0 || v.LastTickles == nil {
			return "long-lived connections: none of the old holder's to reset (or tickles off)"
		}
		o := v.LastTickles
		var b strings.Builder
		if o.Counted {
			fmt.Fprintf(&b, "long-lived connections: %d reset (%d tickled", o.Acknowledged, v.LastTickled)
			if o.AlreadyClosed > 0 {
				fmt.Fprintf(&b, ", %d already closed", o.AlreadyClosed)
			}
			b.WriteString(")")
		} else {
			fmt.Fprintf(&b, "long-lived connections: %d tickled", v.LastTickled)
		}
		return b.String() + ", " + o.ReconnectSummary()
	}
	return ""
}
