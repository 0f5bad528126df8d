package vip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// GARPSender tells the neighbours on a link that ip now lives at this
// host's hardware address.
type GARPSender interface {
	// Announce sends one request-form and one reply-form gratuitous ARP
	// for an IPv4 ip, or one unsolicited neighbour advertisement for IPv6.
	Announce(ifname string, ip netip.Addr) error
}

// GARP is the real GARPSender. It opens an AF_PACKET socket on the
// interface for each call (announcements are rare), so it holds nothing
// between calls and follows interfaces that are recreated. The socket
// belongs to the network namespace of the calling thread.
type GARP struct{}

// NewGARP returns the real GARPSender; it needs CAP_NET_RAW.
func NewGARP() *GARP { return &GARP{} }

// allNodes is the IPv6 all-nodes multicast group and its Ethernet address.
var (
	allNodes    = netip.MustParseAddr("ff02::1")
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
)

// Announce implements GARPSender.
func (*GARP) Announce(ifname string, ip netip.Addr) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("look up interface %s: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("interface %s has no Ethernet address", ifname)
	}
	ip = ip.Unmap()
	if ip.Is4() {
		req, rep, err := garpFrames(ifi.HardwareAddr, ip)
		if err != nil {
			return err
		}
		return sendFrames(ifi, unix.ETH_P_ARP, ethernet.Broadcast, req, rep)
	}
	na, err := naFrame(ifi.HardwareAddr, ip)
	if err != nil {
		return err
	}
	return sendFrames(ifi, unix.ETH_P_IPV6, allNodesMAC, na)
}

func sendFrames(ifi *net.Interface, proto int, dst net.HardwareAddr, frames ...[]byte) (err error) {
	c, err := packet.Listen(ifi, packet.Raw, proto, nil)
	if err != nil {
		return fmt.Errorf("open packet socket on %s: %w", ifi.Name, err)
	}
	defer func() {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close packet socket on %s: %w", ifi.Name, cerr)
		}
	}()
	for _, f := range frames {
		if _, err := c.WriteTo(f, &packet.Addr{HardwareAddr: dst}); err != nil {
			return fmt.Errorf("send on %s: %w", ifi.Name, err)
		}
	}
	return nil
}

// garpFrames builds the two gratuitous ARP frames for ip: a broadcast
// request (target MAC zero) and a broadcast reply whose target MAC equals
// the sender MAC, the only gratuitous reply form Linux accepts. Sender IP
// and target IP are both ip. Hosts differ in which form they honour, so
// both are sent.
func garpFrames(mac net.HardwareAddr, ip netip.Addr) (request, reply []byte, err error) {
	if len(mac) != 6 {
		return nil, nil, fmt.Errorf("gratuitous arp: hardware address %v is not Ethernet", mac)
	}
	if !ip.Is4() {
		return nil, nil, fmt.Errorf("gratuitous arp: %s is not IPv4", ip)
	}
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	request, err = arpFrame(arp.OperationRequest, mac, ip, zero)
	if err != nil {
		return nil, nil, err
	}
	reply, err = arpFrame(arp.OperationReply, mac, ip, mac)
	if err != nil {
		return nil, nil, err
	}
	return request, reply, nil
}

func arpFrame(op arp.Operation, mac net.HardwareAddr, ip netip.Addr, targetMAC net.HardwareAddr) ([]byte, error) {
	p, err := arp.NewPacket(op, mac, ip, targetMAC, ip)
	if err != nil {
		return nil, fmt.Errorf("build arp %s: %w", op, err)
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("marshal arp %s: %w", op, err)
	}
	f := ethernet.Frame{
		Destination: ethernet.Broadcast,
		Source:      mac,
		EtherType:   ethernet.EtherTypeARP,
		Payload:     pb,
	}
	b, err := f.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("marshal ethernet frame: %w", err)
	}
	return b, nil
}

// naFrame builds an unsolicited neighbour advertisement (RFC 4861 7.2.6)
// for ip, sent from ip to all nodes with the Override flag set, so that
// neighbours which already know ip replace the old hardware address.
func naFrame(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("neighbour advertisement: hardware address %v is not Ethernet", mac)
	}
	if !ip.Is6() || ip.Is4In6() {
		return nil, errors.New("neighbour advertisement: " + ip.String() + " is not IPv6")
	}
	const (
		ipv6Header   = 40
		icmpLen      = 32 // type, code, checksum, flags, target, one 8-byte option
		icmpv6       = 58
		typeNA       = 136
		flagOverride = 0x20
		optTargetLL  = 2
	)
	b := make([]byte, ipv6Header+icmpLen)
	src, dst := ip.As16(), allNodes.As16()

	b[0] = 6 << 4 // version; traffic class and flow label zero
	binary.BigEndian.PutUint16(b[4:6], icmpLen)
	b[6] = icmpv6
	b[7] = 255 // receivers drop neighbour discovery with any other hop limit
	copy(b[8:24], src[:])
	copy(b[24:40], dst[:])

	m := b[ipv6Header:]
	m[0] = typeNA
	m[4] = flagOverride
	copy(m[8:24], src[:])
	m[24] = optTargetLL
	m[25] = 1 // option length in units of 8 bytes
	copy(m[26:32], mac)
	binary.BigEndian.PutUint16(m[2:4], icmpv6Checksum(src, dst, m))

	f := ethernet.Frame{
		Destination: allNodesMAC,
		Source:      mac,
		EtherType:   ethernet.EtherTypeIPv6,
		Payload:     b,
	}
	out, err := f.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("marshal ethernet frame: %w", err)
	}
	return out, nil
}

// icmpv6Checksum is the Internet checksum over the IPv6 pseudo-header and
// msg (whose checksum field must be zero).
func icmpv6Checksum(src, dst [16]byte, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	var tail [8]byte
	binary.BigEndian.PutUint32(tail[0:4], uint32(len(msg)))
	tail[7] = 58
	add(tail[:])
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
