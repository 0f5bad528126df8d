package cluster

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"time"

	"github.com/hashicorp/memberlist"
)

// A peer's state travels in memberlist's broadcasts, and one can be lost:
// memberlist v0.7.0 drops a queued broadcast when a later one gets the same
// id and length (hashicorp/memberlist#263: its id counter restarts at zero
// whenever the queue empties, also while a new broadcast replaces the only
// one queued). In a two-node cluster two alive messages of the same length
// are the rule, and the lost one can be a claim: the old holder then waits
// for the new one to show it holds the VIP, and both keep it until the next
// push/pull, up to 10 s later. UDP loss on a real network does the same.
//
// So every ack to a probe carries a digest of the state the acking node
// gossips, and the prober compares it with the state it has for that node.
// A mismatch that outlasts a broadcast's retransmissions means an update
// was lost: the prober pulls the peer's state at once with a push/pull.

// digestVersion starts an ack payload; another first byte is ignored, so a
// later format can replace this one.
const digestVersion = 1

// staleAfter is how long a peer's acks may report a state other than the one
// known here before it is pulled: longer than a broadcast takes to arrive
// (three retransmissions 50 ms apart, and a busy receiver), short of a
// second so that the make-before-break handover it unblocks stays quick.
const staleAfter = 400 * time.Millisecond

// metaSum is the digest of encoded state meta; 64 bits of FNV-1a tell
// states apart well enough, as nothing is lost by a rare collision but
// the quick repair.
func metaSum(meta []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(meta)
	return h.Sum64()
}

// encodeDigest is the ack payload for the local state meta.
func encodeDigest(meta []byte) []byte {
	return binary.BigEndian.AppendUint64([]byte{digestVersion}, metaSum(meta))
}

// decodeDigest reads an ack payload; ok is false for an empty payload (a
// node that predates digests) or one in another format.
func decodeDigest(b []byte) (sum uint64, ok bool) {
	if len(b) != 9 || b[0] != digestVersion {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[1:]), true
}

// staleness follows, for one peer, how long its acks have reported a state
// other than the one known here.
type staleness struct {
	sum    uint64    // the digest the acks report
	since  time.Time // first ack reporting sum; zero while they agree
	pulled time.Time // latest pull asked for
}

// observe takes an ack's digest, with the digest of the state known here,
// and reports whether to pull the peer's state now: the acks have reported
// the same other state for staleAfter, and no pull was asked for within
// staleAfter (one in flight, or one that brought what the peer itself
// still advertises).
func (s *staleness) observe(known, acked uint64, now time.Time) bool {
	if acked == known {
		s.since = time.Time{}
		return false
	}
	if s.since.IsZero() || acked != s.sum {
		s.sum, s.since = acked, now
		return false
	}
	if now.Sub(s.since) < staleAfter || now.Sub(s.pulled) < staleAfter {
		return false
	}
	s.pulled = now
	return true
}

// acked notes that peer name answered a probe at now, with the digest its
// ack carried, and queues a pull when its state here is stale. It is
// called from memberlist's probe, so it never blocks.
func (c *Cluster) acked(name string, payload []byte, now time.Time) {
	sum, digest := decodeDigest(payload)
	c.mu.Lock()
	p, known := c.peers[name]
	if known {
		p.lastHeard = now
	}
	pull := known && digest && p.stale.observe(p.metaSum, sum, now)
	c.mu.Unlock()
	if !pull {
		return
	}
	select {
	case c.pulls <- name:
	default: // a pull is already queued; it catches up with this one too
	}
}

// pullLoop runs the pulls acked queues: a push/pull with the peer
// brings its current state at the incarnation it advertises.
func (c *Cluster) pullLoop(ctx context.Context, ml *memberlist.Memberlist) {
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-c.pulls:
			c.mu.Lock()
			p, ok := c.peers[name]
			var addr string
			if ok {
				addr = p.addr.String()
			}
			c.mu.Unlock()
			if !ok {
				continue
			}
			c.pulled.Add(1)
			c.log.Info("the state known here for a peer is older than the one it advertises (a gossip update was lost): pulling it",
				"peer", name, "addr", addr)
			if _, err := ml.Join([]string{addr}); err != nil {
				c.log.Warn("pull peer state", "peer", name, "err", flatten(err))
			}
		}
	}
}

// StatePulls counts the pulls of a peer's state that a lost gossip update
// started since the node started.
func (c *Cluster) StatePulls() uint64 { return c.pulled.Load() }
