package failbench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"halb/test/benchresult"
)

// Summary is min, median, 90th percentile and max of a sample. The median
// of an even count is the mean of the two middle values; p90 is the
// nearest-rank value (the 9th of 10).
type Summary struct {
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
	Max    float64 `json:"max"`
}

func summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	rank := int(math.Ceil(0.9*float64(n))) - 1
	return Summary{Min: s[0], Median: med, P90: s[rank], Max: s[n-1]}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e5) / 10 }

// FailoverResult is the "failover" part of a results file. A run that
// measured only some systems or scenarios keeps the others measured
// earlier the same day.
type FailoverResult struct {
	Method  string                   `json:"method"`
	Systems map[string]*SystemResult `json:"systems"`
}

// SystemResult is one system's scenarios.
type SystemResult struct {
	Title     string                     `json:"title"`
	WindowMS  float64                    `json:"random_delay_window_ms"`
	Scenarios map[string]*ScenarioResult `json:"scenarios"`
}

// ScenarioResult summarises the repetitions of one scenario on one system.
type ScenarioResult struct {
	Title      string    `json:"title"`
	At         time.Time `json:"at"`
	Quick      bool      `json:"quick"`
	LoadAvg    string    `json:"loadavg_before"` // noise from other work on the machine
	Reps       int       `json:"reps"`           // repetitions measured
	Errors     []string  `json:"errors,omitempty"`
	OutageMS   Summary   `json:"outage_ms"`
	Failed     Summary   `json:"failed_connections"`
	TakeoverMS Summary   `json:"takeover_ms"`
	Runs       []rep     `json:"runs"`
	// LongLived sums up the long-lived connection scenarios.
	LongLived *longLivedSummary `json:"long_lived,omitempty"`
}

func scenarioResult(title string, quick bool, load string, at time.Time, runs []rep, errs []string) *ScenarioResult {
	var out, failed, took []float64
	for _, r := range runs {
		out = append(out, ms(r.Outage))
		failed = append(failed, float64(r.Failed))
		took = append(took, ms(r.Takeover))
	}
	return &ScenarioResult{
		Title: title, At: at, Quick: quick, LoadAvg: load, Reps: len(runs), Errors: errs,
		OutageMS: summarize(out), Failed: summarize(failed), TakeoverMS: summarize(took), Runs: runs,
		LongLived: summarizeLongLived(runs),
	}
}

// loadPart reads key's part of the day's results file into v; a missing
// file or part leaves v as it is.
func loadPart(dir, key string, now time.Time, v any) error {
	path := benchresult.Path(dir, now)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	doc := map[string]json.RawMessage{}
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%s is not a results file (%w); move it away", path, err)
	}
	raw, ok := doc[key]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: part %q: %w", path, key, err)
	}
	return nil
}

// merge overlays what this run measured on what the day's file held.
func (f *FailoverResult) merge(name string, s *SystemResult) {
	if f.Systems == nil {
		f.Systems = map[string]*SystemResult{}
	}
	old := f.Systems[name]
	if old == nil || old.Scenarios == nil {
		f.Systems[name] = s
		return
	}
	old.Title, old.WindowMS = s.Title, s.WindowMS
	for k, v := range s.Scenarios {
		old.Scenarios[k] = v
	}
}

// takeover is the median time until the VIP moved; the baseline moves nothing.
func takeover(sc string, r *ScenarioResult) string {
	if sc == Baseline {
		return "—"
	}
	return fmt.Sprintf("%.0f", r.TakeoverMS.Median)
}

func fmtSummary(s Summary, digits int) string {
	f := func(x float64) string { return fmt.Sprintf("%.*f", digits, x) }
	return f(s.Min) + " / " + f(s.Median) + " / " + f(s.P90) + " / " + f(s.Max)
}

// rows yields the table rows in a stable order: scenarios, then systems.
func (f *FailoverResult) rows(yield func(sc, sys string, r *ScenarioResult)) {
	for _, sc := range AllScenarios() {
		for _, sys := range AllSystems() {
			s := f.Systems[sys]
			if s == nil {
				continue
			}
			if r := s.Scenarios[sc]; r != nil {
				yield(sc, sys, r)
			}
		}
	}
}

// WriteTable prints the results as an aligned text table.
func (f *FailoverResult) WriteTable(w io.Writer) {
	_, _ = fmt.Fprintf(w, "%-9s %-19s %4s  %-31s %-21s %s\n", "scenario", "system", "reps", "outage ms min/med/p90/max", "failed min/med/p90/max", "takeover ms median")
	f.rows(func(sc, sys string, r *ScenarioResult) {
		if l := r.LongLived; l != nil {
			_, _ = fmt.Fprintf(w, "%-9s %-19s %4d  failed median %.0f ms, max %.0f ms; new connection works median %.0f ms, max %.0f ms; never told %d; takeover %s\n",
				sc, sys, r.Reps, l.FailedMedian.Median, l.FailedMax.Max, l.RecoveredMed.Median, l.RecoveredMax.Max, l.StillOpen, takeover(sc, r))
			return
		}
		note := ""
		if len(r.Errors) > 0 {
			note = fmt.Sprintf("  (%d attempt(s) not measured)", len(r.Errors))
		}
		_, _ = fmt.Fprintf(w, "%-9s %-19s %4d  %-31s %-21s %s%s\n", sc, sys, r.Reps, fmtSummary(r.OutageMS, 0), fmtSummary(r.Failed, 0), takeover(sc, r), note)
	})
}

// Markdown renders the results as a markdown table with its legend.
func (f *FailoverResult) Markdown() string {
	var b strings.Builder
	titles := scenarioTitles()
	header := func() {
		if b.Len() == 0 {
			b.WriteString("| scenario | system | reps | outage ms (min / median / p90 / max) | failed connections (min / median / p90 / max) | VIP moved after, ms (median) |\n|---|---|---:|---|---|---:|\n")
		}
	}
	f.rows(func(sc, sys string, r *ScenarioResult) {
		if r.LongLived != nil {
			return // their own table below
		}
		header()
		reps := fmt.Sprint(r.Reps)
		if r.Quick {
			reps += " (quick)"
		}
		if len(r.Errors) > 0 {
			reps += fmt.Sprintf(" + %d not measured", len(r.Errors))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", titles[sc], sys, reps, fmtSummary(r.OutageMS, 0), fmtSummary(r.Failed, 0), takeover(sc, r))
	})
	if b.Len() > 0 {
		b.WriteString("\n")
	}
	b.WriteString("Systems: ")
	var parts []string
	for _, sys := range AllSystems() {
		if s := f.Systems[sys]; s != nil {
			parts = append(parts, fmt.Sprintf("`%s` = %s (failure moment spread over %.0f ms)", sys, s.Title, s.WindowMS))
		}
	}
	b.WriteString(strings.Join(parts, "; ") + ".\n")
	b.WriteString(f.longLivedMarkdown())
	return b.String()
}
