package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// Event is one line of a step's timeline.
type Event struct {
	At   time.Duration `json:"at_ns"` // from the start of the run
	What string        `json:"what"`
}

// Record is one step of a run: what was injected, what happened, what broke.
type Record struct {
	Step       Step          `json:"step"`
	Start      time.Time     `json:"start"`
	Outage     time.Duration `json:"outage_ns"`  // the client's longest gap without a new connection, on any port
	Load       float64       `json:"load1"`      // the host's 1-minute load average when the step began
	Overloaded bool          `json:"overloaded"` // Load was over OverloadFactor per CPU: timing bounds mean little
	Timeline   []Event       `json:"timeline"`
	Observed   Observation   `json:"observed"`
	Violations []Violation   `json:"violations,omitempty"`
}

// Report is a whole run, as written to the JSON file.
type Report struct {
	Seed     uint64        `json:"seed"`
	Faults   int           `json:"faults"` // asked for
	Injected int           `json:"injected"`
	LBs      int           `json:"lbs"`
	Detect   time.Duration `json:"detect_ns"`
	Bounds   Bounds        `json:"bounds"`
	Start    time.Time     `json:"start"`
	End      time.Time     `json:"end"`
	Stopped  string        `json:"stopped,omitempty"` // why the run ended early
	Replay   string        `json:"replay"`            // the command that replays it
	Steps    []Record      `json:"steps"`
	Summary  Summary       `json:"summary"`
	Baseline []Baseline    `json:"baseline,omitempty"`
}

// KindStats are the outages seen in the steps that had a fault of one kind.
type KindStats struct {
	Count      int           `json:"count"`
	Violations int           `json:"violations"`
	Min        time.Duration `json:"outage_min_ns"`
	Median     time.Duration `json:"outage_median_ns"`
	P99        time.Duration `json:"outage_p99_ns"`
	Max        time.Duration `json:"outage_max_ns"`
}

// OverloadFactor is the 1-minute load average per CPU above which a step
// counts as overloaded: the host then runs halb's timers late, and timing
// invariants break for reasons of the host, not of halb.
const OverloadFactor = 4

// Summary totals a run.
type Summary struct {
	Faults      int                `json:"faults"`
	Steps       int                `json:"steps"`
	ByKind      map[Kind]KindStats `json:"by_kind"`
	ByInvariant map[string]int     `json:"by_invariant"`
	Violations  int                `json:"violations"`
	// Overloaded counts the steps taken under overload and the violations
	// seen in them (included in Violations).
	OverloadedSteps      int `json:"overloaded_steps"`
	OverloadedViolations int `json:"overloaded_violations"`
}

// Summarize totals records; a step's outage counts for every kind in it.
func Summarize(recs []Record) Summary {
	s := Summary{Steps: len(recs), ByKind: map[Kind]KindStats{}, ByInvariant: map[string]int{}}
	outages := map[Kind][]time.Duration{}
	for _, r := range recs {
		for _, v := range r.Violations {
			s.ByInvariant[v.Invariant]++
		}
		s.Violations += len(r.Violations)
		if r.Overloaded {
			s.OverloadedSteps++
			s.OverloadedViolations += len(r.Violations)
		}
		for _, f := range r.Step.Faults {
			s.Faults++
			k := s.ByKind[f.Kind]
			k.Count++
			if len(r.Violations) > 0 {
				k.Violations++
			}
			s.ByKind[f.Kind] = k
			outages[f.Kind] = append(outages[f.Kind], r.Outage)
		}
	}
	for kind, ds := range outages {
		k := s.ByKind[kind]
		slices.Sort(ds)
		k.Min, k.Max = ds[0], ds[len(ds)-1]
		k.Median = Percentile(ds, 50)
		k.P99 = Percentile(ds, 99)
		s.ByKind[kind] = k
	}
	return s
}

// Percentile returns the p-th percentile of sorted ds (nearest rank).
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

// WriteText prints the summary for people: faults and outages by kind,
// then every violation with its step.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	fmt.Fprintf(&b, "chaos: seed %d, %d faults in %d steps over %s, %d LB nodes\n",
		r.Seed, r.Summary.Faults, r.Summary.Steps, r.End.Sub(r.Start).Round(time.Second), r.LBs)
	if r.Stopped != "" {
		fmt.Fprintf(&b, "stopped early: %s\n", r.Stopped)
	}
	fmt.Fprintf(&b, "%-17s %6s %5s %9s %9s %9s %9s\n", "kind", "faults", "viol", "min", "median", "p99", "max")
	kinds := make([]Kind, 0, len(r.Summary.ByKind))
	for k := range r.Summary.ByKind {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return kinds[i] < kinds[j] })
	for _, k := range kinds {
		s := r.Summary.ByKind[k]
		fmt.Fprintf(&b, "%-17s %6d %5d %9s %9s %9s %9s\n", k, s.Count, s.Violations, ms(s.Min), ms(s.Median), ms(s.P99), ms(s.Max))
	}
	fmt.Fprintf(&b, "violations: %d", r.Summary.Violations)
	for _, inv := range sortedKeys(r.Summary.ByInvariant) {
		fmt.Fprintf(&b, " %s=%d", inv, r.Summary.ByInvariant[inv])
	}
	b.WriteString("\n")
	if r.Summary.OverloadedSteps > 0 {
		fmt.Fprintf(&b, "overloaded host: %d steps began with a load average over %d per CPU; %d violations came in them (marked *)\n",
			r.Summary.OverloadedSteps, OverloadFactor, r.Summary.OverloadedViolations)
	}
	for _, rec := range r.Steps {
		mark := ""
		if rec.Overloaded {
			mark = fmt.Sprintf("* load %.0f ", rec.Load)
		}
		for _, v := range rec.Violations {
			fmt.Fprintf(&b, "  %sstep %d (%s): %s\n", mark, rec.Step.N, describe(rec.Step), v)
		}
	}
	fmt.Fprintf(&b, "replay: %s\n", r.Replay)
	_, err := io.WriteString(w, b.String())
	return err
}

func describe(s Step) string {
	parts := make([]string, len(s.Faults))
	for i, f := range s.Faults {
		parts[i] = f.String()
	}
	return strings.Join(parts, " + ")
}

// WriteJSON writes the whole report, indented.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write chaos report: %w", err)
	}
	return nil
}
