package cluster

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"halb/internal/exitorder"
)

// A watch is an idle TCP connection between two members, over the gossip
// port, that carries nothing after its hello. Its only message is its end:
// when a halb process dies (kill -9, a crash, an OOM kill) its kernel closes
// the process's sockets at once, and the peer reads the end of the watch
// before the next heartbeat is even due. The reader then probes the peer
// as after a "port unreachable" (heartbeat.go): the verdict is still the
// probe's, so a watch that ends for another reason (a restart, a firewall
// reset, a forged FIN) costs a few probes, never a failover.
//
// One watch serves a pair of members: the member whose name sorts first
// dials, the other accepts, and both read it. The acceptor takes a watch
// only from a holder of the gossip key: it sends a random challenge, and
// the dialer answers with an HMAC of it under the key (watchTag).

// watchLabel is the memberlist label header a watch starts with instead of
// the gossip label: a node that knows no watches refuses it as gossip of
// another cluster, and halb's own gossip is never mistaken for a watch.
const watchLabel = "halb-watch"

// Bounds of the watches.
const (
	// maxWatches bounds the watches accepted at once (one per peer name;
	// a newer one from the same name replaces the older).
	maxWatches = 256
	// watchHelloWait bounds how long an inbound stream may take to say
	// whether it is a watch and, if it is, to answer its challenge.
	watchHelloWait = time.Second
	// watchShortLife: a watch that ends sooner was likely cut on purpose
	// (an older peer without watches closes it at once); the next dial
	// backs off, doubling up to watchMaxBackoff. Failed dials back off up
	// to watchDialBackoff only: the peer is down or restarting, and should
	// be watched again soon after it is back.
	watchShortLife   = 2 * time.Second
	watchMaxBackoff  = time.Minute
	watchDialBackoff = time.Second
	// watchLingerBeats is how many beat intervals after a watch ended its
	// peer is probed at every check: a dying process may close the watch a
	// moment before its gossip listener, and the first probe would still
	// connect.
	watchLingerBeats = 2
)

// watchKeepAlive probes an idle watch: a peer host that vanished without
// a FIN, or a firewall that dropped the connection's state, ends the watch
// within about 20 s instead of the kernel's default two hours (or Go's
// 2.5 minutes), so it is dialed again and its state is reported right.
var watchKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3}

// watchHello is the start of a watch stream: the label header, then the
// dialer's node name (one length byte, then the name).
func watchHello(node string) ([]byte, error) {
	if node == "" || len(node) > 255 {
		return nil, fmt.Errorf("watch hello: node name of %d bytes", len(node))
	}
	b := append(slices.Clone(watchHeader), byte(len(node)))
	return append(b, node...), nil
}

// watchHeader is memberlist's label header naming watchLabel.
var watchHeader = func() []byte {
	b, err := memberlist.AddLabelHeaderToPacket(nil, watchLabel)
	if err != nil {
		panic(err) // a constant label of valid length
	}
	return b
}()

// sortStream reads the start of an inbound gossip stream from r and says
// whether it is a watch, and from whom. A stream that is not a watch has
// consumed nothing: what was peeked stays in r for memberlist. Only a
// stream whose label header has the watch label's length is read past its
// first two bytes, so memberlist's streams (label "halb") never wait here
// for more than they send at once.
func sortStream(r *bufio.Reader) (node string, watch bool, err error) {
	hdr := watchHeader
	b, err := r.Peek(2)
	if err != nil || b[0] != hdr[0] || b[1] != hdr[1] {
		// Too short, or another label (or none): memberlist's to judge.
		return "", false, nil
	}
	b, err = r.Peek(len(hdr) + 1)
	if err != nil || string(b[:len(hdr)]) != string(hdr) {
		return "", false, nil
	}
	n := int(b[len(hdr)])
	b, err = r.Peek(len(hdr) + 1 + n)
	if err != nil {
		return "", false, fmt.Errorf("watch hello cut short: %w", err)
	}
	if n == 0 {
		return "", false, errors.New("watch hello without a node name")
	}
	node = string(b[len(hdr)+1:])
	_, _ = r.Discard(len(b))
	return node, true, nil
}

// The challenge of a watch: a random nonce from the acceptor, answered by
// the dialer with a truncated HMAC-SHA256 of the nonce and its name.
const (
	watchNonceLen = 16
	watchTagLen   = 16
)

// errWatchNotAuthentic is logged for a watch whose answer no key verifies.
var errWatchNotAuthentic = errors.New("watch answered without the gossip key: closed")

// watchTag is the answer to nonce for a watch from node under key (nil
// for a cluster without encryption).
func watchTag(key, nonce []byte, node string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(watchLabel))
	m.Write([]byte{0})
	m.Write(nonce)
	m.Write([]byte(node))
	return m.Sum(nil)[:watchTagLen]
}

// challengeWatch is the acceptor's side: it sends a nonce on w and reads
// the answer from r, which must verify under one of keys (primary first;
// several during a key rotation).
func challengeWatch(w io.Writer, r io.Reader, node string, keys [][]byte) error {
	nonce := make([]byte, watchNonceLen)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	if _, err := w.Write(nonce); err != nil {
		return fmt.Errorf("watch challenge: %w", err)
	}
	tag := make([]byte, watchTagLen)
	if _, err := io.ReadFull(r, tag); err != nil {
		return fmt.Errorf("watch answer: %w", err)
	}
	for _, k := range keys {
		if hmac.Equal(tag, watchTag(k, nonce, node)) {
			return nil
		}
	}
	return errWatchNotAuthentic
}

// answerWatch is the dialer's side: it reads the nonce from rw and
// answers it under key.
func answerWatch(rw io.ReadWriter, node string, key []byte) error {
	nonce := make([]byte, watchNonceLen)
	if _, err := io.ReadFull(rw, nonce); err != nil {
		return fmt.Errorf("watch challenge: %w", err)
	}
	_, err := rw.Write(watchTag(key, nonce, node))
	return err
}

// watchKeys are the keys a watch's answer may verify under: the gossip
// keys, primary first, or one empty key without encryption.
func (c *Cluster) watchKeys() [][]byte {
	if c.keyring == nil {
		return [][]byte{nil}
	}
	return c.keyring.GetKeys()
}

// bufferedConn reads through the reader that peeked at its start.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// watchSet holds the open watches, accepted and dialed, so that a hard
// drill or the end of Run closes them all, as a process's exit would.
type watchSet struct {
	mu       sync.Mutex
	accepted map[string]net.Conn // by the dialer's name
	dialed   map[net.Conn]string // to the peer named
	shut     bool                // Run has ended: take no more
	wg       sync.WaitGroup      // the readers of accepted watches
}

func newWatchSet() *watchSet {
	return &watchSet{accepted: map[string]net.Conn{}, dialed: map[net.Conn]string{}}
}

// errTooManyWatches is logged for a watch closed on arrival.
var errTooManyWatches = fmt.Errorf("more than %d watches open at once: closed on arrival", maxWatches)

// accept takes a watch from node; it replaces an older one from the same
// name. ended runs once when the watch ends other than by being replaced
// or closed here. It fails with errTooManyWatches, or net.ErrClosed once
// shut.
func (w *watchSet) accept(node string, conn net.Conn, ended func()) error {
	w.mu.Lock()
	old, had := w.accepted[node]
	switch {
	case w.shut:
		w.mu.Unlock()
		return net.ErrClosed
	case !had && len(w.accepted) >= maxWatches:
		w.mu.Unlock()
		return errTooManyWatches
	}
	w.accepted[node] = conn
	w.wg.Add(1)
	w.mu.Unlock()
	if had {
		_ = old.Close()
	}
	go func() {
		defer w.wg.Done()
		drain(conn)
		w.mu.Lock()
		mine := w.accepted[node] == conn
		if mine {
			delete(w.accepted, node)
		}
		w.mu.Unlock()
		_ = conn.Close()
		if mine {
			ended()
		}
	}()
	return nil
}

// hold records a watch dialed to node until release; it reports false
// (and the caller closes conn) once the set is shut.
func (w *watchSet) hold(node string, conn net.Conn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.shut {
		return false
	}
	w.dialed[conn] = node
	return true
}

// watching reports whether a watch with node is open, either way.
func (w *watchSet) watching(node string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.accepted[node]; ok {
		return true
	}
	for _, n := range w.dialed {
		if n == node {
			return true
		}
	}
	return false
}

func (w *watchSet) release(conn net.Conn) {
	w.mu.Lock()
	delete(w.dialed, conn)
	w.mu.Unlock()
}

// closeAll closes every watch, as a hard drill's pretended death does;
// with shut (the end of Run) it takes none after. Accepted ones are
// forgotten first, so their ends are not reported; dialed ones end their
// dialers' reads.
func (w *watchSet) closeAll(shut bool) {
	w.mu.Lock()
	w.shut = w.shut || shut
	conns := make([]net.Conn, 0, len(w.accepted)+len(w.dialed))
	for _, c := range w.accepted {
		conns = append(conns, c)
	}
	clear(w.accepted)
	for c := range w.dialed {
		conns = append(conns, c)
	}
	w.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// wait waits for the readers of accepted watches, after closeAll.
func (w *watchSet) wait() { w.wg.Wait() }

// drain reads conn until it ends; a watch carries nothing after its hello.
func drain(conn net.Conn) {
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1<<10))
}

// acceptWatch takes an inbound watch from node (the transport sorted it
// out of the gossip streams).
func (c *Cluster) acceptWatch(node string, conn net.Conn) {
	if node == c.cfg.NodeName {
		_ = conn.Close()
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetKeepAliveConfig(watchKeepAlive)
	}
	conn = c.pinWatch(conn)
	err := c.watches.accept(node, conn, func() { c.watchEnded(node) })
	if errors.Is(err, errTooManyWatches) {
		c.refusals.refuse(conn.RemoteAddr().String(), err.Error())
	}
	if err != nil {
		_ = conn.Close()
	}
}

// pinWatch puts a watch's socket at the top of the descriptor table: if
// this process is killed, the kernel then closes the watch before the
// proxied connections, so the peer hears of it before the clients do
// (internal/exitorder). Without a pin the watch still works, only later.
func (c *Cluster) pinWatch(conn net.Conn) net.Conn {
	pc, err := exitorder.PinConn(conn)
	if err != nil {
		c.log.Debug("watch connection released in its turn at exit", "err", err)
	}
	return pc
}

// watchEnded probes node at once and for watchLingerBeats intervals: its
// process may be gone.
func (c *Cluster) watchEnded(node string) {
	if c.silenced() {
		return // playing dead: this node's own sockets closed it
	}
	now := time.Now()
	c.hb.mu.Lock()
	c.hb.det.hintFor(node, now, now.Add(watchLingerBeats*c.hb.timing.interval), hintWatch)
	c.hb.mu.Unlock()
	c.hb.wake()
	c.log.Debug("watch connection to peer ended: probing it now", "peer", node)
}

func (c *Cluster) silenced() bool { return time.Now().UnixNano() < c.silence.Load() }

// watchTargets returns the members this node dials a watch to: those whose
// names sort after its own.
func (c *Cluster) watchTargets() map[string]netip.AddrPort {
	out := map[string]netip.AddrPort{}
	for name, addr := range c.peerAddrs() {
		if name > c.cfg.NodeName {
			out[name] = addr
		}
	}
	return out
}

// watchLoop keeps one dialer per watch target, started when the target
// joins and stopped when it leaves or its address changes.
func (c *Cluster) watchLoop(ctx context.Context) {
	type dialer struct {
		addr   netip.AddrPort
		cancel context.CancelFunc
	}
	running := map[string]dialer{}
	var wg sync.WaitGroup
	defer func() {
		for _, d := range running {
			d.cancel()
		}
		wg.Wait()
	}()
	tick := time.NewTicker(c.hb.timing.interval)
	defer tick.Stop()
	for {
		want := c.watchTargets()
		for name, d := range running {
			if addr, ok := want[name]; !ok || addr != d.addr {
				d.cancel()
				delete(running, name)
			}
		}
		for name, addr := range want {
			if _, ok := running[name]; ok {
				continue
			}
			dctx, cancel := context.WithCancel(ctx)
			running[name] = dialer{addr: addr, cancel: cancel}
			wg.Add(1)
			go func() { defer wg.Done(); c.watchPeer(dctx, name, addr) }()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// watchPeer keeps a watch open to node at addr until ctx ends, dialing
// again after each end: at once after a watch that lived, backing off
// after one refused or cut short.
func (c *Cluster) watchPeer(ctx context.Context, node string, addr netip.AddrPort) {
	hello, err := watchHello(c.cfg.NodeName)
	if err != nil {
		c.log.Debug("no watches", "err", err)
		return
	}
	backoff := c.hb.timing.interval
	for {
		end := watchSilenced
		if !c.silenced() {
			end = c.watchOnce(ctx, node, addr, hello)
			if ctx.Err() != nil {
				return
			}
			c.watchEnded(node)
		}
		backoff = nextWatchBackoff(backoff, end, c.hb.timing.interval)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// watchEnd is how a dialed watch ended.
type watchEnd int

const (
	watchSilenced  watchEnd = iota // not dialed: a hard drill plays dead
	watchDialError                 // refused or unanswered: the peer is down or restarting
	watchCut                       // connected, but ended within watchShortLife
	watchLived                     // ended after watchShortLife
)

// nextWatchBackoff is the wait before the next dial after a watch ended
// so: one beat interval after one that lived (or none while silenced);
// doubling up to watchDialBackoff while dials fail, so a peer that comes
// back is watched again within a second; doubling up to watchMaxBackoff
// while watches are cut short, as by an older node that knows none.
func nextWatchBackoff(prev time.Duration, end watchEnd, interval time.Duration) time.Duration {
	switch end {
	case watchDialError:
		return min(max(2*prev, interval), max(watchDialBackoff, interval))
	case watchCut:
		return min(max(2*prev, interval), watchMaxBackoff)
	}
	return interval
}

// watchOnce dials one watch and holds it until it ends or ctx does.
// It reports how the watch ended.
func (c *Cluster) watchOnce(ctx context.Context, node string, addr netip.AddrPort, hello []byte) watchEnd {
	d := net.Dialer{Timeout: c.hb.timing.probeTimeout * 4, KeepAliveConfig: watchKeepAlive}
	if from := c.cfg.BindAddr; from.IsValid() && !from.IsUnspecified() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
	}
	conn, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()).String())
	if err != nil {
		return watchDialError
	}
	start := time.Now()
	conn = c.pinWatch(conn)
	defer func() { _ = conn.Close() }()
	if !c.watches.hold(node, conn) {
		return watchLived // shut: ctx ends too
	}
	defer c.watches.release(conn)
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(watchHelloWait))
	if _, err := conn.Write(hello); err == nil && answerWatch(conn, c.cfg.NodeName, c.watchKeys()[0]) == nil {
		_ = conn.SetDeadline(time.Time{})
		drain(conn)
	}
	if time.Since(start) < watchShortLife {
		return watchCut
	}
	return watchLived
}
