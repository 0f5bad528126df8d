package drill

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"halb/internal/admin"
	"halb/internal/probe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeNode answers like a node whose VIP moves from a to b once a drill
// starts, if moves is set.
type fakeNode struct {
	bind  string
	moves bool

	mu      sync.Mutex
	started bool
	ended   bool
}

func (f *fakeNode) Status(context.Context) (admin.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vip := strings.Split(f.bind, ":")[0]
	holder := "a"
	if f.started && f.moves {
		holder = "b"
	}
	s := admin.Snapshot{Node: admin.NodeInfo{Name: "c"}, VIPs: []admin.VIP{{Address: vip}},
		Frontends: []admin.Frontend{{Name: "api", Bind: f.bind}}}
	for _, n := range []string{"a", "b"} {
		m := admin.Member{Name: n, Alive: true, Eligible: true}
		if n == holder {
			m.Holds = []string{vip}
		}
		s.Members = append(s.Members, m)
	}
	return s, nil
}

func (f *fakeNode) StartDrill(_ context.Context, req admin.DrillRequest) (admin.DrillStart, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started = true
	return admin.DrillStart{VIP: strings.Split(f.bind, ":")[0], From: "a", To: "b", Hard: req.Hard, Started: time.Now()}, nil
}

func (f *fakeNode) EndDrill(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ended = true
	return nil
}

// frontend is a TCP listener on loopback standing in for the VIP.
func frontend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func options() Options {
	return Options{MaxOutage: time.Second, Mode: probe.ModeTCP, Interval: 5 * time.Millisecond,
		Timeout: 2 * time.Second, Settle: 20 * time.Millisecond, RequestTimeout: time.Second}
}

func TestPlannedDrillPasses(t *testing.T) {
	n := &fakeNode{bind: frontend(t), moves: true}
	rep, err := Run(context.Background(), n, options(), admin.DrillRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Pass || !strings.HasPrefix(rep.Verdict, "PASS") {
		t.Errorf("verdict %q, want a pass", rep.Verdict)
	}
	var steps []string
	for _, e := range rep.Timeline {
		steps = append(steps, e.What)
	}
	all := strings.Join(steps, "; ")
	for _, want := range []string{"requested: a -> b", "b holds the VIP", "a released the VIP", "first successful probe since b took the VIP"} {
		if !strings.Contains(all, want) {
			t.Errorf("timeline %q lacks %q", all, want)
		}
	}
	if len(rep.Probes) != 1 || rep.Probes[0].Attempts == 0 {
		t.Errorf("probes %+v, want one that ran", rep.Probes)
	}
	if !n.ended {
		t.Error("the drill was not ended after measuring")
	}
}

func TestDrillThatDoesNotMoveFails(t *testing.T) {
	n := &fakeNode{bind: frontend(t)}
	o := options()
	o.Timeout = 100 * time.Millisecond
	rep, err := Run(context.Background(), n, o, admin.DrillRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pass || rep.Verdict != "FAIL: the VIP did not move within 100ms" {
		t.Errorf("verdict %q, want a failure to move", rep.Verdict)
	}
	if !n.ended {
		t.Error("the drill was not ended after failing")
	}
}

func TestNothingToProbe(t *testing.T) {
	n := &fakeNode{bind: frontend(t)}
	_, err := Run(context.Background(), n, options(), admin.DrillRequest{VIP: "10.0.0.9"})
	if err == nil || !strings.Contains(err.Error(), `no frontend listens on VIP "10.0.0.9"`) {
		t.Fatalf("drill of a VIP without frontends: %v", err)
	}
	if n.started {
		t.Error("a drill started with nothing to probe")
	}
}

func TestJudge(t *testing.T) {
	o := options()
	tests := []struct {
		name  string
		rep   Report
		moved bool
		want  string
	}{
		{"outage too long", Report{Probes: []probe.Report{{LongestGap: 2 * time.Second}}}, true, "FAIL: outage 2s exceeds --max-outage 1s"},
		{"planned with a failed probe", Report{Probes: []probe.Report{{Failures: 1}}}, true, "FAIL: 1 probe(s) failed during a planned move, want 0"},
		{"hard with failed probes", Report{Hard: true, Probes: []probe.Report{{Failures: 3, LongestGap: 500 * time.Millisecond}}}, true, "PASS: outage 500ms within 1s, 3 failed probe(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			judge(&tt.rep, tt.moved, o)
			if tt.rep.Verdict != tt.want || tt.rep.Pass != strings.HasPrefix(tt.want, "PASS") {
				t.Errorf("verdict %q pass %v, want %q", tt.rep.Verdict, tt.rep.Pass, tt.want)
			}
		})
	}
}

// The report's line on long-lived connections comes from the new
// holder's status of its last takeover, and only from a takeover that
// followed the drill's request.
func TestLongLived(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	snap := func(node string, v admin.VIP) admin.Snapshot {
		v.Address = "10.0.0.5/32"
		return admin.Snapshot{Node: admin.NodeInfo{Name: node}, VIPs: []admin.VIP{v}}
	}
	after := t0.Add(100 * time.Millisecond)
	tests := []struct {
		name string
		s    admin.Snapshot
		want string
	}{
		{"run on another node", snap("a", admin.VIP{}), "long-lived connections: counted on b (its halb status shows the last takeover's tickles)"},
		{"takeover before the drill", snap("b", admin.VIP{LastTakeover: t0.Add(-time.Minute), LastTickled: 5}), "long-lived connections: no takeover seen here"},
		{"nothing to tickle", snap("b", admin.VIP{LastTakeover: after}), "long-lived connections: none of the old holder's to reset (or tickles off)"},
		{"reset and reconnected", snap("b", admin.VIP{LastTakeover: after, LastTickled: 1000,
			LastTickles: &admin.TickleOutcome{Counted: true, Acknowledged: 998, AlreadyClosed: 2, Clients: 3, Reconnected: 3, ReconnectedWithin: 0.6}}),
			"long-lived connections: 998 reset (1000 tickled, 2 already closed), all 3 client(s) reconnected within 600ms"},
		{"not counted, some back", snap("b", admin.VIP{LastTakeover: after, LastTickled: 40,
			LastTickles: &admin.TickleOutcome{Clients: 4, Reconnected: 1, ReconnectedWithin: 0.2}}),
			"long-lived connections: 40 tickled, 1 of 4 client(s) reconnected within 200ms"},
		{"none back yet", snap("b", admin.VIP{LastTakeover: after, LastTickled: 40,
			LastTickles: &admin.TickleOutcome{Counted: true, Acknowledged: 40, Clients: 4}}),
			"long-lived connections: 40 reset (40 tickled), none of 4 client(s) reconnected yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := longLived(tt.s, "10.0.0.5", "b", t0); got != tt.want {
				t.Errorf("longLived = %q\nwant          %q", got, tt.want)
			}
		})
	}
}
