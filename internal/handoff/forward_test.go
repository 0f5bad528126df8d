package handoff

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"halb/test/netnsrun"
	"halb/test/support"
)

// TestForwardKeepsOldConnectionOnReusedClientPort loads the forwarding
// table into a namespace's kernel and drives real connections through it.
// A client that opens a connection to the VIP from a source port it
// already uses for a connection to another VIP port (Linux picks such
// ports freely) must not take the old holder's connection with it: the
// new connection stays here, the old one's segments are still forwarded.
// Keyed on the client address and port alone, the second SYN made the
// first connection local, and the new holder reset it (a Talos stream cut
// in the SIGTERM hand-off while HTTPS requests ran on 6443).
func TestForwardKeepsOldConnectionOnReusedClientPort(t *testing.T) {
	support.RequireRoot(t, "build network namespaces and load nftables rules")
	ns := namespaces(t, "hoF", "nh", "cl")
	nh, cl := ns[0], ns[1]
	run(t, "ip", "-n", nh, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", cl)
	run(t, "ip", "-n", nh, "addr", "add", "10.77.0.160/24", "dev", "eth0")
	run(t, "ip", "-n", cl, "addr", "add", "10.77.0.7/24", "dev", "eth0")
	for _, ns := range []string{nh, cl} {
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	ctx := t.Context()
	for _, port := range []string{"50000", "6443"} {
		ln, err := netnsrun.Do(nh, func() (net.Listener, error) { return net.Listen("tcp", "10.77.0.160:"+port) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		support.Serve(ln, func(c net.Conn) { _, _ = io.Copy(c, c) })
	}

	old := dialFrom(t, cl, "10.77.0.160:50000")
	roundTrip(t, old, "before the move")
	r := nsNFT{ns: nh}
	fwd := ForwardRules{Iface: "eth0", VIP: netip.MustParseAddr("10.77.0.160"), Self: macC, Peer: macA, Timeout: time.Minute}
	if err := r.Apply(ctx, fwd.Script()); err != nil {
		t.Fatal(err)
	}
	started := dialFrom(t, cl, "10.77.0.160:6443")
	roundTrip(t, started, "a connection begun while forwarding")
	if n := forwarded(t, ctx, r); n != 0 {
		t.Fatalf("%d packets of a connection begun here were forwarded", n)
	}
	if _, err := old.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return forwarded(t, ctx, r) > 0 },
		"the old connection's segment (same client port as the new one, other VIP port) forwarded to the old holder")
}

// namespaces adds a network namespace per name, under a prefix unique to
// this run, and deletes them when the test ends.
func namespaces(t *testing.T, tag string, names ...string) []string {
	t.Helper()
	out := make([]string, 0, len(names))
	for _, n := range names {
		ns := fmt.Sprintf("%s%d-%s", tag, os.Getpid(), n)
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		out = append(out, ns)
	}
	return out
}

func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", argv, err, out)
	}
}

// dialFrom connects from client port 40000 in ns, sharing the port with
// other connections to other destinations as Linux allows.
func dialFrom(t *testing.T, ns, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(10, 77, 0, 7), Port: 40000},
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) }); err != nil {
				return err
			}
			return serr
		}}
	c, err := netnsrun.Do(ns, func() (net.Conn, error) { return d.Dial("tcp", addr) })
	if err != nil {
		t.Fatalf("dial %s from port 40000: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func roundTrip(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatalf("%s: write: %v", what, err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("%s: echo %q, %v", what, line, err)
	}
	_ = c.SetDeadline(time.Time{})
}

var counterRE = regexp.MustCompile(`counter packets (\d+)`)

// forwarded reads the forwarding rule's packet counter.
func forwarded(t *testing.T, ctx context.Context, r nsNFT) int {
	t.Helper()
	out, err := r.run(ctx, "", "list", "table", "netdev", ForwardTable(netip.MustParseAddr("10.77.0.160")))
	if err != nil {
		t.Fatal(err)
	}
	m := counterRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in the forwarding table:\n%s", out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}
