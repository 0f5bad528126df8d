package round

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"halb/internal/cluster"
	"halb/internal/config"
)

// simNode is one node of a simulated cluster: its facts, what its
// announcer holds and its memory between rounds.
type simNode struct {
	name  string
	prio  int
	local Local
	alive bool
	held  bool
	since time.Time // when held last changed
	mem   Memory
}

// sim is a cluster whose nodes all read the same gossiped states, as
// after gossip has converged.
type sim struct {
	cfg   Config
	now   time.Time
	nodes []*simNode
}

func newSim(r *rand.Rand) *sim {
	s := &sim{now: t0, cfg: Config{Policy: config.Preempt, PreemptDelay: time.Duration(r.IntN(3)) * 300 * time.Millisecond}}
	if r.IntN(2) == 0 {
		s.cfg.Policy = config.Sticky
	}
	n := 1 + r.IntN(5)
	for i := range n {
		name := fmt.Sprintf("n%d", i)
		s.cfg.Nodes = append(s.cfg.Nodes, name)
		nd := &simNode{name: name, prio: 100 * (1 + r.IntN(3)), alive: i == 0 || r.IntN(5) > 0, held: r.IntN(3) == 0,
			local: Local{Started: t0.Add(-time.Hour), HealthKnown: true}}
		nd.since = t0.Add(-time.Duration(r.IntN(3000)) * time.Millisecond)
		nd.mem = Memory{Settled: true}
		if r.IntN(2) == 0 {
			nd.mem.EligibleSince = t0.Add(-time.Duration(r.IntN(2000)) * time.Millisecond)
		}
		if r.IntN(3) == 0 {
			nd.mem.HandoverSince = map[string]time.Time{vipA: t0.Add(-time.Duration(r.IntN(500)) * time.Millisecond)}
		}
		s.nodes = append(s.nodes, nd)
		s.perturb(r, nd)
	}
	return s
}

// perturb changes the facts of one node at random: health, maintenance,
// a drill's yield or boost.
func (s *sim) perturb(r *rand.Rand, nd *simNode) {
	nd.local.Frontends = []Frontend{{Name: "api", Listening: r.IntN(8) > 0, Healthy: r.IntN(3) > 0}}
	nd.local.Maintenance = r.IntN(6) == 0
	nd.local.Drill = Drill{}
	switch r.IntN(8) {
	case 0:
		nd.local.Drill.YieldUntil = s.now.Add(time.Second)
	case 1:
		nd.local.Drill.BoostUntil = s.now.Add(time.Second)
	}
}

func (s *sim) inputs(nd *simNode) Inputs {
	c := s.cfg
	c.Priority = nd.prio
	return Inputs{Now: s.now, Self: nd.name, Ready: true, Config: c, Local: nd.local,
		VIPs: []VIP{{Addr: vipA, Held: nd.held, HeldSince: nd.since}}}
}

// published is what nd gossips this round.
func (s *sim) published(nd *simNode) cluster.State {
	mem := nd.mem.clone()
	return localState(s.inputs(nd), &mem)
}

// view is nd's round inputs, every other node's state as it publishes it.
func (s *sim) view(nd *simNode, states map[string]cluster.State) Inputs {
	in := s.inputs(nd)
	for _, o := range s.nodes {
		m := Member{Name: o.name, Alive: o.alive, Local: o == nd, Since: t0.Add(-time.Hour)}
		if o != nd {
			m.State = states[o.name]
		}
		in.Members = append(in.Members, m)
	}
	return in
}

// round lets every alive node decide, checks the invariants on the plans
// and applies them.
func (s *sim) round(t *testing.T, seed uint64, step int) {
	t.Helper()
	states := map[string]cluster.State{}
	for _, nd := range s.nodes {
		states[nd.name] = s.published(nd)
	}
	plans := map[string]VIPPlan{}
	for _, nd := range s.nodes {
		if !nd.alive {
			continue
		}
		p := Decide(s.view(nd, states), nd.mem)
		plans[nd.name] = only(t, p)
		nd.mem = p.Memory
	}
	var holders, releasing, eligible []string
	owners := map[string]bool{}
	for _, nd := range s.nodes {
		if !nd.alive {
			continue
		}
		owners[plans[nd.name].Owner] = true
		if states[nd.name].Eligible {
			eligible = append(eligible, nd.name)
		}
		if nd.held {
			holders = append(holders, nd.name)
			if plans[nd.name].Action == Release {
				releasing = append(releasing, nd.name)
			}
		}
	}
	where := fmt.Sprintf("seed %d step %d", seed, step)
	// Every node reading the same states elects the same owner.
	if len(owners) > 1 {
		t.Fatalf("%s: nodes elect different owners %v: %+v", where, owners, plans)
	}
	// Never every holder letting go while a node is eligible: one of them
	// keeps the VIP until the new owner holds it.
	if len(eligible) > 0 && len(holders) > 0 && len(releasing) == len(holders) {
		t.Fatalf("%s: holders %v all release while %v are eligible: %+v", where, holders, eligible, plans)
	}
	for _, nd := range s.nodes {
		switch a := plans[nd.name].Action; {
		case !nd.alive:
		case a == Claim && !nd.held:
			nd.held, nd.since = true, s.now
		case a == Release && nd.held:
			nd.held, nd.since = false, s.now
		}
	}
}

// TestPropertyClusterHistories runs random clusters through random
// histories of health changes, maintenance, drills, deaths and time, and
// checks the chaos run's invariants on every round's plans.
func TestPropertyClusterHistories(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 14))
		s := newSim(r)
		for step := range 30 {
			s.round(t, seed, step)
			s.now = s.now.Add(time.Duration(r.IntN(400)) * time.Millisecond)
			switch nd := s.nodes[r.IntN(len(s.nodes))]; r.IntN(4) {
			case 0:
				s.perturb(r, nd)
			case 1:
				if nd != s.nodes[0] {
					// A node dies or comes back: its announcer held
					// nothing across the gap, as after a crash.
					nd.alive, nd.held, nd.mem = !nd.alive, false, Memory{Settled: true}
				}
			}
		}
	}
}

// randomInputs are inputs with no consistency between members at all:
// unreadable states, quorum, key conflicts, drills, the witness.
func randomInputs(r *rand.Rand) (Inputs, Memory) {
	s := newSim(r)
	s.cfg.Quorum = r.IntN(3) == 0
	s.cfg.Witness = r.IntN(3) == 0
	self := s.nodes[0]
	self.local.WitnessReachable = r.IntN(2) == 0
	self.local.Incompatible = r.IntN(2)
	if r.IntN(6) == 0 {
		self.local.Drill.SilencedUntil = s.now.Add(time.Second)
	}
	states := map[string]cluster.State{}
	for _, nd := range s.nodes[1:] {
		states[nd.name] = cluster.State{Priority: nd.prio, Eligible: r.IntN(2) == 0, Stable: r.IntN(2) == 0}
		if r.IntN(3) == 0 {
			states[nd.name] = cluster.State{Priority: nd.prio, Eligible: true, Stable: true, Holds: []string{vipA}}
		}
	}
	in := s.view(self, states)
	for i := range in.Members[1:] {
		in.Members[i+1].StateErr = r.IntN(5) == 0
		in.Members[i+1].Since = s.now.Add(-time.Duration(r.IntN(10)) * time.Second)
	}
	return in, self.mem
}

// A plan claims for an ineligible node only when no alive member is
// eligible (election rule 2: a VIP in front of unhealthy backends beats
// none).
func TestPropertyNoClaimWhileIneligibleUnlessNobodyIs(t *testing.T) {
	for seed := range uint64(1500) {
		in, mem := randomInputs(rand.New(rand.NewPCG(seed, 1)))
		p := Decide(in, mem)
		self := *p.Memory.Published
		if v := only(t, p); v.Action != Claim || self.Eligible {
			continue
		}
		for _, m := range in.Members {
			if m.Alive && !m.Local && !m.StateErr && m.State.Eligible {
				t.Fatalf("seed %d: ineligible %s claims while %s is eligible: %+v", seed, in.Self, m.Name, in)
			}
		}
	}
}

// Same inputs, same plan: the order members are listed in and the run
// change nothing.
func TestPropertySameInputsSamePlan(t *testing.T) {
	for seed := range uint64(1000) {
		r := rand.New(rand.NewPCG(seed, 2))
		in, mem := randomInputs(r)
		want := Decide(in, mem)
		shuffled := in
		shuffled.Members = slices.Clone(in.Members)
		r.Shuffle(len(shuffled.Members), func(i, j int) {
			shuffled.Members[i], shuffled.Members[j] = shuffled.Members[j], shuffled.Members[i]
		})
		for _, got := range []Plan{Decide(in, mem), Decide(shuffled, mem)} {
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("seed %d: plans differ (-first +again):\n%s", seed, diff)
			}
		}
	}
}
