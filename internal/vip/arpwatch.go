package vip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// WatchARP reports, until ctx ends, every ARP packet on ifname whose
// sender claims ip from a hardware address other than the interface's own:
// another host announcing or answering for the VIP. It needs CAP_NET_RAW;
// the socket belongs to the network namespace of the calling thread. IPv6
// addresses are not watched.
func WatchARP(ctx context.Context, ifname string, ip netip.Addr, seen func(mac net.HardwareAddr)) error {
	ip = ip.Unmap()
	if !ip.Is4() {
		return nil
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("watch ARP: look up interface %s: %w", ifname, err)
	}
	c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
	if err != nil {
		return fmt.Errorf("watch ARP: open packet socket on %s: %w", ifname, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer func() {
		if stop() {
			_ = c.Close()
		}
	}()
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("watch ARP on %s: %w", ifname, err)
		}
		if mac := foreignSender(buf[:n], ip, ifi.HardwareAddr); mac != nil {
			seen(mac)
		}
	}
}

// foreignSender returns the sender hardware address of an Ethernet frame
// carrying an ARP packet whose sender IP is ip, unless it is own; nil for
// anything else.
func foreignSender(frame []byte, ip netip.Addr, own net.HardwareAddr) net.HardwareAddr {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != ethernet.EtherTypeARP {
		return nil
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return nil
	}
	if p.SenderIP != ip || bytes.Equal(p.SenderHardwareAddr, own) {
		return nil
	}
	return p.SenderHardwareAddr
}
