package handoff

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	t0   = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	macA = net.HardwareAddr{2, 0, 0, 0, 0, 0xa}
	macC = net.HardwareAddr{2, 0, 0, 0, 0, 0xc}
	vip  = netip.MustParseAddr("192.168.66.160")
)

func offer(s State, mac net.HardwareAddr, left uint32) Offer {
	return Offer{VIP: vip, MAC: mac, State: s, Left: left}
}

func TestPickPeer(t *testing.T) {
	tests := []struct {
		name   string
		peers  []Peer
		want   string
		wantOK bool
	}{
		{name: "no offers: tickle as after a crash", peers: []Peer{{Name: "a", Alive: true}}},
		{name: "the alive holder", want: "a", wantOK: true,
			peers: []Peer{{Name: "a", Alive: true, Offer: offer(Holding, macA, 0), Heard: t0}}},
		{name: "a dead holder is tickled, not forwarded to",
			peers: []Peer{{Name: "a", Alive: false, Offer: offer(Holding, macA, 0), Heard: t0}}},
		{name: "an offer older than Fresh is not trusted",
			peers: []Peer{{Name: "a", Alive: true, Offer: offer(Holding, macA, 0), Heard: t0.Add(-Fresh - time.Millisecond)}}},
		{name: "an offer without a hardware address is useless",
			peers: []Peer{{Name: "a", Alive: true, Offer: offer(Holding, nil, 0), Heard: t0}}},
		{name: "a finished peer has nothing to forward",
			peers: []Peer{{Name: "a", Alive: true, Offer: offer(Done, macA, 0), Heard: t0}}},
		{name: "the holder beats a peer still handing off an earlier move", want: "a", wantOK: true,
			peers: []Peer{
				{Name: "c", Alive: true, Offer: offer(Handing, macC, 4), Heard: t0},
				{Name: "a", Alive: true, Offer: offer(Holding, macA, 0), Heard: t0.Add(-100 * time.Millisecond)},
			}},
		{name: "a peer still handing off when nobody holds", want: "c", wantOK: true,
			peers: []Peer{{Name: "c", Alive: true, Offer: offer(Handing, macC, 4), Heard: t0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := PickPeer(tt.peers, t0)
			if ok != tt.wantOK || got.Name != tt.want {
				t.Fatalf("PickPeer = %q, %v; want %q, %v", got.Name, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestNextForward(t *testing.T) {
	f := Forwarding{Peer: "a", Since: t0, Deadline: t0.Add(32 * time.Second)}
	before := t0.Add(-50 * time.Millisecond)
	after := t0.Add(300 * time.Millisecond)
	tests := []struct {
		name   string
		peer   Peer
		held   bool
		lost   time.Time
		cap    time.Time
		now    time.Time
		want   Stop
		tickle bool
	}{
		{name: "old holder serving its connections", held: true, now: after,
			peer: Peer{Alive: true, Offer: offer(Handing, macA, 120), Heard: after}, want: Forward},
		{name: "old holder has not released yet", held: true, now: after,
			peer: Peer{Alive: true, Offer: offer(Holding, macA, 0), Heard: after}, want: Forward},
		{name: "no connection left there, but only the old holder says it is over", held: true, now: after,
			peer: Peer{Alive: true, Offer: offer(Handing, macA, 0), Heard: after}, want: Forward},
		{name: "it said done", held: true, now: after,
			peer: Peer{Alive: true, Offer: offer(Done, macA, 0), Heard: after}, want: StopDone},
		{name: "a done from before the move says nothing", held: true, now: after,
			peer: Peer{Alive: true, Offer: offer(Done, macA, 0), Heard: before}, want: Forward},
		{name: "old holder died: tickle", held: true, now: after,
			peer: Peer{Alive: false, Offer: offer(Handing, macA, 120), Heard: after}, want: StopDead, tickle: true},
		{name: "old holder could not keep the address: tickle", held: true, now: after,
			peer: Peer{Alive: true, Offer: offer(Aborted, macA, 120), Heard: after}, want: StopAborted, tickle: true},
		{name: "deadline", held: true, now: f.Deadline,
			peer: Peer{Alive: true, Offer: offer(Handing, macA, 3), Heard: f.Deadline}, want: StopDeadline},
		{name: "deadline passed while the old holder, released late, still serves: forward", held: true,
			cap: f.Deadline.Add(30 * time.Second), now: f.Deadline.Add(time.Second),
			peer: Peer{Alive: true, Offer: offer(Handing, macA, 3), Heard: f.Deadline.Add(time.Second - 200*time.Millisecond)}, want: Forward},
		{name: "deadline passed, the old holder's last word is stale", held: true,
			cap: f.Deadline.Add(30 * time.Second), now: f.Deadline.Add(5 * time.Second),
			peer: Peer{Alive: true, Offer: offer(Handing, macA, 3), Heard: f.Deadline.Add(5*time.Second - Grace)}, want: StopDeadline},
		{name: "cap passed although the old holder still serves", held: true,
			cap: f.Deadline.Add(30 * time.Second), now: f.Deadline.Add(30 * time.Second),
			peer: Peer{Alive: true, Offer: offer(Handing, macA, 3), Heard: f.Deadline.Add(30 * time.Second)}, want: StopDeadline},
		{name: "VIP lost here: forwarding goes on while clients may still send here", held: false, lost: after, now: after.Add(Grace / 2),
			peer: Peer{Alive: true, Offer: offer(Holding, macA, 0), Heard: after}, want: Forward},
		{name: "VIP lost here for Grace: the old holder's connections are its own again", held: false, lost: after, now: after.Add(Grace),
			peer: Peer{Alive: true, Offer: offer(Holding, macA, 0), Heard: after}, want: StopLost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := f
			f.Lost, f.Cap = tt.lost, tt.cap
			got := NextForward(f, tt.peer, tt.held, tt.now)
			if got != tt.want || got.Tickle() != tt.tickle {
				t.Fatalf("NextForward = %v (tickle %v), want %v (tickle %v)", got, got.Tickle(), tt.want, tt.tickle)
			}
		})
	}
}

func TestNextQuiet(t *testing.T) {
	q := Quiet{Since: t0, Deadline: t0.Add(30 * time.Second)}
	tests := []struct {
		name      string
		open      int
		heldAgain bool
		now       time.Time
		want      QuietStep
	}{
		{name: "connections open, drain running", open: 200, now: t0.Add(time.Second), want: KeepQuiet},
		{name: "all closed before the drain ends", open: 0, now: t0.Add(MinQuiet), want: EndQuiet},
		{name: "none open just after the move: a handshake may be in flight", open: 0, now: t0.Add(MinQuiet / 2), want: KeepQuiet},
		{name: "drain over: close the rest cleanly", open: 12, now: q.Deadline, want: CloseRest},
		{name: "nothing left at the deadline", open: 0, now: q.Deadline, want: EndQuiet},
		{name: "VIP back here: keep serving as holder", open: 200, heldAgain: true, now: q.Deadline, want: EndQuiet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, NextQuiet(q, tt.open, tt.heldAgain, tt.now)); diff != "" {
				t.Fatalf("NextQuiet (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOfferRoundTrip(t *testing.T) {
	for _, o := range []Offer{
		offer(Holding, macA, 0),
		offer(Handing, macC, 70000),
		{VIP: netip.MustParseAddr("fd00::160"), MAC: macA, State: Done},
	} {
		got, err := ParseOffer(o.Marshal())
		if err != nil {
			t.Fatalf("ParseOffer(%v): %v", o, err)
		}
		if diff := cmp.Diff(o, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestParseOfferRejects(t *testing.T) {
	good := offer(Handing, macA, 5).Marshal()
	bad := map[string][]byte{
		"empty":         nil,
		"version":       append([]byte{9}, good[1:]...),
		"state":         append([]byte{good[0], 0}, good[2:]...),
		"address":       append([]byte{good[0], good[1], 5}, good[3:]...),
		"truncated":     good[:len(good)-1],
		"trailing byte": append(append([]byte(nil), good...), 0),
	}
	for name, b := range bad {
		if _, err := ParseOffer(b); err == nil {
			t.Errorf("%s: ParseOffer accepted %x", name, b)
		}
	}
}

func FuzzParseOffer(f *testing.F) {
	f.Add(offer(Handing, macA, 5).Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseOffer(b)
		if err != nil {
			return
		}
		if got, err := ParseOffer(o.Marshal()); err != nil || got.State != o.State || got.VIP != o.VIP {
			t.Fatalf("re-encoded offer %v did not round-trip: %v %v", o, got, err)
		}
	})
}
