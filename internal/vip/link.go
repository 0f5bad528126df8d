package vip

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Addr is an address halb manages on an interface.
type Addr struct {
	Prefix netip.Prefix
	// Label tags IPv4 addresses halb added, so that cleanup removes only
	// its own. Linux keeps no labels on IPv6 addresses.
	Label string
	// ValidLifetime is how long the kernel keeps the address unless it is
	// refreshed; 0 means forever. AddrList reports the time remaining.
	ValidLifetime time.Duration
}

// Link adds, removes and lists addresses of a network interface.
type Link interface {
	// AddrReplace adds a, or refreshes its lifetime if it is there.
	AddrReplace(ifname string, a Addr) error
	// AddrDel removes a; removing an absent address is not an error.
	AddrDel(ifname string, a Addr) error
	// AddrList returns every address of the interface.
	AddrList(ifname string) ([]Addr, error)
}

// maxLabel is the longest IPv4 address label Linux keeps (IFNAMSIZ-1).
const maxLabel = 15

// labelSuffix marks addresses halb added.
const labelSuffix = ":halb"

// Label returns the label halb puts on the addresses it adds to ifname:
// "<ifname>:halb", with ifname cut short so the whole fits in 15 bytes.
func Label(ifname string) string {
	if n := maxLabel - len(labelSuffix); len(ifname) > n {
		ifname = ifname[:n]
	}
	return ifname + labelSuffix
}

// Netlink is the Link of the network namespace of the calling thread,
// reached through rtnetlink.
type Netlink struct{}

// NewNetlink returns the real Link.
func NewNetlink() *Netlink { return &Netlink{} }

// AddrReplace implements Link.
func (*Netlink) AddrReplace(ifname string, a Addr) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("look up interface %s: %w", ifname, err)
	}
	na := toNetlink(a)
	if a.Prefix.Addr().Is6() {
		// Without NODAD an IPv6 VIP is unusable for a second or two
		// while duplicate address detection runs.
		na.Flags |= unix.IFA_F_NODAD
	}
	if a.ValidLifetime > 0 {
		// Whole seconds, rounded up, so a short lifetime never becomes 0
		// (which netlink would read as "forever").
		s := int(math.Ceil(a.ValidLifetime.Seconds()))
		na.ValidLft, na.PreferedLft = s, s
	}
	return netlink.AddrReplace(l, na)
}

// AddrDel implements Link.
func (*Netlink) AddrDel(ifname string, a Addr) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("look up interface %s: %w", ifname, err)
	}
	err = netlink.AddrDel(l, toNetlink(a))
	if errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

// AddrList implements Link.
func (*Netlink) AddrList(ifname string) ([]Addr, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("look up interface %s: %w", ifname, err)
	}
	nas, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	out := make([]Addr, 0, len(nas))
	for _, na := range nas {
		if na.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(na.IP)
		if !ok {
			continue
		}
		bits, _ := na.Mask.Size()
		a := Addr{Prefix: netip.PrefixFrom(ip.Unmap(), bits), Label: na.Label}
		// The kernel reports "forever" as all ones.
		if na.ValidLft > 0 && uint32(na.ValidLft) != math.MaxUint32 {
			a.ValidLifetime = time.Duration(na.ValidLft) * time.Second
		}
		out = append(out, a)
	}
	return out, nil
}

func toNetlink(a Addr) *netlink.Addr {
	addr := a.Prefix.Addr()
	return &netlink.Addr{
		IPNet: &net.IPNet{
			IP:   addr.AsSlice(),
			Mask: net.CIDRMask(a.Prefix.Bits(), addr.BitLen()),
		},
		// IFA_LABEL is IPv4 only; the netlink package drops it for IPv6.
		Label: a.Label,
	}
}
