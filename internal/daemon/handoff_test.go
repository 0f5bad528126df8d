package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"halb/internal/cluster"
	"halb/internal/handoff"
	"halb/internal/vip"
	"halb/internal/vip/viptest"
	"halb/test/support"
)

// fakeNFT records the scripts the hand-off applies instead of running nft.
type fakeNFT struct {
	mu      sync.Mutex
	scripts []string
}

func (f *fakeNFT) Apply(_ context.Context, s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scripts = append(f.scripts, s)
	return nil
}

func (f *fakeNFT) Tables(context.Context) ([]handoff.Table, error) { return nil, nil }

// last is the latest script applied.
func (f *fakeNFT) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.scripts) == 0 {
		return ""
	}
	return f.scripts[len(f.scripts)-1]
}

var hoVIP = tickleVIP

// handoffNode is one node's hand-off on fakes, its announcer running.
func handoffNode(t *testing.T, net *fakeNet) (*handoffs, *fakeNFT, *vip.Announcer, *viptest.Link) {
	t.Helper()
	cfg := tickleVIPConfig(true)
	cfg.GARPCount, cfg.GARPInterval, cfg.Lifetime = 1, time.Millisecond, 2*time.Second
	link := viptest.NewLink()
	ann := vip.NewAnnouncer(cfg, "eth0", link, viptest.NewGARP(), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ann.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	nft := &fakeNFT{}
	h := &handoffs{log: slog.New(slog.DiscardHandler), net: net, nft: nft,
		clients: (&fakeSessions{}).clients, close: func(netip.Addr, string) int { return 0 },
		drain: func() time.Duration { return 30 * time.Second }, usable: true,
		vips: map[netip.Addr]*vipHandoff{hoVIP: {on: true, ifname: "eth0", ann: ann,
			mac: net2mac(2), primary: netip.MustParseAddr("192.168.66.152"), offers: map[string]handoff.Peer{}}}}
	return h, nft, ann, link
}

func net2mac(b byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, b} }

// The new holder forwards to the old holder that offered, and removes the
// forwarding when the old holder dies.
func TestHandoffForwardingGoesWhenOldHolderDies(t *testing.T) {
	nets := newFakeNets("lb1", "lb2")
	h, nft, ann, _ := handoffNode(t, nets.get("lb2"))
	h.receive(cluster.ConnsMsg{From: "lb1", Kind: cluster.ConnsHandoff,
		Payload: handoff.Offer{VIP: hoVIP, MAC: net2mac(1), State: handoff.Holding}.Marshal()})

	h.claiming(context.Background(), hoVIP, map[string]bool{"lb1": true, "lb2": true})
	ann.SetOwner(true, "elected")
	if s := nft.last(); !strings.Contains(s, "ether daddr set 02:00:00:00:00:01 fwd to \"eth0\"") {
		t.Fatalf("claim applied no forwarding to lb1's MAC:\n%s", s)
	}
	support.WaitUntil(t, 5*time.Second, ann.Held, "the claim")
	h.step(context.Background(), time.Now())
	if st := h.status(hoVIP); st.Role != "forwarding" || st.Peer != "lb1" {
		t.Fatalf("status while lb1 lives: %+v", st)
	}

	nets.kill("lb1")
	h.step(context.Background(), time.Now())
	if s := nft.last(); s != handoff.DeleteScript("netdev", handoff.ForwardTable(hoVIP)) {
		t.Fatalf("forwarding not removed after lb1 died; last script:\n%s", s)
	}
	if st := h.status(hoVIP); st.Role != "" || st.EndReason != handoff.StopDead.String() {
		t.Errorf("status after lb1 died: %+v", st)
	}
}

// The old holder keeps the address quietly, without ARP, and removes both
// the ARP rule and the address once nothing is left to serve.
func TestHandoffOldHolderQuietThenGone(t *testing.T) {
	nets := newFakeNets("lb1", "lb2")
	h, nft, ann, link := handoffNode(t, nets.get("lb1"))
	ann.SetOwner(true, "elected")
	support.WaitUntil(t, 5*time.Second, ann.Held, "the claim")

	h.owner(context.Background(), hoVIP, "lb2", "lb1", true)
	if s := nft.last(); !strings.Contains(s, "arp saddr ip 10.0.0.5 arp saddr ip set 192.168.66.152") {
		t.Fatalf("no ARP rule once lb2 was elected:\n%s", s)
	}
	h.release(context.Background(), hoVIP, ann, "handed over to lb2")
	support.WaitUntil(t, 5*time.Second, func() bool { return !ann.Held() }, "the release")
	if !link.Has("eth0", tickleVIPConfig(true).Address) || !ann.Status().Quiet {
		t.Fatalf("released without keeping the address: %+v", ann.Status())
	}

	h.step(context.Background(), time.Now().Add(handoff.MinQuiet))
	if s := nft.last(); s != handoff.DeleteScript("arp", handoff.QuietTable(hoVIP)) {
		t.Fatalf("ARP rule not removed with nothing left to serve; last script:\n%s", s)
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return !link.Has("eth0", tickleVIPConfig(true).Address) }, "the address removed")
	if st := h.status(hoVIP); st.Role != "" || st.EndReason != "every connection closed" {
		t.Errorf("status after the hand-off: %+v", st)
	}
}

func TestPrimaryAddrIsOfTheVIPsFamilyAndNotTheVIP(t *testing.T) {
	ipnet := func(s string) net.Addr {
		p := netip.MustParsePrefix(s)
		return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	addrs := []net.Addr{ipnet("192.168.66.160/24"), ipnet("fe80::2/64"), ipnet("fd00::160/64"),
		ipnet("192.168.66.151/24"), ipnet("fd00::2/64")}
	for _, tt := range []struct {
		addrs []net.Addr
		vip   string
		want  netip.Addr
	}{
		{addrs, "192.168.66.160", netip.MustParseAddr("192.168.66.151")},
		{addrs, "fd00::160", netip.MustParseAddr("fd00::2")},
		{addrs[:3], "fd00::160", netip.MustParseAddr("fe80::2")}, // only link-local besides the VIP
		{addrs[:1], "192.168.66.160", netip.Addr{}},              // nothing but the VIP
	} {
		if got := primaryAddr(tt.addrs, netip.MustParseAddr(tt.vip)); got != tt.want {
			t.Errorf("primaryAddr(%v, %s) = %v, want %v", tt.addrs, tt.vip, got, tt.want)
		}
	}
}
