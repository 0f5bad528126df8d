package daemon

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
)

// Drill requests travel sealed with the gossip key, but memberlist does
// not stop a recorded one from being sent again later, which would move
// the VIP again. So each request carries a random ID and its send time,
// and a peer refuses one that is too old by its own clock or that it has
// already applied.

// replayWindow is how old (or, for a clock ahead of ours, how new) a
// request may be. It bounds how long IDs are remembered, and how far the
// LB hosts' clocks may differ for drills to work.
const replayWindow = 2 * time.Minute

// replayGuard remembers the IDs of the requests applied within twice the
// window. Its zero value is ready to use.
type replayGuard struct {
	mu   sync.Mutex
	seen map[string]time.Time // request ID -> when it was applied
}

// newRequestID returns a random ID for a request.
func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// check returns "" when a request with id, sent at sent, may be applied
// at now and records it; otherwise why it is refused.
func (g *replayGuard) check(id string, sent, now time.Time) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	// Only key holders make new IDs, so the map stays small; expiring
	// entries here keeps it so without a goroutine.
	for k, at := range g.seen {
		if now.Sub(at) > 2*replayWindow {
			delete(g.seen, k)
		}
	}
	if id == "" || sent.IsZero() {
		return "it carries no request ID and send time: the sender's halb predates replay protection; upgrade it"
	}
	if age := now.Sub(sent); age > replayWindow || age < -replayWindow {
		return fmt.Sprintf("sent %s ago by the sender's clock, outside ±%s: a replay, or the nodes' clocks differ (check NTP)", age.Round(time.Second), replayWindow)
	}
	if g.seen == nil {
		g.seen = map[string]time.Time{}
	}
	if _, dup := g.seen[id]; dup {
		return "this request was already applied: a replay"
	}
	g.seen[id] = now
	return ""
}
