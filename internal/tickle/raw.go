package tickle

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// Raw is the real Writer: a raw IP socket (IPPROTO_RAW, so the packet
// carries its own IP header with the VIP as source) bound to the VIP's
// interface.
//
// Why not AF_PACKET: a link-layer frame needs the next hop's MAC, and the
// node that has just taken a VIP has often never talked to the clients,
// so it has no neighbour entry for them. Through a raw IP socket the
// kernel routes each packet, resolves the neighbour (queueing the packet
// meanwhile) and frames it with the egress interface's own MAC, which
// SO_BINDTODEVICE makes the VIP's interface.
//
// The socket belongs to the network namespace of the thread that opened
// it. It needs CAP_NET_RAW.
type Raw struct {
	f      *os.File
	ipv6   bool
	ifname string
	zone   int // interface index, for link-local destinations
}

// sendBuffer lets a burst of tickles queue in the kernel rather than
// wait in the poller: 10 000 packets of ~60 bytes, with overhead.
const sendBuffer = 4 << 20

// OpenRaw opens a raw socket for IPv4 (ipv6 false) or IPv6 packets
// leaving through the interface ifname.
func OpenRaw(ifname string, ipv6 bool) (*Raw, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("look up interface %s: %w", ifname, err)
	}
	family := unix.AF_INET
	if ipv6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("open raw socket for tickles on %s: %w", ifname, os.NewSyscallError("socket", err))
	}
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("bind raw socket to %s: %w", ifname, os.NewSyscallError("setsockopt", err))
	}
	// Best effort: the default buffer only slows a burst down.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuffer)
	// A non-blocking descriptor joins Go's poller, so a full buffer
	// parks the goroutine instead of a thread.
	f := os.NewFile(uintptr(fd), "tickle-raw-"+ifname)
	return &Raw{f: f, ipv6: ipv6, ifname: ifname, zone: ifi.Index}, nil
}

// WritePacket implements Writer.
func (r *Raw) WritePacket(pkt []byte, dst netip.Addr) error {
	dst = dst.Unmap()
	var sa unix.Sockaddr
	switch {
	case dst.Is4() && !r.ipv6:
		sa = &unix.SockaddrInet4{Addr: dst.As4()}
	case dst.Is6() && r.ipv6:
		// The port must be 0 (or the protocol) on an IPv6 raw socket.
		s := &unix.SockaddrInet6{Addr: dst.As16()}
		if dst.IsLinkLocalUnicast() {
			s.ZoneId = uint32(r.zone)
		}
		sa = s
	default:
		return fmt.Errorf("send to %s on the %s raw socket: wrong family", dst, r.family())
	}
	rc, err := r.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw socket on %s: %w", r.ifname, err)
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), pkt, 0, sa)
		return !errors.Is(serr, unix.EAGAIN)
	})
	if err != nil {
		return fmt.Errorf("raw socket on %s: %w", r.ifname, err)
	}
	if serr != nil {
		return os.NewSyscallError("sendto", serr)
	}
	return nil
}

func (r *Raw) family() string {
	if r.ipv6 {
		return "IPv6"
	}
	return "IPv4"
}

// Close closes the socket.
func (r *Raw) Close() error { return r.f.Close() }
