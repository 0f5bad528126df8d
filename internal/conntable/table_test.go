package conntable

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// sameConn compares connections as values (netip's fields are hidden).
var sameConn = cmp.Comparer(func(a, b Conn) bool { return a == b })

var (
	vip4 = netip.MustParseAddr("10.0.0.100")
	vip6 = netip.MustParseAddr("fd00::100")
	t0   = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
)

func conn(vip netip.Addr, port uint16, client string) Conn {
	return Conn{VIP: netip.AddrPortFrom(vip, port), Client: netip.MustParseAddrPort(client)}
}

func TestTableAddRemoveSync(t *testing.T) {
	tb := NewTable(vip4, 1)
	a, b, c := conn(vip4, 6443, "10.0.0.1:40000"), conn(vip4, 6443, "10.0.0.2:40000"), conn(vip4, 50000, "10.0.0.1:40001")
	for _, x := range []Conn{a, b, a} {
		if err := tb.Add(x); err != nil {
			t.Fatal(err)
		}
	}
	if tb.Version() != 2 || tb.Len() != 2 {
		t.Fatalf("after adding a, b, a again: version %d, %d conns; want 2, 2", tb.Version(), tb.Len())
	}
	tb.Remove(c) // absent: no change
	tb.Remove(a)
	if tb.Version() != 3 || tb.Len() != 1 {
		t.Fatalf("after removes: version %d, %d conns; want 3, 1", tb.Version(), tb.Len())
	}
	// Sync to {c, b}: adds c, keeps b.
	if err := tb.Sync([]Conn{c, b}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Conn{b, c}, tb.Conns(), sameConn); diff != "" {
		t.Errorf("after Sync (-want +got):\n%s", diff)
	}
	// Sync drops what the holder no longer lists, and reports a foreign entry.
	err := tb.Sync([]Conn{c, conn(vip6, 6443, "[fd00::1]:1")})
	if err == nil || !strings.Contains(err.Error(), "not through VIP") {
		t.Errorf("Sync with a foreign connection: err %v", err)
	}
	if diff := cmp.Diff([]Conn{c}, tb.Conns(), sameConn); diff != "" {
		t.Errorf("after second Sync (-want +got):\n%s", diff)
	}
	// A 4-in-6 mapped client is the same connection as the plain one.
	mapped := Conn{VIP: c.VIP, Client: netip.MustParseAddrPort("[::ffff:10.0.0.1]:40001")}
	v := tb.Version()
	if err := tb.Add(mapped); err != nil || tb.Version() != v {
		t.Errorf("adding the mapped form of a present connection: err %v, version %d → %d", err, v, tb.Version())
	}
	for _, bad := range []Conn{
		conn(vip6, 1, "[fd00::1]:1"),
		{VIP: netip.AddrPortFrom(vip4, 1), Client: netip.MustParseAddrPort("[fd00::1]:1")},
		{VIP: netip.AddrPortFrom(vip4, 1)},
	} {
		if err := tb.Add(bad); err == nil {
			t.Errorf("Add(%v) accepted", bad)
		}
	}
}

// The format is shared between nodes of different versions: these bytes
// must not change without a new format number.
func TestEncodeGolden(t *testing.T) {
	tb := NewTable(vip4, 0x0102030405060708)
	for _, c := range []Conn{
		conn(vip4, 6443, "10.0.0.2:40001"),
		conn(vip4, 6443, "10.0.0.1:40000"),
		conn(vip4, 6443, "10.0.0.2:40000"),
		conn(vip4, 50000, "10.0.0.1:40002"),
	} {
		if err := tb.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	chunks, err := tb.Snapshot(DefaultChunk)
	if err != nil {
		t.Fatal(err)
	}
	want := "6874 01 00" + // magic, format, snapshot
		" 0102030405060708 0000000000000000 0000000000000004" + // epoch, base, version
		" 0000 0001" + // chunk 0 of 1
		" 04 0a000064" + // VIP
		" 0002" + // sections
		" 192b 0002" + // port 6443, 2 clients
		" 0a000001 0001 9c40" + // 10.0.0.1: 40000
		" 0a000002 0002 9c40 9c41" + // 10.0.0.2: 40000, 40001
		" c350 0001 0a000001 0001 9c42" // port 50000: 10.0.0.1: 40002
	if len(chunks) != 1 || hex.EncodeToString(chunks[0]) != strings.ReplaceAll(want, " ", "") {
		t.Errorf("snapshot\n got %x\nwant %s", chunks, strings.ReplaceAll(want, " ", ""))
	}
}

func TestSnapshotChunksRoundTrip(t *testing.T) {
	for _, vip := range []netip.Addr{vip4, vip6} {
		t.Run(vip.String(), func(t *testing.T) {
			tb := NewTable(vip, 7)
			rng := rand.New(rand.NewPCG(1, 2))
			for range 5000 {
				if err := tb.Add(randomConn(rng, vip, 300)); err != nil {
					t.Fatal(err)
				}
			}
			chunks, err := tb.Snapshot(MinChunk)
			if err != nil {
				t.Fatal(err)
			}
			if len(chunks) < 10 {
				t.Fatalf("%d chunks of at most %d bytes for %d connections", len(chunks), MinChunk, tb.Len())
			}
			r := NewReplica(1 << 20)
			// In reverse order: chunks stand alone.
			for i := len(chunks) - 1; i >= 0; i-- {
				if len(chunks[i]) > MinChunk {
					t.Fatalf("chunk %d is %d bytes, above %d", i, len(chunks[i]), MinChunk)
				}
				if st, err := r.Apply(chunks[i], t0); err != nil || st != Applied {
					t.Fatalf("chunk %d: %v %v", i, st, err)
				}
				if v, synced := r.Version(); synced != (i == 0) {
					t.Fatalf("after chunk %d: synced %v at version %d", i, synced, v)
				}
			}
			if diff := cmp.Diff(tb.Conns(), r.Conns(), sameConn); diff != "" {
				t.Errorf("replica (-want +got):\n%s", diff)
			}
		})
	}
}

func randomConn(rng *rand.Rand, vip netip.Addr, clients int) Conn {
	ports := []uint16{6443, 50000, 443}
	var client netip.Addr
	n := rng.IntN(clients)
	if vip.Is4() {
		client = netip.AddrFrom4([4]byte{10, 1, byte(n >> 8), byte(n)})
	} else {
		client = netip.AddrFrom16([16]byte{0xfd, 0, 15: byte(n), 14: byte(n >> 8)})
	}
	return Conn{
		VIP:    netip.AddrPortFrom(vip, ports[rng.IntN(len(ports))]),
		Client: netip.AddrPortFrom(client, uint16(32768+rng.IntN(4000))),
	}
}

func TestReplicaBounded(t *testing.T) {
	tb := NewTable(vip4, 1)
	rng := rand.New(rand.NewPCG(3, 4))
	for tb.Len() < 100 {
		_ = tb.Add(randomConn(rng, vip4, 1000))
	}
	chunks, _ := tb.Snapshot(DefaultChunk)
	r := NewReplica(10)
	for _, c := range chunks {
		if _, err := r.Apply(c, t0); err != nil {
			t.Fatal(err)
		}
	}
	if r.Len() != 10 || r.Dropped() != 90 {
		t.Errorf("replica of 10 given 100: holds %d, dropped %d", r.Len(), r.Dropped())
	}
}

func TestReplicaFollowsEpochAndGaps(t *testing.T) {
	a, b := conn(vip4, 6443, "10.0.0.1:1"), conn(vip4, 6443, "10.0.0.2:2")
	tb := NewTable(vip4, 1)
	_ = tb.Add(a)
	r := NewReplica(100)
	apply := func(chunks [][]byte) Status {
		t.Helper()
		var last Status
		for _, c := range chunks {
			st, err := r.Apply(c, t0)
			if err != nil {
				t.Fatal(err)
			}
			last = st
		}
		return last
	}
	enc := func(tb *Table, since uint64) [][]byte {
		t.Helper()
		c, err := tb.Encode(since, DefaultChunk)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// A delta before any snapshot cannot be followed.
	if st := apply(enc(tb, 0)); st != NeedSnapshot {
		t.Fatalf("delta to an empty replica: %v", st)
	}
	if st := apply(enc(tb, 99)); st != Applied { // since beyond the table: a snapshot
		t.Fatalf("snapshot: %v", st)
	}
	_ = tb.Add(b) // version 2
	missed := enc(tb, 1)
	tb.Remove(a) // version 3
	if st := apply(enc(tb, 2)); st != NeedSnapshot {
		t.Fatalf("delta 2→3 after missing 1→2: %v", st)
	}
	if st := apply(missed); st != Applied {
		t.Fatalf("late delta 1→2: %v", st)
	}
	if st := apply(enc(tb, 2)); st != Applied {
		t.Fatalf("delta 2→3: %v", st)
	}
	if st := apply(enc(tb, 3)); st != Stale {
		t.Fatalf("empty update at our version: %v", st)
	}
	if diff := cmp.Diff([]Conn{b}, r.Conns(), sameConn); diff != "" {
		t.Fatalf("replica (-want +got):\n%s", diff)
	}
	// The origin restarts: a new epoch's deltas need a snapshot first.
	tb2 := NewTable(vip4, 2)
	_ = tb2.Add(a)
	if st := apply(enc(tb2, 0)); st != NeedSnapshot {
		t.Fatalf("delta of a new epoch: %v", st)
	}
	if st := apply(enc(tb2, 99)); st != Applied {
		t.Fatalf("snapshot of a new epoch: %v", st)
	}
	if diff := cmp.Diff([]Conn{a}, r.Conns(), sameConn); diff != "" {
		t.Fatalf("replica after restart (-want +got):\n%s", diff)
	}
	// Chunks of another VIP are refused.
	other, _ := NewTable(vip6, 1).Snapshot(DefaultChunk)
	if _, err := r.Apply(other[0], t0); err == nil {
		t.Error("chunk of another VIP accepted")
	}
}

func TestLogBoundsDeltas(t *testing.T) {
	tb := NewTable(vip4, 1)
	tb.maxLog = 8
	for i := range 20 {
		c := conn(vip4, 6443, fmt.Sprintf("10.0.0.1:%d", 1000+i))
		_ = tb.Add(c)
		tb.Remove(c)
	}
	if len(tb.log) > 8 {
		t.Fatalf("%d changes kept, bound 8", len(tb.log))
	}
	chunks, _ := tb.Encode(1, DefaultChunk)
	if c, _ := decode(chunks[0]); c.kind != kindSnapshot {
		t.Errorf("delta from before the log's reach: kind %d, want a snapshot", c.kind)
	}
	chunks, _ = tb.Encode(tb.Version()-2, DefaultChunk)
	if c, _ := decode(chunks[0]); c.kind != kindDelta {
		t.Errorf("delta within reach: kind %d, want a delta", c.kind)
	}
}

func TestStoreExpiresAndBounds(t *testing.T) {
	s := NewStore(Limits{MaxReplicas: 2, StaleAfter: time.Minute})
	snap := func(vip netip.Addr) []byte {
		tb := NewTable(vip, 1)
		_ = tb.Add(Conn{VIP: netip.AddrPortFrom(vip, 443), Client: netip.AddrPortFrom(vip.Next(), 5)})
		c, _ := tb.Snapshot(DefaultChunk)
		return c[0]
	}
	if _, st, err := s.Apply("a", snap(vip4), t0); err != nil || st != Applied {
		t.Fatal(st, err)
	}
	if _, _, err := s.Apply("b", snap(vip6), t0.Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Apply("c", snap(vip4), t0.Add(40*time.Second)); err == nil {
		t.Fatal("a third replica beyond the bound was kept")
	}
	// Once a's replica is stale, c's takes its place.
	if src, _, err := s.Apply("c", snap(vip4), t0.Add(61*time.Second)); err != nil || src != (Source{"c", vip4}) {
		t.Fatal(src, err)
	}
	if _, ok := s.Conns(Source{"a", vip4}); ok {
		t.Error("stale replica of a still there")
	}
	if n := s.Expire(t0.Add(200 * time.Second)); n != 2 || len(s.Stats()) != 0 {
		t.Errorf("expired %d, %d left; want 2, 0", n, len(s.Stats()))
	}
}

func TestDecodeRejects(t *testing.T) {
	tb := NewTable(vip4, 1)
	_ = tb.Add(conn(vip4, 6443, "10.0.0.1:1"))
	good, _ := tb.Snapshot(DefaultChunk)
	g := good[0]
	for name, b := range map[string][]byte{
		"empty":        nil,
		"wrong magic":  append([]byte("xx"), g[2:]...),
		"format 2":     append([]byte{'h', 't', 2}, g[3:]...),
		"unknown kind": append([]byte{'h', 't', 1, 9}, g[4:]...),
		"truncated":    g[:len(g)-1],
		"trailing":     append(slices.Clone(g), 0),
	} {
		if _, err := decode(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func FuzzDecode(f *testing.F) {
	tb := NewTable(vip6, 1)
	_ = tb.Add(conn(vip6, 6443, "[fd00::1]:1"))
	_ = tb.Add(conn(vip6, 6443, "[fd00::1]:2"))
	chunks, _ := tb.Snapshot(DefaultChunk)
	f.Add(chunks[0])
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decode(b)
		if err != nil {
			return
		}
		// What decodes, re-encodes to the same connections.
		h := c.header
		var adds, removes []Conn
		if c.removes {
			removes = c.conns
		} else {
			adds = c.conns
		}
		if len(c.conns) > maxConnsPerChunk(len(b)) {
			t.Fatalf("%d connections from %d bytes", len(c.conns), len(b))
		}
		if _, err := encode(h, adds, removes, max(MinChunk, 2*len(b))); err != nil {
			t.Fatal(err)
		}
	})
}
