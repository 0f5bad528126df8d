package failbench

import (
	"testing"
	"time"
)

func TestFreshWorkingAfterIsTheFirstWorkingStartAfterTheFailure(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	p := &freshProbe{worked: []freshTry{
		{start: at(-5), end: at(1)},    // begun before the failure: says nothing of the new path
		{start: at(2), end: at(4)},     // begun before the failure was in place (from = 3)
		{start: at(150), end: at(260)}, // the storm delayed its end
		{start: at(140), end: at(300)}, // began first: the path was there at 140
		{start: at(170), end: at(175)},
	}}
	got, ok := p.workingAfter(t0, at(3))
	if !ok || got != 140*time.Millisecond {
		t.Fatalf("workingAfter = %v, %v; want 140ms, true", got, ok)
	}
	empty := &freshProbe{worked: []freshTry{{start: at(-5), end: at(1)}}}
	if got, ok := empty.workingAfter(t0, t0); ok {
		t.Fatalf("no attempt begun after the failure worked, yet workingAfter = %v, true", got)
	}
}

func TestSummaryPairsRecoveryWithFreshPerRepetition(t *testing.T) {
	runs := []rep{
		{LongLived: &longLivedRep{Conns: 1, RecoveredMS: Summary{Median: 300}, FreshMS: 150}},
		{LongLived: &longLivedRep{Conns: 1, RecoveredMS: Summary{Median: 200}, FreshMS: 140}},
		{LongLived: &longLivedRep{Conns: 1, RecoveredMS: Summary{Median: 250}, FreshMS: 170}},
	}
	s := summarizeLongLived(runs)
	// Per repetition 150, 60, 80: the median is 80, not 250 − 150.
	if s.OverFresh.Median != 80 || s.OverFresh.Min != 60 || s.OverFresh.Max != 150 {
		t.Fatalf("OverFresh = %+v, want min 60, median 80, max 150", s.OverFresh)
	}
	if s.Fresh.Median != 150 {
		t.Fatalf("Fresh median = %v, want 150", s.Fresh.Median)
	}
}
