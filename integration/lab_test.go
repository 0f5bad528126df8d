//go:build integration

package integration

import (
	"net/netip"
	"testing"
	"time"

	"halb/internal/probe"
	"halb/test/fakecp"
	"halb/test/lab"
)

// TestLabSelf checks the lab itself, without halb: the client reaches a
// fake control plane directly, its controls work, the network knobs cut and
// restore reachability, and teardown leaves no namespace behind.
func TestLabSelf(t *testing.T) {
	l, ctx := newLab(t, lab.Options{}, false)
	cp1 := netip.AddrPortFrom(lab.CPAddr(1), 6443)

	r, err := l.Probe(ctx, cp1, probe.ModeHTTPS, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Failures != 0 || r.Successes < 5 || r.Responders["cp1"] != r.Successes {
		t.Fatalf("client -> cp1:6443: %v; want every attempt answered by cp1", r)
	}
	r, err = l.Probe(ctx, netip.AddrPortFrom(lab.CPAddr(2), 50000), probe.ModeTLS, 200*time.Millisecond)
	if err != nil || r.Failures != 0 || r.Responders["cp2"] != r.Successes {
		t.Fatalf("client -> cp2:50000: %v, %v; want every attempt answered by cp2", r, err)
	}

	mac, err := l.MAC(ctx, "cp1")
	if err != nil {
		t.Fatal(err)
	}
	n, err := l.ClientNeigh(ctx, lab.CPAddr(1))
	if err != nil || n.MAC != mac {
		t.Fatalf("client neighbour entry for cp1 = %+v, %v; want MAC %s", n, err, mac)
	}

	if err := l.CP(1).FailHealth(ctx, true); err != nil {
		t.Fatal(err)
	}
	r, err = l.Probe(ctx, cp1, probe.ModeHTTPS, 200*time.Millisecond)
	if err != nil || r.Successes != 0 || r.Errors["status 500"] != r.Failures {
		t.Fatalf("with fail-health: %v, %v; want only 500s", r, err)
	}
	if err := l.CP(1).FailHealth(ctx, false); err != nil {
		t.Fatal(err)
	}

	if err := l.CP(1).SetState(ctx, fakecp.Stopped); err != nil {
		t.Fatal(err)
	}
	r, err = l.Probe(ctx, cp1, probe.ModeTCP, 200*time.Millisecond)
	if err != nil || r.Successes != 0 || r.Errors["refused"] != r.Failures {
		t.Fatalf("stopped cp1: %v, %v; want only refused connects", r, err)
	}
	if err := l.CP(1).SetState(ctx, fakecp.Serving); err != nil {
		t.Fatal(err)
	}
	r, err = l.Probe(ctx, cp1, probe.ModeHTTPS, 200*time.Millisecond)
	if err != nil || r.Failures != 0 {
		t.Fatalf("restarted cp1: %v, %v; want no failures", r, err)
	}

	cp2 := netip.AddrPortFrom(lab.CPAddr(2), 6443)
	if err := l.Partition(ctx, "cl", "cp2"); err != nil {
		t.Fatal(err)
	}
	r, err = l.Probe(ctx, cp2, probe.ModeTCP, 200*time.Millisecond)
	if err != nil || r.Successes != 0 || r.Errors["prohibited"] != r.Failures {
		t.Fatalf("partitioned cp2: %v, %v; want only prohibited connects", r, err)
	}
	if err := l.Heal(ctx, "cl", "cp2"); err != nil {
		t.Fatal(err)
	}
	if r, err = l.Probe(ctx, cp2, probe.ModeTCP, 100*time.Millisecond); err != nil || r.Failures != 0 {
		t.Fatalf("healed cp2: %v, %v; want no failures", r, err)
	}

	cp3 := netip.AddrPortFrom(lab.CPAddr(3), 6443)
	if err := l.LinkDown(ctx, "cp3"); err != nil {
		t.Fatal(err)
	}
	r, err = l.Probe(ctx, cp3, probe.ModeTCP, 300*time.Millisecond)
	if err != nil || r.Successes != 0 || r.Failures == 0 {
		t.Fatalf("cp3 link down: %v, %v; want only failures", r, err)
	}
	if err := l.LinkUp(ctx, "cp3"); err != nil {
		t.Fatal(err)
	}
	// The client's ARP entry for cp3 may have failed while the link was
	// down; it resolves again within a few retries.
	r, err = l.Probe(ctx, cp3, probe.ModeTCP, 2*time.Second)
	if err != nil || r.Successes == 0 {
		t.Fatalf("cp3 link up: %v, %v; want reachable again", r, err)
	}

	if h, err := l.Holder(ctx); err != nil || len(h) != 0 {
		t.Fatalf("Holder without halb = %v, %v; want none", h, err)
	}

	prefix := l.Prefix()
	if nss, err := lab.Namespaces(ctx, prefix); err != nil || len(nss) != 3+2+2 {
		t.Fatalf("namespaces of %s: %v, %v; want sw, cl, 2 LBs and 3 CPs", prefix, nss, err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if nss, err := lab.Namespaces(ctx, prefix); err != nil || len(nss) != 0 {
		t.Fatalf("after teardown, namespaces %v remain (%v)", nss, err)
	}
}
