package vip_test

import (
	"net"
	"testing"
	"testing/synctest"
	"time"

	"halb/internal/config"
	"halb/internal/vip/viptest"
)

// A hard drill's holder must look like a killed process to the network:
// the address stays (so clients' SYNs meet closed ports and get a reset)
// but nothing renews or announces it, and another host's claim goes
// unanswered, or the drill would pull the traffic back.
func TestPlayDeadKeepsTheAddressSilently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.GARPRefresh = 50 * time.Millisecond
		h := newHarness(t, cfg)
		h.start()
		h.a.SetOwner(true, "elected")
		burst(cfg)
		if !h.a.Held() || h.garp.Count() != cfg.GARPCount {
			t.Fatalf("after claim: held %v, %d announcements, want held and %d", h.a.Held(), h.garp.Count(), cfg.GARPCount)
		}

		h.a.PlayDead(true)
		synctest.Wait()
		replaced, garps := h.link.Count(viptest.OpReplace), h.garp.Count()
		// What the election does to a node that stands down, and what the
		// new holder's announcement does, while the drill lasts.
		h.a.SetOwner(false, "hard drill: silent as if crashed")
		h.a.Foreign(net.HardwareAddr{2, 0, 0, 0, 0, 2})
		// Several refresh (lifetime/4) and periodic-GARP periods, within the
		// lifetime, after which the kernel would drop the address.
		time.Sleep(cfg.Lifetime * 3 / 4)
		synctest.Wait()

		if !h.link.Has("eth0", testVIP) {
			t.Error("playing dead removed the VIP; a killed process leaves it")
		}
		if h.a.Held() {
			t.Error("Held() is true while playing dead; a dead process holds nothing")
		}
		if n := h.link.Count(viptest.OpReplace); n != replaced {
			t.Errorf("refreshed the VIP %d times while playing dead", n-replaced)
		}
		if n := h.garp.Count(); n != garps {
			t.Errorf("sent %d announcements while playing dead", n-garps)
		}
		if n := h.link.Count(viptest.OpDel); n != 0 {
			t.Errorf("%d address deletions while playing dead", n)
		}
	})
}

// Coming back, the node is a restarted process: an address it no longer
// owns is removed, one it owns again is adopted and announced (the
// neighbours point at the other node by then).
func TestPlayDeadComesBackAsARestart(t *testing.T) {
	for _, tt := range []struct {
		name    string
		owner   bool
		present bool
	}{
		{name: "not the owner any more", owner: false, present: false},
		{name: "owner again", owner: true, present: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := testConfig()
				h := newHarness(t, cfg)
				h.start()
				h.a.SetOwner(true, "elected")
				synctest.Wait()
				h.a.PlayDead(true)
				h.a.SetOwner(false, "hard drill: silent as if crashed")
				synctest.Wait()
				garps := h.garp.Count()

				h.a.SetOwner(tt.owner, "after the drill")
				h.a.PlayDead(false)
				burst(cfg)
				if got := h.link.Has("eth0", testVIP); got != tt.present {
					t.Errorf("VIP on the interface = %v, want %v", got, tt.present)
				}
				if got := h.a.Held(); got != tt.owner {
					t.Errorf("Held() = %v, want %v", got, tt.owner)
				}
				wantGARPs := 0
				if tt.owner {
					wantGARPs = cfg.GARPCount
				}
				if n := h.garp.Count() - garps; n != wantGARPs {
					t.Errorf("sent %d announcements coming back, want %d", n, wantGARPs)
				}
			})
		})
	}
}

// burst lets the fake clock run past one burst of announcements and waits
// for the Announcer to be idle.
func burst(cfg config.VIP) {
	time.Sleep(time.Duration(cfg.GARPCount+1) * cfg.GARPInterval)
	synctest.Wait()
}
