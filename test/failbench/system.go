package failbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"time"

	"halb/internal/admin"
	"halb/test/keepalivedlab"
	"halb/test/lab"
)

// System names, as --systems takes them and results store them.
const (
	HalbLAN  = "halb-lan"
	HalbFast = "halb-fast"
	// HalbNoTickle is halb's lan profile with vips[].tickle off: what
	// the tickles change for long-lived connections.
	HalbNoTickle = "halb-lan-notickle"
	// HalbNoHandoff is halb-lan with vips[].handoff off, the planned move
	// as it was before flow hand-off (docs/handoff.md), for comparison in
	// the same run.
	HalbNoHandoff   = "halb-lan-nohandoff"
	KeepalivedDef   = "keepalived-default"
	KeepalivedTuned = "keepalived-tuned"
)

// AllSystems lists every system in run order.
func AllSystems() []string {
	return []string{HalbLAN, HalbFast, HalbNoTickle, HalbNoHandoff, KeepalivedDef, KeepalivedTuned}
}

// preemptDelay is halb's cluster.preempt_delay in the benchmark labs:
// short, so failback repetitions do not wait the default 10 s; it only
// delays the failback, it does not change its outage.
const preemptDelay = 2 * time.Second

// Bins are the programs a run needs.
type Bins struct {
	Halb  string // halb
	Lab   string // halb-lab (fake control planes, probes)
	Check string // the program keepalived's chk_haproxy runs as `<Check> chk-haproxy --socket S`
}

// system is one failover stack running on the LB hosts of a lab.
type system interface {
	// start starts node's stack and waits until it answers.
	start(ctx context.Context, node string) error
	// crash freezes node's stack and kills it with SIGKILL.
	crash(node string) error
	// stop stops node's stack gracefully, as a shutdown would, without
	// waiting; wait waits until it is gone.
	stop(node string) (wait func() error)
	// handover starts a planned move of the VIP from holder to to; undo
	// lets the old holder back into the election.
	handover(ctx context.Context, from, to string) (undo func(context.Context) error, err error)
	// ready waits up to d until every one of nodes runs and they agree
	// that holder holds the VIP.
	ready(ctx context.Context, d time.Duration, holder string, nodes ...string) error
}

// sysSpec describes a system: how to build it and the period of its
// heartbeat, over which the moment of each failure is spread.
type sysSpec struct {
	name   string
	title  string
	window time.Duration
	build  func(ctx context.Context, b Bins, workdir string, log *slog.Logger) (*lab.Lab, system, error)
	// only, if set, limits the system to these scenarios: the others
	// would measure nothing it changes.
	only []string
	// profile is halb's cluster.profile; "" for keepalived.
	profile string
}

// specs knows every system. The halb windows are the memberlist probe
// intervals of the profiles (internal/cluster); keep them in step.
func specs() map[string]sysSpec {
	return map[string]sysSpec{
		HalbLAN:         {name: HalbLAN, title: "halb, profile lan", window: 200 * time.Millisecond, build: halbBuilder("lan"), profile: "lan"},
		HalbFast:        {name: HalbFast, title: "halb, profile fast", window: 100 * time.Millisecond, build: halbBuilder("fast"), profile: "fast"},
		HalbNoTickle:    {name: HalbNoTickle, title: "halb, profile lan, tickles off", window: 200 * time.Millisecond, build: halbBuilder("lan", noTickle), only: []string{LongKill, LongLinkDown, EchoKill, EchoLinkDown}},
		HalbNoHandoff:   {name: HalbNoHandoff, title: "halb, profile lan, flow hand-off off", window: 200 * time.Millisecond, build: halbBuilder("lan", noHandoff), only: []string{Planned, LongStop, LongDrill, EchoStop, EchoDrill}},
		KeepalivedDef:   {name: KeepalivedDef, title: "keepalived VRRPv2 advert_int 1 + HAProxy", window: time.Second, build: keepalivedBuilder(keepalivedlab.Default())},
		KeepalivedTuned: {name: KeepalivedTuned, title: "keepalived VRRPv3 advert_int 0.1 + HAProxy", window: 100 * time.Millisecond, build: keepalivedBuilder(keepalivedlab.Tuned())},
	}
}

// noTickle turns vips[].tickle off in a lab node's config.
func noTickle(_, y string) string {
	return strings.Replace(y, "    interface: eth0\n", "    interface: eth0\n    tickle: false\n", 1)
}

// noHandoff turns vips[].handoff off in a lab node's config.
func noHandoff(_, y string) string {
	return strings.Replace(y, "    interface: eth0\n", "    interface: eth0\n    handoff: false\n", 1)
}

func halbBuilder(profile string, mutate ...func(node, yaml string) string) func(context.Context, Bins, string, *slog.Logger) (*lab.Lab, system, error) {
	return halbBuilderWith(profile, func(o *lab.Options) {
		if len(mutate) > 0 {
			o.Mutate = mutate[0]
		}
	})
}

// halbBuilderWith builds a halb lab of profile whose options tweak has
// changed.
func halbBuilderWith(profile string, tweak func(*lab.Options)) func(context.Context, Bins, string, *slog.Logger) (*lab.Lab, system, error) {
	return func(ctx context.Context, b Bins, workdir string, log *slog.Logger) (*lab.Lab, system, error) {
		o := lab.Options{
			HalbBin: b.Halb, LabBin: b.Lab, WorkDir: workdir, StartHalb: true,
			Profile: profile, Policy: "preempt", PreemptDelay: preemptDelay,
			// The echo servers of the long-lived echo scenarios.
			IdleFrontend: true,
		}
		tweak(&o)
		l := lab.New(o, log)
		if err := l.Up(ctx); err != nil {
			return l, nil, err
		}
		return l, halbSystem{l}, nil
	}
}

func keepalivedBuilder(p keepalivedlab.Profile) func(context.Context, Bins, string, *slog.Logger) (*lab.Lab, system, error) {
	return func(ctx context.Context, b Bins, workdir string, log *slog.Logger) (*lab.Lab, system, error) {
		l := lab.New(lab.Options{LabBin: b.Lab, WorkDir: workdir, IdleFrontend: true}, log)
		if err := l.Up(ctx); err != nil {
			return l, nil, err
		}
		s := keepalivedlab.New(l, p, b.Check)
		if err := s.WriteConfigs(ctx); err != nil {
			return l, nil, err
		}
		for _, n := range l.LBNames() {
			if err := s.Start(ctx, n); err != nil {
				return l, nil, err
			}
		}
		return l, keepalivedSystem{s}, nil
	}
}

type halbSystem struct{ l *lab.Lab }

func (h halbSystem) start(ctx context.Context, node string) error { return h.l.StartHalb(ctx, node) }

func (h halbSystem) crash(node string) error {
	if err := h.l.StopHalb(node, syscall.SIGSTOP); err != nil {
		return err
	}
	return h.l.StopHalb(node, syscall.SIGKILL)
}

// stop sends halb SIGTERM: it hands its VIPs over and drains.
func (h halbSystem) stop(node string) func() error {
	done := make(chan error, 1)
	go func() { done <- h.l.StopHalb(node, syscall.SIGTERM) }()
	return func() error { return <-done }
}

// handover asks the target node over its admin socket for a planned drill
// (make-before-break), as `halb drill` does.
func (h halbSystem) handover(ctx context.Context, from, to string) (func(context.Context) error, error) {
	c := admin.Dial(h.l.AdminSocket(to))
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := c.StartDrill(rctx, admin.DrillRequest{To: to, Hold: time.Minute})
	if err != nil {
		return nil, fmt.Errorf("start drill to %s: %w", to, err)
	}
	if st.From != from {
		return nil, fmt.Errorf("drill moves the VIP from %s, want %s", st.From, from)
	}
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return c.EndDrill(ctx)
	}, nil
}

// ready waits for a stable cluster that elected holder: after a repair
// the preferred node wins the VIP back only after preempt_delay.
func (h halbSystem) ready(ctx context.Context, d time.Duration, holder string, nodes ...string) error {
	deadline := time.Now().Add(d)
	for {
		got, err := h.l.WaitStable(ctx, time.Until(deadline), nodes...)
		if err != nil {
			return err
		}
		if got == holder {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("halb elected %s for %s, want %s", got, d, holder)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type keepalivedSystem struct{ s *keepalivedlab.Stack }

func (k keepalivedSystem) start(ctx context.Context, node string) error { return k.s.Start(ctx, node) }

func (k keepalivedSystem) crash(node string) error { return k.s.Crash(node) }

// stop stops keepalived (SIGTERM: a priority-0 advert, the VIP dropped),
// then HAProxy, as a host's shutdown would.
func (k keepalivedSystem) stop(node string) func() error {
	done := make(chan error, 1)
	go func() { done <- errors.Join(k.s.StopKeepalived(node), k.s.StopHAProxy(node)) }()
	return func() error { return <-done }
}

// handover stops keepalived on the master gracefully: it sends a
// priority-0 advert and the backup takes over at once. HAProxy keeps running.
func (k keepalivedSystem) handover(_ context.Context, from, _ string) (func(context.Context) error, error) {
	if err := k.s.StopKeepalived(from); err != nil {
		return nil, err
	}
	return func(context.Context) error { return k.s.StartKeepalived(from) }, nil
}

func (k keepalivedSystem) ready(ctx context.Context, d time.Duration, holder string, nodes ...string) error {
	deadline := time.Now().Add(d)
	for {
		why := ""
		for _, n := range nodes {
			want := "BACKUP"
			if n == holder {
				want = "MASTER"
			}
			if !k.s.Running(n) {
				why = "keepalived or haproxy is not running on " + n
			} else if st := k.s.State(n); st != want {
				why = fmt.Sprintf("%s is in state %q, want %s", n, st, want)
			}
			if why != "" {
				break
			}
		}
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("keepalived not ready after %s: %s", d, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
