package cluster

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// Bounds on what a gossip stream (TCP) may cost before it is authenticated.
// memberlist buffers a whole encrypted message before it can decrypt it and
// accepts a length prefix of up to 20 MB, so without these anyone who can
// reach the gossip port could make the node buffer 20 MB per connection.
const (
	// maxInboundStreams is how many inbound streams are read at once; more
	// are closed on arrival. A stream lives at most memberlist's TCPTimeout
	// (1 s), and a healthy cluster opens one every few seconds per peer
	// (push/pull every 10 s, joins, the TCP fallback of a probe).
	maxInboundStreams = 16
	// maxStreamBytes is how much is read from one stream, in or out; a
	// stream carries one message. halb's largest is a push/pull of the
	// whole member table: per node at most ~730 bytes (a 128-byte name,
	// 512 bytes of metadata, address, port, incarnation, versions and
	// msgpack field names), 64 nodes ~47 KB, ~70 KB if memberlist's LZW
	// compression expands it by its worst case of one half; 256 KiB leaves
	// more than three times that.
	maxStreamBytes = 256 << 10
)

// errStreamTooLong is what a read past maxStreamBytes returns; memberlist
// then drops the stream and logs this text with the sender.
var errStreamTooLong = fmt.Errorf("gossip stream longer than %d bytes: dropped", maxStreamBytes)

// errTooManyStreams is logged for a stream closed on arrival.
var errTooManyStreams = errors.New("too many gossip streams open at once: closed on arrival")

// streamLimits caps the inbound streams read at once and the bytes read from
// each stream, and counts what it did.
type streamLimits struct {
	slots    chan struct{} // one token per inbound stream being read
	maxBytes int64

	read    atomic.Int64 // bytes read from limited streams, in and out
	refused atomic.Int64 // inbound streams closed on arrival
}

func newStreamLimits(streams int, maxBytes int64) *streamLimits {
	return &streamLimits{slots: make(chan struct{}, streams), maxBytes: maxBytes}
}

// admit wraps an inbound stream if a slot is free, and returns false (the
// caller closes c) when all are taken. The slot comes back when the
// wrapper is closed.
func (l *streamLimits) admit(c net.Conn) (net.Conn, bool) {
	select {
	case l.slots <- struct{}{}:
		return l.wrap(c, func() { <-l.slots }), true
	default:
		l.refused.Add(1)
		return nil, false
	}
}

// wrap caps the bytes read from c; release runs once, on the first Close.
func (l *streamLimits) wrap(c net.Conn, release func()) net.Conn {
	return &limitedConn{Conn: c, left: l.maxBytes, read: &l.read, release: release}
}

// limitedConn reads at most left bytes from its connection. memberlist reads
// a stream from one goroutine, so left needs no lock.
type limitedConn struct {
	net.Conn
	left    int64
	read    *atomic.Int64
	release func() // nil: nothing to give back
	once    sync.Once
}

func (c *limitedConn) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errStreamTooLong
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= int64(n)
	c.read.Add(int64(n))
	return n, err
}

func (c *limitedConn) Close() error {
	c.releaseSlot()
	return c.Conn.Close()
}

// releaseSlot gives the stream's slot back without closing it (a watch,
// held for long, is bounded on its own).
func (c *limitedConn) releaseSlot() {
	if c.release != nil {
		c.once.Do(c.release)
	}
}
