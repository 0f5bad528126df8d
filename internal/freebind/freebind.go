package freebind

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Control sets IP_FREEBIND (IPV6_FREEBIND for tcp6) on a socket, so it can
// bind the VIP before this node holds it, with no ip_nonlocal_bind sysctl.
// It is a net.ListenConfig Control function.
func Control(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if network == "tcp6" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			if !errors.Is(serr, unix.ENOPROTOOPT) {
				return
			}
			// Kernels before 4.15 lack IPV6_FREEBIND; IP_FREEBIND covers
			// IPv6 sockets there too.
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
	})
	if err != nil {
		return fmt.Errorf("set freebind: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("set freebind: %w", serr)
	}
	return nil
}
