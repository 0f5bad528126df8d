package chaos

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

var topo = Topology{LBs: []string{"lb1", "lb2", "lb3"}, CPs: []string{"cp1", "cp2", "cp3"}}

func plan(n int) Plan { return Plan{Faults: n, Detect: time.Second, Overlap: 0.3} }

func TestScheduleReplays(t *testing.T) {
	a := Schedule(42, plan(300), topo)
	b := Schedule(42, plan(300), topo)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave two different schedules")
	}
	if c := Schedule(43, plan(300), topo); reflect.DeepEqual(a, c) {
		t.Fatal("seeds 42 and 43 gave the same schedule")
	}
}

func TestScheduleCountsAndCovers(t *testing.T) {
	steps := Schedule(7, plan(1000), topo)
	total, overlapped := 0, 0
	for i, st := range steps {
		if st.N != i+1 {
			t.Fatalf("step %d is numbered %d", i+1, st.N)
		}
		if len(st.Faults) > 1 {
			overlapped++
		}
		total += len(st.Faults)
	}
	if total != 1000 {
		t.Fatalf("%d faults scheduled, want 1000", total)
	}
	if overlapped < 100 {
		t.Errorf("only %d of %d steps overlap two faults at overlap 0.3", overlapped, len(steps))
	}
	counts := Count(steps)
	for _, k := range Kinds {
		if counts[k] == 0 {
			t.Errorf("no %s fault in 1000", k)
		}
	}
}

func TestScheduleRules(t *testing.T) {
	detect := time.Second
	for _, st := range Schedule(99, plan(2000), topo) {
		if st.Faults[0].Kind == Drill {
			t.Fatalf("step %d: a drill alone; it must come during another fault", st.N)
		}
		if len(st.Faults) == 2 {
			f, g := st.Faults[0], st.Faults[1]
			for _, x := range g.Targets {
				if slices.Contains(f.Targets, x) {
					t.Fatalf("step %d: %s and %s both target %s", st.N, f, g, x)
				}
			}
			if g.Offset > f.Hold {
				t.Fatalf("step %d: %s starts after %s ended", st.N, g, f)
			}
		}
		for _, f := range st.Faults {
			switch f.Kind {
			case PauseShort:
				if f.Hold >= detect {
					t.Fatalf("short pause %s is not under the detection time %s", f.Hold, detect)
				}
			case PauseLong:
				if f.Hold <= detect {
					t.Fatalf("long pause %s is not over the detection time %s", f.Hold, detect)
				}
			case PartitionCPs:
				if n := len(f.Targets) - 1; n < 1 || n >= len(topo.CPs) {
					t.Fatalf("%s cuts %d control planes, want some but not all", f, n)
				}
			case Netem:
				if f.LossPct < 1 || f.Delay <= 0 {
					t.Fatalf("%s: no loss or delay", f)
				}
			case CPFlap:
				if f.Cycles < 2 {
					t.Fatalf("%s: a flap needs two cycles", f)
				}
			}
		}
	}
}

func TestScheduleKinds(t *testing.T) {
	p := plan(50)
	p.Kinds = []Kind{CPDie, Drill}
	got := Count(Schedule(1, p, topo))
	if got[CPDie]+got[Drill] != 50 || len(got) > 2 {
		t.Fatalf("kinds %v from a plan of cp-die and drill", got)
	}
	p.Kinds = []Kind{Drill}
	if s := Schedule(1, p, topo); len(s) != 0 {
		t.Fatalf("drills alone scheduled %d steps, want none", len(s))
	}
}
