package failbench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"halb/test/fakecp"
	"halb/test/lab"
)

// Long-lived connection scenarios (issue 17): idle connections through
// the VIP, no keep-alive, when the holder dies.
const (
	LongKill     = "longlived-kill"
	LongLinkDown = "longlived-linkdown"
)

// Bounds of a long-lived repetition.
const (
	// longLivedConns is how many idle connections the client holds.
	longLivedConns = 1000
	// longLivedBound is how long after the cut a connection may stay open
	// before it counts as never told: a client without keep-alive waits
	// forever, so the number is the bound, not a measurement.
	longLivedBound = 15 * time.Second
	// longLivedReps caps the repetitions: one takes about as long as the
	// bound for a system that does not tell its clients.
	longLivedReps = 5
)

func isLongLived(sc string) bool { return sc == LongKill || sc == LongLinkDown }

// longLivedRep is what one long-lived repetition measured, per connection
// from the cut: when its read failed and when a new connection answered.
type longLivedRep struct {
	Conns        int     `json:"conns"`
	StillOpen    int     `json:"still_open"`    // not failed within the bound
	NotRecovered int     `json:"not_recovered"` // failed, but no new connection worked within the bound
	FailedMS     Summary `json:"failed_after_cut_ms"`
	RecoveredMS  Summary `json:"recovered_after_cut_ms"`
}

// longLivedSummary sums the repetitions up: the per-repetition medians
// and maxima, each summarised over the repetitions.
type longLivedSummary struct {
	Conns        int     `json:"conns"`
	StillOpen    int     `json:"still_open"` // over all repetitions
	NotRecovered int     `json:"not_recovered"`
	FailedMedian Summary `json:"failed_median_ms"`
	FailedMax    Summary `json:"failed_max_ms"`
	RecoveredMed Summary `json:"recovered_median_ms"`
	RecoveredMax Summary `json:"recovered_max_ms"`
	BoundMS      float64 `json:"bound_ms"`
}

func summarizeLongLived(runs []rep) *longLivedSummary {
	var s longLivedSummary
	var fmed, fmax, rmed, rmax []float64
	for _, r := range runs {
		if r.LongLived == nil {
			continue
		}
		l := r.LongLived
		s.Conns = l.Conns
		s.StillOpen += l.StillOpen
		s.NotRecovered += l.NotRecovered
		fmed, fmax = append(fmed, l.FailedMS.Median), append(fmax, l.FailedMS.Max)
		rmed, rmax = append(rmed, l.RecoveredMS.Median), append(rmax, l.RecoveredMS.Max)
	}
	if len(fmed) == 0 {
		return nil
	}
	s.FailedMedian, s.FailedMax = summarize(fmed), summarize(fmax)
	s.RecoveredMed, s.RecoveredMax = summarize(rmed), summarize(rmax)
	s.BoundMS = ms(longLivedBound)
	return &s
}

// longLivedOutcome turns what happened to each connection into a
// repetition's numbers; a connection still open, or never replaced, at
// the bound counts at the bound.
func longLivedOutcome(t0 time.Time, res []lab.LongLivedConn, bound time.Duration) *longLivedRep {
	out := &longLivedRep{Conns: len(res)}
	var failed, recovered []float64
	for _, c := range res {
		f, r := bound, bound
		switch {
		case c.Failed.IsZero():
			out.StillOpen++
		case c.Recovered.IsZero():
			out.NotRecovered++
			f = c.Failed.Sub(t0)
		default:
			f, r = c.Failed.Sub(t0), c.Recovered.Sub(t0)
		}
		failed, recovered = append(failed, ms(f)), append(recovered, ms(r))
	}
	out.FailedMS, out.RecoveredMS = summarize(failed), summarize(recovered)
	return out
}

// onceLongLived runs one long-lived repetition of sc: the client holds
// the connections through the preferred node, the failure is injected,
// and each connection is watched until it failed and a new one works.
func (r *runner) onceLongLived(ctx context.Context, sc scenario) (rep, error) {
	if err := r.settled(ctx, preferred); err != nil {
		return rep{}, fmt.Errorf("before the repetition: %w", err)
	}
	cfg, err := r.l.ClientTLS(fakecp.KubeAdmin)
	if err != nil {
		return rep{}, err
	}
	cfg.ServerName = lab.VIP().String()
	cfg.NextProtos = []string{"http/1.1"}
	held, err := r.l.HoldLongLived(ctx, vipAPI(), cfg, longLivedConns)
	if err != nil {
		return rep{}, err
	}
	defer held.Close()
	// halb's standby must have the holder's table: it is shared every
	// 200 ms; give it a few rounds (keepalived has nothing to wait for).
	time.Sleep(time.Second)
	delay := time.Duration(r.rnd.Int64N(int64(r.window)))
	time.Sleep(delay)
	held.Watch(ctx, longLivedBound)
	t0 := time.Now()
	if err := sc.inject(ctx, r); err != nil {
		held.Close()
		held.Wait()
		return rep{}, fmt.Errorf("inject: %w", err)
	}
	_, err = r.l.WaitHolder(ctx, takeoverBound, sc.done)
	took := time.Since(t0)
	res := held.Wait()
	if err != nil {
		return rep{}, fmt.Errorf("after %s: %w", took.Round(time.Millisecond), err)
	}
	out := rep{Takeover: took, Delay: delay, Attempts: len(res), LongLived: longLivedOutcome(t0, res, longLivedBound)}
	out.Failed = out.LongLived.StillOpen
	if sc.repair != nil {
		if err := sc.repair(ctx, r); err != nil {
			return out, fmt.Errorf("repair: %w", err)
		}
	}
	return out, nil
}

// longLivedMarkdown is the table of the long-lived scenarios.
func (f *FailoverResult) longLivedMarkdown() string {
	var b strings.Builder
	titles := scenarioTitles()
	f.rows(func(sc, sys string, r *ScenarioResult) {
		l := r.LongLived
		if l == nil {
			return
		}
		if b.Len() == 0 {
			fmt.Fprintf(&b, "\nLong-lived connections: %d idle connections through the VIP (TLS, one request answered, no keep-alive); per connection, "+
				"the time from the failure until its read failed and until a new connection answered a request; per repetition the median and the "+
				"maximum, shown as min / median / max over the repetitions. A connection not told within %.0f s counts as %.0f s.\n\n",
				l.Conns, l.BoundMS/1000, l.BoundMS/1000)
			b.WriteString("| scenario | system | reps | failed, median ms | failed, max ms | new connection works, median ms | new connection works, max ms | never told | VIP moved after, ms (median) |\n|---|---|---:|---|---|---|---|---:|---:|\n")
		}
		three := func(s Summary) string { return fmt.Sprintf("%.0f / %.0f / %.0f", s.Min, s.Median, s.Max) }
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %d | %.0f |\n", titles[sc], sys, r.Reps,
			three(l.FailedMedian), three(l.FailedMax), three(l.RecoveredMed), three(l.RecoveredMax), l.StillOpen, r.TakeoverMS.Median)
	})
	return b.String()
}

// longLivedRepsFor caps the repetitions of a long-lived scenario.
func longLivedRepsFor(sc string, reps int) int {
	if isLongLived(sc) {
		return min(reps, longLivedReps)
	}
	return reps
}
