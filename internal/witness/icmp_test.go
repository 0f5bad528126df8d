//go:build linux

package witness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"halb/test/support"
)

func run(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetns creates a network namespace with a unique name, deleted when the
// test ends. Its lo is up only if loUp; sysctls are applied inside it.
func newNetns(t *testing.T, loUp bool, sysctls ...string) string {
	t.Helper()
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := "hw" + hex.EncodeToString(b[:])
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	if loUp {
		run(t, "ip", "-n", name, "link", "set", "lo", "up")
	}
	for _, s := range sysctls {
		run(t, "ip", "netns", "exec", name, "sysctl", "-q", "-w", s)
	}
	return name
}

// inNetns runs fn on an OS thread that has entered the namespace, so the
// sockets fn opens live there. The thread is never unlocked, so the
// runtime discards it afterwards instead of reusing it elsewhere.
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	defer func() { _ = ns.Close() }()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		fn()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("enter netns %s: %v", name, err)
	}
}

// probeIn runs one probe from inside the namespace.
func probeIn(t *testing.T, name string, p Prober, target netip.Addr, timeout time.Duration) error {
	t.Helper()
	var err error
	inNetns(t, name, func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		err = p.Probe(ctx, target)
	})
	return err
}

func hasIPv6Loopback(t *testing.T, name string) bool {
	t.Helper()
	out, err := exec.Command("ip", "-n", name, "-6", "addr", "show", "dev", "lo").CombinedOutput()
	return err == nil && strings.Contains(string(out), "::1/128")
}

func TestICMPReplyFromLoopback(t *testing.T) {
	support.RequireRoot(t, "open raw ICMP sockets and create network namespaces")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p := NewICMP()
	for _, a := range []string{"127.0.0.1", "127.0.0.77"} {
		if err := p.Probe(ctx, netip.MustParseAddr(a)); err != nil {
			t.Errorf("probe %s: %v", a, err)
		}
	}
	// An IPv4-mapped address probes the IPv4 address.
	if err := p.Probe(ctx, netip.MustParseAddr("::ffff:127.0.0.1")); err != nil {
		t.Errorf("probe ::ffff:127.0.0.1: %v", err)
	}
}

func TestICMPReplyIPv6(t *testing.T) {
	support.RequireRoot(t, "open raw ICMP sockets and create network namespaces")
	ns := newNetns(t, true)
	if !hasIPv6Loopback(t, ns) {
		t.Skip("no ::1 in a fresh namespace (IPv6 disabled)")
	}
	if err := probeIn(t, ns, NewICMP(), netip.IPv6Loopback(), 2*time.Second); err != nil {
		t.Fatalf("probe ::1: %v", err)
	}
}

func TestICMPNoReplyTimesOut(t *testing.T) {
	support.RequireRoot(t, "open raw ICMP sockets and create network namespaces")
	ns := newNetns(t, true, "net.ipv4.icmp_echo_ignore_all=1")
	start := time.Now()
	err := probeIn(t, ns, NewICMP(), netip.MustParseAddr("127.0.0.1"), 300*time.Millisecond)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("probe with echo ignored: err = %v, want deadline exceeded", err)
	}
	if took > 2*time.Second {
		t.Fatalf("probe took %v, want it bounded by its 300ms timeout", took)
	}
}

func TestICMPLoopbackDownFails(t *testing.T) {
	support.RequireRoot(t, "open raw ICMP sockets and create network namespaces")
	ns := newNetns(t, false)
	err := probeIn(t, ns, NewICMP(), netip.MustParseAddr("127.0.0.1"), 300*time.Millisecond)
	if err == nil {
		t.Fatal("probe of 127.0.0.1 with lo down succeeded")
	}
}

func TestICMPCancelEndsProbe(t *testing.T) {
	support.RequireRoot(t, "open raw ICMP sockets and create network namespaces")
	ns := newNetns(t, true, "net.ipv4.icmp_echo_ignore_all=1")
	var err error
	inNetns(t, ns, func() {
		// No deadline: only the cancel can end the wait.
		ctx, cancel := context.WithCancel(context.Background())
		stop := time.AfterFunc(100*time.Millisecond, cancel)
		defer stop.Stop()
		err = NewICMP().Probe(ctx, netip.MustParseAddr("127.0.0.1"))
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestICMPConcurrentProbes(t *testing.T) {
	support.RequireRoot(t, "open raw ICMP sockets and create network namespaces")
	// Several probers, several goroutines each: every raw socket sees every
	// reply, and each probe must still find its own.
	probers := []Prober{NewICMP(), NewICMP(), NewICMP()}
	var wg sync.WaitGroup
	errs := make(chan error, 3*8)
	for _, p := range probers {
		for i := range 8 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				errs <- p.Probe(ctx, netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i)}))
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestICMPUnprivilegedSocket(t *testing.T) {
	support.RequireRoot(t, "open raw ICMP sockets and create network namespaces")
	// Datagram ICMP sockets are allowed only to groups in ping_group_range,
	// a per-namespace setting.
	ns := newNetns(t, true, "net.ipv4.ping_group_range=0 2147483647")
	targets := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	if hasIPv6Loopback(t, ns) {
		targets = append(targets, netip.IPv6Loopback())
	}
	for _, a := range targets {
		if err := probeIn(t, ns, newICMP(true), a, 2*time.Second); err != nil {
			t.Errorf("unprivileged probe %s: %v", a, err)
		}
	}
}

func TestICMPFallsBackWithoutCapNetRaw(t *testing.T) {
	support.RequireRoot(t, "open raw ICMP sockets and create network namespaces")
	ns := newNetns(t, true, "net.ipv4.ping_group_range=0 2147483647")
	p := newICMP(false)
	var err, capErr error
	inNetns(t, ns, func() {
		// Capabilities are per thread; this thread is discarded afterwards.
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if capErr = unix.Capget(&hdr, &data[0]); capErr != nil {
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_RAW
		if capErr = unix.Capset(&hdr, &data[0]); capErr != nil {
			return
		}
		if _, rawErr := icmp.ListenPacket("ip4:icmp", "0.0.0.0"); !errors.Is(rawErr, unix.EPERM) {
			capErr = errors.New("raw socket not refused after dropping CAP_NET_RAW")
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err = p.Probe(ctx, netip.MustParseAddr("127.0.0.1"))
	})
	if capErr != nil {
		t.Fatalf("drop CAP_NET_RAW: %v", capErr)
	}
	if err != nil {
		t.Fatalf("probe without CAP_NET_RAW: %v", err)
	}
	if !p.unprivileged.Load() {
		t.Fatal("prober did not switch to the unprivileged socket")
	}
}

func TestEchoMatch(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.1") // never sent to: only parsed
	v6 := netip.MustParseAddr("2001:db8::1")
	data := []byte("12345678")
	echo := func(typ icmp.Type, id, seq int, d []byte) []byte {
		b, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: d}}).Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ipFrom := func(a netip.Addr) net.Addr { return &net.IPAddr{IP: a.AsSlice()} }
	udpFrom := func(a netip.Addr) net.Addr { return &net.UDPAddr{IP: a.AsSlice()} }
	want4 := echoWant{raw: true, target: v4, proto: protoICMP, reply: ipv4.ICMPTypeEchoReply, id: 7, seq: 9, data: data}
	want6 := echoWant{raw: true, target: v6, proto: protoICMPv6, reply: ipv6.ICMPTypeEchoReply, id: 7, seq: 9, data: data}
	dgram4 := want4
	dgram4.raw = false
	for _, tt := range []struct {
		name string
		want echoWant
		from net.Addr
		b    []byte
		ok   bool
	}{
		{"v4 reply", want4, ipFrom(v4), echo(ipv4.ICMPTypeEchoReply, 7, 9, data), true},
		{"v4 reply from mapped source", want4, &net.IPAddr{IP: net.ParseIP("192.0.2.1")}, echo(ipv4.ICMPTypeEchoReply, 7, 9, data), true},
		{"another process's id", want4, ipFrom(v4), echo(ipv4.ICMPTypeEchoReply, 8, 9, data), false},
		{"older sequence", want4, ipFrom(v4), echo(ipv4.ICMPTypeEchoReply, 7, 8, data), false},
		{"other payload", want4, ipFrom(v4), echo(ipv4.ICMPTypeEchoReply, 7, 9, []byte("87654321")), false},
		{"other source", want4, ipFrom(netip.MustParseAddr("192.0.2.2")), echo(ipv4.ICMPTypeEchoReply, 7, 9, data), false},
		{"own request looped back", want4, ipFrom(v4), echo(ipv4.ICMPTypeEcho, 7, 9, data), false},
		{"garbage", want4, ipFrom(v4), []byte{0}, false},
		{"datagram socket: kernel-chosen id", dgram4, udpFrom(v4), echo(ipv4.ICMPTypeEchoReply, 4242, 9, data), true},
		{"v6 reply", want6, ipFrom(v6), echo(ipv6.ICMPTypeEchoReply, 7, 9, data), true},
		{"v6 request", want6, ipFrom(v6), echo(ipv6.ICMPTypeEchoRequest, 7, 9, data), false},
		{"v6 other id", want6, ipFrom(v6), echo(ipv6.ICMPTypeEchoReply, 1, 9, data), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.want.match(tt.from, tt.b); got != tt.ok {
				t.Fatalf("match = %v, want %v", got, tt.ok)
			}
		})
	}
}
