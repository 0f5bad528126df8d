package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Kind names a fault.
type Kind string

// Faults a run injects.
const (
	KillRestart   Kind = "kill-restart"     // kill -9 a halb process, restart it after Hold
	PauseShort    Kind = "pause-short"      // SIGSTOP for less than the detection time, then SIGCONT
	PauseLong     Kind = "pause-long"       // SIGSTOP for more than the detection time, then SIGCONT
	LinkFlap      Kind = "link-flap"        // an LB's link down for Hold, then up
	PartitionLBs  Kind = "partition-lbs"    // two LB nodes cannot reach each other for Hold
	PartitionCPs  Kind = "partition-lb-cps" // one LB cannot reach some control planes for Hold
	Netem         Kind = "netem"            // loss and delay on an LB's link for Hold
	CPDie         Kind = "cp-die"           // a control plane's process dies (Via "process") or its host goes silent ("host") for Hold
	CPFlap        Kind = "cp-flap"          // a control plane dies and returns Cycles times
	CPSlow        Kind = "cp-slow"          // a control plane accepts but never answers for Hold
	Drill         Kind = "drill"            // a planned `halb drill` from a standby, during another fault
	ReloadValid   Kind = "reload-valid"     // every LB reloads a changed, valid config
	ReloadInvalid Kind = "reload-invalid"   // one LB is asked to reload a broken config
)

// Kinds lists every fault kind in a fixed order.
var Kinds = []Kind{KillRestart, PauseShort, PauseLong, LinkFlap, PartitionLBs, PartitionCPs,
	Netem, CPDie, CPFlap, CPSlow, Drill, ReloadValid, ReloadInvalid}

// Fault is one planned fault. Targets are lab host names (lb1, cp2, ...);
// a drill's source is picked when it runs (a node not holding the VIP).
type Fault struct {
	Kind    Kind          `json:"kind"`
	Targets []string      `json:"targets,omitempty"`
	Offset  time.Duration `json:"offset_ns"` // start, from the start of its step
	Hold    time.Duration `json:"hold_ns"`   // how long the fault lasts before it is undone
	LossPct int           `json:"loss_pct,omitempty"`
	Delay   time.Duration `json:"delay_ns,omitempty"`
	Cycles  int           `json:"cycles,omitempty"` // cp-flap
	// Via is how a reload is asked for, "cli" (`halb reload`) or "sighup",
	// and how a control plane dies: "process" (connections refused) or
	// "host" (its link goes down: no answer at all, open sessions hang).
	Via string `json:"via,omitempty"`
}

func (f Fault) String() string {
	s := fmt.Sprintf("%s %v hold %s", f.Kind, f.Targets, f.Hold.Round(time.Millisecond))
	if f.Offset > 0 {
		s += fmt.Sprintf(" at +%s", f.Offset.Round(time.Millisecond))
	}
	switch f.Kind {
	case Netem:
		s += fmt.Sprintf(" loss %d%% delay %s", f.LossPct, f.Delay)
	case CPFlap:
		s += fmt.Sprintf(" x%d", f.Cycles)
	case ReloadValid, ReloadInvalid, CPDie:
		s += " via " + f.Via
	}
	return s
}

// End is when the fault is undone, from the start of its step.
func (f Fault) End() time.Duration {
	if f.Kind == CPFlap {
		return f.Offset + time.Duration(f.Cycles)*2*f.Hold
	}
	return f.Offset + f.Hold
}

// Step is one or more faults injected together (overlapping in time),
// after which the cluster must settle and the invariants hold.
type Step struct {
	N      int     `json:"n"` // 1-based
	Faults []Fault `json:"faults"`
}

// Topology names the lab's hosts.
type Topology struct {
	LBs []string
	CPs []string
}

// Plan is what a schedule depends on besides the seed.
type Plan struct {
	Faults  int           // total number of faults (a step with two counts two)
	Detect  time.Duration // the failure-detection time; pauses fall either side of it
	Overlap float64       // chance that a step has a second fault overlapping the first
	Kinds   []Kind        // kinds to draw from; empty means all
}

// Schedule draws the steps of a run from seed: the same seed, plan and
// topology always give the same schedule, so a failure replays.
func Schedule(seed uint64, p Plan, topo Topology) []Step {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	kinds := p.Kinds
	if len(kinds) == 0 {
		kinds = Kinds
	}
	var primary []Kind // a drill only ever comes on top of another fault
	for _, k := range kinds {
		if k != Drill {
			primary = append(primary, k)
		}
	}
	drill := slices.Contains(kinds, Drill)
	if len(primary) == 0 {
		return nil
	}
	var steps []Step
	for n := 0; n < p.Faults; {
		f := draw(r, primary[r.IntN(len(primary))], p.Detect, topo)
		st := Step{N: len(steps) + 1, Faults: []Fault{f}}
		n++
		if n < p.Faults && r.Float64() < p.Overlap {
			var g Fault
			if drill && r.IntN(3) == 0 {
				g = Fault{Kind: Drill}
			} else {
				g = draw(r, primary[r.IntN(len(primary))], p.Detect, topo)
			}
			if compatible(f, g) {
				g.Offset = time.Duration(r.Int64N(int64(f.Hold) + 1))
				st.Faults = append(st.Faults, g)
				n++
			}
		}
		steps = append(steps, st)
	}
	return steps
}

// compatible reports whether g can run alongside f: no host is the target
// of both, so a paused node is never also killed and a whole-cluster
// reload only meets faults of control planes.
func compatible(f, g Fault) bool {
	for _, t := range g.Targets {
		if slices.Contains(f.Targets, t) {
			return false
		}
	}
	return true
}

func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

func pick(r *rand.Rand, from []string) string { return from[r.IntN(len(from))] }

// pickN picks n distinct names from from, in from's order.
func pickN(r *rand.Rand, from []string, n int) []string {
	idx := r.Perm(len(from))[:n]
	slices.Sort(idx)
	out := make([]string, n)
	for i, j := range idx {
		out[i] = from[j]
	}
	return out
}

func draw(r *rand.Rand, k Kind, detect time.Duration, topo Topology) Fault {
	f := Fault{Kind: k}
	switch k {
	case KillRestart:
		f.Targets = []string{pick(r, topo.LBs)}
		f.Hold = between(r, 200*time.Millisecond, 3*time.Second)
	case PauseShort:
		f.Targets = []string{pick(r, topo.LBs)}
		f.Hold = between(r, detect/10, detect/2)
	case PauseLong:
		f.Targets = []string{pick(r, topo.LBs)}
		f.Hold = between(r, 2*detect, 4*detect)
	case LinkFlap:
		f.Targets = []string{pick(r, topo.LBs)}
		f.Hold = between(r, 300*time.Millisecond, 4*time.Second)
	case PartitionLBs:
		f.Targets = pickN(r, topo.LBs, 2)
		f.Hold = between(r, time.Second, 5*time.Second)
	case PartitionCPs:
		f.Targets = append([]string{pick(r, topo.LBs)}, pickN(r, topo.CPs, 1+r.IntN(len(topo.CPs)-1))...)
		f.Hold = between(r, time.Second, 5*time.Second)
	case Netem:
		f.Targets = []string{pick(r, topo.LBs)}
		f.Hold = between(r, 2*time.Second, 5*time.Second)
		f.LossPct = 5 + r.IntN(36)
		f.Delay = between(r, 20*time.Millisecond, 200*time.Millisecond).Round(time.Millisecond)
	case CPDie:
		f.Targets = []string{pick(r, topo.CPs)}
		f.Hold = between(r, time.Second, 4*time.Second)
		f.Via = []string{"process", "host"}[r.IntN(2)]
	case CPFlap:
		f.Targets = []string{pick(r, topo.CPs)}
		f.Hold = between(r, 300*time.Millisecond, 800*time.Millisecond)
		f.Cycles = 2 + r.IntN(3)
	case CPSlow:
		f.Targets = []string{pick(r, topo.CPs)}
		f.Hold = between(r, time.Second, 4*time.Second)
	case ReloadValid:
		f.Targets = slices.Clone(topo.LBs)
		f.Via = []string{"cli", "sighup"}[r.IntN(2)]
	case ReloadInvalid:
		f.Targets = []string{pick(r, topo.LBs)}
		f.Via = []string{"cli", "sighup"}[r.IntN(2)]
	}
	return f
}

// Count tallies a schedule's faults by kind.
func Count(steps []Step) map[Kind]int {
	m := map[Kind]int{}
	for _, s := range steps {
		for _, f := range s.Faults {
			m[f.Kind]++
		}
	}
	return m
}
