package failbench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"halb/internal/probe"
	"halb/test/lab"
)

// Scenario names, as --scenarios takes them and results store them.
const (
	Kill     = "kill"
	LinkDown = "linkdown"
	Backends = "backends"
	Planned  = "planned"
	Failback = "failback"
	Baseline = "baseline"
)

// AllScenarios lists every failover scenario in run order.
func AllScenarios() []string {
	return append([]string{Kill, LinkDown, Backends, Planned, Failback, Baseline}, longLivedScenarios()...)
}

// scenarioTitles say what each scenario does, for tables.
func scenarioTitles() map[string]string {
	return map[string]string{
		Kill:         "hard kill of the holder (SIGSTOP, then SIGKILL)",
		LinkDown:     "holder's link down",
		Backends:     "holder's backends all unreachable",
		Planned:      "planned handover (halb drill / keepalived SIGTERM)",
		Failback:     "failback: the preferred node returns",
		Baseline:     "baseline: nothing fails (the probe's noise floor)",
		LongKill:     "long-lived TLS, holder killed (kill -9)",
		LongLinkDown: "long-lived TLS, holder's link down",
		LongStop:     "long-lived TLS, graceful stop of the holder (SIGTERM)",
		LongDrill:    "long-lived TLS, planned move (halb drill / keepalived SIGTERM)",
		EchoKill:     "long-lived echo, holder killed (kill -9)",
		EchoLinkDown: "long-lived echo, holder's link down",
		EchoStop:     "long-lived echo, graceful stop of the holder (SIGTERM)",
		EchoDrill:    "long-lived echo, planned move (halb drill / keepalived SIGTERM)",
	}
}

// Bounds of one repetition.
const (
	takeoverBound = 20 * time.Second // from the injection to the new holder's VIP
	neighBound    = 5 * time.Second  // then to the client's ARP entry naming it
	tail          = 500 * time.Millisecond
	readyBound    = 40 * time.Second
	// baselineWindow is how long the baseline watches with nothing failing.
	baselineWindow = 1500 * time.Millisecond
)

// rep is one measured repetition.
type rep struct {
	Outage   time.Duration  `json:"outage_ns"`   // longest gap between successful probes
	Failed   int            `json:"failed"`      // failed probe connections
	Attempts int            `json:"attempts"`    // probe connections in all
	Takeover time.Duration  `json:"takeover_ns"` // injection to the new holder's VIP in its kernel
	Delay    time.Duration  `json:"delay_ns"`    // random delay before the injection
	Errors   map[string]int `json:"errors,omitempty"`
	Err      string         `json:"error,omitempty"` // the repetition could not be measured
	// LongLived is set by the long-lived connection scenarios.
	LongLived *longLivedRep `json:"long_lived,omitempty"`
}

// runner drives the scenarios against one system in its lab.
type runner struct {
	l      *lab.Lab
	sys    system
	window time.Duration
	rnd    *rand.Rand
	// workers bounds the long-lived client's reconnections in flight
	// (0: all at once).
	workers int
}

const (
	preferred = "lb1" // highest priority: holds the VIP when all is well
	standby   = "lb2"
)

// vipAPI is the Kubernetes API on the VIP, what the client probes.
func vipAPI() netip.AddrPort { return netip.AddrPortFrom(lab.VIP(), 6443) }

// settled waits until the system is ready with the preferred node holding
// the VIP, alone, and the client reaches it with no failed connection.
func (r *runner) settled(ctx context.Context, holder string) error {
	if err := r.sys.ready(ctx, readyBound, holder, r.l.LBNames()...); err != nil {
		return err
	}
	if _, err := r.l.WaitHolder(ctx, readyBound, lab.Only(holder)); err != nil {
		return err
	}
	return r.reachVia(ctx, holder, readyBound)
}

// reachVia waits up to d until the client's ARP entry for the VIP names
// node and a short probe sees only successes.
func (r *runner) reachVia(ctx context.Context, node string, d time.Duration) error {
	mac, err := r.l.MAC(ctx, node)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(d)
	why := ""
	for time.Now().Before(deadline) && ctx.Err() == nil {
		// Long enough for a few attempts even when the machine is so busy
		// that one takes most of its 250 ms bound; a probe that could not
		// finish one attempt is retried, not fatal.
		pr, err := r.l.Probe(ctx, vipAPI(), probe.ModeHTTPS, 600*time.Millisecond)
		if err != nil {
			why = err.Error()
			continue
		}
		n, err := r.l.ClientNeigh(ctx, lab.VIP())
		if err != nil {
			return err
		}
		if n.MAC == mac && pr.Failures == 0 && pr.Successes > 0 {
			return nil
		}
		why = fmt.Sprintf("client's ARP entry %s %v (want %s of %s), probe %v", n.MAC, n.State, mac, node, pr)
	}
	return fmt.Errorf("client does not reach the VIP through %s within %s: %s", node, d, why)
}

// step is what a scenario does to the lab.
type step func(ctx context.Context, r *runner) error

// scenario is one failure and its repair. The probe runs from just before
// inject until the VIP is where done wants it and the client's ARP entry
// names to, plus a short tail.
type scenario struct {
	setup  step // before the probe starts (may be nil)
	inject step
	to     string                // the node that must end up serving
	done   func(h []string) bool // kernel VIP holders when the move is complete
	repair step                  // after the measurement (may be nil)
	// longLived measures idle long-lived connections instead of probes;
	// echo makes them plain TCP to the echo servers instead of TLS.
	longLived, echo bool
}

func (r *runner) scenario(name string) (scenario, error) {
	switch name {
	case LongKill, LongLinkDown, LongStop, LongDrill, EchoKill, EchoLinkDown, EchoStop, EchoDrill:
		return r.longLivedScenario(name)
	case Kill:
		return scenario{
			inject: func(_ context.Context, r *runner) error { return r.sys.crash(preferred) },
			to:     standby, done: lab.ExactlyOne(standby), // the killed node's VIP stays behind
			repair: restart(preferred),
		}, nil
	case LinkDown:
		return scenario{
			inject: func(ctx context.Context, r *runner) error { return r.l.LinkDown(ctx, preferred) },
			to:     standby, done: lab.ExactlyOne(standby), // the cut-off node keeps its VIP
			repair: func(ctx context.Context, r *runner) error { return r.l.LinkUp(ctx, preferred) },
		}, nil
	case Backends:
		return scenario{
			inject: func(ctx context.Context, r *runner) error { return r.l.IsolateCPs(ctx, preferred) },
			to:     standby, done: lab.Only(standby),
			repair: func(ctx context.Context, r *runner) error { return r.l.RestoreCPs(ctx, preferred) },
		}, nil
	case Planned:
		var undo func(context.Context) error
		return scenario{
			inject: func(ctx context.Context, r *runner) error {
				u, err := r.sys.handover(ctx, preferred, standby)
				undo = u
				return err
			},
			to: standby, done: lab.Only(standby),
			repair: func(ctx context.Context, _ *runner) error {
				if undo == nil {
					return nil
				}
				return undo(ctx)
			},
		}, nil
	case Failback:
		return scenario{
			// The preferred node crashed a while ago; the standby serves.
			setup: func(ctx context.Context, r *runner) error {
				if err := r.sys.crash(preferred); err != nil {
					return err
				}
				if err := r.l.DelVIP(ctx, preferred); err != nil {
					return err
				}
				if err := r.sys.ready(ctx, readyBound, standby, standby); err != nil {
					return err
				}
				if _, err := r.l.WaitHolder(ctx, readyBound, lab.Only(standby)); err != nil {
					return err
				}
				return r.reachVia(ctx, standby, readyBound)
			},
			inject: func(ctx context.Context, r *runner) error { return r.sys.start(ctx, preferred) },
			to:     preferred, done: lab.Only(preferred),
		}, nil
	case Baseline:
		// Nothing fails: the gaps and failures the probe sees anyway on
		// this machine, over about as long as a failover takes.
		return scenario{
			inject: func(ctx context.Context, _ *runner) error {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(baselineWindow):
					return nil
				}
			},
			to: preferred, done: lab.Only(preferred),
		}, nil
	}
	return scenario{}, fmt.Errorf("unknown scenario %q: want one of %v", name, AllScenarios())
}

// restart brings a crashed node back as a reboot would: its leftover VIP
// gone, its stack started.
func restart(node string) step {
	return func(ctx context.Context, r *runner) error {
		if err := r.l.DelVIP(ctx, node); err != nil {
			return err
		}
		return r.sys.start(ctx, node)
	}
}

// once runs one repetition of sc. A measured repetition may still carry an
// error from its repair, which the caller must fix before the next.
func (r *runner) once(ctx context.Context, sc scenario) (rep, error) {
	if sc.longLived {
		return r.onceLongLived(ctx, sc)
	}
	if err := r.settled(ctx, preferred); err != nil {
		return rep{}, fmt.Errorf("before the repetition: %w", err)
	}
	if sc.setup != nil {
		if err := sc.setup(ctx, r); err != nil {
			return rep{}, fmt.Errorf("set up: %w", err)
		}
	}
	pr, err := r.l.StartProbe(ctx, vipAPI(), probe.ModeHTTPS, time.Minute)
	if err != nil {
		return rep{}, err
	}
	// Spread the failure uniformly over one heartbeat period, or every
	// repetition would hit the same phase of it.
	delay := time.Duration(r.rnd.Int64N(int64(r.window)))
	time.Sleep(delay)
	t0 := time.Now()
	if err := sc.inject(ctx, r); err != nil {
		_, _ = pr.Stop()
		return rep{}, fmt.Errorf("inject: %w", err)
	}
	h, err := r.l.WaitHolder(ctx, takeoverBound, sc.done)
	took := time.Since(t0)
	if err == nil {
		err = r.waitNeigh(ctx, sc.to, neighBound)
	}
	if err == nil {
		time.Sleep(tail) // catch late failures (resets of connections caught mid-switch)
	}
	pres, perr := pr.Stop()
	if err != nil {
		return rep{}, fmt.Errorf("after %s the VIP was on %v: %w", took.Round(time.Millisecond), h, err)
	}
	if perr != nil {
		return rep{}, perr
	}
	out := rep{Outage: pres.LongestGap, Failed: pres.Failures, Attempts: pres.Attempts, Takeover: took, Delay: delay}
	if len(pres.Errors) > 0 {
		out.Errors = pres.Errors
	}
	if sc.repair != nil {
		if err := sc.repair(ctx, r); err != nil {
			return out, fmt.Errorf("repair: %w", err)
		}
	}
	return out, nil
}

func (r *runner) waitNeigh(ctx context.Context, node string, d time.Duration) error {
	mac, err := r.l.MAC(ctx, node)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(d)
	for {
		n, err := r.l.ClientNeigh(ctx, lab.VIP())
		if err != nil {
			return err
		}
		if n.MAC == mac {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("client's ARP entry for the VIP is %s %v after %s, want %s of %s", n.MAC, n.State, d, mac, node)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reset puts the lab back to all-healthy after a repetition went wrong,
// as if every LB host rebooted: links up, routes restored, every node's
// stack killed, its VIP removed, and started again.
func (r *runner) reset(ctx context.Context) error {
	var errs []error
	for _, n := range r.l.LBNames() {
		errs = append(errs, r.l.LinkUp(ctx, n), r.l.RestoreCPs(ctx, n), r.sys.crash(n), r.l.DelVIP(ctx, n))
	}
	for _, n := range r.l.LBNames() {
		errs = append(errs, r.sys.start(ctx, n))
	}
	return errors.Join(errs...)
}

// Run-order of scenarios does not matter for the lab; keep a stable order.
func sortScenarios(names []string) []string {
	all := AllScenarios()
	out := slices.Clone(names)
	slices.SortFunc(out, func(a, b string) int { return slices.Index(all, a) - slices.Index(all, b) })
	return out
}
