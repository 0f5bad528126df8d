package daemon

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"halb/internal/config"
)

func TestReplayGuard(t *testing.T) {
	var g replayGuard
	now := time.Unix(1_800_000_000, 0)
	id := newRequestID()
	if len(id) != 32 || id == newRequestID() {
		t.Fatalf("request IDs %q are not 128 random bits", id)
	}
	for _, tt := range []struct {
		name string
		id   string
		sent time.Time
		at   time.Time
		says string // "" = accepted
	}{
		{"fresh", id, now.Add(-time.Second), now, ""},
		{"same again", id, now.Add(-time.Second), now.Add(time.Second), "already applied"},
		{"another", newRequestID(), now.Add(-replayWindow + time.Second), now, ""},
		{"too old", newRequestID(), now.Add(-replayWindow - time.Second), now, "outside ±2m0s"},
		{"from the future", newRequestID(), now.Add(replayWindow + time.Second), now, "check NTP"},
		{"no ID", "", now, now, "predates replay protection"},
		{"no time", newRequestID(), time.Time{}, now, "predates replay protection"},
		// Long after the window the ID is forgotten, but by then the
		// send time alone refuses it.
		{"much later", id, now.Add(-time.Second), now.Add(3 * replayWindow), "outside"},
	} {
		why := g.check(tt.id, tt.sent, tt.at)
		if (tt.says == "") != (why == "") || !strings.Contains(why, tt.says) {
			t.Errorf("%s: check = %q, want %q", tt.name, why, tt.says)
		}
	}
	g.mu.Lock()
	n := len(g.seen)
	g.mu.Unlock()
	if n != 0 {
		t.Errorf("%d IDs still remembered after twice the window", n)
	}
}

// A drill request delivered twice, as an attacker replaying recorded
// gossip would, is applied once.
func TestReplayedDrillRequestIsRefused(t *testing.T) {
	cfg, err := config.Parse([]byte(proxyConfig(freePort(t, "127.0.0.1"), "1s", "s0=127.0.0.1:1")))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(drillMsg{Op: opYield, For: time.Minute, ID: newRequestID(), Sent: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	d.drills.handle(b)
	if yield, _, _ := d.drills.roles(time.Now()); !yield {
		t.Fatal("the first delivery was not applied")
	}
	d.drills.apply(drillMsg{Op: opEnd})
	d.drills.handle(b)
	if yield, _, _ := d.drills.roles(time.Now()); yield {
		t.Fatal("the replayed request was applied again")
	}
	old, _ := json.Marshal(drillMsg{Op: opYield, For: time.Minute})
	d.drills.handle(old)
	if yield, _, _ := d.drills.roles(time.Now()); yield {
		t.Fatal("a request without ID and send time was applied")
	}
}
