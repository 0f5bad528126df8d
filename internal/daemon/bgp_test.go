package daemon

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"halb/internal/bgp"
	"halb/internal/config"
	"halb/internal/round"
	"halb/internal/vip/viptest"
)

// fakeBGP records announcements and, for each, whether the VIP was on
// its link by then: a route to an address no interface has would
// blackhole the flows the routers send.
type fakeBGP struct {
	link *viptest.Link
	mu   sync.Mutex
	log  []string
	err  error
}

func (f *fakeBGP) Announce(r bgp.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	onLink := "off link"
	if f.link.Has("lo", r.Prefix) {
		onLink = "on link"
	}
	f.log = append(f.log, "announce "+r.Prefix.String()+" "+onLink)
	return nil
}

func (f *fakeBGP) Withdraw(p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, "withdraw "+p.String())
	return nil
}

func (f *fakeBGP) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}

func newTestBGP(t *testing.T) (*bgpVIPs, *fakeBGP, *viptest.Link) {
	t.Helper()
	link := viptest.NewLink()
	fb := &fakeBGP{link: link}
	b := &bgpVIPs{log: slog.New(slog.DiscardHandler), ann: fb, link: link}
	b.add([]config.VIP{
		{Address: netip.MustParsePrefix("192.168.66.160/24"), Interface: "eth0", Announce: config.AnnounceARP},
		{Address: netip.MustParsePrefix("192.168.70.160/32"), Interface: "lo", Announce: config.AnnounceBGP},
	}, "lb1")
	return b, fb, link
}

func plan(announce bool, why string) []round.BGPPlan {
	return []round.BGPPlan{{VIP: "192.168.70.160", Announce: announce, Reason: why}}
}

// TestBGPVIPsWithdrawThenDrain: the address is on lo before the route is
// announced; after a withdrawal it stays for the drain time, so sessions
// already routed here finish, and only then goes.
func TestBGPVIPsWithdrawThenDrain(t *testing.T) {
	b, fb, link := newTestBGP(t)
	if got := b.addrs(); !slices.Equal(got, []string{"192.168.70.160"}) {
		t.Fatalf("BGP VIPs = %v, want only the announce: bgp one", got)
	}
	pfx := netip.MustParsePrefix("192.168.70.160/32")
	const drain = 10 * time.Second
	t0 := time.Unix(1_000_000, 0)

	b.apply(plan(true, "eligible"), t0, drain)
	if want := []string{"announce 192.168.70.160/32 on link"}; !slices.Equal(fb.calls(), want) {
		t.Fatalf("calls = %v, want %v", fb.calls(), want)
	}
	b.apply(plan(true, "eligible"), t0.Add(time.Second), drain)
	if n := len(fb.calls()); n != 1 {
		t.Fatalf("announced again while announced: %v", fb.calls())
	}
	if st := b.status().VIPs[0]; !st.Announced || st.Why != "eligible" || st.Mode != "bgp" || st.Interface != "lo" {
		t.Fatalf("status = %+v, want announced on lo for eligible", st)
	}

	if got := b.announced(); !slices.Equal(got, []string{"192.168.70.160"}) {
		t.Fatalf("announced = %v, want the VIP gossiped as announced", got)
	}
	b.apply(plan(false, "maintenance"), t0.Add(2*time.Second), drain)
	if got := b.announced(); got != nil {
		t.Fatalf("announced after the withdrawal = %v, want none", got)
	}
	if got := fb.calls(); got[len(got)-1] != "withdraw 192.168.70.160/32" {
		t.Fatalf("calls = %v, want a withdrawal last", got)
	}
	st := b.status().VIPs[0]
	if st.Announced || !st.Draining || st.Why != "maintenance" || !link.Has("lo", pfx) {
		t.Fatalf("after withdraw: status %+v, on lo %v; want withdrawn, draining, still on lo", st, link.Has("lo", pfx))
	}
	b.apply(plan(false, "maintenance"), t0.Add(2*time.Second+drain-time.Millisecond), drain)
	if !link.Has("lo", pfx) {
		t.Fatal("address removed before the drain time passed")
	}
	b.apply(plan(false, "maintenance"), t0.Add(2*time.Second+drain), drain)
	if link.Has("lo", pfx) || b.status().VIPs[0].Draining {
		t.Fatal("address still on lo after the drain time")
	}
	if n := len(fb.calls()); n != 2 {
		t.Fatalf("withdrew more than once: %v", fb.calls())
	}

	b.apply(plan(true, "eligible"), t0.Add(time.Minute), drain)
	if got := fb.calls(); got[len(got)-1] != "announce 192.168.70.160/32 on link" {
		t.Fatalf("calls = %v, want announced again with the address back", got)
	}
	b.removeAll()
	if link.Has("lo", pfx) {
		t.Fatal("removeAll left the address on lo")
	}
}

// TestBGPVIPsReannounceDuringDrain: eligible again while draining keeps
// the address and announces at once.
func TestBGPVIPsReannounceDuringDrain(t *testing.T) {
	b, fb, link := newTestBGP(t)
	t0 := time.Unix(1_000_000, 0)
	b.apply(plan(true, "eligible"), t0, time.Minute)
	b.apply(plan(false, "maintenance"), t0.Add(time.Second), time.Minute)
	b.apply(plan(true, "eligible"), t0.Add(2*time.Second), time.Minute)
	want := []string{"announce 192.168.70.160/32 on link", "withdraw 192.168.70.160/32", "announce 192.168.70.160/32 on link"}
	if !slices.Equal(fb.calls(), want) {
		t.Fatalf("calls = %v, want %v", fb.calls(), want)
	}
	if n := link.Count(viptest.OpDel); n != 0 {
		t.Fatalf("address removed %d times while draining, want 0", n)
	}
	if st := b.status().VIPs[0]; st.Draining || !st.Announced {
		t.Fatalf("status = %+v, want announced, not draining", st)
	}
}

// TestBGPVIPsRetry: a failed step is not skipped: no route without the
// address, and both are retried next round, the error shown meanwhile.
func TestBGPVIPsRetry(t *testing.T) {
	b, fb, link := newTestBGP(t)
	t0 := time.Unix(1_000_000, 0)
	link.SetErr(viptest.OpReplace, errors.New("operation not permitted"))
	b.apply(plan(true, "eligible"), t0, time.Second)
	if len(fb.calls()) != 0 {
		t.Fatalf("announced without the address on lo: %v", fb.calls())
	}
	if st := b.status().VIPs[0]; st.Announced || st.LastError == "" {
		t.Fatalf("status = %+v, want not announced with the error", st)
	}
	link.SetErr(viptest.OpReplace, nil)
	fb.err = errors.New("speaker down")
	b.apply(plan(true, "eligible"), t0.Add(time.Second), time.Second)
	if st := b.status().VIPs[0]; st.Announced || st.LastError != "speaker down" {
		t.Fatalf("status = %+v, want the speaker's error", st)
	}
	fb.err = nil
	b.apply(plan(true, "eligible"), t0.Add(2*time.Second), time.Second)
	if st := b.status().VIPs[0]; !st.Announced || st.LastError != "" {
		t.Fatalf("status = %+v, want announced and the error cleared", st)
	}
}

// TestNewSplitsBGPVIPs: a VIP with announce: bgp has no election (no
// announcer), and halb status lists it with the node's BGP sessions.
func TestNewSplitsBGPVIPs(t *testing.T) {
	doc := `
frontends:
  - {name: api, bind: "127.0.0.1:1", backend: cp}
backends:
  - name: cp
    servers: [{name: cp1, address: "127.0.0.1:2"}]
cluster:
  insecure_gossip: true
  nodes:
    - {name: a, address: 127.0.0.61}
    - {name: b, address: 127.0.0.62}
bgp:
  local_asn: 64512
  peers: [{address: 127.0.0.9, asn: 64500}]
vips:
  - {address: 192.168.66.160/24, interface: eth0}
  - {address: 192.168.70.160, announce: bgp}
`
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, Options{NodeName: "a", Link: viptest.NewLink(), GARP: viptest.NewGARP()})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d.ctl.announcers); n != 1 || d.ctl.announcers[0].cfg.Announce != config.AnnounceARP {
		t.Fatalf("%d election announcers, want only the ARP VIP's", n)
	}
	s := d.api.Snapshot()
	if len(s.VIPs) != 1 || s.VIPs[0].Mode != "arp" {
		t.Fatalf("ARP VIPs in status = %+v, want one in mode arp", s.VIPs)
	}
	if s.BGP == nil || len(s.BGP.VIPs) != 1 || len(s.BGP.Peers) != 1 {
		t.Fatalf("BGP in status = %+v, want one VIP and one peer", s.BGP)
	}
	v, p := s.BGP.VIPs[0], s.BGP.Peers[0]
	if v.Address != "192.168.70.160" || v.Interface != "lo" || v.Mode != "bgp" || v.Announced {
		t.Fatalf("BGP VIP = %+v, want 192.168.70.160 on lo, not announced before any round", v)
	}
	if p.Address != "127.0.0.9" || p.ASN != 64500 {
		t.Fatalf("BGP peer = %+v, want 127.0.0.9 AS64500", p)
	}
}
