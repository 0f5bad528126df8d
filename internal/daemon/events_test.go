package daemon

import (
	"log/slog"
	"testing"
	"time"

	"halb/internal/events"
	"halb/internal/health"
	"halb/internal/round"
)

func kindsOf(es []events.Event) []string {
	var out []string
	for _, e := range es {
		who := e.Node
		if e.VIP != "" {
			who = e.VIP
		}
		out = append(out, string(e.Kind)+" "+who)
	}
	return out
}

func TestEventFeedMembersAndVIPs(t *testing.T) {
	bus := events.New(0)
	f := &eventFeed{bus: bus, node: "lb1"}
	plan := func(alive, listed []string) round.Plan {
		return round.Plan{Alive: alive, Memory: round.Memory{Listed: listed}, VIPs: []round.VIPPlan{{VIP: "10.0.0.10", Reason: "elected"}}}
	}
	f.vipEvents(plan(nil, nil), map[string]bool{"10.0.0.10": false}) // start: not held, no event
	f.memberEvents(plan([]string{"lb1", "lb2", "lb3"}, []string{"lb1", "lb2", "lb3"}))
	f.vipEvents(plan(nil, nil), map[string]bool{"10.0.0.10": true})
	f.memberEvents(plan([]string{"lb1"}, []string{"lb1", "lb2"})) // lb2 failed, lb3 left
	f.memberEvents(plan([]string{"lb1", "lb2"}, []string{"lb1", "lb2"}))
	f.vipEvents(plan(nil, nil), map[string]bool{"10.0.0.10": false})
	got := kindsOf(bus.Since(time.Time{}))
	want := []string{"vip_claimed 10.0.0.10", "member_failed lb2", "member_left lb3", "member_joined lb2", "vip_released 10.0.0.10"}
	if len(got) != len(want) {
		t.Fatalf("events = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events = %q, want %q", got, want)
		}
	}
}

func TestServerTransitionsArePublished(t *testing.T) {
	d := newTestDaemon(t, twoBackends(t, ""), slog.New(slog.DiscardHandler))
	_, sub := d.srv.bus.Subscribe(time.Time{})
	defer sub.Close()
	pools, _ := d.srv.parts()
	s, _ := pools["talos"].Server("cp2")
	s.ReportCheck(health.Result{OK: false, Reason: "connection refused", Failure: health.Gone})
	e := <-sub.C()
	if e.Kind != events.ServerDown || e.Backend != "talos" || e.Server != "cp2" || e.Reason != "connection refused" || e.Node != "lb" {
		t.Fatalf("event = %+v", e)
	}
}
