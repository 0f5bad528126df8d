package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"halb/test/fakecp"
)

// healTimeout bounds undoing a fault, which runs on a context of its own
// so that a cancelled run still leaves the lab as it found it.
const healTimeout = 30 * time.Second

// toggle is one condition a fault makes: on makes it, off undoes it.
type toggle struct {
	on, off func(ctx context.Context) error
}

// inject makes f after its offset, holds it and undoes it. Whatever was
// turned on is turned off again, also when turning it on failed or ctx
// ended during the hold.
func (r *Runner) inject(ctx context.Context, f Fault) error {
	sleep(ctx, f.Offset)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: not injected: %w", f, err)
	}
	r.event("inject %s", f)
	var err error
	if act := r.action(f); act != nil {
		err = act(ctx)
	} else if ts := r.toggles(f); ts != nil {
		err = r.hold(ctx, f, ts)
	} else {
		err = fmt.Errorf("unknown fault kind %q", f.Kind)
	}
	r.event("undone %s (%v)", f.Kind, err)
	if err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	return nil
}

// hold turns ts on, waits f.Hold and turns them off, f.Cycles times for a
// flapping fault (waiting f.Hold again after each undo).
func (r *Runner) hold(ctx context.Context, f Fault, ts []toggle) error {
	var errs []error
	for i := range max(f.Cycles, 1) {
		if i > 0 && ctx.Err() != nil {
			break
		}
		for _, t := range ts {
			errs = append(errs, t.on(ctx))
		}
		sleep(ctx, f.Hold)
		errs = append(errs, heal(ctx, ts))
		if f.Kind == CPFlap {
			sleep(ctx, f.Hold)
		}
	}
	return errors.Join(errs...)
}

// heal turns every toggle off, in reverse order, on a context that ctx's
// cancellation does not reach.
func heal(ctx context.Context, ts []toggle) error {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healTimeout)
	defer cancel()
	var errs []error
	for i := len(ts) - 1; i >= 0; i-- {
		errs = append(errs, ts[i].off(hctx))
	}
	return errors.Join(errs...)
}

// toggles are the conditions f makes and undoes; nil for a fault that is
// an action instead.
func (r *Runner) toggles(f Fault) []toggle {
	switch f.Kind {
	case KillRestart:
		n := f.Targets[0]
		return []toggle{{on: r.signal(n, syscall.SIGKILL), off: func(ctx context.Context) error { return r.lab.StartHalb(ctx, n) }}}
	case PauseShort, PauseLong:
		return []toggle{{on: r.signal(f.Targets[0], syscall.SIGSTOP), off: r.signal(f.Targets[0], syscall.SIGCONT)}}
	case LinkFlap:
		return []toggle{r.link(f.Targets[0])}
	case PartitionLBs:
		return []toggle{r.partition(f.Targets[0], f.Targets[1])}
	case PartitionCPs:
		var ts []toggle
		for _, cp := range f.Targets[1:] {
			ts = append(ts, r.partition(f.Targets[0], cp))
		}
		return ts
	case Netem:
		return []toggle{r.netem(f)}
	case CPDie:
		if f.Via == "host" {
			return []toggle{r.link(f.Targets[0])}
		}
		return []toggle{r.cpState(f.Targets[0], fakecp.Stopped)}
	case CPFlap:
		return []toggle{r.cpState(f.Targets[0], fakecp.Stopped)}
	case CPSlow:
		return []toggle{r.cpState(f.Targets[0], fakecp.Blackhole)}
	}
	return nil
}

func (r *Runner) signal(node string, sig syscall.Signal) func(context.Context) error {
	return func(context.Context) error { return r.lab.Signal(node, sig) }
}

func (r *Runner) link(host string) toggle {
	return toggle{
		on:  func(ctx context.Context) error { return r.lab.SetLink(ctx, host, false) },
		off: func(ctx context.Context) error { return r.lab.SetLink(ctx, host, true) },
	}
}

func (r *Runner) partition(a, b string) toggle {
	return toggle{
		on:  func(ctx context.Context) error { return r.lab.SetPartition(ctx, a, b, true) },
		off: func(ctx context.Context) error { return r.lab.SetPartition(ctx, a, b, false) },
	}
}

func (r *Runner) netem(f Fault) toggle {
	host := f.Targets[0]
	return toggle{
		on: func(ctx context.Context) error {
			how, err := r.lab.Netem(ctx, host, f.LossPct, f.Delay)
			r.event("netem on %s by %s", host, how)
			return err
		},
		off: func(ctx context.Context) error { return r.lab.ClearNetem(ctx, host) },
	}
}

func (r *Runner) cpState(cp string, s fakecp.State) toggle {
	return toggle{
		on:  func(ctx context.Context) error { return r.lab.SetCP(ctx, cp, s) },
		off: func(ctx context.Context) error { return r.lab.SetCP(ctx, cp, fakecp.Serving) },
	}
}

// action is what a fault that is an operator's action does; nil for a
// fault that is a condition held for a while.
func (r *Runner) action(f Fault) func(context.Context) error {
	switch f.Kind {
	case Drill:
		return r.drill
	case ReloadValid:
		return func(ctx context.Context) error { return r.reloadValid(ctx, f) }
	case ReloadInvalid:
		return func(ctx context.Context) error { return r.reloadInvalid(ctx, f) }
	}
	return nil
}

// drill runs a planned `halb drill` from a node that does not hold the VIP.
// Its outcome is recorded, not judged: the fault under it may make it fail.
func (r *Runner) drill(ctx context.Context) error {
	from := ""
	for _, n := range r.topo.LBs {
		s, err := r.lab.Status(ctx, n)
		if err == nil && len(s.VIPs) > 0 && s.VIPs[0].Holder != n {
			from = n
			break
		}
	}
	if from == "" {
		r.event("drill: no standby answers; skipped")
		return nil
	}
	out, code := r.lab.Halb(ctx, from, "drill", "--max-outage", "5s", "--hold", "3s")
	r.event("drill from %s: exit %d: %s", from, code, lastLines(out, 3))
	// The old holder yields for the drill's hold; the step ends after it,
	// so that the VIP does not move back while the invariants are checked.
	sleep(ctx, 3*time.Second)
	if code < 0 {
		return fmt.Errorf("drill from %s did not run: %s", from, out)
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// reloadValid toggles the drain timeout in every target's config and has
// each reload it; every reload must succeed.
func (r *Runner) reloadValid(ctx context.Context, f Fault) error {
	r.drain = !r.drain
	from, to := "drain: 3s", "drain: 2s"
	if r.drain {
		from, to = to, from
	}
	for _, n := range f.Targets {
		text, err := r.lab.ReadConfig(n)
		if err != nil {
			return err
		}
		if err := r.lab.WriteConfig(n, strings.Replace(text, from, to, 1)); err != nil {
			return err
		}
	}
	var errs []error
	for _, n := range f.Targets {
		errs = append(errs, r.reload(ctx, n, f.Via, true))
	}
	return errors.Join(errs...)
}

// reloadInvalid writes a config halb must refuse, asks for a reload, checks
// the refusal, and puts the good file back.
func (r *Runner) reloadInvalid(ctx context.Context, f Fault) error {
	n := f.Targets[0]
	good, err := r.lab.ReadConfig(n)
	if err != nil {
		return err
	}
	bad := strings.Replace(good, "balance: roundrobin", "balance: chaos-monkey", 1)
	if err := r.lab.WriteConfig(n, bad); err != nil {
		return err
	}
	err = r.reload(ctx, n, f.Via, false)
	return errors.Join(err, r.lab.WriteConfig(n, good))
}

// reload asks node to reload, by `halb reload` or SIGHUP. With the CLI the
// exit status must match ok; after SIGHUP the node must still answer.
func (r *Runner) reload(ctx context.Context, node, via string, ok bool) error {
	if via == "sighup" {
		if err := r.lab.Signal(node, syscall.SIGHUP); err != nil {
			return err
		}
		sleep(ctx, 300*time.Millisecond)
		if _, err := r.lab.Status(ctx, node); err != nil {
			return fmt.Errorf("%s after SIGHUP: %w", node, err)
		}
		return nil
	}
	out, code := r.lab.Halb(ctx, node, "reload")
	r.event("reload %s: exit %d: %s", node, code, lastLines(out, 2))
	if (code == 0) != ok {
		return fmt.Errorf("halb reload on %s exited %d (want success %v): %s", node, code, ok, lastLines(out, 3))
	}
	return nil
}
