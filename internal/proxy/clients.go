package proxy

import (
	"net"
	"net/netip"
)

// ClientPair is one open session's client address and the local address
// (VIP and port) the client connected to.
type ClientPair struct {
	Local, Client netip.AddrPort
}

// Clients appends the address pairs of the open sessions to dst and
// returns it. It reads the session registry kept for drain, not the copy
// path, so listing costs one lock and no system call; the daemon syncs the
// shared connection table from it (docs/tickle.md).
func (f *Frontend) Clients(dst []ClientPair) []ClientPair {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.sessions {
		local, ok1 := tcpAddrPort(s.client.LocalAddr())
		client, ok2 := tcpAddrPort(s.client.RemoteAddr())
		if ok1 && ok2 {
			dst = append(dst, ClientPair{Local: local, Client: client})
		}
	}
	return dst
}

// tcpAddrPort unmaps an IPv4-mapped address, so a VIP bound on a dual-stack
// socket matches the configured IPv4 VIP.
func tcpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
