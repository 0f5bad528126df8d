package vip_test

import (
	"testing"
	"time"

	"halb/internal/vip/viptest"
	"halb/test/support"
)

// eventually polls a fake until cond holds; there is no event to await.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	support.WaitUntil(t, waitFor, cond, what)
}

// handedOff starts an Announcer that claimed the VIP and then released it
// for a hand-off.
func handedOff(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t, testConfig())
	h.start()
	h.a.SetOwner(true, "elected")
	h.awaitHeld(true)
	h.a.HandOff(true)
	h.a.SetOwner(false, "handed over to lb2")
	h.awaitHeld(false)
	return h
}

// A release during a hand-off keeps the address, quietly: Held goes false
// (the election sees it released), no announcement is sent, the lifetime
// keeps being renewed, and the address goes once the hand-off ends.
func TestHandOffKeepsAddressQuietlyUntilItEnds(t *testing.T) {
	cfg := testConfig()
	cfg.Lifetime = 40 * time.Millisecond // refreshed every 10 ms
	h := newHarness(t, cfg)
	h.start()
	h.a.SetOwner(true, "elected")
	h.awaitHeld(true)
	eventually(t, "the claim's burst", func() bool { return h.garp.Count() >= cfg.GARPCount })
	sent := h.garp.Count()

	h.a.HandOff(true)
	h.a.SetOwner(false, "handed over to lb2")
	h.awaitHeld(false)
	if !h.link.Has("eth0", testVIP) {
		t.Fatal("VIP removed on a hand-off release; its connections need it")
	}
	if st := h.a.Status(); !st.Quiet || st.Held || st.Owner {
		t.Errorf("status while handing off = %+v, want quiet, not held, not owner", st)
	}
	replaced := h.link.Count(viptest.OpReplace)
	eventually(t, "the quiet address's lifetime renewed", func() bool { return h.link.Count(viptest.OpReplace) >= replaced+2 })
	if n := h.garp.Count(); n != sent {
		t.Errorf("%d announcements while quiet, want none", n-sent)
	}

	h.a.HandOff(false)
	eventually(t, "the address removed once the hand-off ended", func() bool { return !h.link.Has("eth0", testVIP) })
	h.sync()
	if st := h.a.Status(); st.Quiet {
		t.Errorf("status after the hand-off = %+v, want not quiet", st)
	}
}

// The VIP coming back during a hand-off keeps the address (no gap for the
// connections), announces it, and leaves quiet.
func TestHandOffThenClaimAgainKeepsTheAddress(t *testing.T) {
	h := handedOff(t)
	before := h.garp.Count()

	h.a.SetOwner(true, "drill back") // without HandOff(false): the claim ends the hand-off
	h.awaitHeld(true)
	h.sync()
	if h.link.Count(viptest.OpDel) != 0 {
		t.Errorf("the address was deleted during the hand-back: %+v", h.link.Calls())
	}
	if st := h.a.Status(); st.Quiet || !st.Held {
		t.Errorf("status after the hand-back = %+v, want held, not quiet", st)
	}
	eventually(t, "the claim announced", func() bool { return h.garp.Count() > before })
}

// Stopping during a hand-off removes the quietly kept address.
func TestCancelWithdrawsQuietAddress(t *testing.T) {
	h := handedOff(t)
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if h.link.Has("eth0", testVIP) {
		t.Error("quiet VIP left on the interface after Run returned")
	}
}

// Once a hand-off is announced (the election named another owner), a
// burst still running stops: the new holder's announcements must have
// the last word.
func TestHandOffStopsAnnouncing(t *testing.T) {
	cfg := testConfig()
	cfg.GARPCount, cfg.GARPInterval = 1000, 5*time.Millisecond
	h := newHarness(t, cfg)
	h.start()
	h.a.SetOwner(true, "elected")
	h.awaitHeld(true)
	eventually(t, "the burst under way", func() bool { return h.garp.Count() >= 2 })
	h.a.HandOff(true)
	h.sync()
	h.sync() // a send that was due in the step already running
	n := h.garp.Count()
	for range 5 {
		h.sync()
	}
	if got := h.garp.Count(); got != n {
		t.Errorf("%d announcements after HandOff(true), want none", got-n)
	}
	if !h.a.Held() {
		t.Error("HandOff released the VIP; only SetOwner(false) does")
	}
}
