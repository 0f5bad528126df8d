package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
)

// Fast failure detection. memberlist alone needs a probe round, a probe
// timeout and a suspicion timeout (about 1 s on "lan") to declare a node
// dead. Every node therefore also sends each peer a small heartbeat over
// memberlist's packet channel (so it is encrypted with the gossip keyring,
// labelled, and silenced by a hard drill like all gossip). When a peer's
// beat is half an interval overdue, this node opens a TCP connection to the
// peer's gossip port, once per interval while the silence lasts, and reads
// the answer of the peer's kernel:
//
//   - refused: the host is up but nothing listens on the gossip port any
//     more: the process died (kill -9, crash, OOM kill). The peer is down
//     at once.
//   - no answer within an interval, several times in a row: the host or its
//     link is gone (or drops everything). The peer is down once it has also
//     missed the profile's beats. One lost SYN is not enough, and a probe
//     that came back late is discarded: that is this node starved of CPU,
//     not the peer gone.
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
	interval time.Duration // between two beats to each peer; also the probe timeout
	misses   int           // beats an unreachable peer misses before it is down
	lost     int           // unanswered probes in a row an unreachable peer needs
}

// beatTimings per cluster profile. On "lan" an unreachable peer is down
// after 500 ms (probes at 150, 250 and 350 ms have timed out by 450 ms);
// on "fast" after 175 ms (the second probe's timeout).
var beatTimings = map[string]beatTiming{
	"lan":  {interval: 100 * time.Millisecond, misses: 5, lost: 3},
	"fast": {interval: 50 * time.Millisecond, misses: 3, lost: 2},
}

// probeOutcome is what a peer's kernel said to a TCP connection attempt.
type probeOutcome int

const (
	probeConnected   probeOutcome = iota + 1 // the process holds its socket: alive, maybe stalled
	probeRefused                             // the host answers, the process is gone
	probeUnreachable                         // no answer: host or link down
)

func (o probeOutcome) String() string {
	switch o {
	case probeConnected:
		return "connected"
	case probeRefused:
		return "refused"
	case probeUnreachable:
		return "unreachable"
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
}

type beatPeer struct {
	boot, seq uint64
	hears     []string     // the peers its latest beat says it hears
	cutOff    string       // a peer that vouched for it while it was unreachable from here
	last      time.Time    // latest beat
	probing   time.Time    // start of the pending probe; zero if none
	probed    time.Time    // start of the latest finished probe
	outcome   probeOutcome // of that probe, if it started after last; else 0
	lost      int          // unreachable outcomes in a row since last
	down      bool
}

func newDetector(t beatTiming) *detector {
	return &detector{timing: t, peers: map[string]*beatPeer{}}
}

// beat records a heartbeat; a replayed or reordered one (same process,
// sequence not newer) is ignored. It reports whether the sender was down
// and is now back.
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
	p.boot, p.seq, p.hears, p.cutOff = m.boot, m.seq, m.hears, ""
	p.last, p.probing, p.outcome, p.lost = now, time.Time{}, 0, 0
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
// the down deadline, or another peer hearing it.
func (d *detector) evidence(name string, now time.Time) bool {
	if p, ok := d.peers[name]; ok && !p.down && now.Sub(p.last) < d.deadline() {
		return true
	}
	return d.voucher(name, now) != ""
}

// overdue is how long a peer may be silent before it is probed.
func (d *detector) overdue() time.Duration { return d.timing.interval * 3 / 2 }

// deadline is how long an unreachable peer may be silent before it is down.
func (d *detector) deadline() time.Duration {
	return d.timing.interval * time.Duration(d.timing.misses)
}

// probes returns the peers to probe now: silent for longer than overdue,
// not down, no probe pending, the last one an interval ago or more. It
// marks them as probed from now.
func (d *detector) probes(now time.Time) []string {
	var out []string
	for name, p := range d.peers {
		if p.down || !p.probing.IsZero() || now.Sub(p.last) < d.overdue() {
			continue
		}
		if p.probed.After(p.last) && now.Sub(p.probed) < d.timing.interval {
			continue
		}
		p.probing = now
		out = append(out, name)
	}
	return out
}

// probed records the outcome of the probe of name started at started,
// whose timeout is one interval. A probe that found no answer but came
// back late says more about this node (starved of CPU: the connection may
// have been accepted while nobody looked) than about the peer, and is
// discarded.
func (d *detector) probed(name string, started time.Time, o probeOutcome, now time.Time) {
	p, ok := d.peers[name]
	if !ok || !p.probing.Equal(started) {
		return // a beat came since
	}
	p.probing = time.Time{}
	if o == probeUnreachable && now.Sub(started) > d.timing.interval+d.timing.interval/4 {
		return
	}
	p.probed, p.outcome = started, o
	if o == probeUnreachable {
		p.lost++
	} else {
		p.lost = 0
	}
}

// verdicts of one check: peers that went down, with the outcome that
// decided it, and peers found cut off from this node only, with the peer
// that still hears them.
type verdicts struct {
	down   map[string]probeOutcome
	cutOff map[string]string
}

// check marks peers down: refused as soon as a probe says so, unreachable
// (lost times in a row) once the peer has been silent for the deadline and
// no peer beating on time still hears it.
func (d *detector) check(now time.Time) verdicts {
	var v verdicts
	for name, p := range d.peers {
		silent := now.Sub(p.last)
		if p.down || silent < d.overdue() {
			continue
		}
		switch {
		case p.outcome == probeRefused:
		case p.lost >= d.timing.lost && silent >= d.deadline():
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
		v.down[name] = p.outcome
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

	// probe asks a peer's kernel whether its gossip port is open; tests
	// replace it.
	probe func(ctx context.Context, from netip.Addr, to netip.AddrPort, timeout time.Duration) probeOutcome

	mu  sync.Mutex
	seq uint64
	det *detector
}

func newHeartbeat(profile string) *heartbeat {
	t := beatTimings[profile]
	return &heartbeat{timing: t, boot: rand.Uint64(), det: newDetector(t), probe: tcpProbe}
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
// peers' eight times per interval, probing those whose beats are overdue.
func (c *Cluster) heartbeatLoop(ctx context.Context, ml *memberlist.Memberlist) {
	var probes sync.WaitGroup
	defer probes.Wait()
	send := time.NewTicker(c.hb.timing.interval)
	defer send.Stop()
	check := time.NewTicker(c.hb.timing.interval / 8)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-send.C:
			c.sendBeats(ml)
		case <-check.C:
			c.checkBeats(ctx, &probes)
		}
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
	due := c.hb.det.probes(now)
	c.hb.mu.Unlock()
	if len(due) > 0 {
		addrs := c.peerAddrs()
		for _, name := range due {
			addr, member := addrs[name]
			if !member {
				c.probed(name, now, probeUnreachable)
				continue
			}
			probes.Add(1)
			go func() {
				defer probes.Done()
				c.probed(name, now, c.hb.probe(ctx, c.cfg.BindAddr, addr, c.hb.timing.interval))
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
		c.log.Warn("peer stopped beating and "+why+": treating it as down",
			"peer", name, "silent", silent[name].Round(time.Millisecond))
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

// tcpProbe opens a TCP connection from this node's gossip address to the
// peer's gossip port and classifies the answer of the peer's kernel. On
// success it sends memberlist's label header before closing, so the peer's
// memberlist reads a clean end of stream instead of logging an error.
func tcpProbe(ctx context.Context, from netip.Addr, to netip.AddrPort, timeout time.Duration) probeOutcome {
	d := net.Dialer{Timeout: timeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
	conn, err := d.DialContext(ctx, "tcp", to.String())
	switch {
	case err == nil:
		// A few bytes into a fresh socket's empty buffer never block.
		_ = memberlist.AddLabelHeaderToStream(conn, gossipLabel)
		_ = conn.Close()
		return probeConnected
	case errors.Is(err, syscall.ECONNREFUSED):
		return probeRefused
	default:
		return probeUnreachable
	}
}
