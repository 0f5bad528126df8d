package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"halb/test/support"
)

var newKey = bytes.Repeat([]byte{'n'}, 32)

// TestKeyRotationKeepsTheClusterAndRefusesTheOldKey rotates the key of a
// running pair as an operator would (install everywhere, use everywhere,
// remove everywhere): nobody leaves, gossip goes on under the new key, and
// a node that still has only the removed key is refused and logged.
func TestKeyRotationKeepsTheClusterAndRefusesTheOldKey(t *testing.T) {
	a, b, addrA, addrB := pair(t, "127.0.0.71", "127.0.0.72")
	steps := []struct {
		name string
		keys [][]byte
	}{
		{"install", [][]byte{testKey, newKey}},
		{"use", [][]byte{newKey, testKey}},
		{"remove", [][]byte{newKey}},
	}
	for _, s := range steps {
		for _, n := range []*node{a, b} {
			if err := n.c.SetKeys(s.keys); err != nil {
				t.Fatalf("%s on %s: %v", s.name, n.c.cfg.NodeName, err)
			}
			got, err := n.c.Keys()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(s.keys, got); diff != "" {
				t.Fatalf("%s on %s: keys (-want +got):\n%s", s.name, n.c.cfg.NodeName, diff)
			}
		}
		// Gossip goes on between every step: a state change still arrives.
		want := State{Priority: 1 + len(s.name), Eligible: true}
		a.c.SetLocal(want)
		waitFor(t, b.c, 3*time.Second, "lb2 sees lb1's state after "+s.name, func() bool {
			m, ok := member(b.c, "lb1")
			return ok && cmp.Equal(want, m.State, cmpopts.EquateEmpty())
		})
	}
	// Let a few probe rounds run under the new key alone.
	time.Sleep(time.Second) // nothing to await: the assertion is that nothing happens
	for _, n := range []*node{a, b} {
		if got := n.rec.Count(slog.LevelInfo, "peer left or failed"); got != 0 {
			t.Fatalf("%s saw its peer leave %d time(s) during the rotation", n.c.cfg.NodeName, got)
		}
		if got := n.rec.Count(slog.LevelWarn, "refused gossip"); got != 0 {
			t.Fatalf("%s refused gossip %d time(s) during the rotation", n.c.cfg.NodeName, got)
		}
	}

	// A node still on the removed key: it is refused, knows why, and the
	// refusing node names it once however often it retries.
	addrC := freePort(t, "127.0.0.73")
	c := start(t, nodeConfig("lb3", addrC, addrA, addrB))
	waitFor(t, c.c, 5*time.Second, "lb3's join attempts refused", func() bool {
		return c.rec.Count(slog.LevelDebug, "join peer failed") >= 3
	})
	if inc := c.c.Incompatible(); len(inc) != 2 {
		t.Fatalf("lb3 Incompatible() = %v, want both peers", inc)
	}
	if got := c.rec.Count(slog.LevelError, "cannot gossip with this node", "peer="+addrA.String()); got != 1 {
		t.Fatalf("lb3 logged %d errors naming lb1 as a peer it cannot gossip with, want 1", got)
	}
	// memberlist dials without binding its address, so on loopback lb3's
	// joins come from 127.0.0.1; the namespace lab checks the exact peer.
	waitFor(t, a.c, 5*time.Second, "lb1 refuses lb3 twice", func() bool { return a.c.refusals.handled() >= 2 })
	// A refusal is counted before it is logged, possibly on another
	// goroutine than the second one: wait for the warning itself.
	keyWarnings := func() int {
		return a.rec.Count(slog.LevelWarn, "refused gossip from a node with another gossip key", "peer=127.", "decrypt")
	}
	support.Eventually(5*time.Second, func() bool { return keyWarnings() >= 1 })
	if got := keyWarnings(); got != 1 {
		t.Fatalf("lb1 logged %d warnings naming lb3's address as refused, want exactly 1 (then counted)", got)
	}
	if got := a.rec.Count(slog.LevelDebug, "refused gossip"); got != 1 {
		t.Fatalf("lb1 logged %d refusals of lb3 in all, want 1 a minute", got)
	}
	if names := names(a.c.Members()); slices.Contains(names, "lb3") {
		t.Fatalf("lb1 lists lb3 (old key) as a member: %v", names)
	}
}

func TestSetKeysRefusesBadInput(t *testing.T) {
	c, err := New(nodeConfig("lb1", freePort(t, "127.0.0.74")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetKeys(nil); err == nil {
		t.Fatal("an empty keyring was accepted")
	}
	if err := c.SetKeys([][]byte{newKey, []byte("short")}); err == nil || !strings.Contains(err.Error(), "key 2") {
		t.Fatalf("a 5-byte key: %v, want an error naming key 2", err)
	}
	if got, _ := c.Keys(); !cmp.Equal(got, [][]byte{testKey}) {
		t.Fatalf("a refused change altered the keys: %d keys", len(got))
	}

	cfg := nodeConfig("lb1", freePort(t, "127.0.0.74"))
	cfg.Key, cfg.Insecure = nil, true
	ins, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ins.Keys(); !errors.Is(err, ErrInsecure) {
		t.Fatalf("Keys on insecure gossip: %v, want ErrInsecure", err)
	}
	cfg = nodeConfig("lb1", freePort(t, "127.0.0.74"))
	cfg.SecondaryKeys = [][]byte{[]byte("0123456789")}
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "secondary gossip key 1") {
		t.Fatalf("New with a 10-byte secondary key: %v", err)
	}
}

func TestRefusalLogNamesTheSenderOncePerMinute(t *testing.T) {
	rec := support.NewLog()
	now := time.Unix(1000, 0)
	var passed bytes.Buffer
	r := newRefusalLog(&passed, rec.Logger(), func() time.Time { return now })
	line := func(from string) string {
		return fmt.Sprintf("[ERR] memberlist: failed to receive: No installed keys could decrypt the message from=%s\n", from)
	}
	for i := range 3 {
		_, _ = r.Write([]byte(line(fmt.Sprintf("192.0.2.7:%d", 40000+i))))
	}
	_, _ = r.Write([]byte("[ERR] memberlist: Decrypt packet failed: No installed keys could decrypt the message from=[2001:db8::9]:7946\n"))
	_, _ = r.Write([]byte("[DEBUG] memberlist: Stream connection from=192.0.2.7:1\n"))
	// This node's own failed join names no sender: joinLoop reports it.
	_, _ = r.Write([]byte("[DEBUG] memberlist: Failed to join 192.0.2.8:7946: No installed keys could decrypt the message\n"))
	if got := rec.Count(slog.LevelWarn, "refused gossip", "peer=192.0.2.7", "failed to receive: No installed keys could decrypt the message"); got != 1 {
		t.Fatalf("%d warnings for 192.0.2.7, want 1", got)
	}
	// The next line logged counts what was not, from any sender.
	if got := rec.Count(slog.LevelWarn, "refused gossip", "peer=2001:db8::9", "suppressed=2"); got != 1 {
		t.Fatalf("%d warnings for the IPv6 sender counting the 2 repeats before it, want 1", got)
	}
	if got := rec.Count(slog.LevelDebug, "refused gossip"); got != 2 {
		t.Fatalf("%d refusal records in all, want 2: repeats within a minute are counted, not logged", got)
	}
	if got := r.handled(); got != 4 {
		t.Fatalf("%d refusals handled, want 4", got)
	}
	if rec.Count(slog.LevelDebug, "from=") != 0 {
		t.Fatal("the refusal repeats memberlist's from= text")
	}
	if got := passed.String(); !strings.Contains(got, "Stream connection") || !strings.Contains(got, "Failed to join") || strings.Contains(got, "failed to receive") {
		t.Fatalf("passed on %q, want only the lines without a refused sender", got)
	}
	now = now.Add(refusalEvery)
	_, _ = r.Write([]byte(line("192.0.2.7:1")))
	if got := rec.Count(slog.LevelWarn, "refused gossip", "peer=192.0.2.7"); got != 2 {
		t.Fatalf("%d warnings for 192.0.2.7 a minute later, want 2", got)
	}
}
