package handoff

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"halb/test/netnsrun"
	"halb/test/support"
)

// TestIPv6HandoffInNamespaces plays an IPv6 planned move with the real
// scripts in namespaces' kernels: an old holder (oh) keeps the VIP quietly,
// a new holder (nh) holds it and forwards what it did not start, a client
// (cl) on the same switch. The client's connection begun through oh keeps
// working, a new one lands on nh, oh never answers a solicitation for the
// VIP, and when oh resolves the client again its solicitation does not
// point the client's entry for the VIP back at oh.
func TestIPv6HandoffInNamespaces(t *testing.T) {
	support.RequireRoot(t, "build network namespaces and load nftables rules")
	all := namespaces(t, "ho6", "sw", "oh", "nh", "cl")
	sw, oh, nh, cl := all[0], all[1], all[2], all[3]
	names := map[string]string{oh: "oh", nh: "nh"}
	for _, ns := range all {
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", sw, "link", "set", "br0", "up")
	macs := map[string]net.HardwareAddr{oh: macA, nh: macC, cl: {2, 0, 0, 0, 0, 7}}
	own := map[string]string{oh: "fd00:66::1", nh: "fd00:66::2", cl: "fd00:66::7"}
	for i, ns := range []string{oh, nh, cl} {
		port := fmt.Sprintf("p%d", i)
		run(t, "ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		run(t, "ip", "-n", sw, "link", "set", port, "master", "br0", "up")
		run(t, "ip", "-n", ns, "link", "set", "eth0", "address", macs[ns].String())
		run(t, "ip", "-n", ns, "addr", "add", own[ns]+"/64", "dev", "eth0", "nodad")
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	}
	const vip6 = "fd00:66::160"
	v := netip.MustParseAddr(vip6)
	// Who answers: each holder's server says its name.
	serve := func(ns string) {
		run(t, "ip", "-n", ns, "addr", "add", vip6+"/64", "dev", "eth0", "nodad")
		ln, err := netnsrun.Do(ns, func() (net.Listener, error) { return net.Listen("tcp", "["+vip6+"]:6443") })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		name := names[ns]
		support.Serve(ln, func(c net.Conn) {
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := io.WriteString(c, name+":"+line); err != nil {
					return
				}
			}
		})
	}
	serve(oh)
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := netnsrun.Do(cl, func() (net.Conn, error) {
			return net.DialTimeout("tcp", "["+vip6+"]:6443", 5*time.Second)
		})
		if err != nil {
			t.Fatalf("dial the VIP from the client: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c, bufio.NewReader(c)
	}
	ask := func(c net.Conn, r *bufio.Reader, what string) string {
		t.Helper()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			t.Fatalf("%s: write: %v", what, err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: read: %v", what, err)
		}
		return strings.TrimSuffix(line, "\n")
	}
	old, oldR := dial()
	if got := ask(old, oldR, "before the move"); got != "oh:ping" {
		t.Fatalf("before the move the VIP answered %q, want the old holder", got)
	}

	// The move: oh goes quiet, nh forwards, then holds the VIP; the
	// client's entry for the VIP is what nh's unsolicited advertisement
	// would make it.
	ctx := t.Context()
	quiet, fwd := nsNFT{ns: oh}, nsNFT{ns: nh}
	if err := quiet.Apply(ctx, QuietScript(v, netip.MustParseAddr(own[oh]))); err != nil {
		t.Fatal(err)
	}
	if err := fwd.Apply(ctx, ForwardRules{Iface: "eth0", VIP: v, Self: macC, Peer: macA, Timeout: time.Minute}.Script()); err != nil {
		t.Fatal(err)
	}
	serve(nh)
	run(t, "ip", "-n", cl, "neigh", "replace", vip6, "lladdr", macC.String(), "dev", "eth0", "nud", "stale")

	if got := ask(old, oldR, "the old connection after the move"); got != "oh:ping" {
		t.Fatalf("the connection begun before the move answered %q, want the old holder (forwarded by nh)", got)
	}
	fresh, freshR := dial()
	if got := ask(fresh, freshR, "a new connection"); got != "nh:ping" {
		t.Fatalf("a new connection answered %q, want the new holder", got)
	}

	// oh forgets the client and must resolve it again to answer on the
	// old connection: its solicitation leaves from its own address, with
	// a checksum the client accepts, and leaves the client's entry for
	// the VIP alone.
	run(t, "ip", "-n", oh, "neigh", "flush", "dev", "eth0")
	if got := ask(old, oldR, "the old connection after oh re-resolved the client"); got != "oh:ping" {
		t.Fatalf("after oh re-resolved the client the old connection answered %q", got)
	}
	if e := neigh(t, cl, vip6); !strings.Contains(e, macC.String()) {
		t.Fatalf("the client's entry for the VIP is %q, want the new holder's %s", e, macC)
	}

	// The client solicits the VIP: only nh answers; oh drops it.
	run(t, "ip", "-n", cl, "neigh", "del", vip6, "dev", "eth0")
	third, thirdR := dial()
	if got := ask(third, thirdR, "a connection after the client re-resolved the VIP"); got != "nh:ping" {
		t.Fatalf("after the client re-resolved the VIP a new connection answered %q, want the new holder", got)
	}
	if e := neigh(t, cl, vip6); !strings.Contains(e, macC.String()) {
		t.Fatalf("the client's entry for the VIP is %q, want the new holder's %s", e, macC)
	}
	out, err := quiet.run(ctx, "", "list", "table", QuietFamily(v), QuietTable(v))
	if err != nil {
		t.Fatal(err)
	}
	if m := counterRE.FindSubmatch(out); m == nil || string(m[1]) == "0" {
		t.Fatalf("oh dropped no solicitation for the VIP:\n%s", out)
	}
}

// neigh is ns's neighbour entry for addr, as ip prints it.
func neigh(t *testing.T, ns, addr string) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "neigh", "show", addr, "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("ip neigh show: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}
