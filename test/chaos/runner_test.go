package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var fakeVIP = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.160"), 6443)

var fakeTopo = Topology{LBs: []string{"lb1", "lb2", "lb3"}, CPs: []string{"cp1", "cp2", "cp3"}}

func testConfig(seed uint64, faults int, kinds ...Kind) Config {
	return Config{
		Seed:      seed,
		Plan:      Plan{Faults: faults, Detect: time.Second, Overlap: 0.3, Kinds: kinds},
		Bounds:    Bounds{Reach: 5 * time.Second, HealthCheck: 2500 * time.Millisecond, Goroutines: 60, RSSFactor: 2, RSSSlack: 48 << 20},
		Settle:    20 * time.Second,
		API:       fakeVIP,
		Talos:     netip.AddrPortFrom(fakeVIP.Addr(), 50000),
		LongLived: 2,
	}
}

// run runs cfg against f in a bubble of fake time, so holds and settle
// waits take no real time, and returns once every goroutine the run
// started has ended.
func run(t *testing.T, ctx context.Context, cfg Config, f *fakeLab) (*Report, error) {
	t.Helper()
	var rep *Report
	var err error
	synctest.Test(t, func(t *testing.T) {
		rep, err = NewRunner(cfg, f, fakeTopo, slog.New(slog.DiscardHandler)).Run(ctx)
	})
	return rep, err
}

func violations(rep *Report) []string {
	var vs []string
	for _, rec := range rep.Steps {
		for _, v := range rec.Violations {
			vs = append(vs, v.String())
		}
	}
	return vs
}

func countOps(ops []string, prefix, suffix string) int {
	n := 0
	for _, op := range ops {
		if strings.HasPrefix(op, prefix) && strings.HasSuffix(op, suffix) {
			n++
		}
	}
	return n
}

// Every kind of fault is made as the schedule says and undone, and a
// healthy cluster gives no violation.
func TestRunInjectsTheScheduleAndHealsIt(t *testing.T) {
	cfg := testConfig(11, 80)
	f := newFakeLab(fakeTopo.LBs...)
	rep, err := run(t, context.Background(), cfg, f)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	want := Schedule(cfg.Seed, cfg.Plan, fakeTopo)
	got := make([]Step, len(rep.Steps))
	for i, rec := range rep.Steps {
		got[i] = rec.Step
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("steps run (-schedule +run):\n%s", diff)
	}
	if rep.Injected != 80 || rep.Stopped != "" || rep.Summary.Faults != 80 {
		t.Fatalf("injected %d of 80 faults, stopped %q, summary %+v", rep.Injected, rep.Stopped, rep.Summary)
	}
	if vs := violations(rep); len(vs) != 0 {
		t.Fatalf("violations on a healthy fake: %v", vs)
	}
	if b := f.broken(); len(b) != 0 {
		t.Fatalf("faults left in place after the run: %v", b)
	}
	counts := Count(want)
	ops := f.opsSeen()
	if n := countOps(ops, "signal", " 9"); n != counts[KillRestart] {
		t.Errorf("%d kills for %d kill-restart faults", n, counts[KillRestart])
	}
	if n := countOps(ops, "signal", " 19"); n != counts[PauseShort]+counts[PauseLong] {
		t.Errorf("%d SIGSTOPs for %d pauses", n, counts[PauseShort]+counts[PauseLong])
	}
	if n := countOps(ops, "netem", ""); n != counts[Netem] {
		t.Errorf("%d netem for %d netem faults", n, counts[Netem])
	}
	for _, k := range []Kind{KillRestart, PauseShort, LinkFlap, PartitionLBs, PartitionCPs, Netem, CPDie, CPFlap, CPSlow, ReloadValid, ReloadInvalid} {
		if counts[k] == 0 {
			t.Errorf("seed %d draws no %s in 80 faults; pick a seed that covers every kind", cfg.Seed, k)
		}
	}
}

// The same seed makes the same changes to the lab; another seed others.
func TestRunReplaysFromSeed(t *testing.T) {
	ops := func(seed uint64) []string {
		f := newFakeLab(fakeTopo.LBs...)
		if _, err := run(t, context.Background(), testConfig(seed, 30), f); err != nil {
			t.Fatalf("run: %v", err)
		}
		o := f.opsSeen()
		// Overlapping faults run in parallel; their order within a step is
		// not part of the schedule.
		slices.Sort(o)
		return o
	}
	a, b := ops(5), ops(5)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Fatalf("seed 5 twice changed the lab differently (-first +second):\n%s", diff)
	}
	if cmp.Equal(a, ops(6)) {
		t.Fatal("seeds 5 and 6 made the same changes")
	}
}

// A fault whose injection fails is still undone, and the failure is a
// violation of its step naming the fault.
func TestRunHealsWhenInjectionFails(t *testing.T) {
	cfg := testConfig(6, 6, PartitionCPs)
	cfg.Plan.Overlap = 0
	f := newFakeLab(fakeTopo.LBs...)
	steps := Schedule(cfg.Seed, cfg.Plan, fakeTopo)
	first := steps[0].Faults[0]
	if len(first.Targets) < 3 {
		t.Fatalf("seed %d: first fault %s cuts one CP; pick a seed that cuts two", cfg.Seed, first)
	}
	failing := "partition " + first.Targets[0] + " " + first.Targets[1] + " cut=true"
	f.fail[failing] = errors.New("nft: no such table")
	rep, err := run(t, context.Background(), cfg, f)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if b := f.broken(); len(b) != 0 {
		t.Fatalf("faults left in place: %v", b)
	}
	vs := rep.Steps[0].Violations
	if len(vs) != 1 || vs[0].Invariant != InvFault || !strings.Contains(vs[0].Detail, first.String()) ||
		!strings.Contains(vs[0].Detail, "no such table") {
		t.Fatalf("step 1 violations %v, want one %s naming %q", vs, InvFault, first)
	}
	if n := countOps(f.opsSeen(), "partition "+first.Targets[0]+" "+first.Targets[2], "cut=false"); n == 0 {
		t.Fatalf("the partition that did go in was not healed: %v", f.opsSeen())
	}
	if rep.Injected != 6 {
		t.Fatalf("the run stopped after a failed injection: %d of 6 faults", rep.Injected)
	}
}

// A step that breaks the run (its probes fail) stops it, after undoing
// its faults.
func TestRunStopsWhenAStepFails(t *testing.T) {
	cfg := testConfig(8, 10, LinkFlap)
	f := newFakeLab(fakeTopo.LBs...)
	f.probeErr = errors.New("probe died")
	rep, err := run(t, context.Background(), cfg, f)
	if !errors.Is(err, ErrStopped) || !strings.Contains(rep.Stopped, "probe died") {
		t.Fatalf("run: %v, stopped %q; want ErrStopped for the probes", err, rep.Stopped)
	}
	if len(rep.Steps) != 1 {
		t.Fatalf("%d steps after the first failed", len(rep.Steps))
	}
	if b := f.broken(); len(b) != 0 || countOps(f.opsSeen(), "link", "up=true") != 1 {
		t.Fatalf("faults left in place: %v; ops %v", b, f.opsSeen())
	}
}

// Cancelling the run in the middle of a fault still undoes it, with a
// context the cancellation does not reach.
func TestRunHealsWhenCancelled(t *testing.T) {
	for _, k := range []Kind{KillRestart, PauseLong, LinkFlap, PartitionLBs, PartitionCPs, Netem, CPDie, CPFlap, CPSlow, ReloadInvalid} {
		t.Run(string(k), func(t *testing.T) {
			cfg := testConfig(21, 20, k)
			f := newFakeLab(fakeTopo.LBs...)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// Overlapping faults call the hook from their own goroutines.
			var made atomic.Int32
			f.after = func(op string) {
				// Cancel as the third fault goes in.
				if isOn(op) && made.Add(1) == 3 {
					cancel()
				}
			}
			rep, err := run(t, ctx, cfg, f)
			if !errors.Is(err, ErrStopped) || rep.Stopped != "interrupted" {
				t.Fatalf("run: %v, stopped %q; want interrupted", err, rep.Stopped)
			}
			if n := made.Load(); n < 3 {
				t.Fatalf("only %d faults made; the test never cancelled", n)
			}
			if b := f.broken(); len(b) != 0 {
				t.Fatalf("faults left in place after cancel: %v\nops: %v", b, f.opsSeen())
			}
			if rep.Injected >= 20 {
				t.Fatalf("the run went on after cancel: %d faults", rep.Injected)
			}
		})
	}
}

// isOn reports whether a fake lab operation makes a fault (rather than
// undoing one or reading).
func isOn(op string) bool {
	for _, s := range []string{" 9", " 19", "up=false", "cut=true", "cp cp1 stopped", "cp cp2 stopped", "cp cp3 stopped", "blackhole", "write config"} {
		if strings.HasSuffix(op, s) || strings.HasPrefix(op, s) {
			return true
		}
	}
	return strings.HasPrefix(op, "netem")
}

// A violation is reported in the step of the fault that preceded it,
// and the steps before and after are judged on their own.
func TestRunReportsViolationsWithTheirFault(t *testing.T) {
	cfg := testConfig(8, 5, LinkFlap)
	cfg.Plan.Overlap = 0
	f := newFakeLab(fakeTopo.LBs...)
	var ups atomic.Int32
	f.after = func(op string) {
		// After the third link comes back up, that node keeps the VIP on
		// its interface: a leftover address.
		if strings.HasSuffix(op, "up=true") {
			if ups.Add(1) == 3 {
				f.mu.Lock()
				f.stuck[strings.Fields(op)[1]] = true
				f.mu.Unlock()
			}
		}
	}
	rep, err := run(t, context.Background(), cfg, f)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, rec := range rep.Steps {
		invs := map[string]bool{}
		for _, v := range rec.Violations {
			invs[v.Invariant] = true
		}
		target := rec.Step.Faults[0].Targets[0]
		switch {
		case rec.Step.N == 3 && target == "lb1":
			t.Fatalf("seed %d flaps the holder in step 3; pick another", cfg.Seed)
		case rec.Step.N == 3:
			if !invs[InvOneHolder] || !invs[InvLeftover] || !invs[InvSettle] {
				t.Errorf("step 3 (%s) violations %v; want one-holder, leftover and settle", Describe(rec.Step), rec.Violations)
			}
			if !slices.ContainsFunc(rec.Violations, func(v Violation) bool { return strings.Contains(v.Detail, target) }) {
				t.Errorf("no violation of step 3 names %s, the node whose link flapped: %v", target, rec.Violations)
			}
			if !slices.ContainsFunc(rec.Timeline, func(e Event) bool { return strings.HasPrefix(e.What, "--- tail of") }) {
				t.Error("step 3's timeline has no log tails")
			}
		case rec.Step.N == 4:
			// The stuck address goes when the next link goes down.
			if len(rec.Violations) != 0 {
				t.Errorf("step 4 inherits violations: %v", rec.Violations)
			}
		default:
			if len(rec.Violations) != 0 {
				t.Errorf("step %d violations: %v", rec.Step.N, rec.Violations)
			}
		}
	}
}

// The run stops at its duration, before the next step, and says so
// without calling it an error.
func TestRunStopsAtMaxDuration(t *testing.T) {
	cfg := testConfig(9, 500)
	cfg.MaxDuration = time.Minute
	f := newFakeLab(fakeTopo.LBs...)
	rep, err := run(t, context.Background(), cfg, f)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.HasPrefix(rep.Stopped, "--max-duration 1m0s") || rep.Injected == 0 || rep.Injected >= 500 {
		t.Fatalf("stopped %q after %d faults; want a stop at --max-duration", rep.Stopped, rep.Injected)
	}
	// The last step may start just before the minute is up; it ends within
	// its own bounds (a fault of at most 5s, settle, reach and leak checks).
	if took := rep.End.Sub(rep.Start); took > time.Minute+time.Minute {
		t.Fatalf("the run took %s for a one-minute bound", took)
	}
	if b := f.broken(); len(b) != 0 {
		t.Fatalf("faults left in place: %v", b)
	}
}

// The report the run writes reads back as the report it returned.
func TestRunReportRoundTrips(t *testing.T) {
	cfg := testConfig(13, 12)
	cfg.Out = filepath.Join(t.TempDir(), "chaos.json")
	cfg.Replay = "halb-lab chaos --seed 13"
	f := newFakeLab(fakeTopo.LBs...)
	f.fail["cp cp2 blackhole"] = errors.New("control socket gone")
	rep, err := run(t, context.Background(), cfg, f)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	b, err := os.ReadFile(cfg.Out)
	if err != nil {
		t.Fatalf("read report: %v", err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("parse report: %v", err)
	}
	if diff := cmp.Diff(*rep, back, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("report (-returned +written):\n%s", diff)
	}
	if len(back.Steps) == 0 || len(back.Baseline) != 3 || back.Replay != cfg.Replay {
		t.Fatalf("written report is thin: %d steps, %d baselines, replay %q", len(back.Steps), len(back.Baseline), back.Replay)
	}
}
