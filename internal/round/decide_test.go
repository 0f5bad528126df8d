package round

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"halb/internal/cluster"
	"halb/internal/config"
)

const vipA = "10.0.0.160"

var t0 = time.Unix(1_000_000, 0)

// peer is an alive peer's gossiped state.
func peer(name string, prio int, eligible, stable bool, holds ...string) Member {
	return Member{Name: name, Alive: true, Since: t0.Add(-time.Hour),
		State: cluster.State{Priority: prio, Eligible: eligible, Stable: stable, Holds: holds}}
}

// pair is node "a" (priority 200, healthy, settled, stable) with peer b,
// ready, holding nothing.
func pair(b Member) (Inputs, Memory) {
	in := Inputs{
		Now:   t0,
		Self:  "a",
		Ready: true,
		Config: Config{Policy: config.Preempt, Nodes: []string{"a", "b"}, PreemptDelay: time.Second,
			Priority: 200, Fingerprint: "f", Version: "v"},
		Local: Local{Started: t0.Add(-time.Hour), HealthKnown: true,
			Frontends: []Frontend{{Name: "api", Listening: true, Healthy: true}}},
		Members: []Member{{Name: "a", Alive: true, Local: true}, b},
		VIPs:    []VIP{{Addr: vipA}},
	}
	mem := Memory{Settled: true, EligibleSince: t0.Add(-time.Hour), Alive: []string{"a", "b"}, Listed: []string{"a", "b"},
		Holder: map[string]string{vipA: "a"}}
	return in, mem
}

// held marks vipA as held here since an hour, announced late already.
func held(in Inputs, mem Memory) (Inputs, Memory) {
	in.VIPs = []VIP{{Addr: vipA, Held: true, HeldSince: t0.Add(-time.Hour)}}
	mem.LateAnnounced = map[string]bool{vipA: true}
	return in, mem
}

func only(t *testing.T, p Plan) VIPPlan {
	t.Helper()
	if len(p.VIPs) != 1 {
		t.Fatalf("plan has %d VIP decisions, want 1: %+v", len(p.VIPs), p)
	}
	return p.VIPs[0]
}

// TestClaimRelease covers each rule that says whether a VIP is claimed,
// released or kept.
func TestClaimRelease(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(in *Inputs, mem *Memory)
		owner  string
		action Action
		reason string
	}{
		{"elected claims", func(in *Inputs, mem *Memory) {}, "a", Claim, "elected (priority 200, policy preempt)"},
		{"not elected and not held releases (cancels a pending claim)", func(in *Inputs, mem *Memory) {
			in.Local.Maintenance = true
		}, "b", Release, "not elected"},
		// Released mid-claim, the address would go on and off at once
		// with nobody else holding it: a stop right after a claim.
		{"not elected while claiming keeps until the new owner holds", func(in *Inputs, mem *Memory) {
			in.Local.Leaving = true
			in.VIPs[0].Claiming = true
		}, "b", Keep, "make before break: waiting for b to hold it"},
		{"not elected while claiming lets go once the new owner holds", func(in *Inputs, mem *Memory) {
			in.Local.Leaving = true
			in.VIPs[0].Claiming = true
			in.Members[1].State.Holds = []string{vipA}
		}, "b", Release, "handed over to b"},
		{"a peer whose state is unknown holds back a claim", func(in *Inputs, mem *Memory) {
			in.Members[1].StateErr, in.Members[1].Since = true, t0.Add(-time.Second)
		}, "a", Keep, "not claiming yet: the state of peer b is not known"},
		{"an unknown state older than the settle timeout does not", func(in *Inputs, mem *Memory) {
			in.Members[1].StateErr, in.Members[1].Since = true, t0.Add(-SettleTimeout)
		}, "a", Claim, "elected (priority 200, policy preempt)"},
		{"an unknown peer state does not stop keeping a held VIP", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Members[1].StateErr, in.Members[1].Since = true, t0.Add(-time.Second)
		}, "a", Claim, "elected (priority 200, policy preempt)"},
		{"silenced by a hard drill releases at once", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Drill.SilencedUntil = t0.Add(time.Second)
		}, "", Release, "hard drill: silent as if crashed"},
		{"alone without the witness releases", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Config.Witness = true
			in.Members = in.Members[:1]
		}, "", Release, "alone and the witness is unreachable: this node is the one cut off"},
		{"alone with the witness keeps it", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Config.Witness, in.Local.WitnessReachable = true, true
			in.Members = in.Members[:1]
		}, "a", Claim, "elected (priority 200, policy preempt)"},
		{"a minority under quorum releases", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Config.Quorum = true
			in.Config.Nodes = []string{"a", "b", "c"}
			in.Members[1].Alive = false
		}, "", Release, "no quorum: a minority must not hold the VIP"},
		{"alone with a key conflict claims nothing", func(in *Inputs, mem *Memory) {
			in.Members = in.Members[:1]
			in.Local.Incompatible = 1
		}, "", Release, "not elected"},
		{"alone with a key conflict keeps what it holds", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Members = in.Members[:1]
			in.Local.Incompatible = 1
		}, "a", Claim, "elected (priority 200, policy preempt)"},
		{"make before break: keeps until the new owner holds", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Maintenance = true
		}, "b", Keep, "make before break: waiting for b to hold it"},
		{"giving up by choice lets go once the owner holds", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Maintenance = true
			in.Members[1].State.Holds = []string{vipA}
		}, "b", Release, "handed over to b"},
		{"an eligible holder waits for the handover to be confirmed", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Members[1] = peer("b", 300, true, true, vipA)
		}, "b", Keep, "handing over to b once it is confirmed"},
		{"an eligible holder lets go once confirmed", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Members[1] = peer("b", 300, true, true, vipA)
			mem.HandoverSince = map[string]time.Time{vipA: t0.Add(-HandoverConfirm)}
		}, "b", Release, "handed over to b"},
		// A backend check failing while a peer stops: this node still sees
		// the peer as an eligible holder, the peer already let go. Dropping
		// the VIP at once would leave it on nobody.
		{"a holder ineligible by its health waits for the handover to be confirmed", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Frontends[0].Healthy = false
			in.Members[1] = peer("b", 100, true, true, vipA)
		}, "b", Keep, "handing over to b once it is confirmed"},
		{"a holder ineligible by its health lets go once confirmed", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Frontends[0].Healthy = false
			in.Members[1] = peer("b", 100, true, true, vipA)
			mem.HandoverSince = map[string]time.Time{vipA: t0.Add(-HandoverConfirm)}
		}, "b", Release, "handed over to b"},
		{"a drill's yield lets go at once", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Drill.YieldUntil = t0.Add(time.Second)
			in.Members[1] = peer("b", 100, true, true, vipA)
		}, "b", Release, "handed over to b"},
		{"a holder without the witness lets go at once", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Config.Witness = true
			in.Members[1] = peer("b", 100, true, true, vipA)
		}, "b", Release, "handed over to b"},
		// Nobody eligible while a better peer stops: the stopping peer
		// drops the VIP whatever it is told, so this node keeps it.
		{"nobody eligible: a staying holder keeps it from a better leaving one", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Frontends[0].Healthy = false
			in.Members[1] = peer("b", 300, false, false, vipA)
			in.Members[1].State.Maintenance = true
		}, "a", Claim, "elected (priority 200, policy preempt)"},
		{"nobody eligible: a staying peer takes it from this leaving node", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Leaving = true
			in.Members[1] = peer("b", 100, false, false)
		}, "b", Keep, "make before break: waiting for b to hold it"},
		{"nobody eligible: this leaving node lets go once the staying peer holds", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Leaving = true
			in.Members[1] = peer("b", 100, false, false, vipA)
		}, "b", Release, "handed over to b"},
		// b still holds the VIP it is handing over to this node when this
		// node stops: b lets go meanwhile, so releasing on this view would
		// leave the VIP on nobody.
		{"a holder that elected another does not take the VIP over", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Leaving = true
			in.Members[1] = peer("b", 100, false, false, vipA)
			in.Members[1].State.Holder = map[string]string{vipA: "a"}
		}, "b", Keep, "make before break: b holds it but elected a"},
		{"a holder that elected itself takes the VIP over", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Leaving = true
			in.Members[1] = peer("b", 100, false, false, vipA)
			in.Members[1].State.Holder = map[string]string{vipA: "b"}
		}, "b", Release, "handed over to b"},
		{"a holder that elected nobody does not take the VIP over", func(in *Inputs, mem *Memory) {
			*in, *mem = held(*in, *mem)
			in.Local.Maintenance = true
			in.Members[1] = peer("b", 100, true, true, vipA)
			in.Members[1].State.Holder = map[string]string{vipA: ""}
		}, "b", Keep, "make before break: b holds it but elected nobody"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, mem := pair(peer("b", 100, true, true))
			tt.setup(&in, &mem)
			v := only(t, Decide(in, mem))
			if v.Owner != tt.owner || v.Action != tt.action || v.Reason != tt.reason {
				t.Errorf("got owner %q, %s (%q); want owner %q, %s (%q)", v.Owner, v.Action, v.Reason, tt.owner, tt.action, tt.reason)
			}
		})
	}
}

// The confirmation wait asks for a round when it ends and starts from the
// first round that saw the new owner holding.
func TestHandoverConfirmWakes(t *testing.T) {
	in, mem := held(pair(peer("b", 300, true, true, vipA)))
	p := Decide(in, mem)
	if want := t0.Add(HandoverConfirm); !p.WakeAt.Equal(want) {
		t.Errorf("wake at %s, want %s", p.WakeAt, want)
	}
	in.Now = t0.Add(HandoverConfirm - time.Millisecond)
	if v := only(t, Decide(in, p.Memory)); v.Action != Keep {
		t.Errorf("released %s before the confirmation time", HandoverConfirm-time.Millisecond)
	}
	in.Now = t0.Add(HandoverConfirm)
	if v := only(t, Decide(in, p.Memory)); v.Action != Release {
		t.Errorf("after %s: %s (%s), want release", HandoverConfirm, v.Action, v.Reason)
	}
	// The election going back restarts the wait.
	in.Members[1].State.Priority = 100
	p2 := Decide(in, p.Memory)
	if _, ok := p2.Memory.HandoverSince[vipA]; ok {
		t.Error("the confirmation start survived a round in which this node owns the VIP again")
	}
}

// TestEligibility covers the facts that make this node ineligible, stable
// or boosted in what it gossips.
func TestEligibility(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(in *Inputs, mem *Memory)
		eligible bool
		stable   bool
		priority int
	}{
		{"healthy and eligible long enough", func(in *Inputs, mem *Memory) {}, true, true, 200},
		{"eligible for less than preempt_delay is not stable", func(in *Inputs, mem *Memory) {
			mem.EligibleSince = t0.Add(-time.Second + time.Millisecond)
		}, true, false, 200},
		{"newly eligible starts the preempt_delay", func(in *Inputs, mem *Memory) { mem.EligibleSince = time.Time{} }, true, false, 200},
		{"a frontend without a listener", func(in *Inputs, mem *Memory) { in.Local.Frontends[0].Listening = false }, false, false, 200},
		{"an unhealthy backend", func(in *Inputs, mem *Memory) {
			in.Local.Frontends = append(in.Local.Frontends, Frontend{Name: "talos", Listening: true})
		}, false, false, 200},
		{"an unhealthy backend with any_frontend", func(in *Inputs, mem *Memory) {
			in.Config.Eligibility = "any_frontend"
			in.Local.Frontends = append(in.Local.Frontends, Frontend{Name: "talos", Listening: true})
		}, true, true, 200},
		{"maintenance", func(in *Inputs, mem *Memory) { in.Local.Maintenance = true }, false, false, 200},
		{"leaving", func(in *Inputs, mem *Memory) { in.Local.Leaving = true }, false, false, 200},
		{"yielding in a drill", func(in *Inputs, mem *Memory) { in.Local.Drill.YieldUntil = t0.Add(time.Second) }, false, false, 200},
		{"a yield that ended", func(in *Inputs, mem *Memory) { in.Local.Drill.YieldUntil = t0 }, true, true, 200},
		{"silenced in a drill", func(in *Inputs, mem *Memory) { in.Local.Drill.SilencedUntil = t0.Add(time.Second) }, false, false, 200},
		{"witness unreachable", func(in *Inputs, mem *Memory) { in.Config.Witness = true }, false, false, 200},
		{"witness reachable", func(in *Inputs, mem *Memory) { in.Config.Witness, in.Local.WitnessReachable = true, true }, true, true, 200},
		{"boosted target outranks at once", func(in *Inputs, mem *Memory) {
			in.Local.Drill.BoostUntil = t0.Add(time.Second)
			mem.EligibleSince = time.Time{}
		}, true, true, BoostPriority + 200},
		{"a boost does not make an ineligible node eligible", func(in *Inputs, mem *Memory) {
			in.Local.Drill.BoostUntil = t0.Add(time.Second)
			in.Local.Maintenance = true
		}, false, false, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, mem := pair(peer("b", 100, true, true))
			mem.Published = nil
			tt.setup(&in, &mem)
			p := Decide(in, mem)
			if p.Publish == nil {
				t.Fatal("first round published no state")
			}
			s := *p.Publish
			if s.Eligible != tt.eligible || s.Stable != tt.stable || s.Priority != tt.priority {
				t.Errorf("gossips eligible %v stable %v priority %d; want %v %v %d", s.Eligible, s.Stable, s.Priority, tt.eligible, tt.stable, tt.priority)
			}
		})
	}
}

func TestPublishedState(t *testing.T) {
	in, mem := held(pair(peer("b", 100, true, true)))
	in.Local.Maintenance = true
	p := Decide(in, mem)
	want := cluster.State{Priority: 200, Maintenance: true, Frontends: map[string]bool{"api": true},
		Holds: []string{vipA}, Holder: map[string]string{vipA: "a"}, Fingerprint: "f", Version: "v"}
	if p.Publish == nil {
		t.Fatal("no state published")
	}
	if diff := cmp.Diff(want, *p.Publish); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	// The same facts again publish nothing; the new view of the holder
	// (this round elected b) is published with the next round.
	p2 := Decide(in, p.Memory)
	if p2.Publish == nil || p2.Publish.Holder[vipA] != "b" {
		t.Fatalf("second round publishes %+v, want the new holder view", p2.Publish)
	}
	if p3 := Decide(in, p2.Memory); p3.Publish != nil {
		t.Errorf("an unchanged state was published again: %+v", p3.Publish)
	}
}

func TestSettling(t *testing.T) {
	in, _ := pair(peer("b", 100, true, true))
	mem := Memory{}
	in.Local.HealthKnown = false
	in.Local.Started = t0.Add(-SettleTimeout + time.Millisecond)
	if p := Decide(in, mem); p.Publish != nil || p.VIPs != nil || p.Memory.Settled {
		t.Fatalf("unsettled round acted: %+v", p)
	}
	in.Local.Started = t0.Add(-SettleTimeout)
	p := Decide(in, mem)
	if p.Publish == nil || !p.Memory.Settled {
		t.Fatalf("the settle timeout did not settle: %+v", p)
	}
	// Settled once is settled for good.
	in.Local.Started = t0
	if p := Decide(in, p.Memory); !p.Memory.Settled {
		t.Error("a settled node became unsettled")
	}
	in.Ready = false
	if p := Decide(in, Memory{Settled: true}); p.Publish == nil || p.VIPs != nil || p.Alive != nil {
		t.Errorf("before the cluster is ready a round must only publish: %+v", p)
	}
}

// TestStaleNeighbours covers the one rule for announcing a held VIP again,
// and the regained VIP, whose orphaned sessions the daemon tickles.
func TestStaleNeighbours(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(in *Inputs, mem *Memory)
		want     string
		regained bool
	}{
		{"nothing changed", func(in *Inputs, mem *Memory) {}, "", false},
		{"a member went", func(in *Inputs, mem *Memory) { in.Members[1].Alive = false }, "membership changed", false},
		{"a dead member left the list", func(in *Inputs, mem *Memory) {
			mem.Alive = []string{"a"}
			in.Members = in.Members[:1]
		}, "membership changed", false},
		{"the first ready round", func(in *Inputs, mem *Memory) { mem.Alive, mem.Listed = nil, nil }, "membership changed", false},
		{"the locktime passed since the claim", func(in *Inputs, mem *Memory) {
			in.VIPs[0].HeldSince, mem.LateAnnounced = t0.Add(-NeighLocktime), nil
		}, "neighbours' ARP locktime passed since the claim", false},
		{"within the locktime", func(in *Inputs, mem *Memory) {
			in.VIPs[0].HeldSince, mem.LateAnnounced = t0.Add(-NeighLocktime+time.Millisecond), nil
		}, "", false},
		{"another holder released it", func(in *Inputs, mem *Memory) {
			mem.Contested, mem.HeldWhenContested = map[string]bool{vipA: true}, map[string]bool{vipA: true}
		}, "another holder released the VIP", true},
		{"the old holder released it after this node claimed", func(in *Inputs, mem *Memory) {
			mem.Contested, mem.HeldWhenContested = map[string]bool{vipA: true}, map[string]bool{vipA: false}
		}, "another holder released the VIP", false},
		{"another holder released it as membership changed", func(in *Inputs, mem *Memory) {
			mem.Contested, mem.HeldWhenContested = map[string]bool{vipA: true}, map[string]bool{vipA: true}
			mem.Alive, mem.Listed = nil, nil
		}, "membership changed", true},
		{"another holder still holds it", func(in *Inputs, mem *Memory) {
			mem.Contested = map[string]bool{vipA: true}
			in.Members[1].State.Holds = []string{vipA}
		}, "", false},
		{"not held here", func(in *Inputs, mem *Memory) {
			in.VIPs[0].Held = false
			in.Members[1].Alive = false
		}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, mem := held(pair(peer("b", 100, true, true)))
			tt.setup(&in, &mem)
			got := only(t, Decide(in, mem))
			if got.Announce != tt.want || got.Regained != tt.regained {
				t.Errorf("announce %q, regained %v; want %q, %v", got.Announce, got.Regained, tt.want, tt.regained)
			}
		})
	}
}

// Regained follows what this node held when the contest began: a
// partition healing (held here all along) regains the VIP once the other
// lets go; a planned move (claimed here while the old holder still held
// it) does not.
func TestRegainedOnlyAfterAContestOverAHeldVIP(t *testing.T) {
	for _, tt := range []struct {
		name      string
		heldFirst bool
		want      bool
	}{{"partition heals", true, true}, {"planned move", false, false}} {
		t.Run(tt.name, func(t *testing.T) {
			in, mem := held(pair(peer("b", 100, true, true)))
			in.VIPs[0].Held = tt.heldFirst
			in.Members[1].State.Holds = []string{vipA} // the other holds it too
			p := Decide(in, mem)
			in.VIPs[0].Held = true // held here from now on
			p = Decide(in, p.Memory)
			if only(t, p).Regained {
				t.Fatal("regained while the other still holds the VIP")
			}
			in.Members[1].State.Holds = nil // the other lets go
			if got := only(t, Decide(in, p.Memory)).Regained; got != tt.want {
				t.Errorf("regained %v, want %v", got, tt.want)
			}
		})
	}
}

// The late announcement is made once per claim.
func TestLateAnnouncementOnce(t *testing.T) {
	in, mem := held(pair(peer("b", 100, true, true)))
	in.VIPs[0].HeldSince, mem.LateAnnounced = t0.Add(-NeighLocktime), nil
	p := Decide(in, mem)
	if only(t, p).Announce == "" {
		t.Fatal("no late announcement")
	}
	if a := only(t, Decide(in, p.Memory)).Announce; a != "" {
		t.Errorf("announced late again: %q", a)
	}
	in.VIPs[0].Held = false
	p = Decide(in, p.Memory)
	in.VIPs[0].Held = true
	if a := only(t, Decide(in, p.Memory)).Announce; a == "" {
		t.Error("a new claim got no late announcement")
	}
}

func TestPreemptAt(t *testing.T) {
	in, mem := pair(peer("b", 100, true, true, vipA))
	mem.EligibleSince = t0.Add(-300 * time.Millisecond)
	v := only(t, Decide(in, mem))
	if want := mem.EligibleSince.Add(time.Second); !v.PreemptAt.Equal(want) || v.Owner != "b" {
		t.Errorf("owner %q preempt at %s, want b until %s", v.Owner, v.PreemptAt, want)
	}
	in.Config.Policy = config.Sticky
	if v := only(t, Decide(in, mem)); !v.PreemptAt.IsZero() {
		t.Errorf("sticky: preempt at %s, want none", v.PreemptAt)
	}
	in.Config.Policy = config.Preempt
	in.Members[1].State.Priority = 300
	if v := only(t, Decide(in, mem)); !v.PreemptAt.IsZero() {
		t.Errorf("lower priority: preempt at %s, want none", v.PreemptAt)
	}
}

func TestStrangersReportedOnce(t *testing.T) {
	in, mem := pair(peer("b", 100, true, true))
	in.Members = append(in.Members, peer("z", 1, true, true))
	p := Decide(in, mem)
	if diff := cmp.Diff([]string{"z"}, p.Strangers); diff != "" {
		t.Fatalf("strangers (-want +got):\n%s", diff)
	}
	if p := Decide(in, p.Memory); p.Strangers != nil {
		t.Errorf("reported again: %v", p.Strangers)
	}
}

func TestElectionChangeIsReported(t *testing.T) {
	in, mem := pair(peer("b", 300, true, true))
	v := only(t, Decide(in, mem))
	if v.Previous != "a" || v.Owner != "b" {
		t.Errorf("owner %q previous %q, want b after a", v.Owner, v.Previous)
	}
	if !strings.Contains(only(t, Decide(in, Decide(in, mem).Memory)).Previous, "b") {
		t.Error("the previous owner is not remembered")
	}
}

// Decide must not change the memory it is given.
func TestDecideLeavesMemoryAlone(t *testing.T) {
	in, mem := held(pair(peer("b", 300, true, true, vipA)))
	mem.Contested = map[string]bool{vipA: false}
	before := mem.clone()
	_ = Decide(in, mem)
	if diff := cmp.Diff(before, mem, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("memory changed (-before +after):\n%s", diff)
	}
}

func TestEligibleByFrontends(t *testing.T) {
	up := Frontend{Listening: true, Healthy: true}
	sick := Frontend{Listening: true}
	deaf := Frontend{Healthy: true}
	tests := []struct {
		name   string
		policy string
		fronts []Frontend
		want   bool
	}{
		{"all healthy", "all_frontends", []Frontend{up, up}, true},
		{"one backend down", "all_frontends", []Frontend{up, sick}, false},
		{"one backend down, any", "any_frontend", []Frontend{up, sick}, true},
		{"one not listening", "all_frontends", []Frontend{up, deaf}, false},
		{"one not listening, any", "any_frontend", []Frontend{up, deaf}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := eligibleByFrontends(tt.policy, tt.fronts); got != tt.want {
				t.Fatalf("eligible = %v, want %v", got, tt.want)
			}
		})
	}
}
