package drill

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	"halb/internal/admin"
)

// ModeBGP marks a withdrawal drill of a VIP announced by BGP.
const ModeBGP = "bgp"

// followBGP polls until the withdrawing node no longer announces the VIP
// (as gossiped, or as its own status says when it is the answering node),
// then probes on for o.Settle; it reports whether the withdrawal
// happened within o.Timeout. Every other node keeps announcing, so new
// connections should not fail: the withdrawing node serves what the
// routers send it until they converge.
func (w *watch) followBGP(ctx context.Context, n Node, o Options) bool {
	deadline := time.Now().Add(o.Timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if s, err := status(ctx, n, o); err == nil && withdrawn(s, w.start.From, w.start.VIP) {
			w.event(w.start.From + " withdrew its route; it serves open sessions for timeouts.drain")
			select {
			case <-ctx.Done():
			case <-time.After(o.Settle):
			}
			return true
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollEvery):
		}
	}
	return false
}

// withdrawn reports whether node no longer announces vip in s.
func withdrawn(s admin.Snapshot, node, vip string) bool {
	if node == s.Node.Name && s.BGP != nil {
		for _, v := range s.BGP.VIPs {
			if v.Address == vip {
				return !v.Announced
			}
		}
	}
	for _, m := range s.Members {
		if m.Name == node {
			return !m.Alive || !slices.Contains(m.Holds, vip)
		}
	}
	return false
}

// local reports whether vip is an address of this host: probes to it
// then never leave the host.
func local(vip string) bool {
	a, err := netip.ParseAddr(vip)
	if err != nil {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}
