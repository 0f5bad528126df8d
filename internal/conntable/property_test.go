package conntable

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestConvergesThroughLossyNetwork applies random add/remove histories to
// a table, broadcasts what changed since the last broadcast every tick
// through a network that drops, duplicates, delays and reorders chunks,
// and answers the receiver's snapshot requests. Without loss the replica
// must equal the table after every tick; with loss it must converge once
// the network is clean again.
func TestConvergesThroughLossyNetwork(t *testing.T) {
	for seed := range uint64(30) {
		lossy := seed%3 != 0
		vip := vip4
		if seed%2 == 1 {
			vip = vip6
		}
		rng := rand.New(rand.NewPCG(seed, 99))
		tb := NewTable(vip, seed+1)
		tb.maxLog = 64 // small, so some requests need snapshots
		r := NewReplica(1 << 20)
		// Connections come from a pool, so removes hit and the table
		// settles around half of it.
		pool := make([]Conn, 600)
		for i := range pool {
			pool[i] = randomConn(rng, vip, 60)
		}
		chunkSize := MinChunk + rng.IntN(400)
		var delayed [][]byte
		sentAt := uint64(math.MaxUint64) // the first broadcast is a snapshot
		wantSnapshot := false
		deliver := func(chunks [][]byte, loss bool) {
			if loss {
				var kept [][]byte
				for _, c := range chunks {
					switch p := rng.Float64(); {
					case p < 0.08: // dropped
					case p < 0.12:
						kept = append(kept, c, c)
					case p < 0.2:
						delayed = append(delayed, c)
					default:
						kept = append(kept, c)
					}
				}
				chunks = kept
			}
			rng.Shuffle(len(chunks), func(i, j int) { chunks[i], chunks[j] = chunks[j], chunks[i] })
			for _, c := range chunks {
				st, err := r.Apply(c, t0)
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				if st == NeedSnapshot {
					wantSnapshot = true
				}
			}
		}
		encode := func(since uint64) [][]byte {
			chunks, err := tb.Encode(since, chunkSize)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range chunks {
				if len(c) > chunkSize {
					t.Fatalf("seed %d: chunk of %d bytes, limit %d", seed, len(c), chunkSize)
				}
			}
			return chunks
		}
		for tick := range 120 {
			for range rng.IntN(30) {
				c := pool[rng.IntN(len(pool))]
				if rng.IntN(2) == 0 {
					tb.Remove(c)
					continue
				}
				if err := tb.Add(c); err != nil {
					t.Fatal(err)
				}
			}
			chunks := encode(sentAt)
			sentAt = tb.Version()
			if wantSnapshot {
				// The receiver asked, naming the version it has.
				wantSnapshot = false
				since, synced := r.Version()
				if !synced {
					since = math.MaxUint64
				}
				chunks = append(chunks, encode(since)...)
			}
			late := delayed
			delayed = nil
			deliver(append(chunks, late...), lossy)
			if lossy {
				continue
			}
			if want, got := tb.Conns(), r.Conns(); !slices.Equal(want, got) {
				if diff := cmp.Diff(want, got, sameConn); diff != "" {
					t.Fatalf("seed %d tick %d: replica differs without loss (-want +got):\n%s", seed, tick, diff)
				}
			}
		}
		// The network heals: requests are answered until in step.
		for range 3 {
			since, synced := r.Version()
			if synced && since == tb.Version() {
				break
			}
			if !synced {
				since = math.MaxUint64
			}
			deliver(encode(since), false)
		}
		if v, _ := r.Version(); v != tb.Version() {
			t.Fatalf("seed %d: replica at version %d, table at %d", seed, v, tb.Version())
		}
		if diff := cmp.Diff(tb.Conns(), r.Conns(), sameConn); diff != "" {
			t.Fatalf("seed %d: replica did not converge (-want +got):\n%s", seed, diff)
		}
	}
}

// randomTable returns a table of n connections from clients with a few
// connections each, like an API server's.
func randomTable(n int, vip netip.Addr) *Table {
	rng := rand.New(rand.NewPCG(uint64(n), 5))
	tb := NewTable(vip, 1)
	for tb.Len() < n {
		_ = tb.Add(randomConn(rng, vip, n/3))
	}
	return tb
}

// BenchmarkShare measures the wire cost of sharing a table of 1000 (and
// 20 000) connections: a full snapshot, and the deltas of 5 changes per
// second broadcast every 200 ms. docs/tickle.md quotes the numbers.
func BenchmarkShare(b *testing.B) {
	for _, n := range []int{1000, 20000} {
		for _, vip := range []netip.Addr{vip4, vip6} {
			name := "v4"
			if vip.Is6() {
				name = "v6"
			}
			tb := randomTable(n, vip)
			b.Run(name+"/snapshot/"+strconv.Itoa(n), func(b *testing.B) {
				var bytes int
				for b.Loop() {
					chunks, _ := tb.Snapshot(DefaultChunk)
					bytes = 0
					for _, c := range chunks {
						bytes += len(c)
					}
				}
				b.ReportMetric(float64(bytes), "bytes")
				b.ReportMetric(float64(bytes)/float64(n), "bytes/conn")
			})
			b.Run(name+"/delta-5-per-s/"+strconv.Itoa(n), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(7, 7))
				live := tb.Conns()
				var total, ticks int
				for b.Loop() {
					// One 200 ms tick: one change (5/s), half adds, half removes.
					since := tb.Version()
					if rng.IntN(2) == 0 {
						c := randomConn(rng, vip, n/3)
						_ = tb.Add(c)
						live = append(live, c)
					} else if len(live) > 0 {
						i := rng.IntN(len(live))
						tb.Remove(live[i])
						live[i] = live[len(live)-1]
						live = live[:len(live)-1]
					}
					chunks, _ := tb.Encode(since, DefaultChunk)
					for _, c := range chunks {
						total += len(c)
					}
					ticks++
				}
				b.ReportMetric(float64(total)/float64(ticks)*5, "bytes/s")
			})
		}
	}
}

// BenchmarkShareTick measures the CPU of one 200 ms sharing tick as the
// daemon runs it on a holder of 20 000 connections with one change: Sync
// from the proxy's full session list, Encode the delta, and a receiver's
// Apply. The cpu-% metric is that time over the 200 ms period, for one
// receiver; docs/tickle.md quotes it.
func BenchmarkShareTick(b *testing.B) {
	for _, n := range []int{1000, 20000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			tb := randomTable(n, vip4)
			rep := NewReplica(DefaultLimits.MaxConns)
			chunks, _ := tb.Snapshot(DefaultChunk)
			for _, c := range chunks {
				if _, err := rep.Apply(c, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			rng := rand.New(rand.NewPCG(3, 3))
			list := tb.Conns()
			for b.Loop() {
				since := tb.Version()
				// One session ends and another opens: the proxy's list.
				i := rng.IntN(len(list))
				list[i] = randomConn(rng, vip4, n/3)
				if err := tb.Sync(list); err != nil {
					b.Fatal(err)
				}
				chunks, _ := tb.Encode(since, DefaultChunk)
				for _, c := range chunks {
					if _, err := rep.Apply(c, time.Now()); err != nil {
						b.Fatal(err)
					}
				}
			}
			perTick := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(perTick*1e6, "µs/tick")
			b.ReportMetric(perTick/0.2*100, "cpu-%")
		})
	}
}
