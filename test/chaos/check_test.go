package chaos

import (
	"strings"
	"testing"
	"time"
)

var bounds = Bounds{Reach: 3 * time.Second, HealthCheck: 2 * time.Second, Goroutines: 20, RSSFactor: 2, RSSSlack: 10 << 20}

// healthy is what a settled two-node cluster with lb1 holding looks like.
func healthy() Observation {
	return Observation{
		Settled: true,
		Nodes: []Node{
			{Name: "lb1", HasVIP: true, View: "lb1", Eligible: true, Claims: true, Peers: map[string]string{"lb2": "lb1"}, MAC: "aa", PID: 10, Goroutines: 50, RSS: 20 << 20},
			{Name: "lb2", View: "lb1", Eligible: true, Peers: map[string]string{"lb1": "lb1"}, MAC: "bb", PID: 11, Goroutines: 45, RSS: 20 << 20},
		},
		ClientMAC: "aa",
		Reach:     []Reach{{Port: 6443, OK: true, After: 10 * time.Millisecond}, {Port: 50000, OK: true}},
	}
}

var base = map[string]Baseline{"lb1": {PID: 10, Goroutines: 48, RSS: 19 << 20}, "lb2": {PID: 11, Goroutines: 45, RSS: 20 << 20}}

func TestCheckHealthy(t *testing.T) {
	if vs := Check(healthy(), bounds, base); len(vs) != 0 {
		t.Fatalf("violations in a healthy cluster: %v", vs)
	}
}

func TestCheckViolations(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Observation)
		want []string // invariant: substring of detail
	}{
		{"not settled", func(o *Observation) { o.Settled, o.SettleErr = false, "lb2 sees no holder" },
			[]string{InvSettle + ":lb2 sees no holder"}},
		{"two holders", func(o *Observation) { o.Nodes[1].HasVIP = true },
			[]string{InvOneHolder + ":lb1, lb2", InvLeftover + ":lb2 has the VIP"}},
		{"no holder though eligible", func(o *Observation) { o.Nodes[0].HasVIP = false },
			[]string{InvOneHolder + ":no node has the VIP"}},
		{"no holder and none eligible is fine", func(o *Observation) {
			o.Nodes[0].HasVIP, o.Nodes[0].Eligible, o.Nodes[1].Eligible = false, false, false
		}, nil},
		{"views split", func(o *Observation) { o.Nodes[1].View = "lb2" },
			[]string{InvViews + ":elects"}},
		{"gossiped view stale", func(o *Observation) { o.Nodes[0].Peers["lb2"] = "" },
			[]string{InvViews + ":lb1 hears lb2 gossip"}},
		{"admin API down", func(o *Observation) { o.Nodes[1].StatusErr = "connection refused" },
			[]string{InvViews + ":connection refused"}},
		{"ineligible holder", func(o *Observation) { o.Nodes[0].Eligible = false },
			[]string{InvEligible + ":lb1 holds the VIP but is not eligible"}},
		{"standby claims the VIP", func(o *Observation) { o.Nodes[1].Claims = true },
			[]string{InvLeftover + ":lb2 claims"}},
		{"port unreachable", func(o *Observation) { o.Reach[1] = Reach{Port: 50000, Err: "timeout"} },
			[]string{InvReach + ":VIP:50000"}},
		{"stale neighbour entry", func(o *Observation) { o.ClientMAC = "bb" },
			[]string{InvNeighbour + ":\"bb\""}},
		{"long wait on a dead CP", func(o *Observation) { o.Waits = []Wait{{CP: "cp2", Took: 5 * time.Second, What: "answered"}} },
			[]string{InvDeadCP + ":5s"}},
		{"short wait is fine", func(o *Observation) { o.Waits = []Wait{{CP: "cp2", Took: time.Second}} }, nil},
		{"goroutine leak", func(o *Observation) { o.Nodes[0].Goroutines = 200 },
			[]string{InvLeak + ":200 goroutines"}},
		{"RSS growth", func(o *Observation) { o.Nodes[1].RSS = 100 << 20 },
			[]string{InvLeak + ":RSS 100 MiB"}},
		{"a restarted process is not compared with the old baseline", func(o *Observation) {
			o.Nodes[0].PID, o.Nodes[0].Goroutines = 99, 500
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := healthy()
			tt.edit(&o)
			vs := Check(o, bounds, base)
			if len(vs) != len(tt.want) {
				t.Fatalf("got %d violations %v, want %d %v", len(vs), vs, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				inv, detail, _ := strings.Cut(w, ":")
				if vs[i].Invariant != inv || !strings.Contains(vs[i].Detail, detail) {
					t.Errorf("violation %d is %v, want %s containing %q", i, vs[i], inv, detail)
				}
			}
		})
	}
}

func TestSettled(t *testing.T) {
	if h, why := Settled(healthy().Nodes); h != "lb1" || why != "" {
		t.Fatalf("a healthy cluster: holder %q, why %q", h, why)
	}
	tests := []struct {
		name string
		edit func([]Node)
		why  string
	}{
		{"admin API down", func(n []Node) { n[1].StatusErr = "refused" }, "lb2: refused"},
		{"nobody elected", func(n []Node) { n[0].View, n[1].View = "", "" }, "no node elects"},
		{"views differ", func(n []Node) { n[1].View = "lb2" }, "elects"},
		{"peer not alive", func(n []Node) { delete(n[0].Peers, "lb2") }, "lb1 does not see lb2 alive"},
		{"stale gossip", func(n []Node) { n[1].Peers["lb1"] = "" }, "lb2 hears lb1 gossip holder \"\""},
		{"kernel lags", func(n []Node) { n[0].HasVIP = false }, "lb1 has the VIP: false"},
		{"leftover", func(n []Node) { n[1].HasVIP = true }, "lb2 has the VIP: true"},
		{"preemption due", func(n []Node) { n[1].PreemptAt = time.Now().Add(time.Second) }, "lb2 takes the VIP over from lb1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := healthy().Nodes
			tt.edit(nodes)
			if h, why := Settled(nodes); h != "" || !strings.Contains(why, tt.why) {
				t.Fatalf("holder %q, why %q; want none because %q", h, why, tt.why)
			}
		})
	}
}
