//go:build integration

package integration

import (
	"syscall"
	"testing"
	"time"

	"halb/test/lab"
)

// hardDrillBound is the new-connection outage a hard drill may cost: the
// price of a kill -9 (the peer's probe is refused, it claims the VIP and
// announces it), not that of memberlist's stall detection (~1 s).
const hardDrillBound = 500 * time.Millisecond

// crashNoise is how much a hard drill's outage may exceed a kill -9's in
// the same lab: a heartbeat period (100 ms) for the moment the holder dies
// in it, plus a probe interval for where the probes fall.
const crashNoise = 150 * time.Millisecond

// Issue 15: a hard drill plays dead as a killed process does (gossip port
// closed, so the peer's heartbeat probe is refused; proxy ports closed and
// the VIP left on the interface unannounced, so clients still sent there
// are reset at once), so the peer detects it as it detects a kill -9 and
// the clients see the same outage; the VIP ends on the other node, and the
// old holder comes back afterwards as a restarted process would. A real
// kill -9 in the same lab is the yardstick.
func TestHardDrillCostsWhatACrashCosts(t *testing.T) {
	l, ctx := newLab(t, lab.Options{StartHalb: true}, true)
	holder, err := l.WaitStable(ctx, stableBound, l.LBNames()...)
	if err != nil {
		t.Fatal(err)
	}
	// As before the kill below: the client uses the VIP through the
	// holder, and the nodes have exchanged heartbeats for a while.
	waitNeighAfterReach(t, ctx, l, holder)
	other := others(l, holder)[0]
	r, code := drill(t, ctx, l, other, "--hard", "--max-outage", hardDrillBound.String())
	t.Logf("hard drill %s -> %s: detection %s, outage %s, %d failed\n%+v", r.From, r.To, r.Detected, r.Outage, r.Failed, r.Timeline)
	if r.From != holder || r.To != other {
		t.Fatalf("hard drill moved %s -> %s, want %s -> %s", r.From, r.To, holder, other)
	}
	// The peer declares the holder dead through the refusal path, as
	// after a kill -9 (before, the open port read as a stall: ~1 s).
	if r.Detected <= 0 || r.Detected >= hardDrillBound {
		t.Fatalf("hard drill: detection %s, want the refusal path (< %s); exit %d, verdict %s", r.Detected, hardDrillBound, code, r.Verdict)
	}
	// Probes still sent to the old holder are reset, not left to time out
	// on a removed address (~510 ms before).
	if r.Outage <= 0 || r.Outage >= hardDrillBound || code != 0 || !r.Pass {
		t.Fatalf("hard drill: outage %s, want < %s; exit %d, verdict %s", r.Outage, hardDrillBound, code, r.Verdict)
	}
	if _, err := l.WaitHolder(ctx, failoverBound, lab.Only(other)); err != nil {
		t.Fatal(err)
	}
	// The old holder comes back (a restarted process, rejoining) and the
	// cluster settles on one holder again, per the election's policy,
	// that the client reaches.
	if _, err := l.WaitStable(ctx, stableBound, l.LBNames()...); err != nil {
		t.Fatalf("after the drill: %v", err)
	}
	holder = settle(t, ctx, l, healBound)
	// The yardstick: kill -9 of the holder, measured by the same client.
	_, killed := failover(t, ctx, l, holder, func(n string) error { return l.StopHalb(n, syscall.SIGKILL) })
	t.Logf("outage: hard drill %s, kill -9 %s", r.Outage.Round(time.Millisecond), killed.Round(time.Millisecond))
	if r.Outage > killed+crashNoise {
		t.Errorf("hard drill outage %s, kill -9 %s: the drill costs more than a crash (noise %s)", r.Outage, killed, crashNoise)
	}
}
