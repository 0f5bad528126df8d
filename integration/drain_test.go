//go:build integration

package integration

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"halb/internal/admin"
	"halb/test/lab"
)

// serverStates returns node's state of server in every backend.
func serverStates(ctx context.Context, t *testing.T, l *lab.Lab, node, server string) map[string]string {
	t.Helper()
	snap, err := l.Status(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range snap.Backends {
		for _, s := range b.Servers {
			if s.Name == server {
				out[b.Name] = s.State
			}
		}
	}
	return out
}

// waitDrained polls (bounded) until node shows server drained in every
// backend, as gossip delivers the request within milliseconds.
func waitDrained(ctx context.Context, t *testing.T, l *lab.Lab, node, server string, want bool) {
	t.Helper()
	var st map[string]string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		st = serverStates(ctx, t, l, node, server)
		ok := len(st) == 2
		for _, s := range st {
			ok = ok && (s == admin.StateDrain) == want
		}
		if ok {
			return
		}
	}
	t.Fatalf("%s: %s is %v, want drained=%v in both backends", node, server, st, want)
}

// Issue 15: `halb server drain cp1 --wait` on lb1 drains cp1 in every
// backend on lb2 too, and a restart of both nodes keeps it drained.
func TestClusterDrainSurvivesRestart(t *testing.T) {
	l, ctx := newLab(t, lab.Options{StartHalb: true}, true)
	if _, err := l.WaitStable(ctx, stableBound, l.LBNames()...); err != nil {
		t.Fatal(err)
	}
	cp := l.CPNames()[0]
	cmd := exec.CommandContext(ctx, env.halb, "server", "drain", cp, "--wait", "--timeout", "20s", "--socket", l.AdminSocket("lb1"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("halb server drain %s --wait: %v\n%s", cp, err, out)
	}
	for _, w := range []string{"k8s_controlplane/" + cp, "talos_controlplane/" + cp, "sent to lb2", "is idle on this node"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("drain output lacks %q:\n%s", w, out)
		}
	}
	waitDrained(ctx, t, l, "lb2", cp, true)

	for _, n := range l.LBNames() {
		if err := l.StopHalb(n, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range l.LBNames() {
		if err := l.StartHalb(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range l.LBNames() {
		waitDrained(ctx, t, l, n, cp, true)
	}

	cmd = exec.CommandContext(ctx, env.halb, "server", "enable", cp, "--socket", l.AdminSocket("lb2"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("halb server enable %s: %v\n%s", cp, err, out)
	}
	for _, n := range l.LBNames() {
		waitDrained(ctx, t, l, n, cp, false)
	}
}
