//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"halb/test/lab"
)

// Issue 15: hooks run on events with the facts in their environment, and
// a hook that hangs or fails does not slow a failover: the kill -9
// outage stays within the bound the failover tests hold halb to.
func TestHooksDoNotDelayFailover(t *testing.T) {
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
	l, ctx := newLab(t, lab.Options{StartHalb: true, Mutate: func(_, y string) string { return y + hooks }}, true)
	holder, err := l.WaitStable(ctx, stableBound, l.LBNames()...)
	if err != nil {
		t.Fatal(err)
	}
	next, _ := failover(t, ctx, l, holder, func(n string) error { return l.StopHalb(n, syscall.SIGKILL) })

	want := fmt.Sprintf("vip_claimed %s %s", lab.VIP(), next)
	var got []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		got, _ = os.ReadFile(record)
		if strings.Contains(string(got), want) {
			break
		}
	}
	if !strings.Contains(string(got), want) {
		t.Fatalf("the hook did not record %q:\n%s", want, got)
	}

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
