package tickle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"halb/test/support"
)

// These tests send real tickles over Raw in network namespaces they
// create; nothing in the root namespace is touched.

func ip(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNetns runs fn on an OS thread inside the named namespace and waits
// for it; sockets it opens stay in that namespace when used elsewhere.
// The thread is never unlocked, so Go discards it afterwards.
func inNetns(t *testing.T, name string, fn func() error) {
	t.Helper()
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
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out in netns %s", name)
	}
}

// tickleFrom tickles target from namespace ns in two rounds 100 ms apart,
// counting the answers on eth0 meanwhile, and returns what the sender did
// and what the count saw. guided sends as the daemon does (SendSkipping,
// the count's answers deciding repeats and resets); otherwise every round
// repeats every tickle.
func tickleFrom(t *testing.T, ns string, target Target, v6, guided bool) (Result, Answers) {
	t.Helper()
	var res Result
	var answers Answers
	inNetns(t, ns, func() error {
		raw, err := OpenRaw("eth0", v6)
		if err != nil {
			return err
		}
		defer func() { _ = raw.Close() }()
		capt, err := OpenCapture("eth0", target.VIP.Addr(), []Target{target})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		counted := make(chan Answers, 1)
		go func() {
			a, err := capt.Count(ctx)
			if err != nil {
				t.Errorf("count answers: %v", err)
			}
			counted <- a
		}()
		s, err := NewSender(raw, Options{Rounds: []time.Duration{0, 100 * time.Millisecond}})
		if err != nil {
			return err
		}
		var ans Answered
		if guided {
			ans = capt
		}
		res, err = s.SendSkipping(context.Background(), []Target{target}, ans)
		if err != nil {
			return err
		}
		// The client's answer comes within a round trip of the last
		// tickle; nothing signals that no more will come.
		time.Sleep(100 * time.Millisecond)
		cancel()
		answers = <-counted
		return nil
	})
	return res, answers
}

// waitIPv6 waits until the namespace can send IPv6 neighbour discovery
// on eth0: carrier news reaches IPv6 through linkwatch, up to a second
// late, and only then is the multicast route there (polled: no event).
func waitIPv6(t *testing.T, ns string) {
	t.Helper()
	support.WaitUntil(t, 5*time.Second, func() bool {
		return strings.Contains(ip(t, "-n", ns, "-6", "route", "show", "table", "local"), "multicast ff00::/8 dev eth0")
	}, "IPv6 up on eth0 in "+ns)
}

// TestRawTickleResetsOrphanedConnection plays a host death: a client in
// namespace A holds two idle connections to a server at the VIP in B.
// B's interface (MAC and all) moves to a new namespace C, as if another
// host had taken over the VIP; B's sockets stay behind, unreachable, and
// say nothing. C, which has no socket for the connections, tickles one
// of them: that one must fail with a reset within a second, the other
// must stay open.
func TestRawTickleResetsOrphanedConnection(t *testing.T) {
	support.RequireRoot(t, "create network namespaces")
	for _, fam := range []struct {
		name              string
		client, vip, mask string
	}{
		{"ipv4", "10.253.0.1", "10.253.0.2", "24"},
		{"ipv6", "fd00:253::1", "fd00:253::2", "64"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			var rnd [3]byte
			if _, err := rand.Read(rnd[:]); err != nil {
				t.Fatal(err)
			}
			prefix := "ht" + hex.EncodeToString(rnd[:])
			a, b, c := prefix+"a", prefix+"b", prefix+"c"
			for _, ns := range []string{a, b, c} {
				ip(t, "netns", "add", ns)
				t.Cleanup(func() {
					if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
						t.Errorf("delete netns %s: %v\n%s", ns, err, out)
					}
				})
				ip(t, "-n", ns, "link", "set", "lo", "up")
			}
			ip(t, "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
			ip(t, "-n", a, "addr", "add", fam.client+"/"+fam.mask, "dev", "eth0", "nodad")
			ip(t, "-n", b, "addr", "add", fam.vip+"/"+fam.mask, "dev", "eth0", "nodad")
			ip(t, "-n", a, "link", "set", "eth0", "up")
			ip(t, "-n", b, "link", "set", "eth0", "up")
			if fam.name == "ipv6" {
				waitIPv6(t, a)
				waitIPv6(t, b)
			}

			// The old holder: a server at the VIP that accepts and keeps
			// its connections, silent.
			var ln net.Listener
			inNetns(t, b, func() (err error) {
				ln, err = net.Listen("tcp", net.JoinHostPort(fam.vip, "0"))
				return err
			})
			t.Cleanup(func() { _ = ln.Close() })
			accepted := make(chan net.Conn, 2)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted <- c
				}
			}()
			var tickled, bystander net.Conn
			inNetns(t, a, func() (err error) {
				d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}
				if tickled, err = d.Dial("tcp", ln.Addr().String()); err != nil {
					return err
				}
				bystander, err = d.Dial("tcp", ln.Addr().String())
				return err
			})
			t.Cleanup(func() { _ = tickled.Close(); _ = bystander.Close() })
			for range 2 {
				select {
				case sc := <-accepted:
					t.Cleanup(func() { _ = sc.Close() })
				case <-time.After(5 * time.Second):
					t.Fatal("server never accepted")
				}
			}
			// Both directions work before the move.
			if _, err := tickled.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}

			// The host dies, another takes the VIP and its MAC's place.
			ip(t, "-n", b, "link", "set", "eth0", "netns", c)
			ip(t, "-n", c, "addr", "add", fam.vip+"/"+fam.mask, "dev", "eth0", "nodad")
			ip(t, "-n", c, "link", "set", "eth0", "up")
			if fam.name == "ipv6" {
				waitIPv6(t, c)
			}

			type readResult struct {
				err   error
				after time.Duration
			}
			start := time.Now()
			readErr := func(conn net.Conn) <-chan readResult {
				ch := make(chan readResult, 1)
				go func() {
					_ = conn.SetReadDeadline(start.Add(time.Second))
					_, err := conn.Read(make([]byte, 16))
					ch <- readResult{err, time.Since(start)}
				}()
				return ch
			}
			tickledErr := readErr(tickled)
			bystanderErr := readErr(bystander)

			target := Target{
				VIP:    netip.MustParseAddrPort(ln.Addr().String()),
				Client: netip.MustParseAddrPort(tickled.LocalAddr().String()),
			}
			res, answers := tickleFrom(t, c, target, fam.name == "ipv6", false)
			if res.Sent != 2 {
				t.Fatalf("sent %+v, want 2 packets", res)
			}
			// The first round draws the client's duplicate ACK; the second
			// only its reset (the connection is gone by then), which must
			// not turn the count into "closed".
			if want := (Answers{Acknowledged: 1}); answers != want {
				t.Errorf("answers %+v, want %+v", answers, want)
			}
			if r := <-tickledErr; !errors.Is(r.err, syscall.ECONNRESET) {
				t.Errorf("tickled connection: read error %v after %v, want a reset within 1s", r.err, r.after)
			} else {
				t.Logf("tickled connection reset %v after the tickle started", r.after)
			}
			var ne net.Error
			if r := <-bystanderErr; !errors.As(r.err, &ne) || !ne.Timeout() {
				t.Errorf("connection not tickled: read error %v, want it still open (a timeout)", r.err)
			}
		})
	}
}

// TestRawResetWhenTheNewHolderKernelWillNot: the node taking the VIP has
// a TIME_WAIT socket of its own for the 4-tuple (an earlier tenure closed
// a connection first, and the client later reused the port through the
// old holder). Its kernel then answers the client's duplicate ACK with an
// ACK, not a reset, and the connection would outlive the tickles; the
// Sender's reset, carrying the acknowledgement number of that duplicate
// ACK, must end it.
func TestRawResetWhenTheNewHolderKernelWillNot(t *testing.T) {
	support.RequireRoot(t, "create network namespaces")
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	prefix := "hw" + hex.EncodeToString(rnd[:])
	a, b, c := prefix+"a", prefix+"b", prefix+"c"
	for _, ns := range []string{a, b, c} {
		ip(t, "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		ip(t, "-n", ns, "link", "set", "lo", "up")
	}
	const client, vip, port, cport = "10.254.0.1", "10.254.0.2", "7443", 40123
	// holdVIP gives the VIP (and the link to the client) to ns.
	ip(t, "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", c)
	ip(t, "-n", a, "addr", "add", client+"/24", "dev", "eth0")
	ip(t, "-n", a, "link", "set", "eth0", "up")
	holdVIP := func(from, to string) {
		if from != "" {
			ip(t, "-n", from, "link", "set", "eth0", "netns", to)
		}
		ip(t, "-n", to, "addr", "replace", vip+"/24", "dev", "eth0")
		ip(t, "-n", to, "link", "set", "eth0", "up")
		ip(t, "-n", a, "neigh", "flush", "dev", "eth0")
	}
	holdVIP("", c)
	listen := func(ns string) net.Listener {
		var ln net.Listener
		inNetns(t, ns, func() (err error) {
			ln, err = net.Listen("tcp", net.JoinHostPort(vip, port))
			return err
		})
		t.Cleanup(func() { _ = ln.Close() })
		return ln
	}
	dial := func() net.Conn {
		var conn net.Conn
		inNetns(t, a, func() (err error) {
			d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1,
				LocalAddr: &net.TCPAddr{IP: net.ParseIP(client), Port: cport},
				Control: func(_, _ string, rc syscall.RawConn) error {
					var serr error
					if err := rc.Control(func(fd uintptr) {
						serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
					}); err != nil {
						return err
					}
					return serr
				}}
			conn, err = d.Dial("tcp", net.JoinHostPort(vip, port))
			return err
		})
		return conn
	}

	// C's earlier tenure: it closes first and keeps a TIME_WAIT socket.
	lnC := listen(c)
	first := dial()
	sc, err := lnC.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = sc.Close()
	_ = first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := first.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("first connection: read %v, want the server's close", err)
	}
	_ = first.Close()
	support.WaitUntil(t, 5*time.Second, func() bool {
		out, _ := exec.Command("ip", "netns", "exec", c, "ss", "-Htn", "state", "time-wait").CombinedOutput()
		return strings.Contains(string(out), fmt.Sprintf("%s:%d", client, cport))
	}, "a TIME_WAIT socket in the new holder")

	// B holds the VIP now; the client reuses its port for a connection
	// to B, idle.
	holdVIP(c, b)
	lnB := listen(b)
	live := dial()
	t.Cleanup(func() { _ = live.Close() })
	sb, err := lnB.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })

	// B dies; C takes the VIP back and tickles the connection.
	holdVIP(b, c)
	start := time.Now()
	readDone := make(chan error, 1)
	var readAt time.Time // written before readDone is sent on
	go func() {
		_ = live.SetReadDeadline(start.Add(2 * time.Second))
		_, err := live.Read(make([]byte, 1))
		readAt = time.Now()
		readDone <- err
	}()
	target := Target{VIP: netip.MustParseAddrPort(net.JoinHostPort(vip, port)), Client: netip.AddrPortFrom(netip.MustParseAddr(client), cport)}
	res, _ := tickleFrom(t, c, target, false, true)
	if err := <-readDone; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the tickled connection read %v after %v, want a reset (sender %+v)", err, readAt.Sub(start).Round(time.Millisecond), res)
	}
	if res.Resets != 1 {
		t.Errorf("sender %+v, want 1 reset written", res)
	}
	t.Logf("reset after %v by the sender's own reset (%+v)", readAt.Sub(start).Round(time.Millisecond), res)
}
