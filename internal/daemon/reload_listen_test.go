package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"halb/internal/admin"
	"halb/internal/config"
	"halb/test/support"
)

// session is an open client connection through the proxy to an echo
// server.
type session struct {
	t *testing.T
	c net.Conn
}

func openSession(t *testing.T, port int) *session {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	s := &session{t: t, c: c}
	if err := s.echo(); err != nil {
		t.Fatalf("new session: %v", err)
	}
	return s
}

func (s *session) echo() error {
	_ = s.c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := s.c.Write([]byte("x")); err != nil {
		return err
	}
	_, err := io.ReadFull(s.c, make([]byte, 1))
	return err
}

// serves reports whether a new connection to port is proxied.
func serves(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		return false
	}
	_, err = io.ReadFull(c, make([]byte, 1))
	return err == nil
}

// portOf returns the port of a listener the test holds.
func portOf(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// outlastDrain waits past the drain grace of the configs below (100ms):
// what a reload meant to close would be closed by then.
func outlastDrain() { time.Sleep(400 * time.Millisecond) }

func TestReloadToOccupiedPortChangesNothing(t *testing.T) {
	a := freePort(t, "127.0.0.1")
	s0 := echoServer(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Close() }()
	b := portOf(held)

	doc := proxyConfig(a, "100ms", "s0="+s0)
	d, write := runFromFile(t, doc)
	support.WaitUntil(t, 5*time.Second, func() bool { return serves(a) }, "the frontend to serve")
	open := openSession(t, a)
	before := d.api.Snapshot()

	// Move the frontend to the port the test holds, and add a backend on
	// the way: the whole reload is refused.
	moved := proxyConfig(b, "100ms", "s0="+s0, "s1="+s0)
	write(moved)
	err = d.Reload()
	if err == nil {
		t.Fatal("a reload onto an occupied port succeeded")
	}
	for _, want := range []string{"reload refused, nothing changed", "frontend api", "address already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("reload error %q does not say %q", err, want)
		}
	}
	if !serves(a) {
		t.Fatal("the old listener stopped accepting after a refused reload")
	}
	outlastDrain()
	if err := open.echo(); err != nil {
		t.Fatalf("an open session was cut by a refused reload: %v", err)
	}
	after := d.api.Snapshot()
	if after.Node.Fingerprint != before.Node.Fingerprint || len(after.Backends[0].Servers) != 1 || after.Frontends[0].Bind != before.Frontends[0].Bind {
		t.Fatalf("a refused reload changed the config in force: %+v", after)
	}
	if code, problems := admin.Verdict(after); code != admin.CodeOK {
		t.Fatalf("status after a refused reload: %d %v", code, problems)
	}

	// Once the port is free, the same file reloads, binding it this time.
	_ = held.Close()
	if err := d.Reload(); err != nil {
		t.Fatalf("reload of the same file once the port is free: %v", err)
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return serves(b) && !serves(a) }, "the frontend to move")
	if got := d.api.Snapshot().Frontends[0]; got.Bind != fmt.Sprintf("127.0.0.1:%d", b) || got.ListenError != "" {
		t.Fatalf("after the reload: %+v", got)
	}
}

func TestReloadMaxConnKeepsSessionsAndSocket(t *testing.T) {
	a := freePort(t, "127.0.0.1")
	s0, s1 := echoServer(t), echoServer(t)
	doc := proxyConfig(a, "100ms", "s0="+s0)
	d, write := runFromFile(t, doc)
	support.WaitUntil(t, 5*time.Second, func() bool { return serves(a) }, "the frontend to serve")
	open := openSession(t, a)
	_, fronts := d.srv.parts()
	socket := fronts[0].f

	// maxconn and the backend's servers change; the frontend's address
	// does not.
	changed := strings.Replace(proxyConfig(a, "100ms", "s0="+s0, "s1="+s1), "backend: cp}", "backend: cp, maxconn: 7}", 1)
	write(changed)
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	_, fronts = d.srv.parts()
	if fronts[0].f != socket {
		t.Fatal("a maxconn change replaced the frontend instead of changing it in place")
	}
	if got := d.api.Snapshot().Frontends[0].MaxConn; got != 7 {
		t.Fatalf("maxconn %d after the reload, want 7", got)
	}
	outlastDrain()
	if err := open.echo(); err != nil {
		t.Fatalf("a maxconn change cut an open session: %v", err)
	}
	if !serves(a) {
		t.Fatal("the frontend stopped serving")
	}
}

// A frontend that lost its listener is a problem in status, and a reload
// of the same file binds it again.
func TestFrontendWithoutListener(t *testing.T) {
	a := freePort(t, "127.0.0.1")
	d, _ := runFromFile(t, proxyConfig(a, "100ms", "s0="+echoServer(t)))
	support.WaitUntil(t, 5*time.Second, func() bool { return serves(a) }, "the frontend to serve")
	_, fronts := d.srv.parts()
	ln, err := fronts[0].f.HandOver() // stands in for a listener that died
	if err != nil {
		t.Fatal(err)
	}
	_ = ln.Close()
	// Only the frontend's problems count: a starved test process can also
	// see its echo server's check time out, which is another problem.
	frontendProblems := func() (int, []string) {
		code, problems := admin.Verdict(d.api.Snapshot())
		return code, slices.DeleteFunc(problems, func(p string) bool { return !strings.HasPrefix(p, "frontend ") })
	}
	code, problems := frontendProblems()
	if code != admin.CodeFail || len(problems) != 1 || !strings.Contains(problems[0], "frontend api: not listening on 127.0.0.1:") {
		t.Fatalf("status of a frontend without its listener: %d %q", code, problems)
	}
	if err := d.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if _, problems := frontendProblems(); len(problems) != 0 {
		t.Fatalf("status after the reload bound the frontend again: %q", problems)
	}
	if !serves(a) {
		t.Fatal("the frontend does not serve after the reload")
	}
}

// A node whose frontend has no listener must not hold the VIP.
func TestFrontendWithoutListenerMakesIneligible(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	a := startNode(t, cfg, "a")
	b := startNode(t, cfg, "b")
	support.WaitUntil(t, 5*time.Second, a.holds, "a to hold the VIP")
	_, fronts := a.d.srv.parts()
	ln, err := fronts[0].f.HandOver()
	if err != nil {
		t.Fatal(err)
	}
	_ = ln.Close()
	support.WaitUntil(t, 10*time.Second, func() bool { return b.holds() && !a.holds() }, "b to take the VIP from a without a listener")
	for _, m := range a.d.api.Snapshot().Members {
		if m.Local && (m.Eligible || m.Frontends["api"]) {
			t.Errorf("a gossips itself eligible without a listener: %+v", m)
		}
	}
}

// A stats page that cannot be built stops the start before anything runs:
// Run returns the reason and leaves no listener behind.
func TestStatsErrorStopsStartCleanly(t *testing.T) {
	a := freePort(t, "127.0.0.1")
	cfg, err := config.Parse([]byte(proxyConfig(a, "100ms", "s0="+echoServer(t)) + "admin: {socket: " + filepath.Join(t.TempDir(), "a.sock") + ", state_file: " + filepath.Join(t.TempDir(), "state.json") + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Stats = &config.Stats{Bind: netip.MustParseAddrPort("127.0.0.1:1"), PasswordFile: filepath.Join(t.TempDir(), "missing")}
	d, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "stats page") {
		t.Fatalf("Run = %v, want the stats page's error", err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", a))
	if err != nil {
		t.Fatalf("the frontend's address is still taken after a failed start: %v", err)
	}
	_ = ln.Close()
}
