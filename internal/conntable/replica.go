package conntable

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Status is what applying a chunk did.
type Status int

const (
	// Applied: the chunk was taken in (the replica may still wait for
	// the other chunks of its update).
	Applied Status = iota
	// Stale: the chunk is of an update the replica already has, or older.
	Stale
	// NeedSnapshot: the replica cannot follow (it missed an update, or the
	// origin restarted); the origin should be asked for a snapshot.
	NeedSnapshot
)

func (s Status) String() string {
	switch s {
	case Applied:
		return "applied"
	case Stale:
		return "stale"
	case NeedSnapshot:
		return "need snapshot"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Replica is a receiver's copy of one origin's table for one VIP, built
// from that origin's chunks. It holds at most a fixed number of
// connections. It is not safe for concurrent use; Store guards it.
type Replica struct {
	vip      netip.Addr
	maxConns int
	synced   bool // has had a whole snapshot of epoch
	epoch    uint64
	version  uint64
	set      map[Conn]struct{}
	// dropped counts connections refused because the replica was full.
	dropped int
	heard   time.Time

	// The update being assembled, applied chunk by chunk.
	pend     *pending
	snapshot map[Conn]struct{} // a snapshot's entries until its last chunk
}

type pending struct {
	kind          byte
	epoch         uint64
	base, version uint64
	got           []bool
	left          int
}

// NewReplica returns an empty replica that keeps at most maxConns
// connections.
func NewReplica(maxConns int) *Replica {
	return &Replica{maxConns: maxConns, set: make(map[Conn]struct{})}
}

// Apply takes in one chunk received at now.
func (r *Replica) Apply(b []byte, now time.Time) (Status, error) {
	c, err := decode(b)
	if err != nil {
		return Stale, err
	}
	return r.apply(c, now)
}

func (r *Replica) apply(c chunk, now time.Time) (Status, error) {
	if r.vip.IsValid() && c.vip != r.vip {
		return Stale, fmt.Errorf("apply connection table chunk: VIP %s, this replica is of %s", c.vip, r.vip)
	}
	r.vip = c.vip
	r.heard = now
	if c.kind == kindSnapshot {
		return r.applySnapshot(c), nil
	}
	if !r.synced || c.epoch != r.epoch {
		return NeedSnapshot, nil
	}
	if c.version <= r.version {
		// An update already complete; an empty one at our version
		// confirms we are in step.
		return Stale, nil
	}
	if c.base != r.version {
		return NeedSnapshot, nil
	}
	p := r.pend
	if p == nil || p.kind != kindDelta || p.base != c.base || p.version != c.version || len(p.got) != c.count {
		// A newer update from our version supersedes one half applied:
		// it names every connection changed since our version, with its
		// final state, so whatever the other applied it overwrites.
		p = &pending{kind: kindDelta, epoch: c.epoch, base: c.base, version: c.version, got: make([]bool, c.count), left: c.count}
		r.pend = p
	}
	if p.got[c.index] {
		return Stale, nil
	}
	p.got[c.index] = true
	p.left--
	for _, conn := range c.conns {
		if c.removes {
			delete(r.set, conn)
		} else {
			r.add(r.set, conn)
		}
	}
	if p.left == 0 {
		r.version = c.version
		r.pend = nil
	}
	return Applied, nil
}

func (r *Replica) applySnapshot(c chunk) Status {
	if r.synced && c.epoch == r.epoch && c.version <= r.version {
		return Stale
	}
	p := r.pend
	if p == nil || p.kind != kindSnapshot || p.epoch != c.epoch || p.version != c.version || len(p.got) != c.count {
		if p != nil && p.kind == kindSnapshot && p.epoch == c.epoch && p.version > c.version {
			return Stale // a newer snapshot is already coming in
		}
		p = &pending{kind: kindSnapshot, epoch: c.epoch, version: c.version, got: make([]bool, c.count), left: c.count}
		r.pend = p
		r.snapshot = make(map[Conn]struct{})
	}
	if p.got[c.index] {
		return Stale
	}
	p.got[c.index] = true
	p.left--
	for _, conn := range c.conns {
		r.add(r.snapshot, conn)
	}
	if p.left == 0 {
		r.set, r.snapshot, r.pend = r.snapshot, nil, nil
		r.synced, r.epoch, r.version = true, c.epoch, c.version
	}
	return Applied
}

// add puts conn into set unless the replica is full; the bound keeps a
// receiver's memory fixed whatever a peer sends.
func (r *Replica) add(set map[Conn]struct{}, conn Conn) {
	if _, ok := set[conn]; ok {
		return
	}
	if len(set) >= r.maxConns {
		r.dropped++
		return
	}
	set[conn] = struct{}{}
}

// Conns returns the connections the replica holds, in encoding order.
// Between the chunks of an update it holds a mix of before and after,
// which is what a node taking over mid-update should tickle.
func (r *Replica) Conns() []Conn {
	out := make([]Conn, 0, len(r.set))
	for c := range r.set {
		out = append(out, c)
	}
	slices.SortFunc(out, compare)
	return out
}

// Version is the origin's version this replica is complete at, and
// whether it has ever been complete (had a whole snapshot).
func (r *Replica) Version() (uint64, bool) { return r.version, r.synced }

// Len is how many connections the replica holds.
func (r *Replica) Len() int { return len(r.set) }

// Dropped is how many connections were refused because the replica was
// full.
func (r *Replica) Dropped() int { return r.dropped }

// Heard is when the replica last received a chunk.
func (r *Replica) Heard() time.Time { return r.heard }
