package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// Config is what a run depends on besides the lab.
type Config struct {
	Seed   uint64
	Plan   Plan
	Bounds Bounds
	// Settle is the longest wait for one agreed holder after a step.
	Settle time.Duration
	// MaxDuration ends the run early, before a step that would start
	// after it; 0 means no limit.
	MaxDuration time.Duration
	// API and Talos are the VIP's ports the client reaches.
	API, Talos netip.AddrPort
	// LongLived is the number of keep-alive connections kept open through
	// the VIP for the whole run.
	LongLived int
	// Replay is the command that replays the run, kept in the report.
	Replay string
	// Out is where the JSON report is written, every ten steps and at the
	// end; "" writes none.
	Out string
}

// ErrStopped says a run ended before its last fault for a reason other
// than Config.MaxDuration: the context ended or the lab broke.
var ErrStopped = errors.New("chaos run stopped early")

// Runner injects a schedule of faults into a lab, one step at a time,
// and judges the cluster after each step.
type Runner struct {
	cfg  Config
	lab  Lab
	topo Topology
	log  *slog.Logger

	start time.Time
	macs  map[string]string
	base  map[string]Baseline
	drain bool // the valid-reload toggle: drain 3s instead of 2s

	mu       sync.Mutex
	timeline []Event
	requests []request // long-lived connections' requests
}

// NewRunner returns a runner of cfg on l, whose hosts topo names.
func NewRunner(cfg Config, l Lab, topo Topology, log *slog.Logger) *Runner {
	return &Runner{cfg: cfg, lab: l, topo: topo, log: log, macs: map[string]string{}, base: map[string]Baseline{}}
}

// Run injects the schedule drawn from the seed and returns the report.
// The lab must be up and settled. A run that ends early says why in
// Report.Stopped and, unless it ran out of Config.MaxDuration, returns
// the report with an error wrapping ErrStopped. Whatever a step did to
// the lab is undone before Run returns, also when ctx ends.
func (r *Runner) Run(ctx context.Context) (*Report, error) {
	r.start = time.Now()
	steps := Schedule(r.cfg.Seed, r.cfg.Plan, r.topo)
	rep := &Report{Seed: r.cfg.Seed, Faults: r.cfg.Plan.Faults, LBs: len(r.topo.LBs), Detect: r.cfg.Plan.Detect,
		Bounds: r.cfg.Bounds, Start: r.start, Replay: r.cfg.Replay}
	r.log.Info("chaos run", "seed", r.cfg.Seed, "faults", r.cfg.Plan.Faults, "steps", len(steps), "report", r.cfg.Out)
	for _, n := range r.topo.LBs {
		mac, err := r.lab.MAC(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("read the MAC of %s: %w", n, err)
		}
		r.macs[n] = mac
	}
	llCtx, llStop := context.WithCancel(ctx)
	var ll sync.WaitGroup
	r.longLived(llCtx, &ll)
	rep.Stopped = r.runSteps(ctx, steps, rep)
	llStop()
	ll.Wait()
	for _, n := range r.topo.LBs {
		rep.Baseline = append(rep.Baseline, r.base[n])
	}
	r.write(rep)
	if rep.Stopped != "" && !strings.HasPrefix(rep.Stopped, maxDurationStop) {
		return rep, fmt.Errorf("%w: %s", ErrStopped, rep.Stopped)
	}
	return rep, nil
}

const maxDurationStop = "--max-duration"

// runSteps runs steps until they are done, ctx ends, the run's time is up
// or the lab breaks, and returns why it stopped ("" when done).
func (r *Runner) runSteps(ctx context.Context, steps []Step, rep *Report) string {
	for _, st := range steps {
		if ctx.Err() != nil {
			return "interrupted"
		}
		if r.cfg.MaxDuration > 0 && time.Since(r.start) > r.cfg.MaxDuration {
			return fmt.Sprintf("%s %s reached", maxDurationStop, r.cfg.MaxDuration)
		}
		rec, err := r.step(ctx, st)
		if ctx.Err() != nil {
			// What was seen while shutting down says nothing about halb.
			return "interrupted"
		}
		rep.Steps = append(rep.Steps, rec)
		rep.Injected += len(rec.Step.Faults)
		r.logStep(rec)
		if err != nil {
			return err.Error()
		}
		if st.N%10 == 0 {
			r.write(rep)
		}
	}
	return ""
}

func (r *Runner) logStep(rec Record) {
	status := "ok"
	if len(rec.Violations) > 0 {
		status = fmt.Sprintf("%d VIOLATIONS", len(rec.Violations))
	}
	faults := Describe(rec.Step)
	r.log.Info("step", "n", rec.Step.N, "faults", faults, "outage", rec.Outage.Round(time.Millisecond), "result", status)
	for _, v := range rec.Violations {
		r.log.Warn("violation", "step", rec.Step.N, "faults", faults, "invariant", v.Invariant, "detail", v.Detail)
	}
}

// Describe names a step's faults in one line.
func Describe(st Step) string {
	parts := make([]string, len(st.Faults))
	for i, f := range st.Faults {
		parts[i] = f.String()
	}
	return strings.Join(parts, " + ")
}

// write saves the report so far, by rename so a reader never sees half.
func (r *Runner) write(rep *Report) {
	rep.End = time.Now()
	rep.Summary = Summarize(rep.Steps)
	if r.cfg.Out == "" {
		return
	}
	if err := writeReport(rep, r.cfg.Out); err != nil {
		r.log.Error("write report", "err", err)
	}
}

func writeReport(rep *Report, path string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	err = rep.WriteJSON(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename report into place: %w", err)
	}
	return nil
}

func (r *Runner) event(format string, args ...any) {
	r.mu.Lock()
	r.timeline = append(r.timeline, Event{At: time.Since(r.start), What: fmt.Sprintf(format, args...)})
	r.mu.Unlock()
}

// takeTimeline returns the events so far and starts a new timeline.
func (r *Runner) takeTimeline() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.timeline
	r.timeline = nil
	return t
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
