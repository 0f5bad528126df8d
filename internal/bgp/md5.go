package bgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// checkMD5 asks the kernel to accept a TCP MD5 key for peer on a scratch
// socket made as GoBGP makes its own: a dialing one, or a Go listener
// when listening. GoBGP only logs a warning when it cannot set the key,
// and the session then never comes up with nothing saying why; halb
// refuses to start instead.
//
// Two known refusals: a kernel without CONFIG_TCP_MD5SIG, and Go's
// listeners, which are Multipath TCP by default since Go 1.24 where the
// kernel has MPTCP; MPTCP sockets refuse TCP_MD5SIG with ENOPROTOOPT
// (GODEBUG=multipathtcp=0 turns that off).
func checkMD5(peer netip.Addr, password string, listening bool) error {
	peer = peer.Unmap()
	sig := unix.TCPMD5Sig{Keylen: uint16(len(password))}
	copy(sig.Key[:], password)
	if peer.Is4() {
		sig.Addr.Family = unix.AF_INET
		a := peer.As4()
		copy(sig.Addr.Data[2:], a[:])
	} else {
		sig.Addr.Family = unix.AF_INET6
		a := peer.As16()
		copy(sig.Addr.Data[6:], a[:])
	}
	set := func(fd int) error { return unix.SetsockoptTCPMD5Sig(fd, unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig) }

	if !listening {
		family := unix.AF_INET
		if !peer.Is4() {
			family = unix.AF_INET6
		}
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		if err != nil {
			return fmt.Errorf("open a socket to test TCP MD5: %w", err)
		}
		defer func() { _ = unix.Close(fd) }()
		if err := set(fd); err != nil {
			return fmt.Errorf("the kernel refuses TCP MD5 signatures (TCP_MD5SIG): %w", err)
		}
		return nil
	}

	network, addr := "tcp4", "127.0.0.1:0"
	if !peer.Is4() {
		network, addr = "tcp6", "[::1]:0"
	}
	var serr error
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { serr = set(int(fd)) })
	}}
	l, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		return fmt.Errorf("listen to test TCP MD5: %w", err)
	}
	_ = l.Close()
	if serr != nil {
		return fmt.Errorf("a listening socket refuses TCP MD5 signatures (TCP_MD5SIG; with Go's default Multipath TCP listeners, set GODEBUG=multipathtcp=0): %w", serr)
	}
	return nil
}
