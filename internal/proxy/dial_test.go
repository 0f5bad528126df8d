package proxy

import (
	"testing"
	"time"

	"halb/internal/config"
	"halb/test/support"
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
	support.WaitUntil(t, 5*time.Second, func() bool { return fe.Stats().Current == 1 }, "the session to be admitted")
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
