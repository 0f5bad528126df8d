package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"golang.org/x/sys/unix"

	"halb/internal/exitorder"
	"halb/test/support"
)

func TestSortStreamTellsWatchesFromGossip(t *testing.T) {
	hello, err := watchHello("lb1")
	if err != nil {
		t.Fatal(err)
	}
	gossip, err := memberlist.AddLabelHeaderToPacket([]byte{6, 1, 2, 3}, gossipLabel)
	if err != nil {
		t.Fatal(err)
	}
	// A label as long as the watch label that is not it.
	other, err := memberlist.AddLabelHeaderToPacket([]byte("x"), "halb-watcH")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		in        []byte
		node      string
		watch     bool
		err       string
		remaining []byte // what memberlist reads after sorting
	}{
		{name: "watch", in: append(bytes.Clone(hello), 0xff), node: "lb1", watch: true, remaining: []byte{0xff}},
		{name: "gossip", in: gossip, remaining: gossip},
		{name: "unlabelled", in: []byte{6, 0, 0}, remaining: []byte{6, 0, 0}},
		{name: "probe's label only", in: gossip[:6], remaining: gossip[:6]},
		{name: "one byte", in: []byte{gossip[0]}, remaining: []byte{gossip[0]}},
		{name: "same length, other label", in: other, remaining: other},
		{name: "hello cut in the name", in: hello[:len(hello)-1], err: "watch hello cut short"},
		{name: "hello without a name", in: append(bytes.Clone(hello[:len(hello)-4]), 0), err: "without a node name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bufio.NewReader(bytes.NewReader(tc.in))
			node, watch, err := sortStream(r)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || node != tc.node || watch != tc.watch {
				t.Fatalf("got %q, %v, %v; want %q, %v", node, watch, err, tc.node, tc.watch)
			}
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(rest, tc.remaining) {
				t.Fatalf("left %x for memberlist, want %x", rest, tc.remaining)
			}
		})
	}
}

func TestWatchHelloRejectsUnsendableNames(t *testing.T) {
	for _, name := range []string{"", strings.Repeat("n", 256)} {
		if _, err := watchHello(name); err == nil {
			t.Errorf("watchHello(%d bytes): no error", len(name))
		}
	}
}

func TestNextWatchBackoff(t *testing.T) {
	const beat = 50 * time.Millisecond
	for _, tc := range []struct {
		prev time.Duration
		end  watchEnd
		want time.Duration
	}{
		{prev: beat, end: watchLived, want: beat},               // dial again a beat later
		{prev: 8 * time.Second, end: watchLived, want: beat},    // a watch that lived resets the backoff
		{prev: 8 * time.Second, end: watchSilenced, want: beat}, // a hard drill is no reason to back off
		{prev: beat, end: watchCut, want: 2 * beat},             // cut short: back off
		{prev: 400 * time.Millisecond, end: watchCut, want: 800 * time.Millisecond},
		{prev: 50 * time.Second, end: watchCut, want: watchMaxBackoff}, // bounded
		{prev: beat, end: watchDialError, want: 2 * beat},              // the peer is down: back off a little
		{prev: 800 * time.Millisecond, end: watchDialError, want: watchDialBackoff},
		{prev: 50 * time.Second, end: watchDialError, want: watchDialBackoff}, // back within a second of the peer
		{prev: 0, end: watchCut, want: beat},                                  // never below a beat
	} {
		if got := nextWatchBackoff(tc.prev, tc.end, beat); got != tc.want {
			t.Errorf("nextWatchBackoff(%s, %d) = %s, want %s", tc.prev, tc.end, got, tc.want)
		}
	}
}

// The detector keeps probing a peer whose watch ended, at every check, for
// the linger: the first probe of a dying process may still connect.
func TestDetectorWatchHintProbesUntilRefused(t *testing.T) {
	tm := beatTimings["lan"]
	d := newDetector(tm)
	t0 := time.Unix(1000, 0)
	d.beat(beat{node: "lb2", boot: 1, seq: 1}, t0)
	d.tick(t0)
	at := t0.Add(tm.interval / 5) // long before the beat is overdue
	d.hintFor("lb2", at, at.Add(2*tm.interval), hintWatch)
	var probes int
	var down time.Time
	for now := at; now.Before(at.Add(3*tm.interval)) && down.IsZero(); now = now.Add(tm.check) {
		d.tick(now)
		for _, name := range d.probes(now) {
			probes++
			o := probeConnected // the listener outlives the watch for two probes
			if probes > 2 {
				o = probeRefused
			}
			d.probed(name, now, o, now)
		}
		if v := d.check(now); v.down["lb2"] == probeRefused {
			down = now
			if v.early["lb2"] != hintWatch {
				t.Errorf("verdict's hint %v, want the watch", v.early["lb2"])
			}
		}
	}
	if want := at.Add(2 * tm.check); !down.Equal(want) {
		t.Fatalf("down at +%s, want +%s (the third check after the watch ended)", down.Sub(t0), want.Sub(t0))
	}

	// A beat is proof of life: it ends the lingering probes.
	d = newDetector(tm)
	d.beat(beat{node: "lb2", boot: 1, seq: 1}, t0)
	d.hintFor("lb2", at, at.Add(2*tm.interval), hintWatch)
	if got := d.probes(at); len(got) != 1 {
		t.Fatalf("probes right after the hint: %v", got)
	}
	d.beat(beat{node: "lb2", boot: 1, seq: 2}, at.Add(tm.check/2))
	if got := d.probes(at.Add(tm.check)); len(got) != 0 {
		t.Fatalf("probed %v after a beat", got)
	}
}

// slowBeats makes a node's heartbeat so slow that only its watches can
// notice a peer's death within a second: a beat is overdue after 3 s, and
// the "port unreachable" hints are off.
func slowBeats(c *Cluster) {
	tm := beatTimings["lan"]
	tm.interval, tm.deadline, tm.evidence = 2*time.Second, 6*time.Second, 10*time.Second
	c.hb.timing, c.hb.det = tm, newDetector(tm)
	c.noICMPHints = true
}

// A peer whose process dies is down at once for the node holding a watch
// with it, whichever end dialed: its kernel closes the watch, and the
// probe that follows is refused. (A hard drill closes the sockets as the
// kernel of a killed process does.)
func TestWatchEndFindsADeadPeerAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ipA, ipB  string
		dialerDie bool // lb1 dials (its name sorts first); which one dies
	}{
		{name: "the dialer dies", ipA: "127.0.0.41", ipB: "127.0.0.42", dialerDie: true},
		{name: "the acceptor dies", ipA: "127.0.0.43", ipB: "127.0.0.44"},
		{name: "over IPv6", ipA: "::1", ipB: "::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ipA == "::1" {
				ln, err := net.Listen("tcp", "[::1]:0")
				if err != nil {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				_ = ln.Close()
			}
			var watcher, dying *node
			recA, recB := support.NewLog(), support.NewLog()
			ca, err := New(nodeConfig("lb1", anyPort(tc.ipA)), recA.Logger())
			if err != nil {
				t.Fatal(err)
			}
			if !tc.dialerDie {
				slowBeats(ca)
			}
			a := run(t, ca, recA)
			addrA := bound(t, a)
			cb, err := New(nodeConfig("lb2", anyPort(tc.ipB), addrA), recB.Logger())
			if err != nil {
				t.Fatal(err)
			}
			if tc.dialerDie {
				slowBeats(cb)
			}
			b := run(t, cb, recB)
			watcher, dying = a, b
			if tc.dialerDie {
				watcher, dying = b, a
			}
			waitFor(t, b.c, 5*time.Second, "lb2 holds lb1's watch", func() bool {
				b.c.watches.mu.Lock()
				defer b.c.watches.mu.Unlock()
				return b.c.watches.accepted["lb1"] != nil
			})
			waitFor(t, watcher.c, 5*time.Second, "the watcher hears the other beat", func() bool {
				watcher.c.hb.mu.Lock()
				defer watcher.c.hb.mu.Unlock()
				_, ok := watcher.c.hb.det.peers[dying.c.cfg.NodeName]
				return ok
			})

			for _, n := range []*node{watcher, dying} {
				other := "lb1"
				if n.c.cfg.NodeName == "lb1" {
					other = "lb2"
				}
				if m, _ := member(n.c, other); !m.Watched {
					t.Errorf("%s does not list its watch with %s", n.c.cfg.NodeName, other)
				}
			}
			// Both ends probe the idle watch, so a peer host that vanished
			// without a FIN ends it within about 20 s.
			a.c.watches.mu.Lock()
			var watchConns []net.Conn
			for conn := range a.c.watches.dialed {
				watchConns = append(watchConns, conn)
			}
			a.c.watches.mu.Unlock()
			b.c.watches.mu.Lock()
			watchConns = append(watchConns, b.c.watches.accepted["lb1"])
			b.c.watches.mu.Unlock()
			if len(watchConns) != 2 {
				t.Fatalf("%d watch connections in the pair, want 2 (one each way)", len(watchConns))
			}
			for _, conn := range watchConns {
				if got := keepAliveOf(t, conn); got != [4]int{1, 5, 5, 3} {
					t.Errorf("watch %s keep-alive (on, idle s, interval s, count) = %v, want [1 5 5 3]", conn.LocalAddr(), got)
				}
			}
			dying.c.Silence(5 * time.Second)
			// memberlist alone needs about a second; the watcher's beats
			// three.
			took := waitFor(t, watcher.c, 700*time.Millisecond, "the dead peer down", func() bool {
				m, ok := member(watcher.c, dying.c.cfg.NodeName)
				return ok && !m.Alive
			})
			t.Logf("down %s after the death", took)
			if watcher.rec.Count(slog.LevelWarn, "refuses connections", `noticed="its watch connection`) != 1 {
				t.Errorf("the verdict does not say the watch noticed:\n%s", watcher.rec.String())
			}
		})
	}
}

// A watch from a node name already watching replaces the older one
// without reporting its end, and none is taken once the set is shut.
// (That other streams reach memberlist whole through the sorting, every
// join and push/pull of this package's tests shows.)
func TestWatchFromTheSameNameReplacesTheOlder(t *testing.T) {
	w := newWatchSet()
	ended := make(chan string, 4)
	c1, p1 := net.Pipe()
	c2, p2 := net.Pipe()
	defer func() { _ = p1.Close() }()
	defer func() { _ = p2.Close() }()
	if err := w.accept("lb1", c1, func() { ended <- "first" }); err != nil {
		t.Fatal(err)
	}
	if err := w.accept("lb1", c2, func() { ended <- "second" }); err != nil {
		t.Fatal(err)
	}
	// The older one is closed by the replacement: its peer reads the end.
	if _, err := p1.Read(make([]byte, 1)); err == nil {
		t.Fatal("the replaced watch is still open")
	}
	_ = p2.Close() // the peer's end of the newer one closes
	if got := <-ended; got != "second" {
		t.Fatalf("ended: %s, want only the second", got)
	}
	w.closeAll(true)
	w.wait()
	select {
	case got := <-ended:
		t.Fatalf("also ended: %s", got)
	default:
	}
	c3, p3 := net.Pipe()
	defer func() { _ = p3.Close() }()
	if err := w.accept("lb3", c3, func() {}); err == nil {
		t.Fatal("accepted a watch after the set was shut")
	}
}

// lockedBuffer is a log sink for a memberlist that logs from many
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// A node of an older version knows no watches: it discards the stream for
// its label and logs that. The dialer must neither take the discarded
// watch for a death nor dial it again at every beat.
func TestOlderPeerRefusesWatchesQuietly(t *testing.T) {
	a := start(t, nodeConfig("lb1", anyPort("127.0.0.45")))
	addrA := bound(t, a)
	var oldLog lockedBuffer
	old := plainMemberlist(t, "lb9", "127.0.0.46", testKey, &oldLog) // sorts after lb1: lb1 dials it
	if _, err := old.Join([]string{addrA.String()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, a.c, 5*time.Second, "lb1 sees the older node", func() bool {
		_, ok := member(a.c, "lb9")
		return ok
	})
	const refused = `discarding stream with unacceptable label "halb-watch"`
	support.WaitUntil(t, 5*time.Second, func() bool { return oldLog.count(refused) > 0 }, "the older node to refuse a watch")

	// Backing off from one beat interval (50 ms), doubling: dials at about
	// 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s. One a beat would be 60.
	window := time.NewTimer(3 * time.Second)
	defer window.Stop()
	check := time.NewTicker(20 * time.Millisecond)
	defer check.Stop()
	for done := false; !done; {
		select {
		case <-window.C:
			done = true
		case <-check.C:
			if m, ok := member(a.c, "lb9"); !ok || !m.Alive {
				t.Fatalf("lb1 lost the older node (listed %v): %+v", ok, m)
			}
		}
	}
	if n := oldLog.count(refused); n > 6 {
		t.Errorf("the older node refused %d watches in 3 s; want the dialer to back off (at most 6)", n)
	}
	if n := a.rec.Count(slog.LevelWarn, "treating it as down"); n != 0 {
		t.Errorf("lb1 took a refused watch for a death %d times", n)
	}
}

func TestWatchChallenge(t *testing.T) {
	newKey, oldKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	for _, tc := range []struct {
		name      string
		dialerKey []byte
		answerFor string // the node name the dialer answers for
		keys      [][]byte
		ok        bool
	}{
		{name: "the primary key", dialerKey: newKey, answerFor: "lb1", keys: [][]byte{newKey, oldKey}, ok: true},
		{name: "a secondary key (rotation)", dialerKey: oldKey, answerFor: "lb1", keys: [][]byte{newKey, oldKey}, ok: true},
		{name: "no encryption", dialerKey: nil, answerFor: "lb1", keys: [][]byte{nil}, ok: true},
		{name: "another key", dialerKey: oldKey, answerFor: "lb1", keys: [][]byte{newKey}},
		{name: "an answer for another name", dialerKey: newKey, answerFor: "lb7", keys: [][]byte{newKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acc, dial := net.Pipe()
			defer func() { _ = acc.Close() }()
			answered := make(chan error, 1)
			go func() { answered <- answerWatch(dial, tc.answerFor, tc.dialerKey); _ = dial.Close() }()
			err := challengeWatch(acc, acc, "lb1", tc.keys)
			if tc.ok != (err == nil) {
				t.Fatalf("challenge: %v, want ok %v", err, tc.ok)
			}
			if !tc.ok && !errors.Is(err, errWatchNotAuthentic) {
				t.Fatalf("challenge: %v, want %v", err, errWatchNotAuthentic)
			}
			if err := <-answered; err != nil {
				t.Fatalf("answer: %v", err)
			}
		})
	}
}

// A watch from someone without the gossip key is closed at its answer
// and logged; it never displaces a member's own watch.
func TestWatchWithoutTheKeyIsRefused(t *testing.T) {
	a := start(t, nodeConfig("lb1", anyPort("127.0.0.47")))
	addrA := bound(t, a)
	conn, err := net.Dial("tcp", addrA.String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	hello, err := watchHello("lb0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(hello); err != nil {
		t.Fatal(err)
	}
	if err := answerWatch(conn, "lb0", otherKey); err != nil {
		t.Fatalf("no challenge came: %v", err)
	}
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a refused watch, want its end", n)
	}
	if a.c.watches.watching("lb0") {
		t.Fatal("a watch without the key was taken")
	}
	a.rec.WaitFor(t, 5*time.Second, "watch answered without the gossip key")
}

// keepAliveOf reads a TCP connection's keep-alive settings from the kernel:
// on, idle and interval in seconds, and the probe count.
func keepAliveOf(t *testing.T, conn net.Conn) [4]int {
	t.Helper()
	// Pinned at the top of the descriptor table, so a killed process
	// closes it first (internal/exitorder).
	pc, ok := conn.(*exitorder.Conn)
	if !ok {
		t.Fatalf("watch is a %T, not a pinned connection", conn)
	}
	rc, err := pc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var out [4]int
	var serr error
	err = rc.Control(func(fd uintptr) {
		for i, o := range []struct{ level, opt int }{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE}, {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL}, {unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
		} {
			if out[i], serr = unix.GetsockoptInt(int(fd), o.level, o.opt); serr != nil {
				return
			}
		}
	})
	if err != nil || serr != nil {
		t.Fatalf("read keep-alive: %v %v", err, serr)
	}
	return out
}
