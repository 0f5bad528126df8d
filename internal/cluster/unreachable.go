package cluster

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// "Port unreachable" as a hint of death. When a peer's process dies and
// its host stays up (kill -9, a crash, the OOM killer), the host's kernel
// answers this node's next gossip packet to it — a heartbeat, sent every
// interval — with an ICMP "port unreachable". With IP_RECVERR the gossip
// UDP socket queues that error with the address the packet went to, and
// the heartbeat detector probes that peer at once (detector.hint) instead
// of waiting for its beat to be 1.5 intervals overdue. Only the probe's
// "refused" makes the peer down, so an ICMP that lies costs a probe.

// sockExtendedErrLen is the size of struct sock_extended_err, which
// starts the data of an IP_RECVERR or IPV6_RECVERR control message.
const sockExtendedErrLen = 16

// maxErrDrain bounds the errors read from the queue at one wake-up; the
// kernel caps the queue by the socket's receive buffer anyway.
const maxErrDrain = 64

// recvErrors asks the kernel to queue ICMP errors on the UDP socket (both
// families: an IPv6 socket may carry IPv4-mapped traffic). It is best
// effort: without it the heartbeats still find a dead process, later.
func recvErrors(c *net.UDPConn) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1)
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1)
	})
}

// drainUnreachable reads the socket's error queue without waiting and
// calls found with the destination of each packet that drew a "port
// unreachable".
func drainUnreachable(c *net.UDPConn, found func(netip.AddrPort)) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 64)
	oob := make([]byte, 256)
	for range maxErrDrain {
		var dst netip.AddrPort
		var refused, more bool
		rerr := raw.Read(func(fd uintptr) bool {
			_, oobn, _, from, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if err != nil {
				return true // EAGAIN: the queue is empty; never wait for it
			}
			more = true
			refused = portUnreachable(oob[:oobn])
			dst = sockaddrAddrPort(from)
			return true
		})
		if rerr != nil || !more {
			return
		}
		if refused && dst.IsValid() {
			found(dst)
		}
	}
}

// portUnreachable reports whether the control messages of an error-queue
// read carry an ICMP or ICMPv6 error that the kernel maps to
// ECONNREFUSED: a closed port on the destination host.
func portUnreachable(oob []byte) bool {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return false
	}
	for _, m := range msgs {
		v4 := m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_RECVERR
		v6 := m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_RECVERR
		if (!v4 && !v6) || len(m.Data) < sockExtendedErrLen {
			continue
		}
		// struct sock_extended_err: ee_errno (u32), ee_origin (u8), ...
		errno := unix.Errno(binary.NativeEndian.Uint32(m.Data[0:4]))
		origin := m.Data[4]
		fromICMP := origin == unix.SO_EE_ORIGIN_ICMP || origin == unix.SO_EE_ORIGIN_ICMP6
		if fromICMP && errors.Is(errno, unix.ECONNREFUSED) {
			return true
		}
	}
	return false
}

// sockaddrAddrPort converts a UDP socket address; invalid if it is none.
func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}
