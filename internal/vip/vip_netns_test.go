package vip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"halb/internal/config"
	"halb/test/support"
)

// This test runs the real netlink Link and packet-socket GARP sender in
// two network namespaces it creates, joined by a veth pair made inside
// them. Nothing in the root namespace is touched.

func cmd(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// lab is two namespaces, A and B, each with an eth0 joined by veth.
type lab struct {
	a, b string
	macA net.HardwareAddr
}

func newLab(t *testing.T) *lab {
	t.Helper()
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	prefix := "hv" + hex.EncodeToString(rnd[:])
	l := &lab{a: prefix + "a", b: prefix + "b"}
	for _, ns := range []string{l.a, l.b} {
		cmd(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("delete netns %s: %v\n%s", ns, err, out)
			}
		})
	}
	// Made inside A, with the peer moved straight to B: the root
	// namespace never sees either end.
	cmd(t, "ip", "netns", "exec", l.a, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", l.b)
	cmd(t, "ip", "-n", l.a, "addr", "add", "192.168.66.151/24", "dev", "eth0")
	cmd(t, "ip", "-n", l.b, "addr", "add", "192.168.66.100/24", "dev", "eth0")
	cmd(t, "ip", "-n", l.b, "addr", "add", "fd00:66::100/64", "dev", "eth0", "nodad")
	for _, ns := range []string{l.a, l.b} {
		cmd(t, "ip", "-n", ns, "link", "set", "lo", "up")
		cmd(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	}
	// Carrier news reaches IPv6 through linkwatch, up to a second late;
	// until then B has no multicast route and drops neighbour discovery.
	support.WaitUntil(t, 5*time.Second, func() bool {
		return strings.Contains(cmd(t, "ip", "-n", l.b, "-6", "route", "show", "table", "local"), "multicast ff00::/8 dev eth0")
	}, "IPv6 up on B's eth0")
	// B learns neighbours from gratuitous ARP only with arp_accept.
	cmd(t, "ip", "netns", "exec", l.b, "sysctl", "-q", "-w",
		"net.ipv4.conf.all.arp_accept=1", "net.ipv4.conf.eth0.arp_accept=1")

	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(cmd(t, "ip", "-n", l.a, "-j", "link", "show", "eth0")), &links); err != nil || len(links) != 1 {
		t.Fatalf("parse link of A: %v %v", err, links)
	}
	mac, err := net.ParseMAC(links[0].Address)
	if err != nil {
		t.Fatal(err)
	}
	l.macA = mac
	return l
}

type addrInfo struct {
	Local     string `json:"local"`
	Prefixlen int    `json:"prefixlen"`
	Label     string `json:"label"`
	ValidLft  uint64 `json:"valid_life_time"`
}

// addr returns eth0's address ip in ns as ip shows it, if present.
func (l *lab) addr(t *testing.T, ns string, ip netip.Addr) (addrInfo, bool) {
	t.Helper()
	var ifs []struct {
		AddrInfo []addrInfo `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(cmd(t, "ip", "-n", ns, "-j", "addr", "show", "dev", "eth0")), &ifs); err != nil {
		t.Fatalf("parse addresses of %s: %v", ns, err)
	}
	for _, i := range ifs {
		for _, a := range i.AddrInfo {
			if a.Local == ip.String() {
				return a, true
			}
		}
	}
	return addrInfo{}, false
}

// neighMAC returns B's neighbour entry for ip, "" if none.
func (l *lab) neighMAC(t *testing.T, ip netip.Addr) string {
	t.Helper()
	var ns []struct {
		Lladdr string `json:"lladdr"`
	}
	if err := json.Unmarshal([]byte(cmd(t, "ip", "-n", l.b, "-j", "neigh", "show", ip.String(), "dev", "eth0")), &ns); err != nil {
		t.Fatalf("parse neighbours of B: %v", err)
	}
	if len(ns) == 0 {
		return ""
	}
	return ns[0].Lladdr
}

// goInNetns runs fn on a goroutine locked to an OS thread that has
// entered the named namespace. The thread is never unlocked, so Go
// discards it when the goroutine ends instead of reusing it elsewhere.
func goInNetns(name string, fn func() error) <-chan error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(name)
		if err != nil {
			done <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer func() { _ = h.Close() }()
		if err := netns.Set(h); err != nil {
			done <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		done <- fn()
	}()
	return done
}

func await(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

// crashLink passes calls to Link until crashed, then drops every change,
// as if halb had been killed: nothing refreshes or removes the address.
type crashLink struct {
	Link
	crashed atomic.Bool
}

func (c *crashLink) AddrReplace(ifname string, a Addr) error {
	if c.crashed.Load() {
		return nil
	}
	return c.Link.AddrReplace(ifname, a)
}

func (c *crashLink) AddrDel(ifname string, a Addr) error {
	if c.crashed.Load() {
		return nil
	}
	return c.Link.AddrDel(ifname, a)
}

// runInA starts an Announcer with the real Link and GARP sender in ns A.
// stop cancels Run and returns its result.
func runInA(t *testing.T, l *lab, cfg config.VIP, link Link) (a *Announcer, stop func() error) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a = NewAnnouncer(cfg, "eth0", link, NewGARP(), log)
	ctx, cancel := context.WithCancel(context.Background())
	done := goInNetns(l.a, func() error { return a.Run(ctx) })
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(10 * time.Second):
				result = errors.New("run did not return")
			}
		})
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return a, stop
}

func awaitHeld(t *testing.T, a *Announcer, want bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for a.Held() != want {
		select {
		case <-a.Changed():
		case <-deadline:
			t.Fatalf("Held() stayed %v; status %+v", !want, a.Status())
		}
	}
}

// captureARP listens on B's eth0 and reports which gratuitous ARP forms
// for ip from mac arrive before the deadline; ready closes once the
// socket is open.
func captureARP(l *lab, ip netip.Addr, mac net.HardwareAddr, ready chan<- struct{}) (<-chan error, *[2]bool) {
	var seen [2]bool // request, reply
	done := goInNetns(l.b, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		close(ready)
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		for !seen[0] || !seen[1] {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("read ARP in B (seen request=%v reply=%v): %w", seen[0], seen[1], err)
			}
			var f ethernet.Frame
			var p arp.Packet
			if f.UnmarshalBinary(buf[:n]) != nil || p.UnmarshalBinary(f.Payload) != nil {
				continue
			}
			if p.SenderIP != ip || p.TargetIP != ip || p.SenderHardwareAddr.String() != mac.String() ||
				f.Destination.String() != ethernet.Broadcast.String() {
				continue
			}
			switch {
			case p.Operation == arp.OperationRequest && p.TargetHardwareAddr.String() == "00:00:00:00:00:00":
				seen[0] = true
			case p.Operation == arp.OperationReply && p.TargetHardwareAddr.String() == mac.String():
				seen[1] = true
			}
		}
		return nil
	})
	return done, &seen
}

func TestNetnsIPv4(t *testing.T) {
	support.RequireRoot(t, "create network namespaces")
	l := newLab(t)
	vip := netip.MustParsePrefix("192.168.66.160/24")
	cfg := config.VIP{Address: vip, Interface: "eth0", GARPCount: 3, GARPInterval: 50 * time.Millisecond, Lifetime: 2 * time.Second}
	link := &crashLink{Link: NewNetlink()}

	// A stale VIP from a "previous run" and B's view of it.
	cmd(t, "ip", "-n", l.a, "addr", "add", "192.168.66.160/24", "dev", "eth0", "label", "eth0:halb")
	ready := make(chan struct{})
	captured, seen := captureARP(l, vip.Addr(), l.macA, ready)
	select {
	case <-ready:
	case err := <-captured:
		t.Fatalf("open capture in B: %v", err)
	}

	a, stop := runInA(t, l, cfg, link)

	// The stale address goes at start, since A is not the owner.
	support.WaitUntil(t, 5*time.Second, func() bool { _, ok := l.addr(t, l.a, vip.Addr()); return !ok },
		"stale labelled VIP removed at start")
	if _, ok := l.addr(t, l.a, netip.MustParseAddr("192.168.66.151")); !ok {
		t.Fatal("A's own address was removed")
	}

	a.SetOwner(true, "elected")
	awaitHeld(t, a, true)
	got, ok := l.addr(t, l.a, vip.Addr())
	if !ok || got.Label != "eth0:halb" || got.Prefixlen != 24 || got.ValidLft == 0 || got.ValidLft > 2 {
		t.Fatalf("VIP in A = %+v (present %v), want label eth0:halb, /24, valid_lft 1..2 s", got, ok)
	}

	if err := await(t, captured, "ARP capture"); err != nil {
		t.Fatal(err)
	}
	if !seen[0] || !seen[1] {
		t.Fatalf("B saw request=%v reply=%v, want both forms", seen[0], seen[1])
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return l.neighMAC(t, vip.Addr()) == l.macA.String() },
		"B's neighbour entry for the VIP names A's MAC "+l.macA.String())

	a.SetOwner(false, "lost election")
	awaitHeld(t, a, false)
	if got, ok := l.addr(t, l.a, vip.Addr()); ok {
		t.Fatalf("VIP still in A after release: %+v", got)
	}

	// Crash: claim again, then stop refreshing and skip the removal.
	a.SetOwner(true, "elected again")
	awaitHeld(t, a, true)
	link.crashed.Store(true)
	crashAt := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, ok := l.addr(t, l.a, vip.Addr()); !ok {
		t.Fatal("VIP gone right after the crash; the crash simulation removed it")
	}
	support.WaitUntil(t, cfg.Lifetime+time.Second-time.Since(crashAt), func() bool { _, ok := l.addr(t, l.a, vip.Addr()); return !ok },
		fmt.Sprintf("VIP of a crashed holder gone within its lifetime (%v) and a second", cfg.Lifetime))
	t.Logf("VIP expired %v after the crash", time.Since(crashAt).Round(10*time.Millisecond))
}

func TestNetnsIPv6NeighbourAdvertisement(t *testing.T) {
	support.RequireRoot(t, "create network namespaces")
	l := newLab(t)
	vip := netip.MustParsePrefix("fd00:66::160/64")
	cfg := config.VIP{Address: vip, Interface: "eth0", GARPCount: 2, GARPInterval: 50 * time.Millisecond, Lifetime: 2 * time.Second}

	// Linux applies an unsolicited advertisement only to a neighbour it
	// already knows: plant an entry with an old MAC for the NA to override.
	cmd(t, "ip", "-n", l.b, "neigh", "add", vip.Addr().String(), "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "stale")

	a, _ := runInA(t, l, cfg, NewNetlink())
	a.SetOwner(true, "elected")
	awaitHeld(t, a, true)
	got, ok := l.addr(t, l.a, vip.Addr())
	if !ok || got.Prefixlen != 64 || got.ValidLft == 0 || got.ValidLft > 2 {
		t.Fatalf("VIP in A = %+v (present %v), want /64 with valid_lft 1..2 s", got, ok)
	}
	if !support.Eventually(5*time.Second, func() bool { return l.neighMAC(t, vip.Addr()) == l.macA.String() }) {
		t.Logf("B's non-zero IPv6 counters:\n%s", cmd(t, "ip", "netns", "exec", l.b, "awk", "$2 != 0", "/proc/net/snmp6"))
		t.Fatalf("B's neighbour entry for the VIP is %q, want A's MAC %s", l.neighMAC(t, vip.Addr()), l.macA)
	}
	a.SetOwner(false, "lost election")
	awaitHeld(t, a, false)
	if got, ok := l.addr(t, l.a, vip.Addr()); ok {
		t.Fatalf("VIP still in A after release: %+v", got)
	}
}
