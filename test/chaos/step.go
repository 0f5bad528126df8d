package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"halb/internal/probe"
)

// leakRecheck is how long growth in goroutines or RSS is looked at again
// before it counts as a leak: a burst after a heal goes, a leak stays.
const leakRecheck = 10 * time.Second

// step runs one step and checks the invariants after it. An error means
// the lab itself is broken and the run cannot go on; a fault that could
// not be made or undone is a violation of the step instead.
func (r *Runner) step(ctx context.Context, st Step) (Record, error) {
	rec := Record{Step: st, Start: time.Now()}
	r.takeTimeline()
	r.event("step %d: %s", st.N, Describe(st))
	rec.Load, rec.Overloaded = r.load()
	var end time.Duration
	for _, f := range st.Faults {
		end = max(end, f.End())
	}
	probes, err := r.startProbes(ctx, end+r.cfg.Settle+r.cfg.Bounds.Reach+10*time.Second)
	if err != nil {
		return rec, err
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := r.watch(watchCtx)
	defer func() { stopWatch(); <-watched }()

	toolErrs := r.injectAll(ctx, st.Faults)
	faultsEnd := time.Now()
	r.event("faults undone")
	rec.Observed.Reach = r.reach(ctx, faultsEnd)
	holder := r.settleAfter(ctx, &rec.Observed, faultsEnd)

	// Probe a moment more so the client talks to the settled holder, then
	// read its neighbour entry.
	sleep(ctx, 200*time.Millisecond)
	if rec.Outage, err = r.stopProbes(probes); err != nil {
		return rec, err
	}
	r.observeAfter(ctx, &rec, holder, faultsEnd)
	stopWatch()
	<-watched
	rec.Violations = r.judge(ctx, &rec.Observed)
	for _, e := range toolErrs {
		rec.Violations = append(rec.Violations, Violation{Invariant: InvFault, Detail: e.Error()})
	}
	if len(rec.Violations) > 0 {
		for _, n := range r.topo.LBs {
			r.event("--- tail of %s's log:\n%s", n, r.lab.LogTail(n, 25))
		}
	}
	rec.Timeline = r.takeTimeline()
	return rec, nil
}

// load reads the host's 1-minute load average: timing bounds mean little
// on a host loaded far past its cores.
func (r *Runner) load() (float64, bool) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, false
	}
	l, _ := strconv.ParseFloat(f[0], 64)
	r.event("load average %s", strings.Join(f[:3], " "))
	return l, l > float64(OverloadFactor*runtime.NumCPU())
}

// startProbes starts the client's probes of both VIP ports for at most d.
func (r *Runner) startProbes(ctx context.Context, d time.Duration) ([]ProbeRun, error) {
	p1, err := r.startProbe(ctx, r.cfg.API, probe.ModeHTTPS, d)
	if err != nil {
		return nil, err
	}
	p2, err := r.startProbe(ctx, r.cfg.Talos, probe.ModeTLS, d)
	if err != nil {
		_, _ = p1.Stop()
		return nil, err
	}
	return []ProbeRun{p1, p2}, nil
}

// startProbe starts a client probe, trying again when a loaded host makes
// the first attempt late.
func (r *Runner) startProbe(ctx context.Context, target netip.AddrPort, mode string, d time.Duration) (ProbeRun, error) {
	var errs []error
	for range 3 {
		p, err := r.lab.StartProbe(ctx, target, mode, d)
		if err == nil {
			return p, nil
		}
		r.event("start probe of %s: %v", target, err)
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("start probe of %s: %w", target, errors.Join(errs...))
}

// stopProbes stops the probes and returns the client's longest outage.
func (r *Runner) stopProbes(ps []ProbeRun) (time.Duration, error) {
	var outage time.Duration
	var errs, reports []string
	for _, p := range ps {
		rep, err := p.Stop()
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		outage = max(outage, rep.LongestGap)
		reports = append(reports, rep.String())
	}
	if len(errs) > 0 {
		return 0, fmt.Errorf("client probes: %s", strings.Join(errs, "; "))
	}
	r.event("probes: %s", strings.Join(reports, " / "))
	return outage, nil
}

// injectAll makes the step's faults, each in its own goroutine at its
// offset, and returns once all are undone, with the errors of those that
// could not be made or undone.
func (r *Runner) injectAll(ctx context.Context, faults []Fault) []error {
	errs := make([]error, len(faults))
	var wg sync.WaitGroup
	for i, f := range faults {
		wg.Go(func() { errs[i] = r.inject(ctx, f) })
	}
	wg.Wait()
	return slices.DeleteFunc(errs, func(err error) bool { return err == nil })
}

// settleAfter waits for the cluster to settle and notes how long it took.
func (r *Runner) settleAfter(ctx context.Context, o *Observation, faultsEnd time.Time) string {
	holder, err := r.settle(ctx)
	o.Settle = time.Since(faultsEnd)
	o.Settled = err == nil
	if err != nil {
		o.SettleErr = err.Error()
	}
	r.event("settled on %q after %s (%v)", holder, o.Settle.Round(time.Millisecond), err)
	return holder
}

// observeAfter reads what the invariants are checked on once the step
// settled, and takes the baseline of processes seen for the first time.
func (r *Runner) observeAfter(ctx context.Context, rec *Record, holder string, faultsEnd time.Time) {
	o := &rec.Observed
	o.ClientMAC = r.neighbour(ctx, holder)
	o.Nodes = r.observe(ctx)
	o.LongLived = r.traffic(rec.Start)
	if cpOnly(rec.Step) {
		o.Waits = r.waits(rec.Start, faultsEnd, downCPs(rec.Step))
	}
	for _, n := range o.Nodes {
		if b, ok := r.base[n.Name]; (!ok || b.PID != n.PID) && n.PID != 0 && n.Goroutines > 0 {
			r.base[n.Name] = Baseline{PID: n.PID, Goroutines: n.Goroutines, RSS: n.RSS}
		}
	}
}

// judge checks o, reading the nodes' resources again for a while when
// they look like a leak: a leak stays, a burst of goroutines after a heal
// goes.
func (r *Runner) judge(ctx context.Context, o *Observation) []Violation {
	vs := Check(*o, r.cfg.Bounds, r.base)
	for deadline := time.Now().Add(leakRecheck); hasLeak(vs) && time.Now().Before(deadline) && ctx.Err() == nil; {
		sleep(ctx, time.Second)
		for i, n := range o.Nodes {
			if g, rss, err := r.lab.Metrics(ctx, n.Name); err == nil {
				o.Nodes[i].Goroutines, o.Nodes[i].RSS = g, rss
			}
		}
		vs = Check(*o, r.cfg.Bounds, r.base)
	}
	return vs
}

func hasLeak(vs []Violation) bool {
	return slices.ContainsFunc(vs, func(v Violation) bool { return v.Invariant == InvLeak })
}
