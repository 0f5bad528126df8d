package proxy

import (
	"errors"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"halb/internal/config"
	"halb/test/support"
)

// The daemon syncs the tickle table from Clients: it must list exactly
// the open sessions, each with the address the client dialled and the
// client's own address, and drop a session once it ends.
// SessionsVersion moves with every session that opens or ends, and only
// then, so an unchanged version lets the daemon skip the listing.
func TestClientsListsOpenSessions(t *testing.T) {
	b := startBackend(t, "s0", "127.0.0.11", modeEcho)
	fe := startFrontend(t, newPool(config.RoundRobin, b.server()), Options{Timeouts: testTimeouts()})
	v0 := fe.SessionsVersion()
	c1 := dialFrom(t, fe.addr, "127.0.0.21")
	c1.greeting(t)
	v1 := fe.SessionsVersion()
	c2 := dialFrom(t, fe.addr, "127.0.0.22")
	c2.greeting(t)
	v2 := fe.SessionsVersion()
	if v1 == v0 || v2 == v1 {
		t.Fatalf("sessions version %d, %d, %d over two opened sessions: want a change with each", v0, v1, v2)
	}
	if v := fe.SessionsVersion(); v != v2 {
		t.Fatalf("sessions version moved from %d to %d with no session opened or ended", v2, v)
	}

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
	if v := fe.SessionsVersion(); v == v2 {
		t.Fatalf("sessions version still %d after a session ended", v)
	}
}

// CloseSessions resets exactly the sessions of the pairs it is given (the
// orphans a tickle found) and leaves the others open.
func TestCloseSessionsResetsOnlyThosePairs(t *testing.T) {
	b := startBackend(t, "s0", "127.0.0.11", modeEcho)
	fe := startFrontend(t, newPool(config.RoundRobin, b.server()), Options{Timeouts: testTimeouts()})
	orphan := dialFrom(t, fe.addr, "127.0.0.21")
	orphan.greeting(t)
	kept := dialFrom(t, fe.addr, "127.0.0.22")
	kept.greeting(t)
	pair := ClientPair{Local: netip.MustParseAddrPort(fe.addr), Client: netip.MustParseAddrPort(orphan.LocalAddr().String())}
	stranger := ClientPair{Local: netip.MustParseAddrPort(fe.addr), Client: netip.MustParseAddrPort("127.0.0.23:9")}
	pairs := map[ClientPair]struct{}{pair: {}, stranger: {}}
	// A session that started at or after the cut-off may be a new
	// connection reusing the pair: left alone.
	if n := fe.CloseSessions(pairs, time.Now().Add(-time.Hour), "orphaned"); n != 0 {
		t.Fatalf("closed %d sessions started after the cut-off, want 0", n)
	}
	if n := fe.CloseSessions(pairs, time.Now(), "orphaned"); n != 1 {
		t.Fatalf("closed %d sessions, want 1", n)
	}
	if _, err := orphan.line(); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the closed session's client read %v, want a reset", err)
	}
	kept.echo(t, "still here")
}
