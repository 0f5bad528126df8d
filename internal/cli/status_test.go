package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/goleak"

	"halb/internal/admin"
	"halb/test/support"
)

// fakeDaemon serves a fixed snapshot and records actions; after
// cancelAfter snapshots it calls cancel (for --watch).
type fakeDaemon struct {
	mu          sync.Mutex
	snap        admin.Snapshot
	calls       int
	cancelAfter int
	cancel      context.CancelFunc
	actions     []string
}

func (f *fakeDaemon) Snapshot() admin.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.cancelAfter > 0 && f.calls == f.cancelAfter {
		f.cancel()
	}
	return f.snap
}

func (f *fakeDaemon) SetMaintenance(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, fmt.Sprintf("maintenance %v", on))
	return nil
}

func (f *fakeDaemon) SetServerAdmin(backend, server, state string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if backend != "kubernetes" || server != "cp1" {
		return fmt.Errorf("backend %q has no server %q: %w", backend, server, admin.ErrNotFound)
	}
	f.actions = append(f.actions, state+" "+backend+"/"+server)
	return nil
}

func snapshot(splitBrain bool) admin.Snapshot {
	const vip = "192.168.66.160"
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	lb2Holds, lb2View := []string{}, "lb1"
	if splitBrain {
		lb2Holds, lb2View = []string{vip}, "lb2"
	}
	return admin.Snapshot{
		Node: admin.NodeInfo{Name: "lb1", Version: "v0.1.0", Uptime: 60, Fingerprint: "abc"},
		Members: []admin.Member{
			{Name: "lb1", Local: true, Alive: true, Eligible: true, Holds: []string{vip}, HolderView: map[string]string{vip: "lb1"}, Fingerprint: "abc"},
			{Name: "lb2", Alive: true, Eligible: true, Holds: lb2Holds, HolderView: map[string]string{vip: lb2View}, Fingerprint: "abc"},
		},
		VIPs:      []admin.VIP{{Address: vip, Holder: "lb1", HeldHere: true}},
		Frontends: []admin.Frontend{{Name: "kubernetes", Bind: vip + ":6443", Backend: "kubernetes"}},
		Backends: []admin.Backend{{Name: "kubernetes", Healthy: true, Servers: []admin.BackendServer{
			{Name: "cp1", Address: "192.168.66.161:6443", State: admin.StateUp, LastCheck: "HTTP 200", LastCheckOK: true},
		}}},
		Time: now,
	}
}

// checkLeaks fails the test if goroutines it started outlive it; it runs
// after the test's other cleanups, which stop the servers.
func checkLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// serve runs an admin API backed by d on a fresh socket until the test ends.
func serve(t *testing.T, d interface {
	admin.Source
	admin.Controller
}) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ha")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "admin.sock")
	t.Cleanup(func() { _ = os.RemoveAll(dir) }) // after the server stops: cleanups run last first
	support.Go(t, admin.NewServer(sock, "", d, d, nil).Run)
	// Run has no ready signal: poll for the socket file.
	support.WaitUntil(t, 5*time.Second, func() bool { _, err := os.Stat(sock); return err == nil }, "the admin socket to appear")
	return sock
}

// run executes cmd with args and returns stdout, stderr and exit status
// as Main would compute it.
func run(ctx context.Context, cmd *cobra.Command, args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(ctx)
	code := 0
	var ee exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case err != nil:
		errOut.WriteString(err.Error())
		code = 1
	}
	return out.String(), errOut.String(), code
}

func TestStatusCommand(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()

	healthy := serve(t, &fakeDaemon{snap: snapshot(false)})
	out, _, code := run(ctx, newStatusCmd(), "--socket", healthy)
	if code != 0 || !strings.Contains(out, "OK: one agreed holder per VIP") || strings.Contains(out, "\x1b") {
		t.Errorf("healthy: exit %d, output:\n%s", code, out)
	}

	lost := snapshot(false)
	lost.Members[1].Maintenance = true
	degraded := serve(t, &fakeDaemon{snap: lost})
	out, _, code = run(ctx, newStatusCmd(), "--socket", degraded)
	if code != 1 {
		t.Errorf("peer in maintenance: exit %d, want 1 (WARNING)", code)
	}
	for _, want := range []string{"DEGRADED: 1 problem(s), redundancy lost", "  - member lb2 is in maintenance"} {
		if !strings.Contains(out, want) {
			t.Errorf("peer in maintenance: output lacks %q:\n%s", want, out)
		}
	}

	split := serve(t, &fakeDaemon{snap: snapshot(true)})
	out, _, code = run(ctx, newStatusCmd(), "--socket", split)
	if code != 2 {
		t.Errorf("split brain: exit %d, want 2 (CRITICAL)", code)
	}
	for _, want := range []string{
		"DISAGREES", "FAIL: 1 failure(s) clients see, 2 problem(s) in all",
		"  - FAIL: VIP 192.168.66.160: held by 2 members at once: lb1, lb2",
		"  - VIP 192.168.66.160: members disagree on the holder: lb1 says lb1, lb2 says lb2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("split brain output lacks %q:\n%s", want, out)
		}
	}

	out, errOut, code := run(ctx, newStatusCmd(), "--socket", split, "-o", "json")
	var s admin.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Errorf("-o json: stdout is not a status: %v\n%s", err, out)
	}
	if code != 2 || s.Node.Name != "lb1" || s.Verdict != admin.LevelFail || s.Code != 2 || len(s.Problems) != 2 ||
		!strings.Contains(errOut, "halb: degraded: VIP 192.168.66.160: members disagree") ||
		!strings.Contains(errOut, "halb: fail: VIP 192.168.66.160: held by 2") {
		t.Errorf("-o json: exit %d node %q verdict %v stderr %q", code, s.Node.Name, s.Verdict, errOut)
	}

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no daemon", []string{"--socket", filepath.Join(filepath.Dir(split), "nope.sock")}, "is halb running?"},
		{"bad -o", []string{"--socket", healthy, "-o", "yaml"}, `status: -o "yaml": want text or json`},
		{"unknown flag", []string{"--sockett", healthy}, "unknown flag: --sockett"},
		{"an argument", []string{"--socket", healthy, "lb1"}, "status: takes no arguments, got 1: lb1"},
	} {
		_, errOut, code = run(ctx, newStatusCmd(), tt.args...)
		if code != admin.CodeUnreachable || !strings.Contains(errOut, tt.want) {
			t.Errorf("%s: exit %d, want 3 (UNKNOWN); stderr %q, want %q", tt.name, code, errOut, tt.want)
		}
	}
}

func TestStatusWatch(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &fakeDaemon{snap: snapshot(false), cancelAfter: 3, cancel: cancel}
	sock := serve(t, d)
	out, _, code := run(ctx, newStatusCmd(), "--socket", sock, "--watch", "--interval", "100ms")
	if n := strings.Count(out, "OK: one agreed holder"); n < 2 {
		t.Errorf("watch printed %d refreshes before cancel, want at least 2:\n%s", n, out)
	}
	if strings.Contains(out, "\x1b[2J") {
		t.Error("watch cleared the screen of a non-terminal")
	}
	if code != 0 {
		t.Errorf("exit %d, want that of the last refresh (0)", code)
	}
	if ctx.Err() == nil || !errors.Is(context.Cause(ctx), context.Canceled) {
		t.Errorf("watch returned before it was cancelled: %v", ctx.Err())
	}
}

func TestServerAndNodeCommands(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	d := &fakeDaemon{snap: snapshot(false)}
	sock := serve(t, d)

	out, _, code := run(ctx, newServerCmd(), "drain", "kubernetes/cp1", "--socket", sock)
	if code != 0 || !strings.Contains(out, "kubernetes/cp1: draining") {
		t.Errorf("drain: exit %d, output %q", code, out)
	}
	_, errOut, code := run(ctx, newServerCmd(), "disable", "kubernetes/cp9", "--socket", sock)
	if code != 1 || !strings.Contains(errOut, `backend "kubernetes" has no server "cp9"`) {
		t.Errorf("unknown server: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = run(ctx, newServerCmd(), "enable", "kubernetes/", "--socket", sock)
	if code != 1 || !strings.Contains(errOut, "want NAME, ADDRESS or BACKEND/SERVER") {
		t.Errorf("no backend: exit %d, stderr %q", code, errOut)
	}
	out, _, code = run(ctx, newNodeCmd(), "maintenance", "on", "--socket", sock)
	if code != 0 || !strings.Contains(out, "maintenance on") {
		t.Errorf("maintenance on: exit %d, output %q", code, out)
	}
	_, errOut, code = run(ctx, newNodeCmd(), "maintenance", "maybe", "--socket", sock)
	if code != 1 || !strings.Contains(errOut, "want on or off") {
		t.Errorf("maintenance maybe: exit %d, stderr %q", code, errOut)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if got, want := strings.Join(d.actions, "; "), "drain kubernetes/cp1; maintenance true"; got != want {
		t.Errorf("actions = %q, want %q", got, want)
	}
}
