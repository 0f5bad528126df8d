//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"halb/test/chaos"
)

// Issue 8: a short `make chaos`: 24 random faults from a fixed seed, one at
// a time or overlapping, under client traffic; every invariant must hold
// after every step. The seed replays with `halb-lab chaos --seed`.
func TestChaosShort(t *testing.T) {
	if env.skip != "" {
		t.Skip(env.skip)
	}
	if env.halbErr != nil {
		t.Fatalf("no halb binary: %v", env.halbErr)
	}
	const faults, seed = 24, "18"
	out := filepath.Join(t.TempDir(), "chaos.json")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.lab, "chaos", "--halb", env.halb, "--lbs", "2",
		"--faults", "24", "--seed", seed, "--out", out)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	summary, err := cmd.Output()
	t.Logf("halb-lab chaos:\n%s", summary)
	if err != nil {
		t.Errorf("halb-lab chaos: %v; log tail:\n%s", err, tail(stderr.String(), 40))
	}
	b, rerr := os.ReadFile(out)
	if rerr != nil {
		t.Fatalf("no chaos report: %v", rerr)
	}
	var rep chaos.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("chaos report: %v", err)
	}
	if rep.Injected != faults || rep.Stopped != "" {
		t.Errorf("%d of %d faults injected (stopped: %q)", rep.Injected, faults, rep.Stopped)
	}
	for _, rec := range rep.Steps {
		for _, v := range rec.Violations {
			t.Errorf("step %d: %s", rec.Step.N, v)
		}
		if len(rec.Violations) > 0 {
			for _, e := range rec.Timeline {
				t.Logf("  step %d +%s %s", rec.Step.N, e.At.Round(time.Millisecond), e.What)
			}
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
