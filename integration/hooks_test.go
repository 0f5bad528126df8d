//go:build integration

package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"halb/test/lab"
)

// Issue 15 acceptance: hooks run on events with the facts in their
// environment, and a hook that sleeps 30 s and one that exits 1 do not
// change failover times (kill -9 outages within noise of those without
// hooks). One lab run alternates kill -9 rounds where the
// node that takes over has no hooks with rounds where it has them, so
// both sets of figures share the machine's load of the moment; the hooked
// median must stay within hookNoise of the plain one.
func TestHooksDoNotDelayFailover(t *testing.T) {
	const (
		rounds = 10 // 5 without hooks, 5 with, alternating
		// hookNoise: the kill -9 outage on the lan profile varies by about
		// 40 ms between rounds with nothing changed (50 / 81 / 91 ms, min /
		// median / max, in docs/performance.md), and now and then one probe
		// attempt caught by the ARP switch fails after its 250 ms bound. A
		// median of five ignores two such rounds; 100 ms above the plain
		// median is more than the noise, while a hook the election waited
		// for would add seconds.
		hookNoise = 100 * time.Millisecond
	)
	record := filepath.Join(t.TempDir(), "events.log")
	hooks := fmt.Sprintf(`hooks:
  - on: [vip_claimed, vip_released]
    command: [/bin/sh, -c, 'echo "$HALB_EVENT $HALB_VIP $HALB_NODE" >> %s']
  - on: [vip_claimed]
    command: [/bin/false]
  - on: [vip_claimed, member_failed]
    command: [/bin/sleep, "30"]
    timeout: 40s
`, record)
	// Sticky: the VIP stays where it went, so the node restarted after a
	// round, with the next round's config, is the one that takes over.
	l, ctx := newLabFor(t, lab.Options{StartHalb: true, Policy: "sticky"}, true, 6*time.Minute)
	var plain, hooked []time.Duration
	var holder, next string
	for i := range rounds {
		withHooks := i%2 == 1
		var err error
		if holder, err = l.WaitStable(ctx, stableBound, l.LBNames()...); err != nil {
			t.Fatalf("round %d: %v", i+1, err)
		}
		claimed := fmt.Sprintf("vip_claimed %s %s", lab.VIP(), others(l, holder)[0])
		before := strings.Count(readFile(record), claimed)
		var out time.Duration
		next, out = failover(t, ctx, l, holder, func(n string) error {
			// Kill at a random moment within a heartbeat period (at most
			// 100 ms), so the rounds do not all land at the same phase.
			time.Sleep(rand.N(100 * time.Millisecond))
			return l.StopHalb(n, syscall.SIGKILL)
		})
		if withHooks {
			hooked = append(hooked, out)
			waitHookRecord(t, record, claimed, before)
		} else {
			plain = append(plain, out)
		}
		if i == rounds-1 {
			break
		}
		// The killed node comes back as the standby with the next round's config.
		edit := func(c string) string { return c }
		if !withHooks {
			edit = func(c string) string { return c + hooks }
		}
		if err := l.WriteConfig(ctx, holder, edit); err != nil {
			t.Fatal(err)
		}
		if err := l.StartHalb(ctx, holder); err != nil {
			t.Fatalf("round %d: restart %s: %v", i+1, holder, err)
		}
	}
	mp, mh := median(plain), median(hooked)
	t.Logf("kill -9 outage without hooks: median %s (%s); with a 30 s hook and a failing one: median %s (%s)",
		mp.Round(time.Millisecond), fmtDurations(plain), mh.Round(time.Millisecond), fmtDurations(hooked))
	if mh > mp+hookNoise {
		t.Errorf("hooks delayed failover: median outage %s with hooks, %s without (allowed noise %s)", mh, mp, hookNoise)
	}

	// The last round had hooks: its new holder streams what they saw.
	out, err := exec.CommandContext(ctx, env.halb, "events", "--since", "5m", "--no-follow", "--socket", l.AdminSocket(next)).CombinedOutput()
	if err != nil {
		t.Fatalf("halb events: %v\n%s", err, out)
	}
	for _, w := range []string{`"event":"vip_claimed"`, `"event":"member_failed"`, `"node":"` + holder + `"`} {
		if !strings.Contains(string(out), w) {
			t.Errorf("halb events on %s lacks %s:\n%s", next, w, out)
		}
	}
}

// waitHookRecord waits up to 5 s for the recording hook to have written
// line more than before times: hooks run after the claim, not before it.
func waitHookRecord(t *testing.T, record, line string, before int) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = readFile(record); strings.Count(got, line) > before {
			return
		}
	}
	t.Fatalf("the hook did not record %q:\n%s", line, got)
}

// readFile is path's contents, empty while it does not exist.
func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
