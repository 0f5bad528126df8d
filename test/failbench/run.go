package failbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"halb/test/benchresult"
)

// Options configure a failover run.
type Options struct {
	Bins      Bins
	Systems   []string // default AllSystems
	Scenarios []string // default AllScenarios
	Reps      int      // repetitions per scenario and system (default 10; 3 with Quick)
	Quick     bool
	// LongLivedWorkers bounds the long-lived client's reconnections in
	// flight; 0 lets every failed connection reconnect at once, as
	// clients on their own hosts do.
	LongLivedWorkers int
	WorkDir          string // labs' configs and logs, one directory per system
	ResultsDir       string // bench/results
	Machine          benchresult.Machine
	Out              io.Writer // progress and the final table
	Log              *slog.Logger
}

// Method says how the failover numbers are measured; it goes into the results.
const Method = "client in its own namespace opens a new connection to VIP:6443 every 10 ms " +
	"(TLS handshake + GET /healthz through the LB to a control plane, 250 ms bound per attempt); " +
	"outage = longest gap between successful attempts, from just before the failure until the " +
	"client's ARP entry names the new holder plus 500 ms; failure injected after a uniform random " +
	"delay within one heartbeat period"

// RunFailover measures every chosen scenario on every chosen system and
// merges the results into the day's file after each system, so an
// interrupted run keeps what it measured. It returns the merged results.
func RunFailover(ctx context.Context, o Options) (*FailoverResult, error) {
	if len(o.Systems) == 0 {
		o.Systems = AllSystems()
	}
	if len(o.Scenarios) == 0 {
		o.Scenarios = AllScenarios()
	}
	if o.Reps <= 0 {
		o.Reps = 10
		if o.Quick {
			o.Reps = 3
		}
	}
	all := specs()
	for _, s := range o.Systems {
		if _, ok := all[s]; !ok {
			return nil, fmt.Errorf("unknown system %q: want some of %v", s, AllSystems())
		}
	}
	for _, s := range o.Scenarios {
		if _, ok := scenarioTitles()[s]; !ok {
			return nil, fmt.Errorf("unknown scenario %q: want some of %v", s, AllScenarios())
		}
	}
	var res *FailoverResult
	var errs []error
	for _, name := range o.Systems {
		if ctx.Err() != nil {
			break
		}
		sr, err := runSystem(ctx, o, all[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		if sr == nil || len(sr.Scenarios) == 0 {
			continue
		}
		now := time.Now()
		merged := &FailoverResult{}
		if err := loadPart(o.ResultsDir, "failover", now, merged); err != nil {
			return nil, err
		}
		merged.Method = Method
		merged.merge(name, sr)
		path, err := benchresult.Merge(o.ResultsDir, "failover", o.Machine, merged, now)
		if err != nil {
			return nil, err
		}
		if err := WriteMarkdown(o.ResultsDir, now); err != nil {
			return nil, err
		}
		_, _ = fmt.Fprintf(o.Out, "%s: results merged into %s\n", name, path)
		res = merged
	}
	if res != nil {
		_, _ = fmt.Fprintln(o.Out)
		res.WriteTable(o.Out)
	}
	return res, errors.Join(append(errs, ctx.Err())...)
}

// runSystem builds spec's lab and runs every scenario on it.
func runSystem(ctx context.Context, o Options, spec sysSpec) (*SystemResult, error) {
	dir := filepath.Join(o.WorkDir, spec.name)
	_, _ = fmt.Fprintf(o.Out, "== %s: %s (lab in %s)\n", spec.name, spec.title, dir)
	l, sys, err := spec.build(ctx, o.Bins, dir, o.Log)
	defer func() {
		if cerr := l.Close(); cerr != nil {
			_, _ = fmt.Fprintf(o.Out, "%s: tear down lab: %v\n", spec.name, cerr)
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("build lab: %w", err)
	}
	r := &runner{l: l, sys: sys, window: spec.window, rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x6a1b)), workers: o.LongLivedWorkers}
	sr := &SystemResult{Title: spec.title, WindowMS: ms(spec.window), Scenarios: map[string]*ScenarioResult{}}
	titles := scenarioTitles()
	for _, scName := range sortScenarios(o.Scenarios) {
		if spec.only != nil && !slices.Contains(spec.only, scName) {
			continue
		}
		load := loadAvg()
		at := time.Now()
		var runs []rep
		var errs []string
		// Up to reps+3 attempts: a repetition that could not be measured
		// is reported, the lab reset, and another one tried.
		reps := longLivedRepsFor(scName, o.Reps)
		for attempt := 0; len(runs) < reps && attempt < reps+3 && ctx.Err() == nil; attempt++ {
			sc, err := r.scenario(scName)
			if err != nil {
				return sr, err
			}
			rp, err := r.once(ctx, sc)
			if rp.Attempts > 0 {
				runs = append(runs, rp)
				if l := rp.LongLived; l != nil {
					_, _ = fmt.Fprintf(o.Out, "%s %s %d/%d: %d connections failed after %.0f ms median, %.0f ms max; new connection works after %.0f ms median, %.0f ms max; fresh connections work after %.0f ms; %d never told; VIP moved after %s\n",
						spec.name, scName, len(runs), reps, l.Conns, l.FailedMS.Median, l.FailedMS.Max, l.RecoveredMS.Median, l.RecoveredMS.Max, l.FreshMS, l.StillOpen, rp.Takeover.Round(time.Millisecond))
				} else {
					_, _ = fmt.Fprintf(o.Out, "%s %s %d/%d: outage %s, %d failed of %d, VIP moved after %s (delay %s)\n",
						spec.name, scName, len(runs), reps, rp.Outage.Round(time.Millisecond), rp.Failed, rp.Attempts,
						rp.Takeover.Round(time.Millisecond), rp.Delay.Round(time.Millisecond))
				}
			}
			if err != nil {
				msg := fmt.Sprintf("attempt %d: %v", attempt+1, err)
				errs = append(errs, msg)
				_, _ = fmt.Fprintf(o.Out, "%s %s: %s; resetting the lab\n", spec.name, scName, msg)
				// A reset on a very busy machine can itself time out: one more try.
				if rerr := r.reset(ctx); rerr != nil {
					if rerr = r.reset(ctx); rerr != nil {
						return sr, fmt.Errorf("reset lab after %s: %w", scName, rerr)
					}
				}
			}
		}
		if len(runs) > 0 || len(errs) > 0 {
			sr.Scenarios[scName] = scenarioResult(titles[scName], o.Quick, load, at, runs, errs)
		}
	}
	return sr, nil
}

// loadAvg is the machine's load average, recorded beside each scenario
// because other work on a shared machine skews the numbers.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
