package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"

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
	kinds, err := parseKinds(o.kinds)
	if err != nil {
		return err
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
	hash, err := bcrypt.GenerateFromPassword([]byte("chaos-"+strconv.FormatInt(time.Now().UnixNano(), 36)), bcrypt.MinCost)
	if err != nil {
		return fmt.Errorf("make stats password hash: %w", err)
	}
	l := lab.New(lab.Options{
		LBs: o.lbs, CPs: 3, HalbBin: halbBin, LabBin: self, WorkDir: o.workdir, StartHalb: true,
		PreemptDelay: o.preemptDelay,
		// Goroutines and RSS are read from /metrics on each node's loopback.
		Mutate: func(_, yaml string) string { return yaml + chaos.StatsSection(hash) },
	}, log)
	defer func() {
		if err := l.Close(); err != nil {
			log.Error("tear down lab", "err", err)
		}
	}()
	if err := l.Up(ctx); err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	apiTLS, err := l.ClientTLS(fakecp.KubeAdmin)
	if err != nil {
		return err
	}
	talosTLS, err := l.ClientTLS(fakecp.TalosAdmin)
	if err != nil {
		return err
	}
	topo := chaos.Topology{LBs: l.LBNames(), CPs: l.CPNames()}
	if _, err := l.WaitStable(ctx, o.settle, topo.LBs...); err != nil {
		return fmt.Errorf("before the first fault: %w", err)
	}
	cfg := chaos.Config{
		Seed:        o.seed,
		Plan:        chaos.Plan{Faults: o.faults, Detect: o.detect, Overlap: o.overlap, Kinds: kinds},
		Bounds:      o.bounds,
		Settle:      o.settle,
		MaxDuration: o.maxDuration,
		API:         netip.AddrPortFrom(lab.VIP(), 6443),
		Talos:       netip.AddrPortFrom(lab.VIP(), 50000),
		LongLived:   6,
		Replay:      o.replay(),
		Out:         o.out,
	}
	rep, runErr := chaos.NewRunner(cfg, chaos.NewNetnsLab(l, halbBin, apiTLS, talosTLS), topo, log).Run(ctx)
	if rep == nil {
		return runErr
	}
	if err := rep.WriteText(stdout); err != nil {
		return err
	}
	_, _ = fmt.Fprintf(stdout, "report: %s\n", o.out)
	if rep.Summary.Violations > 0 {
		return tool.ExitError{Code: 3}
	}
	return runErr
}

// parseKinds reads --kinds: comma-separated fault kinds, none meaning all.
func parseKinds(list string) ([]chaos.Kind, error) {
	var kinds []chaos.Kind
	for _, k := range strings.Split(list, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(chaos.Kinds, chaos.Kind(k)) {
			return nil, fmt.Errorf("--kinds: unknown kind %q; want some of %s", k, kindList())
		}
		kinds = append(kinds, chaos.Kind(k))
	}
	return kinds, nil
}

// replay is the command line that replays the run's faults.
func (o chaosOptions) replay() string {
	s := fmt.Sprintf("halb-lab chaos --halb %s --seed %d --faults %d --lbs %d --detect %s --overlap %g --preempt-delay %s",
		o.halb, o.seed, o.faults, o.lbs, o.detect, o.overlap, o.preemptDelay)
	if o.kinds != "" {
		s += " --kinds " + o.kinds
	}
	return s
}
