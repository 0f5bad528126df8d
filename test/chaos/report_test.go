package chaos

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0, time.Millisecond}, {50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}} {
		if got := Percentile(ds, c.p); got != c.want {
			t.Errorf("p%g = %s, want %s", c.p, got, c.want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

func TestSummarizeAndWrite(t *testing.T) {
	kill := Fault{Kind: KillRestart, Targets: []string{"lb1"}, Hold: time.Second}
	cp := Fault{Kind: CPDie, Targets: []string{"cp1"}, Hold: time.Second, Via: "host"}
	recs := []Record{
		{Step: Step{N: 1, Faults: []Fault{kill}}, Outage: 900 * time.Millisecond},
		{Step: Step{N: 2, Faults: []Fault{kill, cp}}, Outage: 1500 * time.Millisecond,
			Violations: []Violation{{Invariant: InvReach, Detail: "VIP:6443 not reached"}}},
		{Step: Step{N: 3, Faults: []Fault{cp}}, Outage: 100 * time.Millisecond},
		{Step: Step{N: 4, Faults: []Fault{cp}}, Outage: 9 * time.Second, Load: 40, Overloaded: true,
			Violations: []Violation{{Invariant: InvReach, Detail: "VIP:50000 not reached"}}},
	}
	s := Summarize(recs)
	if s.Faults != 5 || s.Steps != 4 || s.Violations != 2 || s.ByInvariant[InvReach] != 2 ||
		s.OverloadedSteps != 1 || s.OverloadedViolations != 1 {
		t.Fatalf("summary %+v", s)
	}
	k := s.ByKind[KillRestart]
	if k.Count != 2 || k.Violations != 1 || k.Min != 900*time.Millisecond || k.Max != 1500*time.Millisecond {
		t.Fatalf("kill-restart stats %+v", k)
	}
	rep := Report{Seed: 5, Steps: recs, Summary: s, Replay: "halb-lab chaos --seed 5"}
	var txt bytes.Buffer
	if err := rep.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"seed 5", "kill-restart", "violations: 2 reach=2", "1 steps began with a load average over 4 per CPU; 1 violations", "* load 40 step 4", "step 2 (kill-restart [lb1] hold 1s + cp-die [cp1] hold 1s via host): reach", "replay: halb-lab chaos --seed 5"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, txt.String())
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Seed != 5 || len(back.Steps) != 4 || back.Steps[1].Violations[0].Invariant != InvReach {
		t.Fatalf("JSON round trip lost data: %+v", back)
	}
}
