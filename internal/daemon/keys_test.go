package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"halb/internal/admin"
	"halb/internal/config"
	"halb/internal/keyring"
	"halb/internal/vip/viptest"
	"halb/test/support"
)

var (
	oldKey = bytes.Repeat([]byte{'o'}, 32)
	newKey = bytes.Repeat([]byte{'n'}, 32)
)

// keyNode runs one encrypted-gossip node from a config file in dir, with
// keyringLine in its cluster section and more at the top level, and
// returns it with its admin client and a stop function. It logs to the
// test, and to also if set.
func keyNode(t *testing.T, dir, keyringLine, more string, also io.Writer) (*Daemon, *admin.Client, func()) {
	t.Helper()
	gossip := freePort(t, "127.0.0.63")
	doc := fmt.Sprintf(`
log: {connections: false}
frontends:
  - {name: api, bind: "127.0.0.1:%d", backend: cp}
backends:
  - name: cp
    servers: [{name: cp1, address: "127.0.0.1:1"}]
cluster:
  key_file: %s
  %s
  port: %d
  join_timeout: 100ms
  nodes:
    - {name: a, address: 127.0.0.63}
admin: {socket: %s, state_file: %s}
%s
`, freePort(t, "127.0.0.1"), filepath.Join(dir, "gossip.key"), keyringLine, gossip, filepath.Join(dir, "a.sock"), filepath.Join(dir, "state.json"), more)
	path := filepath.Join(dir, "halb.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := &testWriter{t: t, name: "a"}
	t.Cleanup(func() { tw.done.Store(true) })
	var w io.Writer = tw
	if also != nil {
		w = io.MultiWriter(tw, also)
	}
	d, err := New(cfg, Options{ConfigPath: path, NodeName: "a", Log: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Link: viptest.NewLink(), GARP: viptest.NewGARP()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	c := admin.Dial(filepath.Join(dir, "a.sock"))
	support.WaitUntil(t, 5*time.Second, func() bool {
		_, err := c.Status(context.Background())
		return err == nil
	}, "admin socket answers")
	return d, c, stop
}

func ids(kr admin.Keyring) []string {
	var out []string
	for _, k := range kr.Keys {
		id := k.ID
		if k.Primary {
			id += "*"
		}
		out = append(out, id)
	}
	return out
}

func apiStatus(err error) int {
	var ae *admin.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

func TestKeyRotationThroughTheAdminAPIIsKeptAcrossRestartAndReload(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gossip.key"), []byte(keyring.Encode(oldKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ringFile := filepath.Join(dir, "gossip.keyring")
	d, c, stop := keyNode(t, dir, "keyring_file: "+ringFile, "", nil)
	ctx := context.Background()
	oldID, newID := keyring.ID(oldKey), keyring.ID(newKey)

	kr, err := c.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{oldID + "*"}, ids(kr)); diff != "" {
		t.Fatalf("keys at start (-want +got):\n%s", diff)
	}

	// Bad input is refused with a clear status and message, and changes nothing.
	for _, tt := range []struct {
		name   string
		op     string
		req    admin.KeyRequest
		status int
		says   string
	}{
		{"malformed key", "install", admin.KeyRequest{Key: "c2VjcmV0"}, http.StatusBadRequest, "6 bytes, want 16, 24 or 32"},
		{"not base64", "install", admin.KeyRequest{Key: "hunter2!"}, http.StatusBadRequest, "not base64"},
		{"install by id", "install", admin.KeyRequest{ID: oldID}, http.StatusBadRequest, "install needs the key itself"},
		{"use an absent key", "use", admin.KeyRequest{Key: keyring.Encode(newKey)}, http.StatusNotFound, "install it first"},
		{"remove the primary", "remove", admin.KeyRequest{ID: oldID}, http.StatusConflict, "make another key primary first"},
		{"unknown op", "rotate", admin.KeyRequest{ID: oldID}, http.StatusNotFound, "want install, use or remove"},
	} {
		_, err := c.ChangeKey(ctx, tt.op, tt.req)
		if apiStatus(err) != tt.status || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%s: %v (status %d), want %d saying %q", tt.name, err, apiStatus(err), tt.status, tt.says)
		}
		if err != nil && (strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "c2VjcmV0")) {
			t.Errorf("%s: the error echoes the key text: %v", tt.name, err)
		}
	}
	if _, err := os.Stat(ringFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused changes wrote the keyring file: %v", err)
	}

	// The rotation: each step is in force and in the file at once.
	for _, step := range []struct {
		op   string
		req  admin.KeyRequest
		want []string
	}{
		{"install", admin.KeyRequest{Key: keyring.Encode(newKey)}, []string{oldID + "*", newID}},
		{"use", admin.KeyRequest{ID: newID}, []string{newID + "*", oldID}},
		{"remove", admin.KeyRequest{Key: keyring.Encode(oldKey)}, []string{newID + "*"}},
	} {
		kr, err := c.ChangeKey(ctx, step.op, step.req)
		if err != nil {
			t.Fatalf("%s: %v", step.op, err)
		}
		if diff := cmp.Diff(step.want, ids(kr)); diff != "" {
			t.Fatalf("after %s (-want +got):\n%s", step.op, diff)
		}
		if kr.File != ringFile {
			t.Fatalf("after %s: file %q, want %q", step.op, kr.File, ringFile)
		}
		onDisk, err := keyring.Read(ringFile)
		if err != nil {
			t.Fatal(err)
		}
		running, err := d.ctl.cluster.Keys()
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(onDisk, running) {
			t.Fatalf("after %s the file and the running keys differ", step.op)
		}
	}
	// A reload re-reads the config but leaves the running keys alone.
	if err := d.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if kr, _ := c.Keys(ctx); !cmp.Equal(ids(kr), []string{newID + "*"}) {
		t.Fatalf("keys after reload: %v", ids(kr))
	}
	stop()

	// A restart loads the keyring file, not the old key_file.
	_, c, _ = keyNode(t, dir, "keyring_file: "+ringFile, "", nil)
	kr, err = c.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{newID + "*"}, ids(kr)); diff != "" {
		t.Fatalf("keys after restart (-want +got):\n%s", diff)
	}
}

func TestKeyChangeWithoutKeyringFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gossip.key"), []byte(keyring.Encode(oldKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, c, _ := keyNode(t, dir, "", "", nil)
	_, err := c.ChangeKey(context.Background(), "install", admin.KeyRequest{Key: keyring.Encode(newKey)})
	if apiStatus(err) != http.StatusConflict || !strings.Contains(err.Error(), "cluster.keyring_file is not set") {
		t.Fatalf("install without keyring_file: %v, want 409 naming cluster.keyring_file", err)
	}
	kr, err := c.Keys(context.Background())
	if err != nil || len(kr.Keys) != 1 {
		t.Fatalf("keys after the refusal: %v, %v", ids(kr), err)
	}
}

func TestBrokenKeyringFileStopsStart(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gossip.key"), []byte(keyring.Encode(oldKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ring := filepath.Join(dir, "gossip.keyring")
	if err := os.WriteFile(ring, []byte(keyring.Encode(newKey)+"\nnot-a-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := pairConfig(t, "preempt")
	cfg.Cluster.InsecureGossip = false
	cfg.Cluster.KeyFile = filepath.Join(dir, "gossip.key")
	cfg.Cluster.KeyringFile = ring
	_, err := New(cfg, Options{NodeName: "a", Link: viptest.NewLink(), GARP: viptest.NewGARP()})
	if err == nil || !strings.Contains(err.Error(), "cluster.keyring_file") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("New with a broken keyring file: %v, want an error naming cluster.keyring_file and line 2", err)
	}
	if strings.Contains(err.Error(), "not-a-key") {
		t.Fatalf("the error echoes the file's text: %v", err)
	}
}

// withKey returns a copy of cfg whose gossip is encrypted with key.
func withKey(t *testing.T, cfg *config.Config, key []byte) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(path, []byte(keyring.Encode(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := *cfg
	cl := *cfg.Cluster
	cl.InsecureGossip, cl.KeyFile = false, path
	c.Cluster = &cl
	return &c
}

// A node started with a stale key, even the preferred one, takes no VIP,
// and the holder it cannot talk to keeps the VIP rather than leave the
// cluster without one.
func TestStaleKeyNodeTakesNothingAndHolderKeeps(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	b := startNode(t, withKey(t, cfg, newKey), "b")
	support.WaitUntil(t, 5*time.Second, b.holds, "b, alone, to hold the VIP")
	a := startNode(t, withKey(t, cfg, oldKey), "a")
	support.WaitUntil(t, 5*time.Second, func() bool {
		return len(a.d.ctl.cluster.Incompatible()) == 1 && len(b.d.ctl.cluster.Incompatible()) == 1
	}, "both to see the other answer with another key")
	support.Consistently(t, 5*reconcileEvery, func() bool { return !a.holds() && b.holds() },
		"b (holder) alone holds the VIP, not a (stale key)")
}
