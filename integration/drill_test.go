//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"halb/internal/cli"
	"halb/test/lab"
)

// drill runs the real `halb drill -o json` on node, inside its namespace.
func drill(t *testing.T, ctx context.Context, l *lab.Lab, node string, args ...string) (cli.DrillReport, int) {
	t.Helper()
	argv := append([]string{"netns", "exec", l.NS(node), env.halb, "drill", "--socket", l.AdminSocket(node), "-o", "json"}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("halb drill: %v", err)
	}
	var r cli.DrillReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("halb drill printed no report (exit %d): %v\n%s%s", code, err, out, stderr.String())
	}
	return r, code
}

// Issue 5: a planned drill moves the VIP make-before-break: 0 failed
// probes, and the client keeps reaching it.
func TestPlannedDrill(t *testing.T) {
	l, ctx := newLab(t, lab.Options{StartHalb: true}, true)
	holder, err := l.WaitStable(ctx, stableBound, l.LBNames()...)
	if err != nil {
		t.Fatal(err)
	}
	other := others(l, holder)[0]
	r, code := drill(t, ctx, l, other, "--back")
	t.Logf("planned drill %s -> %s: outage %s, %d failed; back: %+v", r.From, r.To, r.Outage, r.Failed, r.Back)
	if code != 0 || !r.Pass || r.Failed != 0 || r.From != holder || r.To != other {
		t.Fatalf("planned drill: exit %d, report %+v", code, r)
	}
	if r.Back == nil || !r.Back.Pass || r.Back.Failed != 0 {
		t.Fatalf("move back: %+v", r.Back)
	}
	if _, err := l.WaitHolder(ctx, 5*time.Second, lab.Only(holder)); err != nil {
		t.Fatalf("after --back: %v", err)
	}
	reach(t, ctx, l, 300*time.Millisecond)
}

// Issue 5: a hard drill silences the holder as if it crashed; the VIP
// moves within the failure-detection budget and the report shows the
// detection separately.
func TestHardDrill(t *testing.T) {
	l, ctx := newLab(t, lab.Options{StartHalb: true}, true)
	holder, err := l.WaitStable(ctx, stableBound, l.LBNames()...)
	if err != nil {
		t.Fatal(err)
	}
	other := others(l, holder)[0]
	r, code := drill(t, ctx, l, other, "--hard", "--max-outage", failoverBound.String())
	t.Logf("hard drill %s -> %s: detection %s, outage %s, %d failed", r.From, r.To, r.Detected, r.Outage, r.Failed)
	if code != 0 || !r.Pass || r.Detected <= 0 || r.Detected > failoverBound {
		t.Fatalf("hard drill: exit %d, report %+v", code, r)
	}
	if _, err := l.WaitHolder(ctx, failoverBound, lab.Only(other)); err != nil {
		t.Fatal(err)
	}
}
