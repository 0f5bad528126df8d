package pool

import (
	"io"
	"testing"
	"time"

	"halb/internal/config"
	"halb/internal/health"
)

// The dashboard's HAProxy-style columns: failed checks, up→down
// transitions, total downtime and peak sessions.
func TestStateHistoryCounters(t *testing.T) {
	p := New(backend(config.RoundRobin, 1), discard()) // rise 2, fall 3
	s := p.Servers()[0]
	t0 := time.Date(2025, 1, 2, 3, 4, 0, 0, time.UTC)
	check := func(ok bool, sec int) {
		s.ReportCheck(health.Result{OK: ok, Reason: "r", At: t0.Add(time.Duration(sec) * time.Second)})
	}
	want := func(step string, failed, transitions int64, downtime time.Duration, nowSec int, total time.Duration) {
		t.Helper()
		st := s.Stats()
		got := st.TotalDowntime(t0.Add(time.Duration(nowSec) * time.Second))
		if st.FailedChecks != failed || st.DownTransitions != transitions || st.Downtime != downtime || got != total {
			t.Errorf("%s: failed checks %d, transitions %d, downtime %v, total at +%ds %v; want %d, %d, %v, %v",
				step, st.FailedChecks, st.DownTransitions, st.Downtime, nowSec, got, failed, transitions, downtime, total)
		}
	}

	check(false, 0) // down from the start: downtime runs, but no up→down
	want("down at start", 1, 0, 0, 10, 10*time.Second)
	check(true, 10)
	check(true, 20) // rise 2: up at +20
	want("back up", 1, 0, 20*time.Second, 25, 20*time.Second)
	check(false, 30)
	check(false, 40)
	want("failing, not yet down", 3, 0, 20*time.Second, 45, 20*time.Second)
	check(false, 50) // fall 3: down at +50
	want("down", 4, 1, 20*time.Second, 60, 30*time.Second)
	check(true, 70)
	check(true, 80)
	want("up again", 4, 1, 50*time.Second, 90, 50*time.Second)

	s.MarkDown("connect: connection refused")
	if st := s.Stats(); st.DownTransitions != 2 || st.Up || st.FailedChecks != 4 {
		t.Errorf("passive MarkDown: transitions %d (want 2), up %v, failed checks %d (want 4: not a check)",
			st.DownTransitions, st.Up, st.FailedChecks)
	}
	s.MarkDown("again") // already down: not another transition
	if st := s.Stats(); st.DownTransitions != 2 {
		t.Errorf("MarkDown of a down server counted: %d transitions", st.DownTransitions)
	}
}

func TestPeakSessions(t *testing.T) {
	p := New(backend(config.RoundRobin, 1), discard())
	s := p.Servers()[0]
	var rel []func()
	for range 3 {
		rel = append(rel, s.Track(io.NopCloser(nil)))
	}
	rel[0]()
	rel[1]()
	rel[1]() // twice is harmless, and must not lower the count twice
	s.Track(io.NopCloser(nil))
	if st := s.Stats(); st.PeakActive != 3 || st.Active != 2 || st.Total != 4 {
		t.Errorf("peak %d active %d total %d, want 3, 2, 4", st.PeakActive, st.Active, st.Total)
	}
}
