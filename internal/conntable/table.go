package conntable

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// Conn is one client connection through a VIP: the VIP with the
// frontend's port, and the client's address and port. Its fields match
// tickle.Target, so one converts to the other.
type Conn struct {
	VIP    netip.AddrPort
	Client netip.AddrPort
}

func (c Conn) String() string { return c.Client.String() + "->" + c.VIP.String() }

// compare orders connections as the encoding groups them: by frontend
// port, then client address, then client port.
func compare(a, b Conn) int {
	if c := cmp.Compare(a.VIP.Port(), b.VIP.Port()); c != 0 {
		return c
	}
	if c := a.Client.Addr().Compare(b.Client.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Client.Port(), b.Client.Port())
}

// DefaultMaxLog is how many changes a Table remembers for deltas; a
// receiver further behind gets a snapshot instead.
const DefaultMaxLog = 4096

// Table is the holder's set of established client connections through
// one VIP, versioned so that it can send only what changed. It is safe
// for concurrent use.
type Table struct {
	mu      sync.Mutex
	vip     netip.Addr
	epoch   uint64
	version uint64
	// live maps each connection to the Sync generation that last listed
	// it, so a Sync marks and sweeps in place instead of building a set
	// of the whole list every 200 ms.
	live map[Conn]uint64
	gen  uint64
	// log holds the latest changes in version order (entry i is version
	// horizon+1+i), so a delta costs what changed, not the table's size.
	log []change
	// horizon is the oldest version a delta can start from: changes at
	// or before it have been forgotten.
	horizon uint64
	maxLog  int
}

type change struct {
	conn    Conn
	removed bool
}

// NewTable returns an empty table for vip. epoch must differ between
// runs of the holder (a random number or the start time in nanoseconds):
// receivers take a new epoch as "start over from a snapshot", since
// versions restart with it.
func NewTable(vip netip.Addr, epoch uint64) *Table {
	return &Table{
		vip:    vip.Unmap(),
		epoch:  epoch,
		live:   make(map[Conn]uint64),
		maxLog: DefaultMaxLog,
	}
}

// norm checks that c belongs to this table's VIP and returns it with
// 4-in-6 addresses unmapped, so one connection has one key.
func (t *Table) norm(c Conn) (Conn, error) {
	c = Conn{
		VIP:    netip.AddrPortFrom(c.VIP.Addr().Unmap(), c.VIP.Port()),
		Client: netip.AddrPortFrom(c.Client.Addr().Unmap(), c.Client.Port()),
	}
	if c.VIP.Addr() != t.vip {
		return c, fmt.Errorf("connection %s is not through VIP %s", c, t.vip)
	}
	if !c.Client.IsValid() || c.Client.Addr().Is4() != t.vip.Is4() || c.Client.Addr().Zone() != "" {
		return c, fmt.Errorf("connection %s: client address must be of the VIP's family, without zone", c)
	}
	return c, nil
}

// Add records an established connection. Adding one already present
// changes nothing.
func (t *Table) Add(c Conn) error {
	c, err := t.norm(c)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.add(c)
	return nil
}

func (t *Table) add(c Conn) {
	if _, ok := t.live[c]; ok {
		t.live[c] = t.gen
		return
	}
	t.live[c] = t.gen
	t.record(change{conn: c})
}

// Remove forgets a closed connection. Removing one absent changes
// nothing.
func (t *Table) Remove(c Conn) {
	c, err := t.norm(c)
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.remove(c)
}

func (t *Table) remove(c Conn) {
	if _, ok := t.live[c]; !ok {
		return
	}
	delete(t.live, c)
	t.record(change{conn: c, removed: true})
}

// Sync makes the table equal to conns, the holder's current list (from
// its proxy's sessions): entries it no longer lists are removed, so one
// missed Remove cannot leave a stale entry behind. It returns an error
// naming the first connection that is not through this VIP, after
// applying all the others.
func (t *Table) Sync(conns []Conn) error {
	var first error
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	for _, c := range conns {
		n, err := t.norm(c)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		t.add(n) // marks it with this generation
	}
	for c, g := range t.live {
		if g != t.gen {
			t.remove(c)
		}
	}
	return first
}

// record appends a change as the next version, forgetting the older
// half of the log once it is full.
func (t *Table) record(c change) {
	t.version++
	if len(t.log) >= t.maxLog {
		drop := len(t.log) / 2
		t.horizon += uint64(drop)
		t.log = append(t.log[:0], t.log[drop:]...)
	}
	t.log = append(t.log, c)
}

// Version is the table's version: the number of changes since it was
// made.
func (t *Table) Version() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.version
}

// Len is how many connections the table holds.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.live)
}

// Conns returns the connections, in encoding order.
func (t *Table) Conns() []Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Conn, 0, len(t.live))
	for c := range t.live {
		out = append(out, c)
	}
	slices.SortFunc(out, compare)
	return out
}

// Encode returns the chunks, each at most maxBytes long, that bring a
// receiver at version since of this table's epoch up to the current
// version: the changes since then, or a snapshot when since is older
// than the log reaches or newer than the table (another epoch).
// With nothing changed it returns one empty delta, which tells a
// receiver that is behind to ask for a snapshot.
func (t *Table) Encode(since uint64, maxBytes int) ([][]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if since < t.horizon || since > t.version {
		return t.snapshot(maxBytes)
	}
	// The last change of each connection is its final state.
	final := make(map[Conn]bool)
	for _, c := range t.log[since-t.horizon:] {
		final[c.conn] = c.removed
	}
	var adds, removes []Conn
	for c, removed := range final {
		if removed {
			removes = append(removes, c)
		} else {
			adds = append(adds, c)
		}
	}
	h := header{kind: kindDelta, epoch: t.epoch, base: since, version: t.version, vip: t.vip}
	return encode(h, adds, removes, maxBytes)
}

// Snapshot returns the whole table as chunks of at most maxBytes.
func (t *Table) Snapshot(maxBytes int) ([][]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.snapshot(maxBytes)
}

func (t *Table) snapshot(maxBytes int) ([][]byte, error) {
	all := make([]Conn, 0, len(t.live))
	for c := range t.live {
		all = append(all, c)
	}
	h := header{kind: kindSnapshot, epoch: t.epoch, version: t.version, vip: t.vip}
	return encode(h, all, nil, maxBytes)
}
