package drill

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"halb/internal/admin"
)

// bgpNode answers like a node in BGP mode: a and b announce the VIP, and
// a withdraws once the drill starts if withdraws is set.
type bgpNode struct {
	bind      string
	withdraws bool

	mu      sync.Mutex
	req     admin.DrillRequest
	started bool
	ended   bool
}

func (f *bgpNode) Status(context.Context) (admin.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vip := strings.Split(f.bind, ":")[0]
	s := admin.Snapshot{Node: admin.NodeInfo{Name: "a"},
		Frontends: []admin.Frontend{{Name: "api", Bind: f.bind}},
		BGP:       &admin.BGP{VIPs: []admin.BGPVIP{{Address: vip, Mode: ModeBGP, Announced: !f.started || !f.withdraws}}}}
	for _, n := range []string{"a", "b"} {
		s.Members = append(s.Members, admin.Member{Name: n, Alive: true, Eligible: true, Holds: []string{vip}, Local: n == "a"})
	}
	return s, nil
}

func (f *bgpNode) StartDrill(_ context.Context, req admin.DrillRequest) (admin.DrillStart, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started, f.req = true, req
	return admin.DrillStart{VIP: strings.Split(f.bind, ":")[0], From: "a", To: "b", Started: time.Now(), Mode: ModeBGP}, nil
}

func (f *bgpNode) EndDrill(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ended = true
	return nil
}

// TestBGPDrill: in BGP mode a drill withdraws one node, probes the BGP
// VIP's frontends throughout, and passes with no failed probe; a probe
// from a host that has the VIP itself is flagged as not crossing the
// routers.
func TestBGPDrill(t *testing.T) {
	n := &bgpNode{bind: frontend(t), withdraws: true}
	rep, err := Run(context.Background(), n, options(), admin.DrillRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Pass || rep.Mode != ModeBGP || rep.Failed != 0 {
		t.Fatalf("report %+v, want a passed BGP drill", rep)
	}
	var steps []string
	for _, e := range rep.Timeline {
		steps = append(steps, e.What)
	}
	all := strings.Join(steps, "\n")
	for _, want := range []string{"a withdraws; still announcing: b", "a withdrew its route", "do not cross the routers"} {
		if !strings.Contains(all, want) {
			t.Errorf("timeline lacks %q:\n%s", want, all)
		}
	}
	if len(rep.Probes) != 1 || rep.Probes[0].Successes == 0 {
		t.Errorf("probes %+v, want the BGP VIP's frontend probed", rep.Probes)
	}
	if !n.ended {
		t.Error("the drill was not ended")
	}
}

// TestBGPDrillNoWithdrawal: a node that never withdraws fails the drill.
func TestBGPDrillNoWithdrawal(t *testing.T) {
	n := &bgpNode{bind: frontend(t)}
	o := options()
	o.Timeout = 200 * time.Millisecond
	rep, err := Run(context.Background(), n, o, admin.DrillRequest{Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pass || !strings.Contains(rep.Verdict, "a did not withdraw the VIP") {
		t.Fatalf("verdict %q, want a failure naming the withdrawal", rep.Verdict)
	}
	if n.req.Node != "a" {
		t.Errorf("request %+v did not carry the node", n.req)
	}
}
