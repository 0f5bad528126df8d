//go:debug multipathtcp=0

package bgp

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"

	"halb/test/support"
)

const (
	halbASN   = 64512
	routerASN = 64500
	// routerPort is fixed because GoBGP cannot listen on port 0; each test
	// picks its own loopback addresses instead, so runs do not collide.
	routerPort = 1790
)

// pair is a test's two loopback addresses: halb's and the router's.
type pair struct{ halb, router netip.Addr }

func newPair() pair {
	b := [4]byte{127, byte(rand.IntN(200) + 20), byte(rand.IntN(250) + 1), 1}
	r := b
	r[3] = 2
	return pair{netip.AddrFrom4(b), netip.AddrFrom4(r)}
}

// router is a GoBGP server playing the router: it listens, accepts halb
// passively, and its RIB is what the test asserts on.
type router struct {
	srv     *server.BgpServer
	changed chan struct{}
}

// startRouter starts the router. It must start after the speaker's
// Started (see Speaker's doc on GoBGP's package variables).
func startRouter(t *testing.T, at pair, password string) *router {
	t.Helper()
	r := &router{srv: server.NewBgpServer(server.LoggerOption(gobgpLogger{slog.New(slog.DiscardHandler)})), changed: make(chan struct{}, 1)}
	go r.srv.Serve()
	ctx := context.Background()
	if err := r.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: routerASN, RouterId: at.router.String(), ListenPort: routerPort, ListenAddresses: []string{at.router.String()},
	}}); err != nil {
		t.Fatalf("start router: %v", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(func() {
		cancel()
		_ = r.srv.StopBgp(context.Background(), &api.StopBgpRequest{})
	})
	err := r.srv.WatchEvent(wctx, &api.WatchEventRequest{Table: &api.WatchEventRequest_Table{
		Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST}},
	}}, func(*api.WatchEventResponse) {
		select {
		case r.changed <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatalf("watch router RIB: %v", err)
	}
	err = r.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: at.halb.String(), PeerAsn: halbASN, AuthPassword: password},
		Transport: &api.Transport{PassiveMode: true, LocalAddress: at.router.String()},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: familyV4, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: familyV6, Enabled: true}},
		},
	}})
	if err != nil {
		t.Fatalf("add halb to the router: %v", err)
	}
	return r
}

// ribPath is what the router learned for one prefix.
type ribPath struct {
	NextHop     string
	ASPath      []uint32
	Communities []uint32
	MED         *uint32
	LocalPref   *uint32
}

// rib reads the router's best paths of both families.
func (r *router) rib(t *testing.T) map[string]ribPath {
	t.Helper()
	out := map[string]ribPath{}
	for _, f := range []*api.Family{familyV4, familyV6} {
		err := r.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: f}, func(d *api.Destination) {
			for _, p := range d.Paths {
				if p.Best {
					out[d.Prefix] = summarize(t, p)
				}
			}
		})
		if err != nil {
			t.Fatalf("list router RIB: %v", err)
		}
	}
	return out
}

func summarize(t *testing.T, p *api.Path) ribPath {
	t.Helper()
	var rp ribPath
	for _, a := range p.Pattrs {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("decode path attribute: %v", err)
		}
		switch v := m.(type) {
		case *api.NextHopAttribute:
			rp.NextHop = v.NextHop
		case *api.MpReachNLRIAttribute:
			rp.NextHop = strings.Join(v.NextHops, ",")
		case *api.AsPathAttribute:
			for _, s := range v.Segments {
				rp.ASPath = append(rp.ASPath, s.Numbers...)
			}
		case *api.CommunitiesAttribute:
			rp.Communities = v.Communities
		case *api.MultiExitDiscAttribute:
			rp.MED = &v.Med
		case *api.LocalPrefAttribute:
			rp.LocalPref = &v.LocalPref
		}
	}
	return rp
}

// waitRIB waits until the router's RIB is want, re-reading it on every
// best-path change, and fails after 10 s with the last RIB seen.
func (r *router) waitRIB(t *testing.T, what string, want map[string]ribPath) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		got := r.rib(t)
		diff := cmp.Diff(want, got)
		if diff == "" {
			return
		}
		select {
		case <-r.changed:
		case <-time.After(200 * time.Millisecond): // a change may predate the watch
		case <-deadline:
			t.Fatalf("%s: router RIB (-want +got):\n%s", what, diff)
		}
	}
}

func u32(v uint32) *uint32 { return &v }

// runSpeaker runs s until the test ends and returns a stop function that
// cancels Run and waits for its result.
func runSpeaker(t *testing.T, s *Speaker) (stop func() error) {
	t.Helper()
	k := support.Go(t, s.Run)
	k.AwaitReady(t, s.Started(), 10*time.Second)
	return func() error { return k.Stop(t) }
}

func speakerConfig(at pair, password string) Config {
	return Config{
		LocalASN: halbASN,
		RouterID: at.halb,
		NextHop:  netip.MustParseAddr("192.0.2.151"),
		NextHop6: netip.MustParseAddr("2001:db8::151"),
		Peers: []Peer{{
			Address: at.router, ASN: routerASN, Port: routerPort, Local: at.halb,
			PasswordFile: password, HoldTime: 3 * time.Second, Keepalive: time.Second,
		}},
	}
}

func waitEstablished(t *testing.T, s *Speaker) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !slices.ContainsFunc(s.PeerStates(), PeerState.Established) {
		select {
		case <-s.Changed():
		case <-deadline:
			t.Fatalf("no session established in 10s: %+v", s.PeerStates())
		}
	}
}

// TestAnnounceWithdrawStop follows a VIP through a router's RIB: a route
// asked for before Run arrives with its next hop and attributes, a
// second one follows, a withdrawal removes only its own prefix, and
// stopping the speaker removes the rest.
func TestAnnounceWithdrawStop(t *testing.T) {
	at := newPair()
	logs := &support.Log{}
	s, err := New(speakerConfig(at, ""), slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	vip1 := netip.MustParsePrefix("198.51.100.10/32")
	vip2 := netip.MustParsePrefix("198.51.100.11/32")
	vip6 := netip.MustParsePrefix("2001:db8:100::10/128")
	if err := s.Announce(Route{Prefix: vip1, Attributes: Attributes{Communities: []uint32{64512<<16 | 100}, MED: u32(10), LocalPref: u32(200)}}); err != nil {
		t.Fatal(err)
	}
	stop := runSpeaker(t, s)
	rt := startRouter(t, at, "")

	path1 := ribPath{NextHop: "192.0.2.151", ASPath: []uint32{halbASN}, Communities: []uint32{64512<<16 | 100}, MED: u32(10)}
	rt.waitRIB(t, "announced before Run", map[string]ribPath{vip1.String(): path1})
	waitEstablished(t, s)
	if st := s.PeerStates(); len(st) != 1 || st[0].Address != at.router || st[0].ASN != routerASN || st[0].Since.IsZero() {
		t.Errorf("peer states = %+v, want the router, established with a time", st)
	}

	if err := s.Announce(Route{Prefix: vip2}); err != nil {
		t.Fatal(err)
	}
	if err := s.Announce(Route{Prefix: vip6}); err != nil {
		t.Fatal(err)
	}
	path2 := ribPath{NextHop: "192.0.2.151", ASPath: []uint32{halbASN}}
	path6 := ribPath{NextHop: "2001:db8::151", ASPath: []uint32{halbASN}}
	rt.waitRIB(t, "announced while running", map[string]ribPath{vip1.String(): path1, vip2.String(): path2, vip6.String(): path6})

	// New attributes replace the path rather than adding a second one.
	if err := s.Announce(Route{Prefix: vip2, Attributes: Attributes{MED: u32(1000)}}); err != nil {
		t.Fatal(err)
	}
	path2.MED = u32(1000)
	rt.waitRIB(t, "re-announced with a MED", map[string]ribPath{vip1.String(): path1, vip2.String(): path2, vip6.String(): path6})

	if err := s.Withdraw(vip1); err != nil {
		t.Fatal(err)
	}
	if err := s.Withdraw(vip1); err != nil {
		t.Fatalf("second withdraw: %v", err)
	}
	rt.waitRIB(t, "withdrawn", map[string]ribPath{vip2.String(): path2, vip6.String(): path6})
	if diff := cmp.Diff([]netip.Prefix{vip2, vip6}, s.Announced(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("announced (-want +got):\n%s", diff)
	}

	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	rt.waitRIB(t, "speaker stopped", map[string]ribPath{})
	for _, want := range []string{"bgp session", "state=established", "announced", "withdrew", "bgp speaker stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestSessionLossWithdraws: when the router goes away the session leaves
// established, and when a new router comes the routes are sent again.
func TestSessionLossWithdraws(t *testing.T) {
	at := newPair()
	s, err := New(speakerConfig(at, ""), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParsePrefix("198.51.100.20/32")
	if err := s.Announce(Route{Prefix: vip}); err != nil {
		t.Fatal(err)
	}
	runSpeaker(t, s)
	rt := startRouter(t, at, "")
	rt.waitRIB(t, "announced", map[string]ribPath{vip.String(): {NextHop: "192.0.2.151", ASPath: []uint32{halbASN}}})
	waitEstablished(t, s)

	if err := rt.srv.StopBgp(context.Background(), &api.StopBgpRequest{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for slices.ContainsFunc(s.PeerStates(), PeerState.Established) {
		select {
		case <-s.Changed():
		case <-deadline:
			t.Fatalf("session still established 10s after the router stopped: %+v", s.PeerStates())
		}
	}

	// A restarted router learns the route again without a new Announce
	// (GoBGP retries the dial every connectRetry).
	rt2 := startRouter(t, at, "")
	rt2.waitRIB(t, "router restarted", map[string]ribPath{vip.String(): {NextHop: "192.0.2.151", ASPath: []uint32{halbASN}}})
}

// TestMD5 runs a session with a TCP MD5 password read from a file, and
// shows that a wrong password gets no session. TCP_MD5SIG needs no
// privilege; where the kernel refuses it (some sandboxes do), Run must
// fail saying so instead of leaving a session that never comes up.
func TestMD5(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte("s3cret-bgp\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkMD5(netip.MustParseAddr("127.0.0.2"), "probe", false); err != nil {
		t.Logf("this kernel refuses TCP MD5 (%v): checking that Run says so", err)
		at := newPair()
		s, err := New(speakerConfig(at, good), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		err = s.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "refuses TCP MD5") || !strings.Contains(err.Error(), at.router.String()) {
			t.Fatalf("run = %v, want an error naming the peer and the refused option", err)
		}
		return
	}
	if err := checkMD5(netip.MustParseAddr("127.0.0.2"), "probe", true); err != nil {
		// Seen in a Firecracker sandbox: keys work on dialing sockets only.
		t.Skipf("the test's router listens, and this kernel refuses TCP MD5 keys on listening sockets: %v", err)
	}
	t.Run("match", func(t *testing.T) {
		at := newPair()
		s, err := New(speakerConfig(at, good), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		vip := netip.MustParsePrefix("198.51.100.30/32")
		_ = s.Announce(Route{Prefix: vip})
		runSpeaker(t, s)
		rt := startRouter(t, at, "s3cret-bgp")
		rt.waitRIB(t, "with MD5", map[string]ribPath{vip.String(): {NextHop: "192.0.2.151", ASPath: []uint32{halbASN}}})
	})
	t.Run("mismatch", func(t *testing.T) {
		at := newPair()
		s, err := New(speakerConfig(at, good), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		runSpeaker(t, s)
		rt := startRouter(t, at, "other")
		// The kernel drops segments with a wrong signature, so there is
		// no event to await: watch for a bounded while instead.
		end := time.After(3 * time.Second)
		for {
			select {
			case <-s.Changed():
				if slices.ContainsFunc(s.PeerStates(), PeerState.Established) {
					t.Fatal("session established with a wrong MD5 password")
				}
				continue
			case <-end:
			}
			break
		}
		if n := len(rt.rib(t)); n != 0 {
			t.Fatalf("router learned %d routes over a wrong password", n)
		}
	})
}

func TestPasswordFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, file, want string
	}{
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"readable by others", write("open", "pw\n", 0o644), "chmod 600"},
		{"empty", write("empty", "\n", 0o600), "first line is empty"},
		{"too long", write("long", strings.Repeat("x", 81), 0o600), "at most 80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := newPair()
			s, err := New(speakerConfig(at, tt.file), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			err = s.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), at.router.String()) {
				t.Fatalf("run = %v, want an error naming the peer and %q", err, tt.want)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	ok := speakerConfig(newPair(), "")
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no asn", func(c *Config) { c.LocalASN = 0 }, "local ASN is 0"},
		{"v6 router id", func(c *Config) { c.RouterID = netip.MustParseAddr("::1") }, "router id ::1: want an IPv4"},
		{"no peers", func(c *Config) { c.Peers = nil }, "no peers"},
		{"peer twice", func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }, "listed twice"},
		{"short hold", func(c *Config) { c.Peers[0].HoldTime = 2 * time.Second }, "hold time 2s"},
		{"fractional hold", func(c *Config) { c.Peers[0].HoldTime = 4500 * time.Millisecond }, "whole seconds"},
		{"keepalive too long", func(c *Config) { c.Peers[0].Keepalive = 3 * time.Second }, "not shorter than the hold time 3s"},
		{"v4 next hop for v6", func(c *Config) { c.NextHop6 = netip.MustParseAddr("192.0.2.1") }, "IPv6 next hop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			c.Peers = slices.Clone(ok.Peers)
			tt.edit(&c)
			_, err := New(c, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error with %q", err, tt.want)
			}
		})
	}
	s, err := New(ok, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Announce(Route{Prefix: netip.MustParsePrefix("198.51.100.0/24")}); err == nil {
		t.Error("announced a /24: want only host prefixes")
	}
}

// TestDefaultTimers: a peer without timers gets the default hold time
// and a keepalive of a third of it.
func TestDefaultTimers(t *testing.T) {
	c := speakerConfig(newPair(), "")
	c.Peers[0].HoldTime, c.Peers[0].Keepalive, c.Peers[0].Port = 0, 0, 0
	s, err := New(c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	p := s.cfg.Peers[0]
	if p.HoldTime != DefaultHoldTime || p.Keepalive != DefaultHoldTime/3 || p.Port != DefaultPort {
		t.Errorf("peer = hold %s keepalive %s port %d, want %s, %s, %d", p.HoldTime, p.Keepalive, p.Port, DefaultHoldTime, DefaultHoldTime/3, DefaultPort)
	}
}
