package cluster

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// errSilenced is returned for dials while the node plays dead.
var errSilenced = errors.New("gossip silenced by drill")

// silenceTransport wraps memberlist's transport so a drill can make this node
// drop every gossip packet and stream, in and out, as if it had crashed,
// while the process keeps running. It also applies the stream limits
// (limits.go): memberlist has no setting for them.
type silenceTransport struct {
	inner    *gossipSockets
	until    *atomic.Int64 // unix nanoseconds; silent while now is before it
	limits   *streamLimits
	refusals *refusalLog // reports streams closed on arrival
	// watch takes the inbound streams that are watches (watch.go), once
	// their answers verify under one of watchKeys.
	watch     func(node string, conn net.Conn)
	watchKeys func() [][]byte
	packetCh  chan *memberlist.Packet
	streamCh  chan net.Conn
	// ctx ends first on Shutdown: drop instead of forwarding, and stop
	// waiting for the streams being sorted.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed once the inner transport is down
	wg     sync.WaitGroup
	once   sync.Once
}

func newSilenceTransport(inner *gossipSockets, until *atomic.Int64, limits *streamLimits, refusals *refusalLog, watch func(string, net.Conn), watchKeys func() [][]byte) *silenceTransport {
	t := &silenceTransport{
		inner:     inner,
		until:     until,
		limits:    limits,
		refusals:  refusals,
		watch:     watch,
		watchKeys: watchKeys,
		packetCh:  make(chan *memberlist.Packet),
		streamCh:  make(chan net.Conn),
		done:      make(chan struct{}),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *silenceTransport) silenced() bool {
	return time.Now().UnixNano() < t.until.Load()
}

// forwardPackets keeps draining the inner transport until its Shutdown has
// returned, because the inner listeners block on their unbuffered channels
// and Shutdown waits for them.
func (t *silenceTransport) forwardPackets() {
	defer t.wg.Done()
	for {
		select {
		case p := <-t.inner.PacketCh():
			if t.silenced() {
				continue
			}
			select {
			case t.packetCh <- p:
			case <-t.ctx.Done():
			}
		case <-t.done:
			return
		}
	}
}

func (t *silenceTransport) forwardStreams() {
	defer t.wg.Done()
	for {
		select {
		case c := <-t.inner.StreamCh():
			if t.silenced() {
				_ = c.Close()
				continue
			}
			lc, ok := t.limits.admit(c)
			if !ok {
				t.refusals.refuse(c.RemoteAddr().String(), errTooManyStreams.Error())
				_ = c.Close()
				continue
			}
			// Sorting reads from the stream, which may be slow to send:
			// off this loop, within the stream's slot.
			t.wg.Add(1)
			go func() { defer t.wg.Done(); t.sort(c, lc) }()
		case <-t.done:
			return
		}
	}
}

// sort hands an admitted inbound stream to memberlist, or to the watches
// if it is one whose challenge was answered with the gossip key; raw is
// the connection under lc, the limited one. Reading the hello and the
// answer is bounded by watchHelloWait and by Shutdown.
func (t *silenceTransport) sort(raw, lc net.Conn) {
	_ = raw.SetDeadline(time.Now().Add(watchHelloWait))
	stop := context.AfterFunc(t.ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	br := bufio.NewReader(lc)
	node, watch, err := sortStream(br)
	if err == nil && watch {
		err = challengeWatch(raw, br, node, t.watchKeys())
	}
	if !stop() {
		_ = lc.Close() // shutting down
		return
	}
	_ = raw.SetDeadline(time.Time{})
	switch {
	case err != nil:
		t.refusals.refuse(raw.RemoteAddr().String(), err.Error())
		_ = lc.Close()
	case watch:
		// Held for as long as both processes live: out of the stream
		// slot, and unlimited.
		lc.(*limitedConn).releaseSlot()
		t.watch(node, raw)
	default:
		select {
		case t.streamCh <- &bufferedConn{Conn: lc, r: br}:
		case <-t.ctx.Done():
			_ = lc.Close()
		}
	}
}

func (t *silenceTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo reports success while silenced: a lost UDP packet looks the same.
func (t *silenceTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.silenced() {
		return time.Now(), nil
	}
	return t.inner.WriteTo(b, addr)
}

func (t *silenceTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *silenceTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.silenced() {
		return nil, errSilenced
	}
	c, err := t.inner.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	// The answer to a push/pull is as large as the peer says, too.
	return t.limits.wrap(c, nil), nil
}

func (t *silenceTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown stops the inner transport while the forwarders still drain it
// (dropping what arrives, as memberlist may no longer read), then the
// forwarders. It is safe to call more than once.
func (t *silenceTransport) Shutdown() error {
	var err error
	t.once.Do(func() {
		t.cancel()
		err = t.inner.Shutdown()
		close(t.done)
		t.wg.Wait()
	})
	return err
}
