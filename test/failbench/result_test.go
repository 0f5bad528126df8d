package failbench

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"halb/test/benchresult"
	"halb/test/lab"
)

func TestSummarize(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"one", []float64{7}, Summary{7, 7, 7, 7}},
		{"ten unsorted", []float64{10, 1, 9, 2, 8, 3, 7, 4, 6, 5}, Summary{1, 5.5, 9, 10}},
		{"three", []float64{300, 100, 200}, Summary{100, 200, 300, 300}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.in); got != tt.want {
				t.Fatalf("summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

// A run of one scenario keeps the other scenarios and systems measured
// earlier the same day, in the file and in the tables.
func TestMergeKeepsEarlierScenarios(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	runs := func(outages ...time.Duration) []rep {
		var rs []rep
		for _, o := range outages {
			rs = append(rs, rep{Outage: o, Failed: 2, Takeover: o / 2})
		}
		return rs
	}
	first := &FailoverResult{}
	first.merge(HalbLAN, &SystemResult{Title: "halb lan", WindowMS: 200, Scenarios: map[string]*ScenarioResult{
		Kill:    scenarioResult("kill", false, "1.0", now, runs(time.Second, 2*time.Second, 3*time.Second), nil),
		Planned: scenarioResult("planned", false, "1.0", now, runs(10*time.Millisecond), nil),
	}})
	first.merge(KeepalivedDef, &SystemResult{Title: "keepalived", WindowMS: 1000, Scenarios: map[string]*ScenarioResult{
		Kill: scenarioResult("kill", false, "1.0", now, runs(3*time.Second), nil),
	}})
	if _, err := benchresult.Merge(dir, "failover", benchresult.Machine{}, first, now); err != nil {
		t.Fatal(err)
	}

	var again FailoverResult
	if err := loadPart(dir, "failover", now, &again); err != nil {
		t.Fatal(err)
	}
	again.merge(HalbLAN, &SystemResult{Title: "halb lan", WindowMS: 200, Scenarios: map[string]*ScenarioResult{
		Kill: scenarioResult("kill", true, "2.0", now, runs(500*time.Millisecond), []string{"boom"}),
	}})
	if got := again.Systems[HalbLAN].Scenarios[Kill]; got.Reps != 1 || got.OutageMS.Median != 500 || !got.Quick {
		t.Errorf("kill on halb-lan was not replaced: %+v", got)
	}
	if got := again.Systems[HalbLAN].Scenarios[Planned]; got == nil || got.OutageMS.Median != 10 {
		t.Errorf("planned on halb-lan was lost: %+v", got)
	}
	if again.Systems[KeepalivedDef] == nil {
		t.Error("keepalived-default was lost")
	}

	md := again.Markdown()
	for _, want := range []string{"| hard kill of the holder", "| halb-lan | 1 (quick) + 1 not measured | 500 / 500 / 500 / 500 |", "| keepalived-default | 1 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	var tb bytes.Buffer
	again.WriteTable(&tb)
	if lines := strings.Split(strings.TrimSpace(tb.String()), "\n"); len(lines) != 4 {
		t.Errorf("table has %d lines, want a header and 3 rows:\n%s", len(lines), tb.String())
	}
}

func TestLoadPartMissingFile(t *testing.T) {
	var f FailoverResult
	if err := loadPart(t.TempDir(), "failover", time.Now(), &f); err != nil || f.Systems != nil {
		t.Fatalf("missing file: %v %+v", err, f)
	}
}

// Each held connection counts from the cut; one never told, or never
// replaced, counts at the bound, so a system that leaves its clients
// blind shows the bound, not a flattering median of the few it told.
func TestLongLivedOutcome(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	res := []lab.LongLivedConn{
		{Failed: at(200), Recovered: at(300)},
		{Failed: at(250), Recovered: at(400)},
		{Failed: at(900)}, // never replaced
		{},                // never told
	}
	got := longLivedOutcome(t0, res, 15*time.Second)
	want := &longLivedRep{
		Conns: 4, StillOpen: 1, NotRecovered: 1,
		FailedMS:    Summary{Min: 200, Median: 575, P90: 15000, Max: 15000},
		RecoveredMS: Summary{Min: 300, Median: 7700, P90: 15000, Max: 15000},
	}
	if *got != *want {
		t.Errorf("outcome %+v, want %+v", *got, *want)
	}
	s := summarizeLongLived([]rep{{LongLived: got}, {LongLived: got}})
	if s.StillOpen != 2 || s.FailedMax.Max != 15000 || s.RecoveredMed.Median != 7700 {
		t.Errorf("summary %+v", *s)
	}
}

// The long-lived scenarios inject the same failures as kill and
// linkdown, measured on held connections, and run at most
// longLivedReps times.
func TestLongLivedScenarios(t *testing.T) {
	r := &runner{}
	for _, name := range []string{LongKill, LongLinkDown} {
		sc, err := r.scenario(name)
		if err != nil || !sc.longLived || sc.inject == nil || sc.repair == nil || sc.to != standby {
			t.Errorf("scenario %s: %+v, %v; want a long-lived failure of %s moving to %s", name, sc, err, preferred, standby)
		}
	}
	if sc, _ := r.scenario(Kill); sc.longLived {
		t.Error("kill measures long-lived connections, want probes")
	}
	if got := longLivedRepsFor(LongKill, 10); got != longLivedReps {
		t.Errorf("reps of %s = %d, want %d", LongKill, got, longLivedReps)
	}
	if got := longLivedRepsFor(Kill, 10); got != 10 {
		t.Errorf("reps of %s = %d, want 10", Kill, got)
	}
}
