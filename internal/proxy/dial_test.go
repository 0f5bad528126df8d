package proxy

import (
	"testing"
	"time"

	"halb/internal/config"
)

// TestDrainAbortsDefaultDial: halb's own connect (no test dialer), still
// hanging when the drain grace is over, is abandoned, so the frontend
// stops in time. (TestFullBacklogBackendCutByConnectTimeout covers its
// connect timeout.)
func TestDrainAbortsDefaultDial(t *testing.T) {
	p := newPool(config.RoundRobin, fullBacklog(t, "127.0.0.98"))
	tm := testTimeouts()
	tm.Connect = time.Minute
	tm.Drain = 100 * time.Millisecond
	fe := startFrontend(t, p, Options{Timeouts: tm})
	c := dial(t, fe.addr)
	for deadline := time.Now().Add(5 * time.Second); fe.Stats().Current != 1; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("session not admitted")
		}
	}
	start := time.Now()
	fe.stop(t)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("stop took %s with a dial hanging", took)
	}
	c.expectClosed(t, 5*time.Second)
	if r := fe.log.waitConns(t, 1)[0]; r["end"] != "drained" {
		t.Errorf("session ended %q, want drained", r["end"])
	}
}
