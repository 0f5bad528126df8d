package proxy

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"halb/internal/config"
	"halb/test/support"
)

// The daemon syncs the tickle table from Clients: it must list exactly
// the open sessions, each with the address the client dialled and the
// client's own address, and drop a session once it ends.
func TestClientsListsOpenSessions(t *testing.T) {
	b := startBackend(t, "s0", "127.0.0.11", modeEcho)
	fe := startFrontend(t, newPool(config.RoundRobin, b.server()), Options{Timeouts: testTimeouts()})
	c1 := dialFrom(t, fe.addr, "127.0.0.21")
	c1.greeting(t)
	c2 := dialFrom(t, fe.addr, "127.0.0.22")
	c2.greeting(t)

	local := netip.MustParseAddrPort(fe.addr)
	want := []ClientPair{
		{Local: local, Client: netip.MustParseAddrPort(c1.LocalAddr().String())},
		{Local: local, Client: netip.MustParseAddrPort(c2.LocalAddr().String())},
	}
	got := fe.Clients(nil)
	slices.SortFunc(got, func(a, b ClientPair) int { return a.Client.Compare(b.Client) })
	if !slices.Equal(got, want) {
		t.Fatalf("Clients = %v, want %v", got, want)
	}

	_ = c1.Close()
	if !support.Eventually(5*time.Second, func() bool { got = fe.Clients(got[:0]); return slices.Equal(got, want[1:]) }) {
		t.Fatalf("Clients = %v 5s after the first client closed, want %v", got, want[1:])
	}
}
