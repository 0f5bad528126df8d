package round

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestDecideBGP covers each rule that says whether this node announces
// its BGP VIPs: the election's eligibility, without its single owner.
func TestDecideBGP(t *testing.T) {
	const vipB = "10.0.0.161"
	tests := []struct {
		name     string
		setup    func(in *Inputs, mem *Memory)
		announce bool
		reason   string
	}{
		{"eligible announces", func(in *Inputs, mem *Memory) {}, true, "eligible"},
		{"a peer that would win the election does not stop it (ECMP)", func(in *Inputs, mem *Memory) {
			in.Members[1] = peer("b", 900, true, true, vipA)
		}, true, "eligible"},
		{"maintenance withdraws", func(in *Inputs, mem *Memory) { in.Local.Maintenance = true }, false, "maintenance"},
		{"stopping withdraws", func(in *Inputs, mem *Memory) { in.Local.Leaving = true }, false, "stopping"},
		{"an unhealthy backend withdraws", func(in *Inputs, mem *Memory) {
			in.Local.Frontends[0].Healthy = false
		}, false, "not eligible: frontends not listening or not healthy"},
		{"a frontend not listening withdraws", func(in *Inputs, mem *Memory) {
			in.Local.Frontends[0].Listening = false
		}, false, "not eligible: frontends not listening or not healthy"},
		{"any_frontend: one healthy frontend is enough", func(in *Inputs, mem *Memory) {
			in.Config.Eligibility = "any_frontend"
			in.Local.Frontends = append(in.Local.Frontends, Frontend{Name: "b", Listening: true})
		}, true, "eligible"},
		{"witness unreachable withdraws", func(in *Inputs, mem *Memory) {
			in.Config.Witness = true
		}, false, "not eligible: witness unreachable"},
		{"witness reachable announces", func(in *Inputs, mem *Memory) {
			in.Config.Witness, in.Local.WitnessReachable = true, true
		}, true, "eligible"},
		{"alone with the witness unreachable stands down", func(in *Inputs, mem *Memory) {
			in.Config.Witness = true
			in.Members = in.Members[:1]
		}, false, "alone and the witness is unreachable: this node is the one cut off"},
		{"health not known yet holds back", func(in *Inputs, mem *Memory) {
			mem.Settled = false
			in.Local.HealthKnown, in.Local.Started = false, in.Now
		}, false, "health not known yet"},
		{"cluster not ready holds back", func(in *Inputs, mem *Memory) { in.Ready = false }, false, "cluster not ready"},
		{"quorum: alone of three withdraws", func(in *Inputs, mem *Memory) {
			in.Config.Quorum, in.Config.Nodes = true, []string{"a", "b", "c"}
			in.Members = in.Members[:1]
		}, false, "no quorum: a minority must not announce the VIP"},
		{"quorum: two of three announce", func(in *Inputs, mem *Memory) {
			in.Config.Quorum, in.Config.Nodes = true, []string{"a", "b", "c"}
		}, true, "eligible"},
		{"quorum off: alone announces", func(in *Inputs, mem *Memory) {
			in.Config.Nodes = []string{"a", "b", "c"}
			in.Members = in.Members[:1]
		}, true, "eligible"},
		{"yield drill withdraws", func(in *Inputs, mem *Memory) {
			in.Local.Drill.YieldUntil = in.Now.Add(time.Minute)
		}, false, "not eligible: drill"},
		{"hard drill stands down", func(in *Inputs, mem *Memory) {
			in.Local.Drill.SilencedUntil = in.Now.Add(time.Minute)
		}, false, "hard drill: silent as if crashed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, mem := pair(peer("b", 100, true, true))
			tt.setup(&in, &mem)
			got := DecideBGP(in, Decide(in, mem), []string{vipA, vipB})
			want := []BGPPlan{{VIP: vipA, Announce: tt.announce, Reason: tt.reason}, {VIP: vipB, Announce: tt.announce, Reason: tt.reason}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecideBGPNoVIPs: a config without BGP VIPs plans nothing.
func TestDecideBGPNoVIPs(t *testing.T) {
	in, mem := pair(peer("b", 100, true, true))
	if got := DecideBGP(in, Decide(in, mem), nil); len(got) != 0 {
		t.Fatalf("plan for no VIPs = %+v, want empty", got)
	}
}

// TestAnnouncedGossiped: the BGP VIPs a node announces are gossiped with
// the VIPs it holds, so other nodes' status can count the announcers,
// and they do not make the node a holder of an ARP VIP.
func TestAnnouncedGossiped(t *testing.T) {
	const vipB = "10.0.0.161"
	in, mem := pair(peer("b", 100, true, true))
	in.Local.Announced = []string{vipB}
	p := Decide(in, mem)
	if p.Publish == nil {
		t.Fatal("Decide published no state")
	}
	if diff := cmp.Diff([]string{vipB}, p.Publish.Holds); diff != "" {
		t.Fatalf("gossiped holds (-want +got):\n%s", diff)
	}
	in.Local.Announced = nil
	if p := Decide(in, mem); p.Publish == nil || len(p.Publish.Holds) != 0 {
		t.Fatalf("after the withdrawal the node gossips %+v, want no holds", p.Publish)
	}
}
