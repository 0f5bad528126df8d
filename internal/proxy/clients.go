package proxy

import (
	"net"
	"net/netip"
	"time"
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

// SessionsVersion changes whenever a session opens or ends. It moves
// after the change is in place, so a caller that reads it before Clients
// and later finds it unchanged can skip listing again: the daemon's
// 200 ms table sync then costs nothing while 20 000 connections sit idle.
func (f *Frontend) SessionsVersion() uint64 { return f.sessionsGen.Load() }

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

// CloseSessions closes the open sessions whose pair is in pairs and that
// started before before, with a reset to the client (whose side is gone:
// these are orphans a tickle found), and returns how many it closed. A
// session started since may be a new connection that reuses the pair.
func (f *Frontend) CloseSessions(pairs map[ClientPair]struct{}, before time.Time, reason string) int {
	f.mu.Lock()
	var hit []*session
	for s := range f.sessions {
		if !s.start.Before(before) {
			continue
		}
		local, ok1 := tcpAddrPort(s.client.LocalAddr())
		client, ok2 := tcpAddrPort(s.client.RemoteAddr())
		if _, in := pairs[ClientPair{Local: local, Client: client}]; ok1 && ok2 && in {
			hit = append(hit, s)
		}
	}
	f.mu.Unlock()
	for _, s := range hit {
		if tc, ok := s.client.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		s.closeWith(reason)
	}
	return len(hit)
}

// CloseClients closes, cleanly (a FIN to the client), every open session
// whose client connected to addr, and returns how many it closed: the end
// of a hand-off's drain on the node that handed the VIP off
// (docs/handoff.md), while its clients can still be reached.
func (f *Frontend) CloseClients(addr netip.Addr, reason string) int {
	f.mu.Lock()
	var hit []*session
	for s := range f.sessions {
		if local, ok := tcpAddrPort(s.client.LocalAddr()); ok && local.Addr() == addr.Unmap() {
			hit = append(hit, s)
		}
	}
	f.mu.Unlock()
	for _, s := range hit {
		s.closeWith(reason)
	}
	return len(hit)
}
