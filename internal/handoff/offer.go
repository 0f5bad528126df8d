package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// State is what a node's offer says about one VIP.
type State byte

const (
	// Holding: the sender holds the VIP and will hand its connections
	// off to whichever peer takes it while the sender lives.
	Holding State = iota + 1
	// Handing: the sender released the VIP and keeps serving its
	// connections; Left of them are still open.
	Handing
	// Done: the sender's connections are closed or handed back; the new
	// holder stops forwarding.
	Done
	// Aborted: the sender could not keep the address quietly; the new
	// holder stops forwarding and tickles the connections instead.
	Aborted
)

func (s State) String() string {
	switch s {
	case Holding:
		return "holding"
	case Handing:
		return "handing off"
	case Done:
		return "done"
	case Aborted:
		return "aborted"
	}
	return fmt.Sprintf("State(%d)", byte(s))
}

// Offer is a node's word about one VIP, sent to every peer with its
// connection table: the hardware address the peers forward to, so nobody
// guesses it from ARP, and how far its hand-off is.
type Offer struct {
	VIP   netip.Addr
	MAC   net.HardwareAddr
	State State
	Left  uint32 // connections still open (Handing)
}

const offerVersion = 1

// Marshal encodes o: version, state, address length, address, MAC
// length, MAC, left.
func (o Offer) Marshal() []byte {
	a := o.VIP.Unmap().AsSlice()
	b := make([]byte, 0, 3+len(a)+1+len(o.MAC)+4)
	b = append(b, offerVersion, byte(o.State), byte(len(a)))
	b = append(b, a...)
	b = append(b, byte(len(o.MAC)))
	b = append(b, o.MAC...)
	return binary.BigEndian.AppendUint32(b, o.Left)
}

// ParseOffer decodes an offer made by Marshal.
func ParseOffer(b []byte) (Offer, error) {
	if len(b) < 3 {
		return Offer{}, errors.New("hand-off offer: short header")
	}
	if b[0] != offerVersion {
		return Offer{}, fmt.Errorf("hand-off offer: version %d, want %d", b[0], offerVersion)
	}
	o := Offer{State: State(b[1])}
	if o.State < Holding || o.State > Aborted {
		return Offer{}, fmt.Errorf("hand-off offer: unknown state %d", b[1])
	}
	n := int(b[2])
	b = b[3:]
	if (n != 4 && n != 16) || len(b) < n+1 {
		return Offer{}, fmt.Errorf("hand-off offer: address of %d bytes, %d left", n, len(b))
	}
	o.VIP, _ = netip.AddrFromSlice(b[:n])
	b = b[n:]
	m := int(b[0])
	b = b[1:]
	if m != 6 || len(b) != m+4 {
		return Offer{}, fmt.Errorf("hand-off offer: hardware address of %d bytes, %d left", m, len(b))
	}
	o.MAC = net.HardwareAddr(append([]byte(nil), b[:m]...))
	o.Left = binary.BigEndian.Uint32(b[m:])
	return o, nil
}
