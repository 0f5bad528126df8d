//go:build integration

package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"halb/internal/keyring"
	"halb/internal/probe"
	"halb/test/lab"
)

// withKeyring gives each node its own cluster.keyring_file next to the
// lab's shared key file.
func withKeyring(node, yaml string) string {
	m := regexp.MustCompile(`(?m)^  key_file: (.*)$`).FindStringSubmatch(yaml)
	if m == nil {
		return yaml
	}
	ring := filepath.Join(filepath.Dir(m[1]), node+".keyring")
	return strings.Replace(yaml, m[0], m[0]+"\n  keyring_file: "+ring, 1)
}

// halbKeys runs `halb keys ARGS` against node's admin socket.
func halbKeys(t *testing.T, ctx context.Context, l *lab.Lab, node string, args ...string) string {
	t.Helper()
	args = append(append([]string{"keys"}, args...), "--socket", l.AdminSocket(node))
	out, err := exec.CommandContext(ctx, env.halb, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("halb %s on %s: %v\n%s", strings.Join(args, " "), node, err, out)
	}
	return string(out)
}

func keyID(t *testing.T, path string) string {
	t.Helper()
	keys, err := keyring.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return keyring.ID(keys[0])
}

// Issue 8: the gossip key is rotated on both nodes with a client probing
// the VIP: no VIP move, no failed connection, the cluster stays joined. A
// restarted node keeps the new key; a node started with only the removed
// key is refused by the other, logged on both sides, and takes no VIP.
func TestKeyRotation(t *testing.T) {
	l, ctx := newLab(t, lab.Options{StartHalb: true, Mutate: withKeyring}, true)
	if _, err := l.WaitStable(ctx, stableBound, "lb1", "lb2"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitHolder(ctx, 5*time.Second, lab.Only("lb1")); err != nil {
		t.Fatal(err)
	}
	before, err := l.Status(ctx, "lb1")
	if err != nil {
		t.Fatal(err)
	}
	newKey := filepath.Join(l.WorkDir(), "new.key")
	if err := l.Keygen(ctx, newKey); err != nil {
		t.Fatal(err)
	}
	oldID, newID := keyID(t, l.KeyFile()), keyID(t, newKey)

	pr, err := l.StartProbe(ctx, vipAPI, probe.ModeTCP, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	stopProbe := func() probe.Report {
		t.Helper()
		r, err := pr.Stop()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	t0 := time.Now()
	for _, step := range [][]string{
		{"install", "--key-file", newKey},
		{"use", newID},
		{"remove", oldID},
	} {
		for _, n := range []string{"lb1", "lb2"} {
			halbKeys(t, ctx, l, n, step...)
		}
		if _, err := l.WaitStable(ctx, 2*time.Second, "lb1", "lb2"); err != nil {
			stopProbe()
			t.Fatalf("after %s on both nodes: %v", step[0], err)
		}
	}
	t.Logf("rotated the gossip key on both nodes in %s", time.Since(t0).Round(time.Millisecond))
	for _, n := range []string{"lb1", "lb2"} {
		list := halbKeys(t, ctx, l, n, "list")
		if !strings.Contains(list, newID+"  yes") || strings.Contains(list, oldID) {
			t.Errorf("%s keys after the rotation:\n%s", n, list)
		}
	}
	// Some gossip rounds under the new key alone, then check nothing moved.
	holdsNot(t, ctx, l, 2*time.Second, "lb2")
	after, err := l.Status(ctx, "lb1")
	if err != nil {
		t.Fatal(err)
	}
	if after.VIPs[0].Transitions != before.VIPs[0].Transitions || !after.VIPs[0].HeldHere {
		t.Errorf("the VIP moved during the rotation: lb1 transitions %d -> %d, holds %v",
			before.VIPs[0].Transitions, after.VIPs[0].Transitions, after.VIPs[0].HeldHere)
	}
	for _, n := range []string{"lb1", "lb2"} {
		for _, bad := range []string{"peer left or failed", "refused gossip", "cannot gossip"} {
			if strings.Contains(l.Log(n), bad) {
				t.Errorf("%s logged %q during the rotation:\n%s", n, bad, l.LogTail(n, 20))
			}
		}
	}

	// A restart of lb2 loads its keyring file (key_file still holds the
	// old key) and rejoins.
	if err := l.StopHalb("lb2", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := l.StartHalb(ctx, "lb2"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitStable(ctx, stableBound, "lb1", "lb2"); err != nil {
		t.Fatalf("lb2 restarted with the new key: %v", err)
	}
	if !strings.Contains(l.Log("lb2"), "lb2.keyring") {
		t.Errorf("lb2 did not say it loaded its keyring file:\n%s", l.LogTail("lb2", 20))
	}

	// lb2 again, now with only the old, removed key: refused, and it must
	// not take the VIP from lb1.
	if err := l.StopHalb("lb2", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(l.WorkDir(), "lb2.keyring")); err != nil {
		t.Fatal(err)
	}
	if err := l.StartHalb(ctx, "lb2"); err != nil {
		t.Fatal(err)
	}
	holdsNot(t, ctx, l, 5*time.Second, "lb2")
	lb1Log, lb2Log := l.Log("lb1"), l.Log("lb2")
	// lb1 says lb2 has another key, either when it refuses lb2's gossip or
	// when its own join of lb2 cannot be read; which comes first depends on
	// who dials whom first.
	refused := regexp.MustCompile(`(level=WARN msg="refused gossip from a node with another gossip key[^"]*" component=cluster peer=` +
		regexp.QuoteMeta(lab.LBAddr(2).String()) + ` )|(msg="peer answers but cannot gossip with this node[^"]*" component=cluster peer=` +
		regexp.QuoteMeta(lab.LBAddr(2).String()) + `:)`)
	if !refused.MatchString(lb1Log) {
		t.Errorf("lb1 did not log the refusal of lb2 (%s):\n%s", lab.LBAddr(2), l.LogTail("lb1", 20))
	}
	if !strings.Contains(lb2Log, "cannot gossip with this node") || !strings.Contains(lb2Log, "peer="+lab.LBAddr(1).String()) {
		t.Errorf("lb2 did not log that lb1 answers with another key:\n%s", l.LogTail("lb2", 20))
	}
	s, err := l.Status(ctx, "lb1")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range s.Members {
		if m.Name == "lb2" && m.Alive {
			t.Errorf("lb1 lists lb2 (old key) as an alive member")
		}
	}
	r := stopProbe()
	t.Logf("probe through the rotation, the restart and the refused node: %v", r)
	if r.Failures != 0 || r.Successes == 0 {
		t.Errorf("%d of %d connections through the VIP failed, want 0%s", r.Failures, r.Attempts, failures(r))
	}
}
