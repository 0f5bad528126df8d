package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type fakeSource struct{ snap Snapshot }

func (f *fakeSource) Snapshot() Snapshot { return f.snap }

type serverCall struct{ backend, server, state string }

type fakeController struct {
	mu          sync.Mutex
	maintenance []bool
	servers     []serverCall
}

func (f *fakeController) SetMaintenance(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maintenance = append(f.maintenance, on)
	return nil
}

func (f *fakeController) SetServerAdmin(backend, server, state string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if backend != "kubernetes" || !strings.HasPrefix(server, "talos-lon-cp0") {
		return fmt.Errorf("backend %q has no server %q: %w", backend, server, ErrNotFound)
	}
	f.servers = append(f.servers, serverCall{backend, server, state})
	return nil
}

// shortDir returns a fresh directory whose paths fit a unix socket's
// 108-byte limit, which t.TempDir's long names can exceed.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ha")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

type running struct {
	sock   string
	ctl    *fakeController
	cancel context.CancelFunc
	done   chan error

	once   sync.Once
	result error
}

// stop cancels Run and returns its result; later calls return it again.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.result = <-r.done:
		case <-time.After(10 * time.Second):
			r.result = errors.New("run did not return within 10s of cancel")
		}
	})
	return r.result
}

// start runs a server on sock and waits until it answers.
func start(t *testing.T, sock, group string, snap Snapshot) *running {
	t.Helper()
	return startLogging(t, sock, group, snap, nil)
}

// startLogging is start with the server logging to log.
func startLogging(t *testing.T, sock, group string, snap Snapshot, log *slog.Logger) *running {
	t.Helper()
	ctl := &fakeController{}
	srv := NewServer(sock, group, &fakeSource{snap: snap}, ctl, log)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sock: sock, ctl: ctl, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(t); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			_ = c.Close()
			return r
		}
		select {
		case err := <-r.done:
			r.done <- err // for stop
			t.Fatalf("Run ended before serving: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin socket %s never answered: %v", sock, err)
		}
	}
}

// raw sends one request over the socket and returns status and body.
func raw(t *testing.T, sock, method, path, body string) (int, []byte) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}, Timeout: 5 * time.Second}
	req, err := http.NewRequest(method, "http://halb"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return resp.StatusCode, b
}

func TestStatusRoundTrip(t *testing.T) {
	want := splitBrain()
	r := start(t, filepath.Join(shortDir(t), "admin.sock"), "", want)
	got, err := Dial(r.sock).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("snapshot (-sent +received):\n%s", diff)
	}
}

func TestSectionEndpoints(t *testing.T) {
	snap := healthyPair()
	r := start(t, filepath.Join(shortDir(t), "admin.sock"), "", snap)
	check := func(path string, into, want any) {
		t.Helper()
		code, body := raw(t, r.sock, http.MethodGet, path, "")
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		if err := json.Unmarshal(body, into); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if diff := cmp.Diff(want, into); diff != "" {
			t.Errorf("GET %s (-want +got):\n%s", path, diff)
		}
	}
	check("/v1/node", &NodeInfo{}, &snap.Node)
	check("/v1/members", &[]Member{}, &snap.Members)
	check("/v1/vips", &[]VIP{}, &snap.VIPs)
	check("/v1/frontends", &[]Frontend{}, &snap.Frontends)
	check("/v1/backends", &[]Backend{}, &snap.Backends)

	// The wire names are the API: spot-check a few.
	_, body := raw(t, r.sock, http.MethodGet, "/v1/status", "")
	for _, key := range []string{`"holder_view"`, `"held_here"`, `"last_garp"`, `"uptime_seconds"`, `"check_latency_ms"`, `"connect_failures"`} {
		if !bytes.Contains(body, []byte(key)) {
			t.Errorf("status JSON lacks %s", key)
		}
	}
}

func TestEmptySectionsAreArraysWithTime(t *testing.T) {
	r := start(t, filepath.Join(shortDir(t), "admin.sock"), "", Snapshot{Node: NodeInfo{Name: "lb1"}})
	_, body := raw(t, r.sock, http.MethodGet, "/v1/status", "")
	for _, key := range []string{`"members": []`, `"vips": []`, `"frontends": []`, `"backends": []`, `"roles": []`} {
		if !bytes.Contains(body, []byte(key)) {
			t.Errorf("status JSON lacks %s:\n%s", key, body)
		}
	}
	var s Snapshot
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatal(err)
	}
	if s.Time.IsZero() {
		t.Error("snapshot has no time")
	}
}

func TestActionsReachController(t *testing.T) {
	r := start(t, filepath.Join(shortDir(t), "admin.sock"), "", healthyPair())
	c := Dial(r.sock)
	ctx := context.Background()
	if err := c.SetMaintenance(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := c.SetMaintenance(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := c.SetServerAdmin(ctx, "kubernetes", "talos-lon-cp02", ActionDrain); err != nil {
		t.Fatal(err)
	}
	if err := c.SetServerAdmin(ctx, "kubernetes", "talos-lon-cp03", ActionDisable); err != nil {
		t.Fatal(err)
	}
	r.ctl.mu.Lock()
	defer r.ctl.mu.Unlock()
	if diff := cmp.Diff([]bool{true, false}, r.ctl.maintenance); diff != "" {
		t.Errorf("maintenance calls (-want +got):\n%s", diff)
	}
	want := []serverCall{{"kubernetes", "talos-lon-cp02", "drain"}, {"kubernetes", "talos-lon-cp03", "disable"}}
	if diff := cmp.Diff(want, r.ctl.servers, cmp.AllowUnexported(serverCall{})); diff != "" {
		t.Errorf("server calls (-want +got):\n%s", diff)
	}
}

func TestUnknownServerIs404WithMessage(t *testing.T) {
	r := start(t, filepath.Join(shortDir(t), "admin.sock"), "", healthyPair())
	err := Dial(r.sock).SetServerAdmin(context.Background(), "kubernetes", "nope", ActionDrain)
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want *APIError", err)
	}
	if ae.Status != http.StatusNotFound || ae.Message != `backend "kubernetes" has no server "nope": not found` {
		t.Errorf("got %d %q", ae.Status, ae.Message)
	}
}

func TestBadRequests(t *testing.T) {
	r := start(t, filepath.Join(shortDir(t), "admin.sock"), "", healthyPair())
	tests := []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"bad JSON", "POST", "/v1/maintenance", `{"on":`, 400, "decode request"},
		{"unknown field", "POST", "/v1/maintenance", `{"on":true,"force":true}`, 400, `unknown field "force"`},
		{"missing field", "POST", "/v1/maintenance", `{}`, 400, `"on"`},
		{"empty body", "POST", "/v1/maintenance", ``, 400, "empty body"},
		{"two values", "POST", "/v1/maintenance", `{"on":true}{"on":false}`, 400, "more than one"},
		{"wrong type", "POST", "/v1/maintenance", `{"on":"yes"}`, 400, "decode request"},
		{"bad state", "POST", "/v1/servers/kubernetes/talos-lon-cp01", `{"state":"up"}`, 400, `state "up"`},
		{"unknown field on server", "POST", "/v1/servers/kubernetes/talos-lon-cp01", `{"state":"drain","x":1}`, 400, `unknown field "x"`},
		{"too large", "POST", "/v1/maintenance", `{"on":true,"pad":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "over 65536 bytes"},
		{"wrong method", "GET", "/v1/maintenance", "", 405, "use POST"},
		{"wrong method on status", "POST", "/v1/status", "", 405, "use GET"},
		{"wrong method on reload", "GET", "/v1/reload", "", 405, "use POST"},
		{"wrong method on drill", "PUT", "/v1/drill", "", 405, "use POST, DELETE"},
		{"wrong method on a server", "DELETE", "/v1/servers/kubernetes/talos-lon-cp01", "", 405, "use POST"},
		{"no such endpoint", "GET", "/v2/status", "", 404, "no such endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := raw(t, r.sock, tt.method, tt.path, tt.body)
			var eb errorBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("error body is not JSON: %q", body)
			}
			if code != tt.code || !strings.Contains(eb.Error, tt.msg) {
				t.Errorf("got %d %q, want %d containing %q", code, eb.Error, tt.code, tt.msg)
			}
		})
	}
	r.ctl.mu.Lock()
	defer r.ctl.mu.Unlock()
	if len(r.ctl.maintenance)+len(r.ctl.servers) != 0 {
		t.Errorf("bad requests reached the controller: %v %v", r.ctl.maintenance, r.ctl.servers)
	}
}

func TestSocketFileLifecycle(t *testing.T) {
	dir := filepath.Join(shortDir(t), "run", "halb") // missing: Run creates it
	sock := filepath.Join(dir, "admin.sock")
	r := start(t, sock, "", healthyPair())

	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o755 {
		t.Errorf("socket directory mode %v, want 0755", di.Mode().Perm())
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want a socket with 0660", fi.Mode())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("socket directory holds %d entries, want only the socket", len(entries))
	}

	if err := r.stop(t); err != nil {
		t.Errorf("Run returned %v on cancel, want nil", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after stop: %v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	sock := filepath.Join(shortDir(t), "admin.sock")
	// A crashed halb leaves its socket file behind with no listener.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	r := start(t, sock, "", healthyPair())
	if _, err := Dial(r.sock).Status(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestLiveSocketIsRefused(t *testing.T) {
	sock := filepath.Join(shortDir(t), "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	err = NewServer(sock, "", &fakeSource{}, &fakeController{}, nil).Run(context.Background())
	if err == nil || err.Error() != "another halb is running on "+sock {
		t.Fatalf("Run = %v, want another halb is running", err)
	}
	// The running one keeps its socket.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("live socket was disturbed: %v", err)
	}
	_ = c.Close()
}

func TestNonSocketIsNotRemoved(t *testing.T) {
	sock := filepath.Join(shortDir(t), "admin.sock")
	if err := os.WriteFile(sock, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := NewServer(sock, "", &fakeSource{}, &fakeController{}, nil).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("Run = %v, want not a socket", err)
	}
	if b, err := os.ReadFile(sock); err != nil || string(b) != "precious" {
		t.Errorf("file was touched: %q %v", b, err)
	}
}

func TestSocketGroup(t *testing.T) {
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Skipf("own group has no name: %v", err)
	}
	sock := filepath.Join(shortDir(t), "admin.sock")
	start(t, sock, g.Name, healthyPair())
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if gid := statGID(t, fi); gid != os.Getgid() {
		t.Errorf("socket group %d, want %d", gid, os.Getgid())
	}
}

func TestUnknownGroupIsNamed(t *testing.T) {
	sock := filepath.Join(shortDir(t), "admin.sock")
	err := NewServer(sock, "no-such-group-halb", &fakeSource{}, &fakeController{}, nil).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `"no-such-group-halb"`) {
		t.Fatalf("Run = %v, want an error naming the group", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket created despite the error: %v", err)
	}
}

func TestClientExplainsNoDaemon(t *testing.T) {
	sock := filepath.Join(shortDir(t), "admin.sock")
	_, err := Dial(sock).Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "is halb running? (socket "+sock) {
		t.Fatalf("err = %v, want it to ask whether halb is running", err)
	}
}
