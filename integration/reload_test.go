//go:build integration

package integration

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"halb/internal/probe"
	"halb/test/lab"
)

// reloadAll rewrites every LB's config with edit and runs `halb reload`
// on each; it returns the combined output and the last exit code.
func reloadAll(t *testing.T, ctx context.Context, l *lab.Lab, edit func(string) string) {
	t.Helper()
	for _, n := range l.LBNames() {
		if err := l.WriteConfig(ctx, n, edit); err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(ctx, env.halb, "reload", "--socket", l.AdminSocket(n)).CombinedOutput()
		if err != nil {
			t.Fatalf("halb reload on %s: %v\n%s", n, err, out)
		}
	}
}

func serverCount(t *testing.T, ctx context.Context, l *lab.Lab, node, backend string) int {
	t.Helper()
	s, err := l.Status(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range s.Backends {
		if b.Name == backend {
			return len(b.Servers)
		}
	}
	return -1
}

// Issue 5: reload removes and adds a server without moving the VIP,
// changes a priority (the VIP moves per policy, make before break), and a
// bad file leaves everything as it was.
func TestReload(t *testing.T) {
	l, ctx := newLab(t, lab.Options{StartHalb: true, PreemptDelay: 2 * time.Second}, true)
	if _, err := l.WaitStable(ctx, stableBound, l.LBNames()...); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitHolder(ctx, 5*time.Second, lab.Only("lb1")); err != nil {
		t.Fatal(err)
	}
	cp3 := "      - name: cp3\n        address: 192.168.66.163:6443\n"
	if !strings.Contains(l.Config(), cp3) {
		t.Fatalf("lab config has no %q", cp3)
	}
	pr, err := l.StartProbe(ctx, vipAPI, probe.ModeTCP, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	reloadAll(t, ctx, l, func(c string) string { return strings.Replace(c, cp3, "", 1) })
	if n := serverCount(t, ctx, l, "lb1", "k8s_controlplane"); n != 2 {
		t.Errorf("after removing cp3, lb1 has %d k8s servers, want 2", n)
	}
	if n := serverCount(t, ctx, l, "lb1", "talos_controlplane"); n != 3 {
		t.Errorf("the talos backend lost servers: %d, want 3", n)
	}
	reloadAll(t, ctx, l, nil) // cp3 back
	if n := serverCount(t, ctx, l, "lb1", "k8s_controlplane"); n != 3 {
		t.Errorf("after adding cp3 back, %d k8s servers, want 3", n)
	}
	holdsNot(t, ctx, l, time.Second, "lb2") // no election change: the VIP stays

	// lb2 now outranks lb1: with preempt it takes over after the delay.
	reloadAll(t, ctx, l, func(c string) string {
		return strings.Replace(c, "priority: 100", "priority: 300", 1)
	})
	if _, err := l.WaitHolder(ctx, 10*time.Second, lab.Only("lb2")); err != nil {
		_, _ = pr.Stop()
		t.Fatalf("after raising lb2's priority: %v", err)
	}
	r, err := pr.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reloads and the priority handover: %v", r)
	if r.Failures != 0 {
		t.Errorf("%d new connections failed during reloads, want 0%s", r.Failures, failures(r))
	}

	// A broken file: refused, exit 1, nothing changes.
	before, err := l.Status(ctx, "lb2")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.ConfigFile("lb2"), []byte("frontends: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, env.halb, "reload", "--socket", l.AdminSocket("lb2")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "reload refused") {
		t.Fatalf("bad reload: %v\n%s", err, out)
	}
	after, err := l.Status(ctx, "lb2")
	if err != nil {
		t.Fatal(err)
	}
	if after.Node.Fingerprint != before.Node.Fingerprint || !after.VIPs[0].HeldHere {
		t.Errorf("a refused reload changed lb2: fingerprint %s -> %s, holds %v", before.Node.Fingerprint, after.Node.Fingerprint, after.VIPs[0].HeldHere)
	}
	reach(t, ctx, l, 300*time.Millisecond)
}
