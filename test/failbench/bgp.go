package failbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"halb/internal/probe"
	"halb/test/benchresult"
	"halb/test/lab"
)

// The BGP family: one node leaves an ECMP set of three, measured beside
// ARP mode's holder leaving a pair. Scenario names as --scenarios takes
// them for `halb-bench-failover bgp`.
const (
	BGPWithdraw = "withdraw" // maintenance (BGP) / planned drill (ARP)
	BGPCrash    = "crash"    // kill -9 (BGP) / SIGSTOP + SIGKILL of the holder (ARP)
	BGPLinkDown = "linkdown" // the node's link goes down
)

// The BGP family's systems.
const (
	SysBGPPinned = "halb-bgp-pinned" // BGP, a router that pins established flows
	SysBGPPlain  = "halb-bgp-plain"  // BGP, FRR 8.4's hash-threshold ECMP as it comes
	SysARP       = "halb-arp"        // ARP mode, profile lan, the reference
)

// AllBGPScenarios and AllBGPSystems list the family in run order.
func AllBGPScenarios() []string { return []string{BGPWithdraw, BGPCrash, BGPLinkDown} }

// AllBGPSystems lists the systems of the BGP family in run order.
func AllBGPSystems() []string { return []string{SysBGPPinned, SysBGPPlain, SysARP} }

// BGPMethod says how the BGP family is measured.
const BGPMethod = "client behind the lab's FRR router (BGP) or on the LB segment (ARP); it opens a new " +
	"connection to VIP:6443 every 10 ms (TLS + GET /healthz) and holds 60 established keep-alive " +
	"connections (a request every 100 ms each, 6 s life), each knowing the LB node that carries it; " +
	"one node leaves (BGP: lb3 of three; ARP: the holder of two); measured until the route no longer " +
	"names it (BGP) or the VIP is on the standby (ARP), plus 1 s; hold time 3 s"

// Bounds and sizes of one BGP repetition.
const (
	bgpFlowCount = 60
	bgpFlowLife  = 6 * time.Second // outlives a hold-time withdrawal, ends within the drain
	bgpHoldTime  = 3 * time.Second
	bgpDrainTime = 8 * time.Second
	bgpTail      = time.Second
	bgpVictim    = "lb3"
)

// BGPOptions configure RunBGP.
type BGPOptions struct {
	Bins       Bins
	Systems    []string // default AllBGPSystems
	Scenarios  []string // default AllBGPScenarios
	Reps       int      // per scenario and system (default 5; 2 with Quick)
	Quick      bool
	WorkDir    string
	ResultsDir string
	Machine    benchresult.Machine
	Out        io.Writer
	Log        *slog.Logger
}

// BGPRep is one measured repetition.
type BGPRep struct {
	Outage     time.Duration `json:"outage_ns"`      // longest gap between successful new connections
	FailWindow time.Duration `json:"fail_window_ns"` // first to last failed new connection
	Failed     int           `json:"failed"`
	Attempts   int           `json:"attempts"`
	Converged  time.Duration `json:"converged_ns"` // injection to the route without the node / the VIP on the standby
	// Own are the established flows through the leaving node, Other the
	// rest; *Lived counts those that finished their life normally.
	Own        int `json:"own"`
	OwnLived   int `json:"own_lived"`
	Other      int `json:"other"`
	OtherLived int `json:"other_lived"`
}

// BGPScenarioResult is one scenario on one system.
type BGPScenarioResult struct {
	Title      string   `json:"title"`
	Reps       []BGPRep `json:"reps"`
	Errors     []string `json:"errors,omitempty"`
	Outage     Summary  `json:"outage_ms"`
	FailWindow Summary  `json:"fail_window_ms"`
	Failed     Summary  `json:"failed"`
	// OwnLived and OtherLived are the shares (0-1) of established flows
	// that lived, over every repetition; -1 when there were none.
	OwnLived   float64 `json:"own_lived_share"`
	OtherLived float64 `json:"other_lived_share"`
}

// BGPResult is the "bgp" part of a results file.
type BGPResult struct {
	Method  string                                   `json:"method"`
	Systems map[string]map[string]*BGPScenarioResult `json:"systems"`
}

func bgpTitles() map[string]string {
	return map[string]string{
		BGPWithdraw: "planned: maintenance withdraws (BGP) / drill hands over (ARP)",
		BGPCrash:    "crash: kill -9 of the node",
		BGPLinkDown: "the node's link goes down",
	}
}

// RunBGP measures every chosen scenario on every chosen system, writes
// the "bgp" part of the day's results file and its markdown table, and
// returns the result.
func RunBGP(ctx context.Context, o BGPOptions) (*BGPResult, error) {
	if len(o.Systems) == 0 {
		o.Systems = AllBGPSystems()
	}
	if len(o.Scenarios) == 0 {
		o.Scenarios = AllBGPScenarios()
	}
	if o.Reps <= 0 {
		o.Reps = 5
		if o.Quick {
			o.Reps = 2
		}
	}
	for _, s := range o.Scenarios {
		if _, ok := bgpTitles()[s]; !ok {
			return nil, fmt.Errorf("unknown BGP scenario %q: want some of %v", s, AllBGPScenarios())
		}
	}
	res := &BGPResult{Method: BGPMethod, Systems: map[string]map[string]*BGPScenarioResult{}}
	var errs []error
	for _, name := range o.Systems {
		if ctx.Err() != nil {
			break
		}
		sr, err := runBGPSystem(ctx, o, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		if len(sr) > 0 {
			res.Systems[name] = sr
		}
	}
	if len(res.Systems) > 0 {
		now := time.Now()
		path, err := benchresult.Merge(o.ResultsDir, "bgp", o.Machine, res, now)
		if err != nil {
			return res, errors.Join(append(errs, err)...)
		}
		md := strings.TrimSuffix(path, ".json") + "-bgp.md"
		if err := os.WriteFile(md, []byte(res.Markdown()), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", md, err))
		}
		_, _ = fmt.Fprintf(o.Out, "\n%s\nresults merged into %s, table in %s\n", res.Markdown(), path, md)
	}
	return res, errors.Join(append(errs, ctx.Err())...)
}

// bgpBench is one system's lab and how its node leaves and comes back.
type bgpBench struct {
	l      *lab.Lab
	halb   string
	arp    *runner // the ARP reference reuses the failover scenarios
	target netip.AddrPort
	all    []netip.Addr
}

func runBGPSystem(ctx context.Context, o BGPOptions, name string) (map[string]*BGPScenarioResult, error) {
	dir := filepath.Join(o.WorkDir, name)
	_, _ = fmt.Fprintf(o.Out, "== %s (lab in %s)\n", name, dir)
	var opts lab.Options
	switch name {
	case SysBGPPinned, SysBGPPlain:
		opts = lab.Options{LBs: 3, CPs: 2, Router: true, PinFlows: name == SysBGPPinned,
			Mutate: lab.BGPMode(bgpHoldTime, bgpDrainTime)}
	case SysARP:
		opts = lab.Options{Profile: "lan", Policy: "preempt", PreemptDelay: preemptDelay,
			Mutate: func(_, text string) string { return strings.Replace(text, "\n  drain: 2s\n", "\n  drain: 8s\n", 1) }}
	default:
		return nil, fmt.Errorf("unknown system %q: want some of %v", name, AllBGPSystems())
	}
	opts.HalbBin, opts.LabBin, opts.WorkDir, opts.StartHalb = o.Bins.Halb, o.Bins.Lab, dir, true
	l := lab.New(opts, o.Log)
	defer func() {
		if err := l.Close(); err != nil {
			_, _ = fmt.Fprintf(o.Out, "%s: tear down lab: %v\n", name, err)
		}
	}()
	if err := l.Up(ctx); err != nil {
		return nil, fmt.Errorf("build lab: %w", err)
	}
	b := &bgpBench{l: l, halb: o.Bins.Halb, target: netip.AddrPortFrom(lab.BGPVIP(), 6443)}
	if name == SysARP {
		b.target = vipAPI()
		b.arp = &runner{l: l, sys: halbSystem{l}, window: 200 * time.Millisecond, rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0xb9))}
	} else {
		b.all = []netip.Addr{lab.LBAddr(1), lab.LBAddr(2), lab.LBAddr(3)}
	}
	out := map[string]*BGPScenarioResult{}
	for _, sc := range o.Scenarios {
		r := &BGPScenarioResult{Title: bgpTitles()[sc]}
		for attempt := 0; len(r.Reps) < o.Reps && attempt < o.Reps+2 && ctx.Err() == nil; attempt++ {
			rp, err := b.once(ctx, sc)
			if err != nil {
				r.Errors = append(r.Errors, fmt.Sprintf("attempt %d: %v", attempt+1, err))
				_, _ = fmt.Fprintf(o.Out, "%s %s: %v\n", name, sc, err)
				if b.arp != nil {
					if rerr := b.arp.reset(ctx); rerr != nil {
						return out, fmt.Errorf("reset lab: %w", rerr)
					}
				} else if rerr := b.resetBGP(ctx); rerr != nil {
					return out, fmt.Errorf("reset lab: %w", rerr)
				}
				continue
			}
			r.Reps = append(r.Reps, rp)
			_, _ = fmt.Fprintf(o.Out, "%s %s %d/%d: %d of %d new connections failed within %s (longest gap %s), converged %s; flows lived: own %d/%d, others %d/%d\n",
				name, sc, len(r.Reps), o.Reps, rp.Failed, rp.Attempts, rp.FailWindow.Round(time.Millisecond), rp.Outage.Round(time.Millisecond),
				rp.Converged.Round(time.Millisecond), rp.OwnLived, rp.Own, rp.OtherLived, rp.Other)
		}
		r.summarize()
		out[sc] = r
	}
	return out, nil
}

func (r *BGPScenarioResult) summarize() {
	var outage, window, failed []float64
	var own, ownLived, other, otherLived int
	for _, x := range r.Reps {
		outage, window, failed = append(outage, ms(x.Outage)), append(window, ms(x.FailWindow)), append(failed, float64(x.Failed))
		own, ownLived, other, otherLived = own+x.Own, ownLived+x.OwnLived, other+x.Other, otherLived+x.OtherLived
	}
	r.Outage, r.FailWindow, r.Failed = summarize(outage), summarize(window), summarize(failed)
	share := func(n, of int) float64 {
		if of == 0 {
			return -1
		}
		return float64(n) / float64(of)
	}
	r.OwnLived, r.OtherLived = share(ownLived, own), share(otherLived, other)
}

// once measures one repetition: flows and a probe run while the node
// leaves; the node comes back after.
func (b *bgpBench) once(ctx context.Context, sc string) (BGPRep, error) {
	var leaving string
	var inject, repair func(context.Context) error
	var done func(context.Context) error
	if b.arp != nil {
		if err := b.arp.settled(ctx, preferred); err != nil {
			return BGPRep{}, fmt.Errorf("before the repetition: %w", err)
		}
		name := map[string]string{BGPWithdraw: Planned, BGPCrash: Kill, BGPLinkDown: LinkDown}[sc]
		s, err := b.arp.scenario(name)
		if err != nil {
			return BGPRep{}, err
		}
		leaving = lab.LBAddr(1).String()
		inject = func(ctx context.Context) error { return s.inject(ctx, b.arp) }
		done = func(ctx context.Context) error {
			if _, err := b.l.WaitHolder(ctx, takeoverBound, s.done); err != nil {
				return err
			}
			return b.arp.waitNeigh(ctx, s.to, neighBound)
		}
		repair = func(ctx context.Context) error {
			if s.repair == nil {
				return nil
			}
			return s.repair(ctx, b.arp)
		}
	} else {
		if _, err := b.l.WaitRouterNextHops(ctx, lab.BGPVIP(), b.all, readyBound); err != nil {
			return BGPRep{}, fmt.Errorf("before the repetition: %w", err)
		}
		leaving = lab.LBAddr(3).String()
		inject, repair = b.bgpStep(sc)
		done = func(ctx context.Context) error {
			_, err := b.l.WaitRouterNextHops(ctx, lab.BGPVIP(), b.all[:2], bgpHoldTime+5*time.Second)
			return err
		}
	}
	flows, err := b.l.StartFlows(ctx, b.target, bgpFlowCount, bgpFlowLife)
	if err != nil {
		return BGPRep{}, err
	}
	pr, err := b.l.StartProbe(ctx, b.target, probe.ModeHTTPS, time.Minute)
	if err != nil {
		_, _ = flows.Wait(ctx)
		return BGPRep{}, err
	}
	t0 := time.Now()
	err = inject(ctx)
	if err == nil {
		err = done(ctx)
	}
	took := time.Since(t0)
	if err == nil {
		select {
		case <-ctx.Done():
		case <-time.After(bgpTail):
		}
	}
	pres, perr := pr.Stop()
	frep, ferr := flows.Wait(ctx)
	rerr := repair(ctx)
	if err = errors.Join(err, perr, ferr); err != nil {
		return BGPRep{}, errors.Join(err, rerr)
	}
	rp := BGPRep{Outage: pres.LongestGap, Failed: pres.Failures, Attempts: pres.Attempts, Converged: took}
	if pres.Failures > 0 {
		rp.FailWindow = pres.LastFailure.Sub(pres.FirstFailure)
	}
	for _, f := range frep.Flows {
		lived := f.How == lab.FlowFinished
		switch {
		case f.How == lab.FlowFailedOpen:
			return rp, fmt.Errorf("a flow failed to open: %s", f.Err)
		case f.LB == leaving:
			rp.Own++
			if lived {
				rp.OwnLived++
			}
		default:
			rp.Other++
			if lived {
				rp.OtherLived++
			}
		}
	}
	return rp, rerr
}

// bgpStep is how lb3 leaves in scenario sc and comes back.
func (b *bgpBench) bgpStep(sc string) (inject, repair func(context.Context) error) {
	l := b.l
	maintenance := func(onoff string) func(context.Context) error {
		return func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			// The operator's command, as in the integration tests.
			out, err := exec.CommandContext(ctx, b.halb, "node", "maintenance", onoff, "--socket", l.AdminSocket(bgpVictim)).CombinedOutput()
			if err != nil {
				return fmt.Errorf("halb node maintenance %s: %w: %s", onoff, err, out)
			}
			return nil
		}
	}
	switch sc {
	case BGPWithdraw:
		return maintenance("on"), maintenance("off")
	case BGPCrash:
		return func(context.Context) error { return l.StopHalb(bgpVictim, syscall.SIGKILL) },
			func(ctx context.Context) error { return l.StartHalb(ctx, bgpVictim) }
	default:
		return func(ctx context.Context) error { return l.LinkDown(ctx, bgpVictim) },
			func(ctx context.Context) error { return l.LinkUp(ctx, bgpVictim) }
	}
}

// resetBGP puts a BGP lab back to three announcing nodes.
func (b *bgpBench) resetBGP(ctx context.Context) error {
	var errs []error
	for _, n := range b.l.LBNames() {
		errs = append(errs, b.l.LinkUp(ctx, n))
		if !b.l.Running(n) {
			errs = append(errs, b.l.StartHalb(ctx, n))
		}
	}
	return errors.Join(errs...)
}

// Markdown renders the BGP family as a table.
func (r *BGPResult) Markdown() string {
	var w strings.Builder
	w.WriteString("| scenario | system | new conns failed (median, max) | failing for ms (median, max) | longest gap ms (median) | leaving node's flows lived | other nodes' flows lived |\n")
	w.WriteString("|---|---|---|---|---|---|---|\n")
	pct := func(x float64) string {
		if x < 0 {
			return "—"
		}
		return fmt.Sprintf("%.0f%%", 100*x)
	}
	for _, sc := range AllBGPScenarios() {
		for _, sys := range AllBGPSystems() {
			x := r.Systems[sys][sc]
			if x == nil {
				continue
			}
			fmt.Fprintf(&w, "| %s | %s | %.0f, %.0f | %.0f, %.0f | %.0f | %s | %s |\n", sc, sys,
				x.Failed.Median, x.Failed.Max, x.FailWindow.Median, x.FailWindow.Max, x.Outage.Median, pct(x.OwnLived), pct(x.OtherLived))
		}
	}
	return w.String()
}
