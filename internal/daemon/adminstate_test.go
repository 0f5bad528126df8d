package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"halb/internal/admin"
	"halb/internal/config"
	"halb/internal/pool"
	"halb/test/support"
)

// twoBackends is a config whose control plane cp1 serves two backends on
// two ports, as a Talos node serves the Kubernetes and Talos APIs.
func twoBackends(t *testing.T, stateFile string) *config.Config {
	t.Helper()
	doc := fmt.Sprintf(`
log: {connections: false}
frontends:
  - {name: k8s, bind: "127.0.0.1:%d", backend: k8s}
  - {name: talos, bind: "127.0.0.1:%d", backend: talos}
backends:
  - name: k8s
    servers: [{name: cp1, address: "127.0.0.71:6443"}, {name: cp2, address: "127.0.0.72:6443"}]
  - name: talos
    servers: [{name: cp1, address: "127.0.0.71:50000"}, {name: cp2, address: "127.0.0.72:50000"}]
admin: {socket: /nonexistent/a.sock, state_file: %q}
`, freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"), stateFile)
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newTestDaemon(t *testing.T, cfg *config.Config, log *slog.Logger) *Daemon {
	t.Helper()
	d, err := New(cfg, Options{NodeName: "lb", Version: "test", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func adminOf(t *testing.T, d *Daemon, backend, server string) pool.AdminState {
	t.Helper()
	pools, _ := d.srv.parts()
	s, ok := pools[backend].Server(server)
	if !ok {
		t.Fatalf("no server %s/%s", backend, server)
	}
	return s.Admin()
}

func TestDrainFansOutToEveryBackendOnEveryNode(t *testing.T) {
	dir := t.TempDir()
	lb1 := newTestDaemon(t, twoBackends(t, filepath.Join(dir, "lb1.json")), slog.New(slog.DiscardHandler))
	lb2 := newTestDaemon(t, twoBackends(t, filepath.Join(dir, "lb2.json")), slog.New(slog.DiscardHandler))
	lb3down := errors.New("send to lb3: not a member")
	lb1.api.state.peers = func() []string { return []string{"lb2", "lb3"} }
	lb1.api.state.send = func(node string, msg []byte) error {
		if node == "lb2" {
			lb2.api.dispatch(msg) // what the gossip channel delivers
			return nil
		}
		return lb3down
	}

	out, err := lb1.api.SetServerEverywhere("cp1", admin.ActionDrain)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Local) != 2 || len(out.Peers) != 1 || out.Peers[0] != "lb2" || out.PeerErrors["lb3"] == "" {
		t.Fatalf("spread = %+v, want both backends here, lb2 told, lb3's error", out)
	}
	for _, d := range []*Daemon{lb1, lb2} {
		for _, b := range []string{"k8s", "talos"} {
			if got := adminOf(t, d, b, "cp1"); got != pool.Drain {
				t.Errorf("%s/cp1 = %s, want drain", b, got)
			}
			if got := adminOf(t, d, b, "cp2"); got != pool.Enabled {
				t.Errorf("%s/cp2 = %s, want enabled: only cp1 was named", b, got)
			}
		}
	}

	// By address without the port, and back: enable undoes it everywhere.
	if _, err := lb1.api.SetServerEverywhere("127.0.0.71", admin.ActionEnable); err != nil {
		t.Fatal(err)
	}
	if got := adminOf(t, lb2, "talos", "cp1"); got != pool.Enabled {
		t.Errorf("lb2 talos/cp1 after enable = %s", got)
	}
	if _, err := lb1.api.SetServerEverywhere("cp9", admin.ActionDrain); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("unknown server: %v, want ErrNotFound", err)
	}
}

func TestPeerRequestIsNotReplayed(t *testing.T) {
	dir := t.TempDir()
	lb1 := newTestDaemon(t, twoBackends(t, filepath.Join(dir, "lb1.json")), slog.New(slog.DiscardHandler))
	lb2 := newTestDaemon(t, twoBackends(t, filepath.Join(dir, "lb2.json")), slog.New(slog.DiscardHandler))
	var sent []byte
	lb1.api.state.peers = func() []string { return []string{"lb2"} }
	lb1.api.state.send = func(_ string, msg []byte) error { sent = msg; lb2.api.dispatch(msg); return nil }
	if _, err := lb1.api.SetServerEverywhere("cp1", admin.ActionDrain); err != nil {
		t.Fatal(err)
	}
	if err := lb2.api.SetServerAdmin("k8s", "cp1", admin.ActionEnable); err != nil {
		t.Fatal(err)
	}
	lb2.api.dispatch(sent) // a recorded request sent again
	if got := adminOf(t, lb2, "k8s", "cp1"); got != pool.Enabled {
		t.Fatalf("a replayed drain was applied: k8s/cp1 = %s", got)
	}
}

func TestAdminStatesSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	cfg := twoBackends(t, path)
	d := newTestDaemon(t, cfg, slog.New(slog.DiscardHandler))
	if _, err := d.api.SetServerEverywhere("cp1", admin.ActionDrain); err != nil {
		t.Fatal(err)
	}
	if err := d.api.SetServerAdmin("k8s", "cp2", admin.ActionDisable); err != nil {
		t.Fatal(err)
	}

	again := newTestDaemon(t, cfg, slog.New(slog.DiscardHandler))
	again.api.restore()
	for _, tt := range []struct {
		backend, server string
		want            pool.AdminState
	}{{"k8s", "cp1", pool.Drain}, {"talos", "cp1", pool.Drain}, {"k8s", "cp2", pool.Disabled}, {"talos", "cp2", pool.Enabled}} {
		if got := adminOf(t, again, tt.backend, tt.server); got != tt.want {
			t.Errorf("after restart %s/%s = %s, want %s", tt.backend, tt.server, got, tt.want)
		}
	}
}

func TestCorruptStateFileStartsWithDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"servers":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs support.Log
	d := newTestDaemon(t, twoBackends(t, path), slog.New(slog.NewTextHandler(&logs, nil)))
	d.api.restore()
	if got := adminOf(t, d, "k8s", "cp1"); got != pool.Enabled {
		t.Errorf("k8s/cp1 = %s, want enabled", got)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), path) || !strings.Contains(logs.String(), "corrupt") {
		t.Errorf("no warning naming the corrupt file:\n%s", logs.String())
	}
}
