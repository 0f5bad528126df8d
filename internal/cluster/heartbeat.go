package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"golang.org/x/sys/unix"
)

// Fast failure detection. memberlist alone needs a probe round, a probe
// timeout and a suspicion timeout (about 1 s on "lan") to declare a node
// dead. Every node therefore also sends each peer a small heartbeat over
// memberlist's packet channel (so it is encrypted with the gossip keyring,
// labelled, and silenced by a hard drill like all gossip). When a peer's
// beat is half an interval overdue, this node opens a TCP connection to the
// peer's gossip port, again every half interval while the silence lasts,
// and reads the answer of the peer's kernel:
//
//   - refused: the host is up but nothing listens on the gossip port any
//     more: the process died (kill -9, crash, OOM kill). The peer is down
//     at once.
//   - no answer: the host or its link is gone (or drops everything). The
//     peer is down once enough probes in a row went unanswered for their
//     whole timeout and it has been silent for the profile's deadline. One
//     lost SYN is not enough. "Unanswered" is read from the kernel's own
//     state of the probe's socket (still SYN-SENT), not from a timer, so a
//     probe whose answer arrived while this node was starved of CPU counts
//     as answered: starvation here cannot make a peer look dead.
//   - connected: the process exists but does not beat: it is stalled (CPU
//     starvation, SIGSTOP, a long pause). It is not down: a stall is not a
//     death, and memberlist's slower detector decides if it lasts.
//
// A stall therefore never moves the VIP early, however long it is. The
// first beat after a silence makes the peer alive again.
//
// Each beat also lists the peers its sender hears beating. A peer this node
// cannot reach, but that another peer beating here still hears, is cut off
// from this node only (a partial partition), not gone: it stays up. The same
// evidence overrules memberlist: when memberlist declares a member failed
// while its beats still arrive, or another peer still hears it, the member
// is kept (disputed) until the beats agree, so a suspicion that outlived a
// healed partition cannot hand the VIP to a second node.

// beatTiming is a profile's heartbeat timing.
type beatTiming struct {
	interval     time.Duration // between two beats to each peer
	check        time.Duration // between two looks at the peers' beats
	probeEvery   time.Duration // between two probe starts while a peer is silent
	probeTimeout time.Duration // how long a probe waits for the peer's kernel
	lost         int           // unanswered probes in a row an unreachable peer needs
	deadline     time.Duration // silence an unreachable peer needs before it is down
	evidence     time.Duration // how long a beat keeps memberlist's "failed" in dispute
}

// beatTimings per cluster profile. A beat is overdue after 1.5 intervals;
// probes then start every half interval. On "lan" an unreachable peer is
// down 150 ms after its last beat (probes at 75 and 100 ms, each unanswered
// for 50 ms); on "fast" after 75 ms (probes at 37.5 and 50 ms, 25 ms each).
// A SYN-ACK on a LAN takes well under a millisecond, so the timeouts leave
// two orders of magnitude for a busy peer kernel; two probes a quarter
// interval apart make one lost packet harmless. The deadline is also
// two overdue periods, by which a third node's beats have stopped vouching
// for a dead peer, so a real death is never held back by a voucher.
//
// The evidence window is longer than the deadline on purpose: it is how
// long a beat outweighs memberlist's verdict of "failed", which comes from
// memberlist's own missed probes. A node busy enough to miss those probes
// also reads beats late, so the window must cover such a pause (soak runs
// under heavy load saw pauses of 150-500 ms); a dead peer's evidence runs
// out after it anyway.
var beatTimings = map[string]beatTiming{
	"lan": {
		interval: 50 * time.Millisecond, check: 5 * time.Millisecond,
		probeEvery: 25 * time.Millisecond, probeTimeout: 50 * time.Millisecond,
		lost: 2, deadline: 150 * time.Millisecond, evidence: 500 * time.Millisecond,
	},
	"fast": {
		interval: 25 * time.Millisecond, check: 2500 * time.Microsecond,
		probeEvery: 12500 * time.Microsecond, probeTimeout: 25 * time.Millisecond,
		lost: 2, deadline: 75 * time.Millisecond, evidence: 250 * time.Millisecond,
	},
}

// probeOutcome is what a peer's kernel said to a TCP connection attempt.
type probeOutcome int

const (
	probeConnected    probeOutcome = iota + 1 // the process holds its socket: alive, maybe stalled
	probeRefused                              // the host answers, the process is gone
	probeUnreachable                          // no answer for the whole timeout: host or link down
	probeInconclusive                         // this node could not probe (no socket, address gone): says nothing of the peer
)

func (o probeOutcome) String() string {
	switch o {
	case probeConnected:
		return "connected"
	case probeRefused:
		return "refused"
	case probeUnreachable:
		return "unreachable"
	case probeInconclusive:
		return "inconclusive"
	}
	return "none"
}

// beatMagic starts every heartbeat. Other user messages (drill requests)
// are JSON, which cannot start with 0xff.
var beatMagic = [...]byte{0xff, 'h', 'b', 1}

// maxBeatPeers bounds the detector's table; only holders of the gossip key
// can add to it, and a cluster has a handful of nodes.
const maxBeatPeers = 64

// maxHears bounds the peers one beat lists, keeping a beat in one packet.
const maxHears = 16

// beat is one decoded heartbeat.
type beat struct {
	node      string
	boot, seq uint64 // boot identifies the sending process; seq grows with each beat it sends
	hears     []string
}

// encodeBeat encodes a heartbeat. The list of peers heard comes after the
// fields of the first format, so a node that predates it ignores these
// beats (and falls back to memberlist's detection) rather than misread them.
func encodeBeat(m beat) []byte {
	b := make([]byte, 0, len(beatMagic)+2*binary.MaxVarintLen64+2+len(m.node)+len(m.hears)*8)
	b = append(b, beatMagic[:]...)
	b = binary.AppendUvarint(b, m.boot)
	b = binary.AppendUvarint(b, m.seq)
	b = appendString(b, m.node)
	if len(m.hears) == 0 {
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(m.hears)))
	for _, h := range m.hears {
		b = appendString(b, h)
	}
	return b
}

// isBeat tells heartbeats from other user messages.
func isBeat(b []byte) bool {
	return len(b) >= len(beatMagic) && [len(beatMagic)]byte(b[:len(beatMagic)]) == beatMagic
}

// decodeBeat decodes what encodeBeat wrote.
func decodeBeat(b []byte) (beat, error) {
	var m beat
	if !isBeat(b) {
		return m, errors.New("decode heartbeat: not a heartbeat")
	}
	d := decoder{b: b[len(beatMagic):]}
	var n int
	if m.boot, n = binary.Uvarint(d.b); n <= 0 {
		return m, errors.New("decode heartbeat: bad boot id")
	}
	d.b = d.b[n:]
	if m.seq, n = binary.Uvarint(d.b); n <= 0 {
		return m, errors.New("decode heartbeat: bad sequence number")
	}
	d.b = d.b[n:]
	name := func(what string) (string, error) {
		s, err := d.string()
		if err != nil {
			return "", fmt.Errorf("decode heartbeat: %s: %w", what, err)
		}
		if s == "" || len(s) > maxNameLen {
			return "", fmt.Errorf("decode heartbeat: %s: empty or longer than %d bytes", what, maxNameLen)
		}
		return s, nil
	}
	var err error
	if m.node, err = name("node name"); err != nil {
		return m, err
	}
	if len(d.b) == 0 {
		return m, nil
	}
	count, err := d.count()
	if err != nil || count == 0 || count > maxHears {
		return m, fmt.Errorf("decode heartbeat: want 1 to %d peers heard", maxHears)
	}
	m.hears = make([]string, 0, count)
	for range count {
		h, err := name("peer heard")
		if err != nil {
			return m, err
		}
		m.hears = append(m.hears, h)
	}
	if len(d.b) != 0 {
		return m, errors.New("decode heartbeat: trailing bytes")
	}
	return m, nil
}

// detector decides from heartbeats and probe outcomes which peers are
// down. It reads no clock: callers pass the time, so tests drive it with a
// fake one. It is not safe for concurrent use.
type detector struct {
	timing beatTiming
	peers  map[string]*beatPeer
	ran    time.Time // the check loop's latest step (see tick)
}

type beatPeer struct {
	boot, seq uint64
	hears     []string    // the peers its latest beat says it hears
	cutOff    string      // a peer that vouched for it while it was unreachable from here
	last      time.Time   // latest beat
	pending   []time.Time // starts of the probes still out, all after last
	probed    time.Time   // start of the latest probe since last; zero if none
	answered  time.Time   // when a probe since last last found the process there
	refused   bool        // a probe since last found the port closed
	lost      int         // probes started after answered that went unanswered
	hinted    time.Time   // latest hint since last: probe without waiting
	hintUntil time.Time   // probe at every check until then (a watch ended)
	hintWhy   hintSource  // what the latest hint was
	down      bool
}

// maxPending bounds the probes out to one peer; with a timeout of two
// probe periods there are at most three.
const maxPending = 4

func newDetector(t beatTiming) *detector {
	return &detector{timing: t, peers: map[string]*beatPeer{}}
}

// tick is the check loop's step at now. A gap since its previous step
// longer than two check periods was a stall of this node (starved of CPU,
// paused, a machine-wide hiccup): the peers' silence during it is this
// node's deafness, and counting it would declare a peer dead on waking,
// before the beats queued meanwhile are read. Their latest beats move
// forward by the gap, so silence is only what this node was awake to
// hear; a real death is then noticed that much later, and only after a
// stall of the node noticing it.
func (d *detector) tick(now time.Time) {
	if !now.After(d.ran) {
		return
	}
	if gap := now.Sub(d.ran) - d.timing.check; !d.ran.IsZero() && gap > d.timing.check {
		for _, p := range d.peers {
			if p.last = p.last.Add(gap); p.last.After(now) {
				p.last = now
			}
		}
	}
	d.ran = now
}

// stale reports whether the check loop has not run for a beat interval:
// this node is in, or just out of, a stall its loop has not yet
// discounted, so silence says nothing yet.
func (d *detector) stale(now time.Time) bool {
	return !d.ran.IsZero() && now.Sub(d.ran) > d.timing.interval
}

// beat records a heartbeat; a replayed or reordered one (same process,
// sequence not newer) is ignored. It reports whether the sender was down
// and is now back. Probes still out are forgotten: their answers say
// nothing the beat does not.
func (d *detector) beat(m beat, now time.Time) (back bool) {
	p, ok := d.peers[m.node]
	if !ok {
		if len(d.peers) >= maxBeatPeers {
			return false
		}
		p = &beatPeer{}
		d.peers[m.node] = p
	} else if p.boot == m.boot && m.seq <= p.seq {
		return false
	}
	*p = beatPeer{boot: m.boot, seq: m.seq, hears: m.hears, last: now, down: p.down}
	back, p.down = p.down, false
	return back
}

// heard lists, sorted, the peers whose beats are on time: what this node's
// own beats report.
func (d *detector) heard(now time.Time) []string {
	var out []string
	for name, p := range d.peers {
		if !p.down && now.Sub(p.last) < d.overdue() {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	if len(out) > maxHears {
		out = out[:maxHears]
	}
	return out
}

// voucher returns a peer beating on time whose latest beat says it hears
// name, or "" if none does.
func (d *detector) voucher(name string, now time.Time) string {
	for r, p := range d.peers {
		if r != name && !p.down && now.Sub(p.last) < d.overdue() && slices.Contains(p.hears, name) {
			return r
		}
	}
	return ""
}

// evidence reports whether anything says name is alive: its own beats within
// the evidence window, or another peer hearing it — or whether this node
// cannot tell yet, its loop not having run since a stall.
func (d *detector) evidence(name string, now time.Time) bool {
	if d.stale(now) {
		return true
	}
	if p, ok := d.peers[name]; ok && !p.down && now.Sub(p.last) < d.timing.evidence {
		return true
	}
	return d.voucher(name, now) != ""
}

// overdue is how long a peer may be silent before it is probed.
func (d *detector) overdue() time.Duration { return d.timing.interval * 3 / 2 }

// deadline is how long an unreachable peer may be silent before it is down.
func (d *detector) deadline() time.Duration { return d.timing.deadline }

// hint records that a packet this node sent to name drew a "port
// unreachable" from its host at now: the process may be gone (kill -9, a
// crash), and its host said so before its beat is even due. The next
// probes asks the peer's kernel at once; only a refused probe makes the
// peer down, as without the hint, so a forged or stray ICMP costs one
// probe, never a verdict.
func (d *detector) hint(name string, now time.Time) {
	d.hintFor(name, now, time.Time{}, hintICMP)
}

// hintSource is what made the detector probe a peer before its beat was
// overdue.
type hintSource int

const (
	hintICMP  hintSource = iota + 1 // a "port unreachable" for a heartbeat
	hintWatch                       // the watch connection to it ended (watch.go)
)

func (h hintSource) String() string {
	if h == hintWatch {
		return "its watch connection to this node closed"
	}
	return "its host answered a heartbeat with port unreachable"
}

// hintFor records a hint from why at now, as hint does, and keeps the
// peer probed at every check until until (a dying process may close one
// socket a moment before the next): a beat from the peer ends it.
func (d *detector) hintFor(name string, now, until time.Time, why hintSource) {
	if p, ok := d.peers[name]; ok && !p.down {
		p.hinted, p.hintWhy = now, why
		p.hintUntil = later(p.hintUntil, until)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// probes returns the peers to probe now: silent for longer than overdue,
// not down, the latest probe a probe period ago or more, and not too many
// out — or hinted since their latest probe began. It records them as
// probed from now.
func (d *detector) probes(now time.Time) []string {
	var out []string
	for name, p := range d.peers {
		hinted := p.hinted.After(p.probed) ||
			(now.Before(p.hintUntil) && now.Sub(p.probed) >= d.timing.check)
		if p.down || len(p.pending) >= maxPending || (now.Sub(p.last) < d.overdue() && !hinted) {
			continue
		}
		if !hinted && !p.probed.IsZero() && now.Sub(p.probed) < d.timing.probeEvery {
			continue
		}
		p.probed = now
		p.pending = append(p.pending, now)
		out = append(out, name)
	}
	return out
}

// probed records the outcome of the probe of name started at started. A
// probe a beat has overtaken is ignored. An answer voids the unanswered
// probes started before it was seen: the peer's kernel was there then, and
// a probe that overlapped it says nothing new. An unanswered probe counts
// however late it comes back, because the probe reads "unanswered" from the
// kernel's socket state rather than from a timer this node may have missed.
func (d *detector) probed(name string, started time.Time, o probeOutcome, now time.Time) {
	p, ok := d.peers[name]
	if !ok {
		return
	}
	i := slices.IndexFunc(p.pending, started.Equal)
	if i < 0 {
		return // a beat came since
	}
	p.pending = slices.Delete(p.pending, i, i+1)
	switch o {
	case probeConnected:
		p.answered, p.lost = now, 0
	case probeRefused:
		p.refused = true
	case probeUnreachable:
		if started.After(p.answered) {
			p.lost++
		}
	}
}

// verdicts of one check: peers that went down, with the outcome that
// decided it, and peers found cut off from this node only, with the peer
// that still hears them.
type verdicts struct {
	down   map[string]probeOutcome
	cutOff map[string]string
	// early lists the downs a hint brought forward (the probe ran before
	// the beat was overdue), with what the hint was.
	early map[string]hintSource
}

// check marks peers down: refused as soon as a probe says so (a probe a
// hint started may say so before the beat is overdue: no beat came since
// it began, or it would have been forgotten), unreachable (lost times in a
// row) once the peer has been silent for the deadline and no peer beating
// on time still hears it, and the loop has counted that silence (not
// stale).
func (d *detector) check(now time.Time) verdicts {
	stale := d.stale(now)
	var v verdicts
	for name, p := range d.peers {
		silent := now.Sub(p.last)
		if p.down || (silent < d.overdue() && !p.refused) {
			continue
		}
		o := probeRefused
		switch {
		case p.refused:
		case !stale && p.lost >= d.timing.lost && silent >= d.deadline():
			o = probeUnreachable
			if by := d.voucher(name, now); by != "" {
				if p.cutOff == "" {
					p.cutOff = by
					if v.cutOff == nil {
						v.cutOff = map[string]string{}
					}
					v.cutOff[name] = by
				}
				continue
			}
		default:
			continue
		}
		p.down, p.cutOff = true, ""
		if v.down == nil {
			v.down = map[string]probeOutcome{}
		}
		v.down[name] = o
		if silent < d.overdue() {
			if v.early == nil {
				v.early = map[string]hintSource{}
			}
			v.early[name] = p.hintWhy
		}
	}
	return v
}

// isDown reports whether name is down.
func (d *detector) isDown(name string) bool {
	p, ok := d.peers[name]
	return ok && p.down
}

// silentFor is how long name has been silent, for logs.
func (d *detector) silentFor(name string, now time.Time) time.Duration {
	if p, ok := d.peers[name]; ok {
		return now.Sub(p.last)
	}
	return 0
}

// forget drops name, as when memberlist removed it: a node that comes
// back is judged by memberlist alone until it beats again.
func (d *detector) forget(name string) { delete(d.peers, name) }

// heartbeat is the Cluster's side of the detector: sequence numbers for
// its own beats and the detector behind a lock, as beats arrive on
// memberlist's goroutine.
type heartbeat struct {
	timing beatTiming
	boot   uint64 // tells this process's beats from an earlier run's
	// hinted wakes the check loop before its next tick: a hint came.
	hinted chan struct{}

	// probe asks a peer's kernel whether its gossip port is open; tests
	// replace it.
	probe func(ctx context.Context, from netip.Addr, to netip.AddrPort, timeout time.Duration) probeOutcome

	mu  sync.Mutex
	seq uint64
	det *detector
}

func newHeartbeat(profile string) *heartbeat {
	t := beatTimings[profile]
	return &heartbeat{timing: t, boot: rand.Uint64(), det: newDetector(t), probe: tcpProbe, hinted: make(chan struct{}, 1)}
}

// wake makes the check loop run now; it never blocks.
func (h *heartbeat) wake() {
	select {
	case h.hinted <- struct{}{}:
	default:
	}
}

// restart forgets every peer and takes a new boot identity, as a
// restarted process starts, so the silence of a hard drill is not read as
// the peers' silence.
func (h *heartbeat) restart() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.boot, h.seq, h.det = rand.Uint64(), 0, newDetector(h.timing)
}

// isDown reports whether the detector has marked name down.
func (h *heartbeat) isDown(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.det.isDown(name)
}

// heardVia is the peer that vouched for name while it was unreachable from
// here, or "".
func (h *heartbeat) heardVia(name string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p, ok := h.det.peers[name]; ok && !p.down {
		return p.cutOff
	}
	return ""
}

// receiveBeat takes a heartbeat from memberlist's handler; it reports
// false for other messages. It never blocks.
func (c *Cluster) receiveBeat(b []byte) bool {
	if !isBeat(b) {
		return false
	}
	m, err := decodeBeat(b)
	if err != nil {
		c.log.Debug("ignored a malformed heartbeat", "err", err)
		return true
	}
	if m.node == c.cfg.NodeName {
		return true
	}
	c.hb.mu.Lock()
	back := c.hb.det.beat(m, time.Now())
	c.hb.mu.Unlock()
	if back {
		c.log.Info("heartbeats from peer resumed: alive again", "peer", m.node)
		c.notify()
	}
	return true
}

// heartbeatLoop sends this node's beats every interval and checks the
// peers' every check period, probing those whose beats are overdue. While a
// hard drill silences the node it plays dead instead (see playDead).
func (c *Cluster) heartbeatLoop(ctx context.Context, ml *memberlist.Memberlist, sock *gossipSockets) {
	var probes sync.WaitGroup
	defer probes.Wait()
	send := time.NewTicker(c.hb.timing.interval)
	defer send.Stop()
	check := time.NewTicker(c.hb.timing.check)
	defer check.Stop()
	var dead deadness
	checkNow := func() {
		if !c.playDead(&dead, sock, time.Now()) {
			c.checkBeats(ctx, &probes)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-send.C:
			if !c.playDead(&dead, sock, time.Now()) {
				c.sendBeats(ml)
			}
		case <-check.C:
			checkNow()
		case <-c.hb.hinted:
			// The probe a hint asks for goes out now, not at the next
			// tick: a crash is noticed up to a check period sooner.
			checkNow()
		}
	}
}

// deadness is the heartbeat loop's memory of a hard drill.
type deadness struct {
	dead      bool
	reopenErr string // the last failure to open the sockets again, logged once
}

// deadStep is what the heartbeat loop does about a hard drill at one tick.
type deadStep int

const (
	stayAlive deadStep = iota // not silenced: beat and probe as usual
	die                       // silence began: close the gossip sockets
	stayDead                  // silenced: neither beat nor probe
	revive                    // silence over: open the sockets, start afresh
)

// nextDeadStep decides the step from whether the node was playing dead and
// whether it is silenced now.
func nextDeadStep(dead, silenced bool) deadStep {
	switch {
	case silenced && !dead:
		return die
	case silenced:
		return stayDead
	case dead:
		return revive
	}
	return stayAlive
}

// playDead carries out a hard drill's part here and reports whether the
// node is (still) dead. A killed process neither beats nor probes its
// peers, and the kernel refuses connections to its closed ports: peers'
// probes read "refused" and declare it down at once, as after kill -9,
// rather than "connected" (a stall, left to memberlist's slower detector).
// Coming back, it opens the sockets again on the same port and beats
// under a new boot identity with a fresh detector, as a restarted process
// would; if the port cannot be bound yet it stays dead and retries.
func (c *Cluster) playDead(d *deadness, sock *gossipSockets, now time.Time) bool {
	switch nextDeadStep(d.dead, now.UnixNano() < c.silence.Load()) {
	case die:
		d.dead = true
		sock.closeSockets()
		c.watches.closeAll(false)
		c.log.Warn("hard drill: playing dead, gossip sockets closed")
	case revive:
		if err := sock.open(); err != nil {
			if err.Error() != d.reopenErr {
				c.log.Error("hard drill over but the gossip port cannot be opened again; retrying", "err", err)
				d.reopenErr = err.Error()
			}
			return true
		}
		*d = deadness{}
		c.hb.restart()
		c.log.Info("hard drill over: gossip sockets open again, rejoining as a restarted process")
		return false
	}
	return d.dead
}

// unreachable takes a "port unreachable" for a packet sent to addr (the
// gossip socket's reader calls it): the peer gossiping there is probed at
// the check loop's next turn.
func (c *Cluster) unreachable(addr netip.AddrPort) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	for name, a := range c.peerAddrs() {
		if netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) != addr {
			continue
		}
		c.hb.mu.Lock()
		c.hb.det.hint(name, time.Now())
		c.hb.mu.Unlock()
		c.hb.wake()
		c.log.Debug("peer's host says its gossip port is closed: probing it now", "peer", name)
	}
}

// peerAddrs returns the members' gossip addresses by name.
func (c *Cluster) peerAddrs() map[string]netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]netip.AddrPort, len(c.peers))
	for name, p := range c.peers {
		out[name] = p.addr
	}
	return out
}

func (c *Cluster) sendBeats(ml *memberlist.Memberlist) {
	c.hb.mu.Lock()
	c.hb.seq++
	msg := encodeBeat(beat{node: c.cfg.NodeName, boot: c.hb.boot, seq: c.hb.seq, hears: c.hb.det.heard(time.Now())})
	c.hb.mu.Unlock()
	for name, addr := range c.peerAddrs() {
		n := &memberlist.Node{Name: name, Addr: addr.Addr().AsSlice(), Port: addr.Port()}
		if err := ml.SendBestEffort(n, msg); err != nil {
			c.log.Debug("send heartbeat", "peer", name, "err", err)
		}
	}
}

// checkBeats probes each peer whose beat is overdue and judges them all.
func (c *Cluster) checkBeats(ctx context.Context, probes *sync.WaitGroup) {
	now := time.Now()
	c.hb.mu.Lock()
	c.hb.det.tick(now)
	due := c.hb.det.probes(now)
	c.hb.mu.Unlock()
	if len(due) > 0 {
		addrs := c.peerAddrs()
		for _, name := range due {
			addr, member := addrs[name]
			if !member {
				// Not (or no longer) a member: there is no address to
				// ask, which says nothing of the peer's host.
				c.probed(name, now, probeInconclusive)
				continue
			}
			probes.Add(1)
			go func() {
				defer probes.Done()
				c.probed(name, now, c.hb.probe(ctx, c.cfg.BindAddr, addr, c.hb.timing.probeTimeout))
				// A refusal decides at once; do not wait for the next tick.
				c.judge(time.Now())
			}()
		}
	}
	c.judge(now)
}

// judge marks down the peers the detector gives up on at now, and drops
// the disputed members (see NotifyLeave) nothing vouches for any more.
func (c *Cluster) judge(now time.Time) {
	// Lock order: the peer table, then the detector (as Members).
	c.mu.Lock()
	c.hb.mu.Lock()
	v := c.hb.det.check(now)
	silent := make(map[string]time.Duration, len(v.down))
	for name := range v.down {
		silent[name] = c.hb.det.silentFor(name, now)
	}
	var drop []string
	for name, p := range c.peers {
		if p.disputed && !c.hb.det.evidence(name, now) {
			drop = append(drop, name)
			c.hb.det.forget(name)
			delete(c.peers, name)
		}
	}
	c.hb.mu.Unlock()
	c.mu.Unlock()
	for name, by := range v.cutOff {
		c.log.Warn("peer unreachable from here but another peer still hears it: a partial partition, keeping it up",
			"peer", name, "heard_by", by)
	}
	for name, o := range v.down {
		why := "its gossip port refuses connections: the process is gone"
		if o == probeUnreachable {
			why = "its host does not answer"
		}
		attrs := []any{"peer", name, "silent", silent[name].Round(time.Millisecond)}
		if why, ok := v.early[name]; ok {
			attrs = append(attrs, "noticed", why.String())
		}
		c.log.Warn("peer stopped beating and "+why+": treating it as down", attrs...)
	}
	for _, name := range drop {
		c.log.Info("nothing vouches for the member memberlist declared failed any more: removing it", "peer", name)
	}
	if len(v.down) > 0 || len(drop) > 0 {
		c.notify()
	}
}

func (c *Cluster) probed(name string, started time.Time, o probeOutcome) {
	c.hb.mu.Lock()
	defer c.hb.mu.Unlock()
	c.hb.det.probed(name, started, o, time.Now())
}

// The TCP states of include/net/tcp_states.h that a probe's socket can be
// in while it waits.
const (
	tcpEstablished = 1
	tcpSynSent     = 2
)

// tcpProbe opens a TCP connection from this node's gossip address to the
// peer's gossip port and classifies the answer of the peer's kernel.
//
// It drives a non-blocking socket itself instead of using net.Dialer: a
// dialer that times out says only that a timer fired, and on a node starved
// of CPU the timer may fire long after a SYN-ACK arrived. After the wait
// this probe asks the kernel: a socket still in SYN-SENT has had no answer
// for the whole wait, however late this goroutine runs; one that is
// established was answered. On success it sends memberlist's label header
// before closing, so the peer's memberlist reads a clean end of stream
// instead of logging an error.
func tcpProbe(ctx context.Context, from netip.Addr, to netip.AddrPort, timeout time.Duration) probeOutcome {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	family := unix.AF_INET
	if to.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return probeInconclusive
	}
	defer closeProbe(fd)
	if from.IsValid() && !from.IsUnspecified() {
		if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(from.Unmap(), 0))); err != nil {
			return probeInconclusive
		}
	}
	start := time.Now()
	err = unix.Connect(fd, sockaddr(to))
	switch {
	case err == nil:
	case errors.Is(err, unix.ECONNREFUSED):
		return probeRefused
	case errors.Is(err, unix.EINPROGRESS):
		if o := awaitConnect(ctx, fd, start, timeout); o != probeConnected {
			return o
		}
	default:
		// EHOSTUNREACH, ENETUNREACH: the kernel already knows the peer
		// cannot be reached.
		return probeUnreachable
	}
	return probeConnected
}

// closeProbe closes a probe's socket. One that got connected — even after
// its verdict was settled otherwise, say because ctx ended while the
// SYN-ACK was on its way — first sends memberlist's label header, so the
// peer reads a clean end of stream instead of an unlabelled one that it
// logs as refused gossip (and that would use up the peer's quota of
// refusal lines for this sender).
func closeProbe(fd int) {
	if o, settled := connectState(fd); !settled || o != probeConnected {
		_ = unix.Close(fd)
		return
	}
	f := os.NewFile(uintptr(fd), "probe")
	conn, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		return
	}
	// A few bytes into a fresh socket's empty buffer never block.
	_ = memberlist.AddLabelHeaderToStream(conn, gossipLabel)
	_ = conn.Close()
}

// awaitConnect waits until the connection on fd is settled or timeout has
// passed since start, then reads the outcome from the kernel. The wait is
// short (a probe timeout), so it blocks its thread in poll(2) rather than
// going through Go's poller, and looks at ctx only before each wait.
func awaitConnect(ctx context.Context, fd int, start time.Time, timeout time.Duration) probeOutcome {
	for {
		if ctx.Err() != nil {
			return probeInconclusive
		}
		o, settled := connectState(fd)
		if settled {
			return o
		}
		left := timeout - time.Since(start)
		if left <= 0 {
			// Still SYN-SENT a whole timeout after the SYN left.
			return probeUnreachable
		}
		ms := int((left + time.Millisecond - 1) / time.Millisecond)
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(pfd, ms); err != nil && !errors.Is(err, unix.EINTR) {
			return probeInconclusive
		}
	}
}

// connectState reads what the kernel knows of a connect in progress on fd:
// settled is false while it still waits for the peer's answer.
func connectState(fd int) (o probeOutcome, settled bool) {
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return probeInconclusive, true
	case soErr == int(unix.ECONNREFUSED):
		return probeRefused, true
	case soErr != 0:
		return probeUnreachable, true
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	switch {
	case err != nil:
		return probeInconclusive, true
	case info.State == tcpSynSent:
		return 0, false
	case info.State == tcpEstablished:
		return probeConnected, true
	}
	// Any later state (the peer accepted and already closed) needed an
	// answer from the peer's kernel.
	return probeConnected, true
}

// sockaddr converts an address and port for the socket calls.
func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}
