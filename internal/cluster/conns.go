package cluster

import (
	"errors"
	"fmt"
	"slices"

	"github.com/hashicorp/memberlist"
)

// Connection-table messages carry the holders' tables of client
// connections (internal/conntable) to the peers, for tickle ACKs on
// takeover (docs/tickle.md). They go best effort (one UDP datagram each,
// encrypted like all gossip): a table chunk is at most
// conntable.DefaultChunk bytes, it is resent as a delta or snapshot when
// lost, and a TCP connection per chunk every 200 ms would cost far more.
// They travel on a queue of their own, so a burst of chunks neither
// delays the election loop nor crowds out drill requests.

// connsMagic starts every connection-table message; beats use beatMagic.
var connsMagic = [...]byte{0xff, 'c', 't', 1}

// connsQueue bounds the connection-table messages waiting for the
// daemon: a snapshot of 20 000 connections is about 100 chunks.
const connsQueue = 256

// ConnsKind says what a connection-table message asks.
type ConnsKind byte

// Connection-table message kinds.
const (
	// ConnsChunk is one chunk of the sender's table of a VIP.
	ConnsChunk ConnsKind = iota
	// ConnsRequest asks the receiver for a snapshot of its table of the
	// VIP the payload names.
	ConnsRequest
	// ConnsHandoff is a holder's hand-off offer for one VIP
	// (internal/handoff): its hardware address and how far its hand-off
	// is, so a peer taking the VIP forwards its connections to it.
	ConnsHandoff
)

// ConnsMsg is one connection-table message between two nodes.
type ConnsMsg struct {
	From    string // the sending node, set by the sender
	Kind    ConnsKind
	Payload []byte
}

// SendConns sends m to the member called node best effort; m.From is
// filled in with this node's name.
func (c *Cluster) SendConns(node string, m ConnsMsg) error {
	ml := c.ml.Load()
	if ml == nil {
		return errors.New("gossip is not running")
	}
	c.mu.Lock()
	p, ok := c.peers[node]
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("send connection table to %s: not a member", node)
	}
	m.From = c.cfg.NodeName
	n := &memberlist.Node{Name: node, Addr: p.addr.Addr().AsSlice(), Port: p.addr.Port()}
	if err := ml.SendBestEffort(n, encodeConns(m)); err != nil {
		return fmt.Errorf("send connection table to %s: %w", node, err)
	}
	return nil
}

// ConnsMessages delivers the connection-table messages peers sent.
func (c *Cluster) ConnsMessages() <-chan ConnsMsg { return c.conns }

// receiveConns takes a connection-table message from memberlist's
// handler, which must not block; it reports whether b was one.
func (c *Cluster) receiveConns(b []byte) bool {
	if len(b) < len(connsMagic) || [len(connsMagic)]byte(b[:len(connsMagic)]) != connsMagic {
		return false
	}
	m, err := decodeConns(b)
	if err != nil {
		c.log.Debug("ignored a malformed connection-table message", "err", err)
		return true
	}
	if m.From == c.cfg.NodeName {
		return true
	}
	select {
	case c.conns <- m:
	default:
		c.log.Debug("dropped a connection-table message: queue full", "peer", m.From)
	}
	return true
}

// encodeConns writes magic, kind, the sender's name (length-prefixed)
// and the payload.
func encodeConns(m ConnsMsg) []byte {
	b := make([]byte, 0, len(connsMagic)+2+len(m.From)+len(m.Payload))
	b = append(b, connsMagic[:]...)
	b = append(b, byte(m.Kind), byte(len(m.From)))
	b = append(b, m.From...)
	return append(b, m.Payload...)
}

// decodeConns decodes what encodeConns wrote; the payload is copied, as
// memberlist reuses its buffer.
func decodeConns(b []byte) (ConnsMsg, error) {
	b = b[len(connsMagic):]
	if len(b) < 2 {
		return ConnsMsg{}, errors.New("connection-table message: short header")
	}
	kind, n := ConnsKind(b[0]), int(b[1])
	if kind > ConnsHandoff {
		return ConnsMsg{}, fmt.Errorf("connection-table message: unknown kind %d", kind)
	}
	b = b[2:]
	if n == 0 || len(b) < n {
		return ConnsMsg{}, fmt.Errorf("connection-table message: sender name of %d bytes, %d left", n, len(b))
	}
	return ConnsMsg{From: string(b[:n]), Kind: kind, Payload: slices.Clone(b[n:])}, nil
}
