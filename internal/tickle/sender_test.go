package tickle

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// recorder is a Writer that notes when each packet was written and to
// whom; fail, when set, decides the write's error.
type recorder struct {
	mu    sync.Mutex
	start time.Time
	at    []time.Duration
	dst   []netip.Addr
	pkts  [][]byte
	fail  func(n int) error
}

func (r *recorder) WritePacket(pkt []byte, dst netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(pkt) != 40 && len(pkt) != 60 {
		return fmt.Errorf("not a tickle: %x", pkt)
	}
	r.at = append(r.at, time.Since(r.start))
	r.dst = append(r.dst, dst)
	r.pkts = append(r.pkts, slices.Clone(pkt))
	if r.fail != nil {
		return r.fail(len(r.at))
	}
	return nil
}

func targets(n int) []Target {
	ts := make([]Target, n)
	for i := range ts {
		ts[i] = Target{
			VIP:    netip.MustParseAddrPort("10.1.0.10:6443"),
			Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), uint16(30000+i%1000)),
		}
	}
	return ts
}

func TestSendRoundsAndPacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, rate = 2000, 10_000
		rec := &recorder{start: time.Now()}
		s, err := NewSender(rec, Options{Rate: rate, Rounds: []time.Duration{0, 50 * time.Millisecond, 600 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		ts := targets(n)
		res, err := s.Send(t.Context(), ts)
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent != 3*n || res.Failed != 0 || res.Built != n || res.Targets != n {
			t.Fatalf("result %+v, want %d sent", res, 3*n)
		}
		// Every target once per round, in order.
		for i, d := range rec.dst {
			if want := ts[i%n].Client.Addr(); d != want {
				t.Fatalf("packet %d went to %v, want %v", i, d, want)
			}
		}
		// A round starts at its offset or after the previous one: round 2
		// (due at 50 ms) waits for round 1, which takes n/rate = 200 ms
		// less the one batch the pacing may run ahead.
		roundStart := []time.Duration{rec.at[0], rec.at[n], rec.at[2*n]}
		if roundStart[0] != 0 || roundStart[1] < 198*time.Millisecond || roundStart[2] != 600*time.Millisecond {
			t.Errorf("rounds started at %v, want 0, ≥198ms, 600ms", roundStart)
		}
		// Never more than rate×elapsed (plus one wake's batch) in any round.
		for r := range 3 {
			for i := range n {
				elapsed := rec.at[r*n+i] - roundStart[r]
				if allowed := int(math.Ceil(elapsed.Seconds()*rate)) + rate/1000 + 1; i+1 > allowed {
					t.Fatalf("round %d: packet %d written %v into the round, more than the rate allows", r, i, elapsed)
				}
			}
		}
	})
}

// A spread slows a round down to cover the window, evenly; it never
// speeds one up beyond the rate, and the repeat follows the first round.
func TestSendSpread(t *testing.T) {
	for _, tt := range []struct {
		name      string
		n, rate   int
		spread    time.Duration
		wantRound time.Duration // the first round's last packet, ±1 ms
	}{
		{"spread over 2s", 1001, 50_000, 2 * time.Second, 2 * time.Second},
		{"rate slower than the spread", 1001, 100, time.Second, 10 * time.Second},
		{"one target", 1, 50_000, 2 * time.Second, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := &recorder{start: time.Now()}
				s, err := NewSender(rec, Options{Rate: tt.rate, Spread: tt.spread, Rounds: []time.Duration{0, 100 * time.Millisecond}})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.Send(t.Context(), targets(tt.n)); err != nil {
					t.Fatal(err)
				}
				if len(rec.at) != 2*tt.n {
					t.Fatalf("%d packets, want %d", len(rec.at), 2*tt.n)
				}
				if got := rec.at[tt.n-1]; got < tt.wantRound-time.Millisecond || got > tt.wantRound+time.Millisecond {
					t.Errorf("first round's last packet at %v, want %v", got, tt.wantRound)
				}
				// Evenly: the middle target is told halfway through.
				if mid := rec.at[tt.n/2]; tt.n > 1 && (mid < tt.wantRound/2-time.Millisecond || mid > tt.wantRound/2+time.Millisecond) {
					t.Errorf("middle packet at %v, want %v", mid, tt.wantRound/2)
				}
				if second := rec.at[tt.n]; second < rec.at[tt.n-1] || second < 100*time.Millisecond {
					t.Errorf("repeat round started at %v, before the first ended (%v)", second, rec.at[tt.n-1])
				}
			})
		})
	}
}

// The defaults must reset 10 000 connections in well under a second.
func TestSendDefaultsTenThousand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{start: time.Now()}
		s, err := NewSender(rec, Options{})
		if err != nil {
			t.Fatal(err)
		}
		const n = 10_000
		if _, err := s.Send(t.Context(), targets(n)); err != nil {
			t.Fatal(err)
		}
		if len(rec.at) != n*len(DefaultRounds) {
			t.Fatalf("%d packets, want %d", len(rec.at), n*len(DefaultRounds))
		}
		if first := rec.at[n-1]; first > 250*time.Millisecond {
			t.Errorf("first round took %v, want ≤ 250ms", first)
		}
		if last := rec.at[len(rec.at)-1]; last > time.Second {
			t.Errorf("last repeat at %v, want < 1s", last)
		}
	})
}

func TestSendStopsOnPermission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{start: time.Now(), fail: func(int) error { return os.ErrPermission }}
		s, _ := NewSender(rec, Options{})
		res, err := s.Send(t.Context(), targets(100))
		if !errors.Is(err, os.ErrPermission) || len(rec.at) != 1 || res.Failed != 1 {
			t.Fatalf("err %v after %d writes (%+v), want a permission error after 1", err, len(rec.at), res)
		}
	})
}

func TestSendCountsFailuresAndBadTargets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Every other write fails as a client's network would be unreachable.
		rec := &recorder{start: time.Now(), fail: func(n int) error {
			if n%2 == 0 {
				return errors.New("network is unreachable")
			}
			return nil
		}}
		s, _ := NewSender(rec, Options{Rounds: []time.Duration{0}})
		ts := append(targets(10), Target{VIP: netip.MustParseAddrPort("10.1.0.10:6443"), Client: netip.MustParseAddrPort("[fd00::1]:5")})
		res, err := s.Send(t.Context(), ts)
		if err != nil {
			t.Fatal(err)
		}
		if res.Targets != 11 || res.Built != 10 || res.Sent != 5 || res.Failed != 5 || res.FirstErr == nil {
			t.Fatalf("result %+v", res)
		}
	})
}

func TestSendCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		rec := &recorder{start: time.Now()}
		s, _ := NewSender(rec, Options{})
		go func() {
			time.Sleep(300 * time.Millisecond)
			cancel()
		}()
		_, err := s.Send(ctx, targets(10))
		if !errors.Is(err, context.Canceled) || len(rec.at) != 20 {
			t.Fatalf("err %v after %d writes, want cancelled before the third round", err, len(rec.at))
		}
	})
}

func TestNewSenderRejects(t *testing.T) {
	for _, o := range []Options{
		{Rate: -1},
		{Rounds: []time.Duration{0, 2 * time.Second, time.Second}},
		{Rounds: []time.Duration{-time.Second}},
		{Rounds: make([]time.Duration, maxRounds+1)},
		{Spread: -time.Second},
	} {
		if _, err := NewSender(&recorder{}, o); err == nil {
			t.Errorf("NewSender(%+v) accepted", o)
		}
	}
}

// answers is a fake Answered: by the target's index, i%4 == 0 answered
// with a reset, i%4 == 1 with an ACK acknowledging 5000+i, the others not
// at all.
type answers struct{}

func index(tg Target) int { a := tg.Client.Addr().As4(); return int(a[2])<<8 | int(a[3]) }

func (answers) Settled(tg Target, last bool) bool {
	switch index(tg) % 4 {
	case 0:
		return true
	case 1:
		return !last
	}
	return false
}

func (answers) Acked(tg Target) (uint32, bool) {
	if i := index(tg); i%4 == 1 {
		return uint32(5000 + i), true
	}
	return 0, false
}

// Repeats leave out the targets reported settled, the first round never
// does, a client that answered with an ACK gets one reset carrying its
// acknowledgement number, and a thinned round is paced from its own start
// over the packets it writes, so it ends early instead of keeping the old
// gaps.
func TestSendSkipsSettledRepeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, rate = 1000, 10_000
		rec := &recorder{start: time.Now()}
		s, err := NewSender(rec, Options{Rate: rate, Rounds: []time.Duration{0, 200 * time.Millisecond, 600 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		ts := targets(n)
		res, err := s.SendSkipping(t.Context(), ts, answers{})
		if err != nil {
			t.Fatal(err)
		}
		// Round 1: n tickles; round 2: n/4 resets and n/2 tickles
		// (i%4 == 2, 3); round 3: 3n/4 tickles, no reset again.
		wantSent := n + n/4 + n/2 + 3*n/4
		if res.Sent != wantSent || res.Resets != n/4 || res.Skipped != n/4+n/2 {
			t.Fatalf("result %+v, want %d sent, %d resets, %d skipped", res, wantSent, n/4, n/4+n/2)
		}
		if !slices.Equal(rec.dst[:n], addrs(ts)) {
			t.Fatal("the first round did not tickle every target in order")
		}
		resets := 0
		for k, pkt := range rec.pkts {
			tcp := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default).Layer(layers.LayerTypeTCP).(*layers.TCP)
			if !tcp.RST {
				continue
			}
			resets++
			i := index(Target{Client: netip.AddrPortFrom(rec.dst[k], 0)})
			if k < n || k >= n+3*n/4 || i%4 != 1 || tcp.Seq != uint32(5000+i) || tcp.ACK {
				t.Fatalf("packet %d: a reset to target %d with seq %d (ACK %v), want resets only in round 2, to i%%4 == 1, seq 5000+i, no ACK", k, i, tcp.Seq, tcp.ACK)
			}
		}
		if resets != n/4 {
			t.Errorf("%d resets written, want %d", resets, n/4)
		}
		// Round 2 starts at 200 ms and, at the rate, writes its 3n/4
		// packets in 3n/4/rate = 75 ms.
		r2 := rec.at[n : n+3*n/4]
		if r2[0] != 200*time.Millisecond || r2[len(r2)-1] > 276*time.Millisecond {
			t.Errorf("round 2 wrote from %v to %v, want from 200ms to at most 276ms", r2[0], r2[len(r2)-1])
		}
		if rec.at[n+3*n/4] != 600*time.Millisecond {
			t.Errorf("round 3 started at %v, want 600ms", rec.at[n+3*n/4])
		}
	})
}

func addrs(ts []Target) []netip.Addr {
	out := make([]netip.Addr, len(ts))
	for i, t := range ts {
		out[i] = t.Client.Addr()
	}
	return out
}
