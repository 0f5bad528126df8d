package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"

	"halb/internal/probe"
	"halb/test/chaos"
	"halb/test/fakecp"
	"halb/test/lab"
	"halb/test/tool"
)

// chaosOptions are the flags of `halb-lab chaos`.
type chaosOptions struct {
	halb, out, workdir string
	kinds              string
	seed               uint64
	faults, lbs        int
	maxDuration        time.Duration
	detect             time.Duration
	overlap            float64
	bounds             chaos.Bounds
	settle             time.Duration
	preemptDelay       time.Duration
}

func newChaosCmd() *cobra.Command {
	o := chaosOptions{bounds: chaos.Bounds{
		Reach:       5 * time.Second,
		HealthCheck: 2500 * time.Millisecond,
		Goroutines:  60,
		RSSFactor:   2,
		RSSSlack:    48 << 20,
	}}
	cmd := &cobra.Command{
		Use:   "chaos --halb BIN [--faults N] [--seed S]",
		Short: "Inject random faults into a lab under client traffic and check halb's invariants",
		Long: `Chaos builds a lab (three control planes, --lbs halb nodes, a client), keeps
client traffic flowing through the VIP (a new connection every 10 ms on each
port, plus long-lived keep-alive connections), and injects faults drawn from
--seed: kill -9 and restart, SIGSTOP pauses either side of --detect, link
down/up, partitions, netem loss and delay, control planes dying, flapping or
hanging, planned drills during a fault, and valid and invalid reloads.

After each step (one fault, or two overlapping) it waits for the cluster to
settle and checks: one holder with the VIP on its interface and in every
view, an eligible one; no VIP left on another node; the client reaching both
ports within --reach-bound with its neighbour entry on the holder's MAC; no
client connection waiting on a dead control plane past --hc-bound; and no
growth in goroutines or RSS. Every violation is kept with its step and
timeline; the same --seed, --faults and --lbs replay the same faults.

Defaults come from CHAOS_FAULTS, CHAOS_SEED and CHAOS_DURATION when set.
Exit status: 0 with no violation, 3 with some, 1 when the run could not go on.`,
		Example: `  halb-lab chaos --halb bin/halb --faults 200 --seed 42
  CHAOS_SEED=42 CHAOS_FAULTS=1000 make chaos`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runChaos(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.halb, "halb", "bin/halb", "the halb binary under test")
	f.IntVar(&o.faults, "faults", envInt("CHAOS_FAULTS", 1000), "number of faults to inject (env CHAOS_FAULTS)")
	f.Uint64Var(&o.seed, "seed", envUint("CHAOS_SEED", uint64(time.Now().UnixNano()%1e6)), "seed of the fault schedule (env CHAOS_SEED)")
	f.DurationVar(&o.maxDuration, "max-duration", envDuration("CHAOS_DURATION", 4*time.Hour), "stop after this long even if faults remain (env CHAOS_DURATION)")
	f.IntVar(&o.lbs, "lbs", 3, "halb nodes, 2 or 3")
	f.DurationVar(&o.detect, "detect", time.Second, "halb's failure-detection time; short pauses stay under it, long ones over")
	f.Float64Var(&o.overlap, "overlap", 0.3, "chance that a second fault overlaps a step's first")
	f.StringVar(&o.kinds, "kinds", "", "comma-separated fault kinds to draw from (default all): "+kindList())
	f.DurationVar(&o.bounds.Reach, "reach-bound", o.bounds.Reach, "the client must get through within this after the faults end")
	f.DurationVar(&o.bounds.HealthCheck, "hc-bound", o.bounds.HealthCheck, "longest a client connection may wait on a dead control plane")
	f.DurationVar(&o.settle, "settle", 20*time.Second, "longest wait for one agreed holder after a step (a pending preemption is waited for)")
	f.DurationVar(&o.preemptDelay, "preempt-delay", 3*time.Second, "halb's cluster.preempt_delay in the lab: shorter than the 10s default so the better node takes the VIP back within a step or two, which puts more handovers under faults")
	f.StringVar(&o.out, "out", "", "JSON report path (default bin/chaos/<time>.json)")
	f.StringVar(&o.workdir, "workdir", "", "lab workdir, kept for post-mortems (default: a temporary one, removed)")
	return cmd
}

func kindList() string {
	s := make([]string, len(chaos.Kinds))
	for i, k := range chaos.Kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ",")
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}

func envUint(name string, def uint64) uint64 {
	if n, err := strconv.ParseUint(os.Getenv(name), 10, 64); err == nil {
		return n
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

func runChaos(ctx context.Context, o chaosOptions, stdout, stderr io.Writer) error {
	if o.lbs < 2 || o.lbs > 3 {
		return fmt.Errorf("--lbs %d: want 2 or 3", o.lbs)
	}
	if o.faults < 1 {
		return fmt.Errorf("--faults %d: want at least 1", o.faults)
	}
	var kinds []chaos.Kind
	for _, k := range strings.Split(o.kinds, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(chaos.Kinds, chaos.Kind(k)) {
			return fmt.Errorf("--kinds: unknown kind %q; want some of %s", k, kindList())
		}
		kinds = append(kinds, chaos.Kind(k))
	}
	halbBin, err := filepath.Abs(o.halb)
	if err != nil {
		return fmt.Errorf("--halb: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	if o.out == "" {
		o.out = filepath.Join("bin", "chaos", time.Now().UTC().Format("20060102T150405Z")+".json")
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return fmt.Errorf("make report directory: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	stats, err := statsSection()
	if err != nil {
		return err
	}
	l := lab.New(lab.Options{
		LBs: o.lbs, CPs: 3, HalbBin: halbBin, LabBin: self, WorkDir: o.workdir, StartHalb: true,
		PreemptDelay: o.preemptDelay,
		// Goroutines and RSS are read from /metrics on each node's loopback.
		Mutate: func(_, yaml string) string { return yaml + stats },
	}, log)
	defer func() {
		if err := l.Close(); err != nil {
			log.Error("tear down lab", "err", err)
		}
	}()
	if err := l.Up(ctx); err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	topo := chaos.Topology{LBs: l.LBNames(), CPs: l.CPNames()}
	steps := chaos.Schedule(o.seed, chaos.Plan{Faults: o.faults, Detect: o.detect, Overlap: o.overlap, Kinds: kinds}, topo)
	r := &chaosRun{o: o, l: l, log: log, topo: topo, start: time.Now(), base: map[string]chaos.Baseline{}, macs: map[string]string{}}
	if r.apiTLS, err = l.ClientTLS(fakecp.KubeAdmin); err != nil {
		return err
	}
	if r.talosTLS, err = l.ClientTLS(fakecp.TalosAdmin); err != nil {
		return err
	}
	replay := fmt.Sprintf("halb-lab chaos --halb %s --seed %d --faults %d --lbs %d --detect %s --overlap %g --preempt-delay %s", o.halb, o.seed, o.faults, o.lbs, o.detect, o.overlap, o.preemptDelay)
	if o.kinds != "" {
		replay += " --kinds " + o.kinds
	}
	rep := &chaos.Report{Seed: o.seed, Faults: o.faults, LBs: o.lbs, Detect: o.detect, Bounds: o.bounds, Start: r.start, Replay: replay}
	log.Info("chaos run", "seed", o.seed, "faults", o.faults, "steps", len(steps), "report", o.out)

	for _, n := range topo.LBs {
		mac, err := l.MAC(ctx, n)
		if err != nil {
			return err
		}
		r.macs[n] = mac
	}
	if _, err := l.WaitStable(ctx, o.settle, topo.LBs...); err != nil {
		return fmt.Errorf("before the first fault: %w", err)
	}
	llCtx, llStop := context.WithCancel(ctx)
	defer llStop()
	r.longLived(llCtx, 6)

	deadline := r.start.Add(o.maxDuration)
	for _, st := range steps {
		if ctx.Err() != nil {
			rep.Stopped = "interrupted"
			break
		}
		if time.Now().After(deadline) {
			rep.Stopped = fmt.Sprintf("--max-duration %s reached", o.maxDuration)
			break
		}
		rec, err := r.step(ctx, st)
		if ctx.Err() != nil {
			// What was seen while shutting down says nothing about halb.
			rep.Stopped = "interrupted"
			break
		}
		rep.Steps = append(rep.Steps, rec)
		rep.Injected += len(rec.Step.Faults)
		status := "ok"
		if len(rec.Violations) > 0 {
			status = fmt.Sprintf("%d VIOLATIONS", len(rec.Violations))
		}
		log.Info("step", "n", st.N, "faults", describeStep(st), "outage", rec.Outage.Round(time.Millisecond), "result", status)
		for _, v := range rec.Violations {
			log.Warn("violation", "step", st.N, "invariant", v.Invariant, "detail", v.Detail)
		}
		if err != nil {
			rep.Stopped = err.Error()
			break
		}
		if st.N%10 == 0 {
			r.write(rep, o.out)
		}
	}
	for _, n := range topo.LBs {
		rep.Baseline = append(rep.Baseline, r.base[n])
	}
	r.write(rep, o.out)
	if err := rep.WriteText(stdout); err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "report: %s\n", o.out)
	if rep.Summary.Violations > 0 {
		return tool.ExitError{Code: 3}
	}
	if rep.Stopped != "" && !strings.HasPrefix(rep.Stopped, "--max-duration") {
		return fmt.Errorf("chaos run stopped early: %s", rep.Stopped)
	}
	return nil
}

func describeStep(st chaos.Step) string {
	parts := make([]string, len(st.Faults))
	for i, f := range st.Faults {
		parts[i] = f.String()
	}
	return strings.Join(parts, " + ")
}

// statsSection is the config text that turns on /metrics on loopback.
func statsSection() (string, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte("chaos-"+strconv.FormatInt(time.Now().UnixNano(), 36)), bcrypt.MinCost)
	if err != nil {
		return "", fmt.Errorf("make stats password hash: %w", err)
	}
	return fmt.Sprintf("stats:\n  bind: 127.0.0.1:9600\n  metrics_bind: 127.0.0.1:9601\n  users:\n    - name: chaos\n      password_hash: %q\n", hash), nil
}

// chaosRun is one run's state.
type chaosRun struct {
	o     chaosOptions
	l     *lab.Lab
	log   *slog.Logger
	topo  chaos.Topology
	start time.Time
	macs  map[string]string
	base  map[string]chaos.Baseline
	drain bool // the valid-reload toggle: drain 3s instead of 2s
	// Client credentials through the VIP, as kubectl and talosctl present them.
	apiTLS, talosTLS *tls.Config

	mu       sync.Mutex
	timeline []chaos.Event
	requests []request // long-lived connections' requests
}

func (r *chaosRun) write(rep *chaos.Report, path string) {
	rep.End = time.Now()
	rep.Summary = chaos.Summarize(rep.Steps)
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		r.log.Error("write report", "err", err)
		return
	}
	err = rep.WriteJSON(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		r.log.Error("write report", "err", err)
	}
}

func (r *chaosRun) event(format string, args ...any) {
	r.mu.Lock()
	r.timeline = append(r.timeline, chaos.Event{At: time.Since(r.start), What: fmt.Sprintf(format, args...)})
	r.mu.Unlock()
}

var (
	vipAPI   = netip.AddrPortFrom(lab.VIP(), 6443)
	vipTalos = netip.AddrPortFrom(lab.VIP(), 50000)
)

// step runs one step and checks the invariants after it. An error means
// the lab itself is broken and the run cannot go on.
func (r *chaosRun) step(ctx context.Context, st chaos.Step) (chaos.Record, error) {
	rec := chaos.Record{Step: st, Start: time.Now()}
	r.mu.Lock()
	r.timeline = nil
	r.mu.Unlock()
	r.event("step %d: %s", st.N, describeStep(st))
	var end time.Duration
	for _, f := range st.Faults {
		end = max(end, f.End())
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		// Timing bounds mean little on a host loaded far past its cores.
		f := strings.Fields(string(b))
		rec.Load, _ = strconv.ParseFloat(f[0], 64)
		rec.Overloaded = rec.Load > float64(chaos.OverloadFactor*runtime.NumCPU())
		r.event("load average %s", strings.Join(f[:3], " "))
	}
	probeFor := end + r.o.settle + r.o.bounds.Reach + 10*time.Second
	p1, err := r.startProbe(ctx, vipAPI, probe.ModeHTTPS, probeFor)
	if err != nil {
		return rec, err
	}
	p2, err := r.startProbe(ctx, vipTalos, probe.ModeTLS, probeFor)
	if err != nil {
		_, _ = p1.Stop()
		return rec, err
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := r.watch(watchCtx)
	defer func() { stopWatch(); <-watched }()

	var toolErrs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, f := range st.Faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.inject(ctx, f); err != nil {
				emu.Lock()
				toolErrs = append(toolErrs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	faultsEnd := time.Now()
	r.event("faults undone")

	reach := r.reach(ctx, faultsEnd)
	holder, settleErr := r.settle(ctx)
	rec.Observed.Settle = time.Since(faultsEnd)
	rec.Observed.Settled = settleErr == nil
	if settleErr != nil {
		rec.Observed.SettleErr = settleErr.Error()
	}
	r.event("settled on %q after %s (%v)", holder, rec.Observed.Settle.Round(time.Millisecond), settleErr)
	rec.Observed.Reach = reach

	// Probe a moment more so the client talks to the settled holder, then
	// read its neighbour entry.
	time.Sleep(200 * time.Millisecond)
	r1, err1 := p1.Stop()
	r2, err2 := p2.Stop()
	if err := errors.Join(err1, err2); err != nil {
		return rec, fmt.Errorf("client probes: %w", err)
	}
	rec.Outage = max(r1.LongestGap, r2.LongestGap)
	r.event("probes: %s / %s", r1.String(), r2.String())
	rec.Observed.ClientMAC = r.neighbour(ctx, holder)
	rec.Observed.Nodes = r.observe(ctx)
	rec.Observed.LongLived = r.traffic(rec.Start)
	if cpOnly(st) {
		rec.Observed.Waits = r.waits(rec.Start, faultsEnd, downCPs(st))
	}
	for _, n := range rec.Observed.Nodes {
		if b, ok := r.base[n.Name]; (!ok || b.PID != n.PID) && n.PID != 0 && n.Goroutines > 0 {
			r.base[n.Name] = chaos.Baseline{PID: n.PID, Goroutines: n.Goroutines, RSS: n.RSS}
		}
	}
	stopWatch()
	<-watched
	rec.Violations = chaos.Check(rec.Observed, r.o.bounds, r.base)
	// A leak stays; a burst of goroutines after a heal goes. Look again
	// for a while before calling growth a leak.
	for deadline := time.Now().Add(10 * time.Second); hasLeak(rec.Violations) && time.Now().Before(deadline) && ctx.Err() == nil; {
		sleep(ctx, time.Second)
		for i, n := range rec.Observed.Nodes {
			if g, rss, err := r.metrics(ctx, n.Name); err == nil {
				rec.Observed.Nodes[i].Goroutines, rec.Observed.Nodes[i].RSS = g, rss
			}
		}
		rec.Violations = chaos.Check(rec.Observed, r.o.bounds, r.base)
	}
	for _, e := range toolErrs {
		rec.Violations = append(rec.Violations, chaos.Violation{Invariant: chaos.InvFault, Detail: e.Error()})
	}
	if len(rec.Violations) > 0 {
		for _, n := range r.topo.LBs {
			r.event("--- tail of %s's log:\n%s", n, r.l.LogTail(n, 25))
		}
	}
	r.mu.Lock()
	rec.Timeline = r.timeline
	r.mu.Unlock()
	return rec, nil
}

// watch records in the timeline every change of the nodes holding the VIP
// on their interface and of the client's neighbour entry for it.
func (r *chaosRun) watch(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last, lastMAC string
		for ctx.Err() == nil {
			if h, err := r.l.Holder(ctx); err == nil {
				if s := fmt.Sprint(h); s != last {
					r.event("VIP on %s", s)
					last = s
				}
			}
			if n, err := r.l.ClientNeigh(ctx, lab.VIP()); err == nil && n.MAC != lastMAC {
				r.event("client neighbour entry: %s %v (%s)", n.MAC, n.State, r.macOwner(n.MAC))
				lastMAC = n.MAC
			}
			sleep(ctx, 200*time.Millisecond)
		}
	}()
	return done
}

func (r *chaosRun) macOwner(mac string) string {
	for n, m := range r.macs {
		if m == mac {
			return n
		}
	}
	return "?"
}

func hasLeak(vs []chaos.Violation) bool {
	return slices.ContainsFunc(vs, func(v chaos.Violation) bool { return v.Invariant == chaos.InvLeak })
}

// startProbe starts a client probe, trying again when a loaded host makes
// the first attempt late.
func (r *chaosRun) startProbe(ctx context.Context, target netip.AddrPort, mode string, d time.Duration) (*lab.ProbeRun, error) {
	var errs []error
	for range 3 {
		p, err := r.l.StartProbe(ctx, target, mode, d)
		if err == nil {
			return p, nil
		}
		r.event("start probe of %s: %v", target, err)
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// cpOnly reports whether every fault of st is on the control-plane side,
// where the holder is untouched and any long wait is a wait on a dead CP.
func cpOnly(st chaos.Step) bool {
	for _, f := range st.Faults {
		switch f.Kind {
		case chaos.CPDie, chaos.CPFlap, chaos.CPSlow, chaos.PartitionCPs:
		default:
			return false
		}
	}
	return true
}

func cpIndex(name string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(name, "cp"))
	return n
}

// inject applies f after its offset, holds it and undoes it.
func (r *chaosRun) inject(ctx context.Context, f chaos.Fault) error {
	sleep(ctx, f.Offset)
	l := r.l
	r.event("inject %s", f)
	var err error
	switch f.Kind {
	case chaos.KillRestart:
		n := f.Targets[0]
		if err = l.StopHalb(n, syscall.SIGKILL); err == nil {
			sleep(ctx, f.Hold)
			err = l.StartHalb(ctx, n)
		}
	case chaos.PauseShort, chaos.PauseLong:
		n := f.Targets[0]
		if err = l.StopHalb(n, syscall.SIGSTOP); err == nil {
			sleep(ctx, f.Hold)
			err = l.StopHalb(n, syscall.SIGCONT)
		}
	case chaos.LinkFlap:
		if err = l.LinkDown(ctx, f.Targets[0]); err == nil {
			sleep(ctx, f.Hold)
			err = l.LinkUp(ctx, f.Targets[0])
		}
	case chaos.PartitionLBs:
		a, b := f.Targets[0], f.Targets[1]
		if err = l.Partition(ctx, a, b); err == nil {
			sleep(ctx, f.Hold)
			err = l.Heal(ctx, a, b)
		}
	case chaos.PartitionCPs:
		lb := f.Targets[0]
		for _, cp := range f.Targets[1:] {
			err = errors.Join(err, l.Partition(ctx, lb, cp))
		}
		sleep(ctx, f.Hold)
		for _, cp := range f.Targets[1:] {
			err = errors.Join(err, l.Heal(ctx, lb, cp))
		}
	case chaos.Netem:
		var how string
		how, err = l.Netem(ctx, f.Targets[0], f.LossPct, f.Delay)
		r.event("netem on %s by %s", f.Targets[0], how)
		sleep(ctx, f.Hold)
		err = errors.Join(err, l.ClearNetem(ctx, f.Targets[0]))
	case chaos.CPDie:
		if f.Via == "host" {
			if err = l.LinkDown(ctx, f.Targets[0]); err == nil {
				sleep(ctx, f.Hold)
				err = l.LinkUp(ctx, f.Targets[0])
			}
			break
		}
		fallthrough
	case chaos.CPSlow:
		c := l.CP(cpIndex(f.Targets[0]))
		st := fakecp.Stopped
		if f.Kind == chaos.CPSlow {
			st = fakecp.Blackhole
		}
		if err = c.SetState(ctx, st); err == nil {
			sleep(ctx, f.Hold)
		}
		err = errors.Join(err, c.SetState(ctx, fakecp.Serving))
	case chaos.CPFlap:
		c := l.CP(cpIndex(f.Targets[0]))
		for range f.Cycles {
			err = errors.Join(err, c.SetState(ctx, fakecp.Stopped))
			sleep(ctx, f.Hold)
			err = errors.Join(err, c.SetState(ctx, fakecp.Serving))
			sleep(ctx, f.Hold)
		}
	case chaos.Drill:
		err = r.drill(ctx)
	case chaos.ReloadValid:
		err = r.reloadValid(ctx, f)
	case chaos.ReloadInvalid:
		err = r.reloadInvalid(ctx, f)
	default:
		err = fmt.Errorf("unknown fault kind %q", f.Kind)
	}
	r.event("undone %s (%v)", f.Kind, err)
	if err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// drill runs a planned `halb drill` from a node that does not hold the VIP.
// Its outcome is recorded, not judged: the fault under it may make it fail.
func (r *chaosRun) drill(ctx context.Context) error {
	from := ""
	for _, n := range r.topo.LBs {
		s, err := r.l.Status(ctx, n)
		if err != nil || len(s.VIPs) == 0 {
			continue
		}
		if s.VIPs[0].Holder != n {
			from = n
			break
		}
	}
	if from == "" {
		r.event("drill: no standby answers; skipped")
		return nil
	}
	out, code, _ := r.l.Exec(ctx, from, r.o.halbAbs(), "drill", "--socket", r.l.AdminSocket(from), "--max-outage", "5s", "--hold", "3s")
	r.event("drill from %s: exit %d: %s", from, code, lastLines(string(out), 3))
	// The old holder yields for the drill's hold; the step ends after it,
	// so that the VIP does not move back while the invariants are checked.
	sleep(ctx, 3*time.Second)
	if code < 0 {
		return fmt.Errorf("drill from %s did not run: %s", from, out)
	}
	return nil
}

func (o chaosOptions) halbAbs() string {
	p, _ := filepath.Abs(o.halb)
	return p
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// reloadValid toggles the drain timeout in every node's config and has
// each reload it; every reload must succeed.
func (r *chaosRun) reloadValid(ctx context.Context, f chaos.Fault) error {
	r.drain = !r.drain
	edit := r.configEdit()
	var errs []error
	for _, n := range f.Targets {
		if err := r.l.WriteConfig(ctx, n, edit); err != nil {
			return err
		}
	}
	for _, n := range f.Targets {
		errs = append(errs, r.reload(ctx, n, f.Via, true))
	}
	return errors.Join(errs...)
}

func (r *chaosRun) configEdit() func(string) string {
	if !r.drain {
		return nil
	}
	return func(c string) string { return strings.Replace(c, "drain: 2s", "drain: 3s", 1) }
}

// reloadInvalid writes a config halb must refuse, asks for a reload, checks
// the refusal, and puts the good file back.
func (r *chaosRun) reloadInvalid(ctx context.Context, f chaos.Fault) error {
	n := f.Targets[0]
	good, err := r.l.ConfigText(n)
	if err != nil {
		return err
	}
	bad := strings.Replace(good, "balance: roundrobin", "balance: chaos-monkey", 1)
	if err := r.l.WriteRawConfig(n, bad); err != nil {
		return err
	}
	err = r.reload(ctx, n, f.Via, false)
	return errors.Join(err, r.l.WriteRawConfig(n, good))
}

// reload asks node to reload, by `halb reload` or SIGHUP. With the CLI the
// exit status must match ok; after SIGHUP the node must still answer.
func (r *chaosRun) reload(ctx context.Context, node, via string, ok bool) error {
	if via == "sighup" {
		if err := r.l.StopHalb(node, syscall.SIGHUP); err != nil {
			return err
		}
		sleep(ctx, 300*time.Millisecond)
		if _, err := r.l.Status(ctx, node); err != nil {
			return fmt.Errorf("%s after SIGHUP: %w", node, err)
		}
		return nil
	}
	out, code, _ := r.l.Exec(ctx, node, r.o.halbAbs(), "reload", "--socket", r.l.AdminSocket(node))
	r.event("reload %s: exit %d: %s", node, code, lastLines(string(out), 2))
	if (code == 0) != ok {
		return fmt.Errorf("halb reload on %s exited %d (want success %v): %s", node, code, ok, lastLines(string(out), 3))
	}
	return nil
}

// reach times the client's first success on each VIP port from the end of
// the faults, up to the reach bound.
func (r *chaosRun) reach(ctx context.Context, from time.Time) []chaos.Reach {
	ports := []netip.AddrPort{vipAPI, vipTalos}
	out := make([]chaos.Reach, len(ports))
	var wg sync.WaitGroup
	for i, ap := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := chaos.Reach{Port: int(ap.Port())}
			for time.Since(from) < r.o.bounds.Reach && ctx.Err() == nil {
				err := r.tryOnce(ctx, ap)
				if err == nil {
					res.OK, res.After = true, time.Since(from)
					break
				}
				res.Err = err.Error()
				sleep(ctx, 20*time.Millisecond)
			}
			if res.OK {
				res.Err = ""
			}
			out[i] = res
		}()
	}
	wg.Wait()
	return out
}

// tryOnce makes one new connection from the client to ap and completes a
// TLS handshake and, on the API port, a request.
func (r *chaosRun) tryOnce(ctx context.Context, ap netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	c, err := r.l.Dial(ctx, "cl", ap.String())
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	conf := r.talosTLS.Clone()
	if ap.Port() == 6443 {
		conf = r.apiTLS.Clone()
	}
	conf.ServerName = ap.Addr().String()
	tc := tls.Client(c, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	if ap.Port() != 6443 {
		_, err := bufio.NewReader(tc).ReadString('\n')
		return err
	}
	if _, err := io.WriteString(tc, "GET /healthz HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// settle waits until the nodes have converged (chaos.Settled) and returns
// the holder, or the last reason they had not when the bound ran out.
func (r *chaosRun) settle(ctx context.Context) (string, error) {
	deadline := time.Now().Add(r.o.settle)
	for {
		holder, why := chaos.Settled(r.views(ctx))
		if why == "" {
			return holder, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("not settled after %s: %s", r.o.settle, why)
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

// neighbour reads the client's neighbour entry for the VIP, giving it up to
// a second to name the holder after the client last talked to the VIP.
func (r *chaosRun) neighbour(ctx context.Context, holder string) string {
	want := r.macs[holder]
	var got string
	deadline := time.Now().Add(time.Second)
	for {
		n, err := r.l.ClientNeigh(ctx, lab.VIP())
		if err == nil {
			got = n.MAC
		}
		if got == want || time.Now().After(deadline) || ctx.Err() != nil {
			return got
		}
		_ = r.tryOnce(ctx, vipAPI)
		sleep(ctx, 50*time.Millisecond)
	}
}

// observe reads every node's kernel addresses, admin view and resources.
func (r *chaosRun) observe(ctx context.Context) []chaos.Node {
	nodes := r.views(ctx)
	for i, n := range nodes {
		if n.StatusErr != "" {
			continue
		}
		var err error
		nodes[i].Goroutines, nodes[i].RSS, err = r.metrics(ctx, n.Name)
		if err != nil {
			r.event("metrics of %s: %v", n.Name, err)
		}
	}
	return nodes
}

// views reads every node's kernel addresses and admin view.
func (r *chaosRun) views(ctx context.Context) []chaos.Node {
	holders, err := r.l.Holder(ctx)
	if err != nil {
		r.event("read holders: %v", err)
	}
	vip := lab.VIP().String()
	var nodes []chaos.Node
	for _, name := range r.topo.LBs {
		n := chaos.Node{Name: name, HasVIP: slices.Contains(holders, name), MAC: r.macs[name], PID: r.l.PID(name)}
		s, err := r.l.Status(ctx, name)
		if err != nil {
			n.StatusErr = err.Error()
			nodes = append(nodes, n)
			continue
		}
		if len(s.VIPs) > 0 {
			n.View = s.VIPs[0].Holder
			n.Claims = s.VIPs[0].HeldHere
			n.PreemptAt = s.VIPs[0].PreemptAt
		}
		n.Peers = map[string]string{}
		for _, m := range s.Members {
			if m.Local {
				n.Eligible = m.Eligible
				n.Claims = n.Claims || slices.Contains(m.Holds, vip)
				continue
			}
			if m.Alive {
				n.Peers[m.Name] = m.HolderView[vip]
			}
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// metrics reads go_goroutines and process_resident_memory_bytes from
// node's /metrics on its own loopback.
func (r *chaosRun) metrics(ctx context.Context, node string) (int, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := r.l.Dial(ctx, node, "127.0.0.1:9601")
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = c.Close() }()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, 0, fmt.Errorf("read metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	var gor int
	var rss int64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "go_goroutines":
			gor = int(v)
		case "process_resident_memory_bytes":
			rss = int64(v)
		}
	}
	if gor == 0 {
		return 0, 0, errors.New("no go_goroutines in /metrics")
	}
	return gor, rss, sc.Err()
}

// request is one request on a long-lived connection.
type request struct {
	start time.Time
	took  time.Duration
	cp    string
	err   string
}

// longLived keeps n keep-alive HTTPS connections from the client to the
// VIP's API port, each sending a request every 100 ms, reconnecting when
// one breaks, until ctx ends. Every request is recorded.
func (r *chaosRun) longLived(ctx context.Context, n int) {
	for range n {
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return r.l.Dial(ctx, "cl", addr)
			},
			TLSClientConfig:     r.apiTLS.Clone(),
			MaxIdleConnsPerHost: 1,
			MaxConnsPerHost:     1,
			IdleConnTimeout:     time.Minute,
		}
		hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		go func() {
			defer tr.CloseIdleConnections()
			for ctx.Err() == nil {
				start := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+vipAPI.String()+"/healthz", nil)
				resp, err := hc.Do(req)
				q := request{start: start}
				if err == nil {
					q.cp = resp.Header.Get(fakecp.NameHeader)
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				} else {
					q.err = err.Error()
				}
				q.took = time.Since(start)
				r.mu.Lock()
				r.requests = append(r.requests, q)
				// Only recent requests matter; keep memory flat over a long run.
				if len(r.requests) > 20000 {
					r.requests = slices.Clone(r.requests[10000:])
				}
				r.mu.Unlock()
				sleep(ctx, 100*time.Millisecond)
			}
		}()
	}
}

// traffic sums up the long-lived connections' requests since from.
func (r *chaosRun) traffic(from time.Time) chaos.Traffic {
	r.mu.Lock()
	defer r.mu.Unlock()
	var t chaos.Traffic
	for _, q := range r.requests {
		if q.start.Before(from) {
			continue
		}
		t.Requests++
		if q.err != "" {
			t.Failed++
		}
		t.Longest = max(t.Longest, q.took)
	}
	return t
}

// downCPs lists the control planes a CP-side step took down for someone.
func downCPs(st chaos.Step) []string {
	var cps []string
	for _, f := range st.Faults {
		for _, t := range f.Targets {
			if strings.HasPrefix(t, "cp") {
				cps = append(cps, t)
			}
		}
	}
	return cps
}

// waits lists requests on long-lived connections that started in [from, to],
// took longer than the health-check bound, and were answered by one of the
// control planes in down or by none. A slow answer from a healthy one says
// the host is slow, not that halb kept a session on a dead server.
func (r *chaosRun) waits(from, to time.Time, down []string) []chaos.Wait {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ws []chaos.Wait
	for _, q := range r.requests {
		if q.start.Before(from) || q.start.After(to) || q.took <= r.o.bounds.HealthCheck {
			continue
		}
		if q.cp != "" && !slices.Contains(down, q.cp) {
			continue
		}
		what := "answered"
		if q.err != "" {
			what = q.err
		}
		ws = append(ws, chaos.Wait{CP: q.cp, Took: q.took, What: what})
	}
	return ws
}
