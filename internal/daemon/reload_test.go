package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"halb/internal/config"
	"halb/test/support"
)

// echoServer accepts connections and echoes them, on 127.0.0.1.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func proxyConfig(front int, drain string, servers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log: {connections: false}\ntimeouts: {drain: %s}\n", drain)
	fmt.Fprintf(&b, "frontends:\n  - {name: api, bind: \"127.0.0.1:%d\", backend: cp}\n", front)
	b.WriteString("backends:\n  - name: cp\n    health: {type: tcp, interval: 1s, timeout: 1s, fall: 3, rise: 1}\n    servers:\n")
	for _, s := range servers {
		name, addr, _ := strings.Cut(s, "=")
		fmt.Fprintf(&b, "      - {name: %s, address: \"%s\"}\n", name, addr)
	}
	return b.String()
}

// runFromFile writes doc as a config file, starts a daemon on it and
// returns it with a function that rewrites the file for a reload.
func runFromFile(t *testing.T, doc string) (*Daemon, func(string)) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "halb.yaml")
	write := func(doc string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(doc+"admin: {socket: "+filepath.Join(dir, "a.sock")+", state_file: "+filepath.Join(dir, "state.json")+"}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(doc)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := &testWriter{t: t, name: "d"}
	t.Cleanup(func() { tw.done.Store(true) })
	d, err := New(cfg, Options{ConfigPath: path, Log: slog.New(slog.NewTextHandler(tw, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Reloads are refused until the daemon runs; frontends serve a little
	// before that, so wait for it rather than for a listener.
	select {
	case <-d.Running():
	case err := <-done:
		t.Fatalf("Run ended before it ran: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not run within 10s")
	}
	return d, write
}

func TestReload(t *testing.T) {
	front := freePort(t, "127.0.0.1")
	s0, s1 := echoServer(t), echoServer(t)
	d, write := runFromFile(t, proxyConfig(front, "300ms", "s0="+s0))
	servers := func() string {
		var out []string
		for _, b := range d.api.Snapshot().Backends {
			for _, s := range b.Servers {
				out = append(out, s.Name+"="+s.State)
			}
		}
		return strings.Join(out, " ")
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return servers() == "s0=up" }, "s0 up")

	// An open session through s0, which the next reload removes.
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", front))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	echo := func() error {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 1))
		return err
	}
	if err := echo(); err != nil {
		t.Fatal(err)
	}

	// A bad file changes nothing and says why.
	write("frontends: nope\n")
	if err := d.Reload(); err == nil || !strings.Contains(err.Error(), "frontends") {
		t.Fatalf("bad reload: %v", err)
	}
	// A restart-only change is refused, naming it.
	write(strings.Replace(proxyConfig(front, "300ms", "s0="+s0), "connections: false", "connections: false, format: json", 1))
	if err := d.Reload(); err == nil || !strings.Contains(err.Error(), "log changed: that needs a restart") {
		t.Fatalf("log format reload: %v", err)
	}
	if servers() != "s0=up" || echo() != nil {
		t.Fatal("a refused reload changed something")
	}

	// Replace s0 with s1: s1 is checked and serves new connections, the
	// open session through s0 keeps working until the drain grace.
	write(proxyConfig(front, "2s", "s1="+s1))
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return servers() == "s1=up" }, "s1 up")
	if err := echo(); err != nil {
		t.Fatalf("the open session through the removed server broke at once: %v", err)
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return echo() != nil }, "the removed server's session closed after the grace")
}

func TestReloadFrontends(t *testing.T) {
	a, b := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	s0 := echoServer(t)
	d, write := runFromFile(t, proxyConfig(a, "1s", "s0="+s0))
	support.WaitUntil(t, 5*time.Second, func() bool { return serves(a) }, "the frontend on the first port to serve")

	// Rebind the frontend to another port and add a second frontend on the
	// first port with a new backend: both apply without a restart.
	doc := proxyConfig(b, "1s", "s0="+s0)
	doc = strings.Replace(doc, "backends:\n", fmt.Sprintf("  - {name: api2, bind: \"127.0.0.1:%d\", backend: cp2}\nbackends:\n", a), 1)
	doc += fmt.Sprintf("  - name: cp2\n    health: {type: tcp, interval: 1s, timeout: 1s, fall: 3, rise: 1}\n    servers: [{name: t0, address: \"%s\"}]\n", s0)
	write(doc)
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return serves(a) && serves(b) }, "both frontends to serve")
	snap := d.api.Snapshot()
	if len(snap.Frontends) != 2 || len(snap.Backends) != 2 {
		t.Errorf("after reload: %d frontends, %d backends; want 2 and 2", len(snap.Frontends), len(snap.Backends))
	}
	// Back to one frontend: the second one stops listening.
	write(proxyConfig(b, "1s", "s0="+s0))
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	support.WaitUntil(t, 5*time.Second, func() bool { return !serves(a) && serves(b) }, "the removed frontend to stop listening")
}
