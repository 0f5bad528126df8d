package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Fast failure detection. memberlist alone needs a probe round, a probe
// timeout and a suspicion timeout (about 1 s on "lan") to declare a node
// dead. Every node therefore also sends each peer a small heartbeat over
// memberlist's packet channel (so it is encrypted with the gossip keyring,
// labelled, and silenced by a hard drill like all gossip). A peer whose
// beats stop is probed directly once; it counts as down when it has missed
// beatMisses beats AND that probe went unanswered. One lost or late beat,
// or many lost beats from a node whose memberlist still answers, never
// makes a peer down. memberlist's own detector stays the authority for
// removing a member; this one only marks a listed member not alive sooner,
// and its first beat after a pause marks it alive again.

// beatTiming is a profile's heartbeat timing.
type beatTiming struct {
	interval time.Duration // between two beats to each peer
	misses   int           // beats missed before a peer can be down
}

// beatTimings per cluster profile. The confirming probe starts when a beat
// is half an interval overdue and waits memberlist's ProbeTimeout, so it
// has failed by the time the misses are up: (1.5 + 1) × interval < 3 ×
// interval on both profiles.
var beatTimings = map[string]beatTiming{
	"lan":  {interval: 100 * time.Millisecond, misses: 3},
	"fast": {interval: 50 * time.Millisecond, misses: 3},
}

// beatMagic starts every heartbeat. Other user messages (drill requests)
// are JSON, which cannot start with 0xff.
var beatMagic = [...]byte{0xff, 'h', 'b', 1}

// maxBeatPeers bounds the detector's table; only holders of the gossip key
// can add to it, and a cluster has a handful of nodes.
const maxBeatPeers = 64

// encodeBeat encodes a heartbeat of node: boot identifies the sending
// process, seq increases with each beat it sends.
func encodeBeat(node string, boot, seq uint64) []byte {
	b := make([]byte, 0, len(beatMagic)+2*binary.MaxVarintLen64+1+len(node))
	b = append(b, beatMagic[:]...)
	b = binary.AppendUvarint(b, boot)
	b = binary.AppendUvarint(b, seq)
	return appendString(b, node)
}

// isBeat tells heartbeats from other user messages.
func isBeat(b []byte) bool {
	return len(b) >= len(beatMagic) && [len(beatMagic)]byte(b[:len(beatMagic)]) == beatMagic
}

// decodeBeat decodes what encodeBeat wrote.
func decodeBeat(b []byte) (node string, boot, seq uint64, err error) {
	if !isBeat(b) {
		return "", 0, 0, errors.New("decode heartbeat: not a heartbeat")
	}
	d := decoder{b: b[len(beatMagic):]}
	var n int
	if boot, n = binary.Uvarint(d.b); n <= 0 {
		return "", 0, 0, errors.New("decode heartbeat: bad boot id")
	}
	d.b = d.b[n:]
	if seq, n = binary.Uvarint(d.b); n <= 0 {
		return "", 0, 0, errors.New("decode heartbeat: bad sequence number")
	}
	d.b = d.b[n:]
	if node, err = d.string(); err != nil {
		return "", 0, 0, fmt.Errorf("decode heartbeat: node name: %w", err)
	}
	if node == "" || len(node) > maxNameLen || len(d.b) != 0 {
		return "", 0, 0, errors.New("decode heartbeat: bad node name or trailing bytes")
	}
	return node, boot, seq, nil
}

// detector decides from heartbeats and confirming probes which peers are
// down. It reads no clock: callers pass the time, so tests drive it with a
// fake one. It is not safe for concurrent use.
type detector struct {
	timing beatTiming
	peers  map[string]*beatPeer
}

type beatPeer struct {
	boot, seq uint64
	last      time.Time // latest beat, or answer to a probe
	probing   time.Time // start of the pending probe; zero if none
	confirmed bool      // a probe started after last went unanswered
	down      bool
}

func newDetector(t beatTiming) *detector {
	return &detector{timing: t, peers: map[string]*beatPeer{}}
}

// beat records a heartbeat; a replayed or reordered one (same process,
// sequence not newer) is ignored. It reports whether name was down and is
// now back.
func (d *detector) beat(name string, boot, seq uint64, now time.Time) (back bool) {
	p, ok := d.peers[name]
	if !ok {
		if len(d.peers) >= maxBeatPeers {
			return false
		}
		p = &beatPeer{}
		d.peers[name] = p
	} else if p.boot == boot && seq <= p.seq {
		return false
	}
	p.boot, p.seq = boot, seq
	p.last, p.probing, p.confirmed = now, time.Time{}, false
	back, p.down = p.down, false
	return back
}

// overdue is when a missing beat is worth a probe.
func (d *detector) overdue() time.Duration { return d.timing.interval * 3 / 2 }

// deadline is how long a peer may stay silent before it can be down.
func (d *detector) deadline() time.Duration {
	return d.timing.interval * time.Duration(d.timing.misses)
}

// probes returns the peers whose beat is overdue and that are not being
// probed yet, and marks them as probed from now.
func (d *detector) probes(now time.Time) []string {
	var out []string
	for name, p := range d.peers {
		if p.down || p.confirmed || !p.probing.IsZero() || now.Sub(p.last) < d.overdue() {
			continue
		}
		p.probing = now
		out = append(out, name)
	}
	return out
}

// probed records the outcome of the probe of name started at started. An
// answer proves the peer alive as much as a beat does; a probe that went
// unanswered confirms the missing beats.
func (d *detector) probed(name string, started time.Time, answered bool, now time.Time) {
	p, ok := d.peers[name]
	if !ok || !p.probing.Equal(started) {
		return // a beat (or a newer probe) came since
	}
	p.probing = time.Time{}
	if answered {
		p.last = now
		return
	}
	p.confirmed = true
}

// check marks down every peer silent for the deadline whose probe went
// unanswered, and returns the names that went down now.
func (d *detector) check(now time.Time) []string {
	var out []string
	for name, p := range d.peers {
		if !p.down && p.confirmed && now.Sub(p.last) >= d.deadline() {
			p.down = true
			out = append(out, name)
		}
	}
	return out
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

	mu  sync.Mutex
	seq uint64
	det *detector
}

func newHeartbeat(profile string) *heartbeat {
	t := beatTimings[profile]
	return &heartbeat{timing: t, boot: rand.Uint64(), det: newDetector(t)}
}

// isDown reports whether the detector has marked name down.
func (h *heartbeat) isDown(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.det.isDown(name)
}

func (h *heartbeat) forget(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.det.forget(name)
}

// receiveBeat takes a heartbeat from memberlist's handler; it reports
// false for other messages. It never blocks.
func (c *Cluster) receiveBeat(b []byte) bool {
	if !isBeat(b) {
		return false
	}
	name, boot, seq, err := decodeBeat(b)
	if err != nil {
		c.log.Debug("ignored a malformed heartbeat", "err", err)
		return true
	}
	if name == c.cfg.NodeName {
		return true
	}
	c.hb.mu.Lock()
	back := c.hb.det.beat(name, boot, seq, time.Now())
	c.hb.mu.Unlock()
	if back {
		c.log.Info("heartbeats from peer resumed: alive again", "peer", name)
		c.notify()
	}
	return true
}

// heartbeatLoop sends this node's beats every interval and checks the
// peers' four times per interval, probing those whose beats are overdue.
func (c *Cluster) heartbeatLoop(ctx context.Context, ml *memberlist.Memberlist) {
	var probes sync.WaitGroup
	defer probes.Wait()
	send := time.NewTicker(c.hb.timing.interval)
	defer send.Stop()
	check := time.NewTicker(c.hb.timing.interval / 4)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-send.C:
			c.sendBeats(ml)
		case <-check.C:
			c.checkBeats(ml, &probes)
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
	msg := encodeBeat(c.cfg.NodeName, c.hb.boot, c.hb.seq)
	c.hb.mu.Unlock()
	for name, addr := range c.peerAddrs() {
		n := &memberlist.Node{Name: name, Addr: addr.Addr().AsSlice(), Port: addr.Port()}
		if err := ml.SendBestEffort(n, msg); err != nil {
			c.log.Debug("send heartbeat", "peer", name, "err", err)
		}
	}
}

// checkBeats starts a direct probe of each peer whose beat is overdue and
// marks down those the detector gives up on.
func (c *Cluster) checkBeats(ml *memberlist.Memberlist, probes *sync.WaitGroup) {
	now := time.Now()
	c.hb.mu.Lock()
	due := c.hb.det.probes(now)
	c.hb.mu.Unlock()
	if len(due) > 0 {
		addrs := c.peerAddrs()
		for _, name := range due {
			addr, member := addrs[name]
			if !member {
				c.probed(name, now, false)
				continue
			}
			probes.Add(1)
			go func() {
				defer probes.Done()
				// Ping waits at most memberlist's ProbeTimeout.
				_, err := ml.Ping(name, net.UDPAddrFromAddrPort(addr))
				c.probed(name, now, err == nil)
			}()
		}
	}
	c.hb.mu.Lock()
	down := c.hb.det.check(now)
	silent := make([]time.Duration, len(down))
	for i, name := range down {
		silent[i] = c.hb.det.silentFor(name, now)
	}
	c.hb.mu.Unlock()
	for i, name := range down {
		c.log.Warn("peer missed its heartbeats and did not answer a direct probe: treating it as down",
			"peer", name, "silent", silent[i].Round(time.Millisecond), "misses", c.hb.timing.misses)
	}
	if len(down) > 0 {
		c.notify()
	}
}

func (c *Cluster) probed(name string, started time.Time, answered bool) {
	c.hb.mu.Lock()
	defer c.hb.mu.Unlock()
	c.hb.det.probed(name, started, answered, time.Now())
}
