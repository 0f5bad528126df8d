package fakecp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs a fake control plane on 127.0.0.x with kernel-chosen ports.
func start(t *testing.T, ip string) (s *Server, c *Client, apiAddr, talosAddr netip.AddrPort) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cp.sock")
	a := netip.MustParseAddrPort(ip + ":0")
	s = New(Options{Name: "cp1", HTTPS: []netip.AddrPort{a}, TLS: []netip.AddrPort{a}, ControlSocket: sock}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-errc:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("not ready after 5s")
	}
	https, tlsAddrs := s.Addrs()
	return s, NewClient(sock), https[0], tlsAddrs[0]
}

func get(t *testing.T, addr netip.AddrPort, path string) (int, string, string, error) {
	t.Helper()
	hc := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // throwaway test cert
			DisableKeepAlives: true,
		},
	}
	resp, err := hc.Get("https://" + addr.String() + path)
	if err != nil {
		return 0, "", "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get(NameHeader), string(b), err
}

func TestHealthAndName(t *testing.T) {
	_, c, api, talos := start(t, "127.0.0.21")
	code, hdr, body, err := get(t, api, "/healthz")
	if err != nil || code != 200 || hdr != "cp1" || body != "ok cp1\n" {
		t.Fatalf("GET /healthz = %d %q %q %v, want 200 cp1 \"ok cp1\\n\"", code, hdr, body, err)
	}

	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", talos.String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test cert
	if err != nil {
		t.Fatalf("tls dial: %v", err)
	}
	b, err := io.ReadAll(conn)
	_ = conn.Close()
	if err != nil || string(b) != "cp1\n" {
		t.Fatalf("talos port said %q, %v; want \"cp1\\n\"", b, err)
	}

	ctx := context.Background()
	if err := c.FailHealth(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _, _, err := get(t, api, p); err != nil || code != 500 {
			t.Errorf("GET %s with fail-health = %d %v, want 500", p, code, err)
		}
	}
	if code, _, _, err := get(t, api, "/version"); err != nil || code != 200 {
		t.Errorf("GET /version with fail-health = %d %v, want 200", code, err)
	}
	if err := c.FailHealth(ctx, false); err != nil {
		t.Fatal(err)
	}
	if code, _, _, err := get(t, api, "/healthz"); err != nil || code != 200 {
		t.Errorf("GET /healthz after fail-health off = %d %v, want 200", code, err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Name != "cp1" || st.State != Serving || st.FailHealth {
		t.Errorf("Status = %+v, %v", st, err)
	}
}

func TestStopRefusesAndStartComesBack(t *testing.T) {
	_, c, api, talos := start(t, "127.0.0.22")
	ctx := context.Background()
	if err := c.SetState(ctx, Stopped); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.AddrPort{api, talos} {
		_, err := net.DialTimeout("tcp", a.String(), time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s when stopped: %v, want connection refused", a, err)
		}
	}
	if err := c.SetState(ctx, Serving); err != nil {
		t.Fatal(err)
	}
	if code, _, _, err := get(t, api, "/healthz"); err != nil || code != 200 {
		t.Errorf("GET /healthz after start = %d %v, want 200 on the same port", code, err)
	}
}

func TestBlackholeAcceptsButNeverAnswers(t *testing.T) {
	_, c, api, _ := start(t, "127.0.0.23")
	if err := c.SetState(context.Background(), Blackhole); err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", api.String(), time.Second)
	if err != nil {
		t.Fatalf("dial in blackhole: %v, want connected", err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
	err = tls.Client(conn, &tls.Config{InsecureSkipVerify: true}).Handshake() //nolint:gosec // test cert
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("handshake in blackhole: %v, want timeout", err)
	}
	if err := c.SetState(context.Background(), Serving); err != nil {
		t.Fatal(err)
	}
	if code, _, _, err := get(t, api, "/healthz"); err != nil || code != 200 {
		t.Errorf("GET /healthz after blackhole = %d %v, want 200", code, err)
	}
}

func TestBadControlCommand(t *testing.T) {
	_, c, _, _ := start(t, "127.0.0.24")
	err := c.post(context.Background(), "/fail-health/maybe")
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("fail-health/maybe: %v, want 400", err)
	}
}

func TestBindErrorIsReturned(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.25:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	taken := netip.MustParseAddrPort(ln.Addr().String())
	s := New(Options{Name: "cp1", HTTPS: []netip.AddrPort{taken}}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Fatalf("Run on a taken port: %v, want listen error", err)
	}
}
