//go:build integration

package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"halb/internal/admin"
	"halb/test/lab"
	"halb/test/netnsrun"
)

// vip6 is the IPv6 VIP added to the lab for the hand-off test; clientIP6
// is the client's address in its prefix.
const (
	vip6      = "fd00:66::160"
	clientIP6 = "fd00:66::7"
)

// An IPv6 VIP hands its connections off on a planned move as an IPv4 one
// does: the holder stops with SIGTERM, the other node takes both VIPs, and
// a connection through the IPv6 VIP keeps working while the old holder
// drains, through the new holder's forwarding and the old holder's quiet
// neighbour discovery table; a new connection lands on the new holder.
// With hand-off off the same move resets the connection (it is tickled).
func TestHandoffIPv6VIP(t *testing.T) {
	for _, handoff := range []bool{true, false} {
		t.Run(fmt.Sprintf("handoff=%v", handoff), func(t *testing.T) {
			mutate := func(_, yaml string) string {
				yaml = strings.Replace(yaml, "drain: 2s", "drain: "+handoffDrain.String(), 1)
				yaml = strings.Replace(yaml, "frontends:\n",
					fmt.Sprintf("frontends:\n  - name: idle6\n    bind: \"[%s]:%d\"\n    backend: idle\n", vip6, lab.IdlePort), 1)
				v6 := fmt.Sprintf("  - address: %s/64\n    interface: eth0\n", vip6)
				if !handoff {
					yaml = strings.Replace(yaml, "interface: eth0", "interface: eth0\n    handoff: false", 1)
					v6 += "    handoff: false\n"
				}
				return strings.Replace(yaml, "vips:\n", "vips:\n"+v6, 1)
			}
			l, ctx := newLab(t, lab.Options{StartHalb: true, IdleFrontend: true, Mutate: mutate}, true)
			ip6(t, ctx, l, "cl", "addr", "add", clientIP6+"/64", "dev", "eth0", "nodad")
			holder, other := settledPair(t, ctx, l)
			waitVIP6(t, ctx, l, holder, "holds it", func(v admin.VIP) bool { return v.HeldHere })

			conn, r := dial6(t, ctx, l)
			if err := echo6(conn, r, "before"); err != nil {
				t.Fatalf("through the IPv6 VIP before the move: %v", err)
			}
			// The other node has the holder's table (and so its offers,
			// sent with it) before the move, as in any settled cluster.
			waitVIP6(t, ctx, l, other, "the holder's connection in its table", func(v admin.VIP) bool { return v.ConnTable >= 1 })

			stopped := make(chan error, 1)
			go func() { stopped <- l.StopHalb(holder, syscall.SIGTERM) }()
			waitVIP6(t, ctx, l, other, "holds it", func(v admin.VIP) bool { return v.HeldHere })

			fresh, fr := dial6(t, ctx, l)
			if err := echo6(fresh, fr, "fresh"); err != nil {
				t.Errorf("a new connection through the IPv6 VIP after the move: %v", err)
			}
			// Watch the old connection past the last tickle round (600 ms):
			// without hand-off it is reset within that, with hand-off it
			// stays quiet and then still carries data.
			lost := watch6(conn, r, 1500*time.Millisecond)
			if lost == nil {
				lost = echo6(conn, r, "after")
			}
			switch {
			case handoff && lost != nil:
				t.Errorf("the connection through the IPv6 VIP failed after a planned move with hand-off: %v", lost)
			case !handoff && lost == nil:
				t.Errorf("with hand-off off the connection through the IPv6 VIP survived the move: the test cannot tell hand-off from none")
			}
			if handoff {
				if tables := halbTables(t, ctx, l, holder); !strings.Contains(tables, "ip6 halb_ho_nd_") {
					t.Errorf("the old holder has no neighbour-discovery quiet table while it drains; its tables:\n%s", tables)
				}
			}
			if err := <-stopped; err != nil {
				t.Errorf("stop %s: %v", holder, err)
			}
		})
	}
}

// ip6 runs ip in host's namespace.
func ip6(t *testing.T, ctx context.Context, l *lab.Lab, host string, args ...string) {
	t.Helper()
	argv := append([]string{"-n", l.NS(host)}, args...)
	if out, err := exec.CommandContext(ctx, "ip", argv...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", argv, err, out)
	}
}

// waitVIP6 waits until node's status of the IPv6 VIP satisfies ok.
func waitVIP6(t *testing.T, ctx context.Context, l *lab.Lab, node, what string, ok func(admin.VIP) bool) {
	t.Helper()
	until(t, ctx, 15*time.Second, fmt.Sprintf("%s: %s %s", node, vip6, what), func() (bool, string) {
		snap, err := l.Status(ctx, node)
		if err != nil {
			return false, err.Error()
		}
		for _, v := range snap.VIPs {
			if v.Address == vip6 {
				return ok(v), fmt.Sprintf("%+v", v)
			}
		}
		return false, "no such VIP in the status"
	})
}

// dial6 connects from the client to the IPv6 VIP's idle frontend.
func dial6(t *testing.T, ctx context.Context, l *lab.Lab) (net.Conn, *bufio.Reader) {
	t.Helper()
	d, err := netnsrun.NewDialer(l.NS("cl"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, netip.AddrPortFrom(netip.MustParseAddr(vip6), lab.IdlePort))
	if err != nil {
		t.Fatalf("dial the IPv6 VIP from the client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

// watch6 waits up to d for the server side of c to end it: it returns the
// read error (a reset, EOF), or nil if c stayed quiet for d.
func watch6(c net.Conn, r *bufio.Reader, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	if _, err := r.ReadByte(); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil
		}
		return err
	}
	return fmt.Errorf("unexpected data on an idle connection")
}

// echo6 sends a line and reads it back within 2 s.
func echo6(c net.Conn, r *bufio.Reader, line string) error {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("echo %q, want %q", got, line)
	}
	return nil
}
