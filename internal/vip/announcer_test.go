package vip_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"

	"halb/internal/config"
	"halb/internal/vip"
	"halb/internal/vip/viptest"
	"halb/test/support"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 5 * time.Second

var prefixes = cmpopts.EquateComparable(netip.Prefix{})

var testVIP = netip.MustParsePrefix("192.168.66.160/24")

func testConfig() config.VIP {
	return config.VIP{
		Address:      testVIP,
		Interface:    "eth0",
		GARPCount:    3,
		GARPInterval: time.Millisecond,
		Lifetime:     2 * time.Second,
	}
}

type harness struct {
	t    *testing.T
	a    *vip.Announcer
	link *viptest.Link
	garp *viptest.GARP
	logs *support.Log
	run  *support.Task
}

// newHarness builds an vip.Announcer on fakes; prepare may plant addresses
// or tune the vip.Announcer before start runs it.
func newHarness(t *testing.T, cfg config.VIP) *harness {
	t.Helper()
	h := &harness{t: t, link: viptest.NewLink(), garp: viptest.NewGARP(), logs: &support.Log{}}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.a = vip.NewAnnouncer(cfg, "", h.link, h.garp, log)
	h.a.SetBackoff(time.Millisecond, 4*time.Millisecond)
	return h
}

func (h *harness) start() {
	// Registered first, so it runs after Run has stopped.
	h.t.Cleanup(func() {
		if h.t.Failed() {
			h.t.Logf("logs:\n%s", h.logs)
		}
	})
	h.run = support.Go(h.t, h.a.Run)
}

// stop cancels Run and returns its result.
func (h *harness) stop() error {
	h.t.Helper()
	return h.run.Stop(h.t)
}

// wait returns Run's result once it has returned on its own.
func (h *harness) wait() error {
	h.t.Helper()
	return h.run.Wait(h.t, waitFor)
}

func (h *harness) awaitHeld(want bool) {
	h.t.Helper()
	deadline := time.After(waitFor)
	for h.a.Held() != want {
		select {
		case <-h.a.Changed():
		case <-deadline:
			h.t.Fatalf("Held() stayed %v", !want)
		}
	}
}

func (h *harness) sync() {
	h.t.Helper()
	select {
	case <-h.a.Barrier():
	case <-time.After(waitFor):
		h.t.Fatal("Run did not complete a step")
	}
}

func TestClaimAddsLabelledAddressAndAnnouncesThenReleaseRemoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.start()

		h.a.SetOwner(true, "elected")
		h.awaitHeld(true)
		want := vip.Addr{Prefix: testVIP, Label: "eth0:halb", ValidLifetime: 2 * time.Second}
		var replaced []vip.Addr
		for _, c := range h.link.Calls() {
			if c.Op == viptest.OpReplace {
				replaced = append(replaced, c.Addr)
			}
		}
		if diff := cmp.Diff([]vip.Addr{want}, replaced, prefixes); diff != "" {
			t.Errorf("AddrReplace calls (-want +got):\n%s", diff)
		}
		addrs := h.link.Addrs("eth0")
		if len(addrs) != 1 || addrs[0].Prefix != testVIP || addrs[0].Label != "eth0:halb" ||
			addrs[0].ValidLifetime <= 0 || addrs[0].ValidLifetime > 2*time.Second {
			t.Errorf("interface addresses = %+v, want the VIP labelled eth0:halb with a finite lifetime", addrs)
		}

		support.WaitUntil(t, waitFor, func() bool { return h.garp.Count() >= 3 }, "3 announcements")
		for _, an := range h.garp.Announcements() {
			if an.Ifname != "eth0" || an.IP != testVIP.Addr() {
				t.Errorf("announced %s on %s, want %s on eth0", an.IP, an.Ifname, testVIP.Addr())
			}
		}
		support.WaitUntil(t, waitFor, func() bool { return h.a.Status().GARPsSent == 3 }, "status to count the burst")
		st := h.a.Status()
		if !st.Held || !st.Owner || st.Transitions != 1 || st.Since.IsZero() || st.LastGARP.IsZero() ||
			st.LastError != "" || st.VIP != testVIP || st.Interface != "eth0" {
			t.Errorf("status after claim = %+v", st)
		}
		logs := h.logs.String()
		if !strings.Contains(logs, `msg="added VIP" component=vip vip=192.168.66.160/24 iface=eth0 reason=elected`) {
			t.Errorf("no add log line with component, vip, iface and reason:\n%s", logs)
		}

		h.a.SetOwner(false, "handed over to lb2")
		h.awaitHeld(false)
		if h.link.Has("eth0", testVIP) {
			t.Error("VIP still on the interface after release")
		}
		if !strings.Contains(h.logs.String(), `msg="removed VIP" component=vip vip=192.168.66.160/24 iface=eth0 reason="handed over to lb2"`) {
			t.Errorf("no remove log line with reason:\n%s", h.logs)
		}
		if err := h.stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if n := h.garp.Count(); n != 3 {
			t.Errorf("sent %d announcements, want GARPCount=3", n)
		}
		if st := h.a.Status(); st.Held || st.Transitions != 2 {
			t.Errorf("status after release = %+v", st)
		}
	})
}

func TestStartRemovesOnlyOurStaleAddress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		other := netip.MustParsePrefix("192.168.66.151/24")
		h := newHarness(t, testConfig())
		h.link.Set("eth0",
			vip.Addr{Prefix: other, Label: "eth0"},
			vip.Addr{Prefix: testVIP, Label: "eth0:halb", ValidLifetime: time.Hour},
		)
		h.start()

		support.WaitUntil(t, waitFor, func() bool { return !h.link.Has("eth0", testVIP) }, "the stale VIP to go")
		h.sync()
		if !h.link.Has("eth0", other) {
			t.Error("the host's own address was removed")
		}
		if !strings.Contains(h.logs.String(), "removed stale VIP") {
			t.Errorf("no log line about the stale VIP:\n%s", h.logs)
		}
		if h.a.Held() || h.garp.Count() != 0 {
			t.Errorf("held=%v after %d announcements, want nothing held or announced", h.a.Held(), h.garp.Count())
		}
	})
}

func TestForeignAddressLeftAlone(t *testing.T) {
	for _, label := range []string{"eth0", ""} {
		t.Run(fmt.Sprintf("label=%q", label), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, testConfig())
				foreign := vip.Addr{Prefix: testVIP, Label: label}
				h.link.Set("eth0", foreign)
				h.start()
				h.a.SetOwner(true, "elected")

				support.WaitUntil(t, waitFor, func() bool {
					return strings.Contains(h.a.Status().LastError, "someone else")
				}, "an error about the foreign VIP")
				h.sync()
				if n := h.link.Count(viptest.OpReplace) + h.link.Count(viptest.OpDel); n != 0 {
					t.Errorf("%d add/remove calls on a VIP someone else configured", n)
				}
				if h.a.Held() || h.garp.Count() != 0 {
					t.Errorf("held=%v, announcements=%d; want neither", h.a.Held(), h.garp.Count())
				}
				if err := h.stop(); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff([]vip.Addr{foreign}, h.link.Addrs("eth0"), prefixes); diff != "" {
					t.Errorf("addresses after shutdown (-want +got):\n%s", diff)
				}
				if !strings.Contains(h.logs.String(), "configured on the interface by someone else") {
					t.Errorf("no warning about the foreign VIP:\n%s", h.logs)
				}
			})
		})
	}
}

func TestIPv6StaleDetectionByLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Address = netip.MustParsePrefix("fd00:66::160/64")
		h := newHarness(t, cfg)
		// Linux keeps no labels on IPv6: a finite lifetime marks halb's own.
		h.link.Set("eth0", vip.Addr{Prefix: cfg.Address, ValidLifetime: time.Hour})
		h.start()
		support.WaitUntil(t, waitFor, func() bool { return !h.link.Has("eth0", cfg.Address) }, "the stale IPv6 VIP to go")

		h2 := newHarness(t, cfg)
		h2.link.Set("eth0", vip.Addr{Prefix: cfg.Address}) // permanent: configured by hand
		h2.start()
		h2.sync()
		if !h2.link.Has("eth0", cfg.Address) || h2.link.Count(viptest.OpDel) != 0 {
			t.Error("a permanent IPv6 address was removed")
		}
	})
}

func TestRefreshKeepsAddressAliveAndReAddsLostOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Lifetime = 200 * time.Millisecond // refreshed every 50ms
		h := newHarness(t, cfg)
		h.start()
		h.a.SetOwner(true, "elected")
		h.awaitHeld(true)

		// The fake expires addresses by the clock, so surviving several
		// lifetimes proves the refreshes renew it.
		support.WaitUntil(t, waitFor, func() bool { return h.link.Count(viptest.OpReplace) >= 9 }, "refreshes over two lifetimes")
		if !h.link.Has("eth0", testVIP) {
			t.Fatal("VIP expired while held")
		}

		support.WaitUntil(t, waitFor, func() bool { return h.garp.Count() >= 3 }, "the burst")
		h.link.Drop("eth0", testVIP) // e.g. the primary address was deleted
		support.WaitUntil(t, waitFor, func() bool { return h.link.Has("eth0", testVIP) }, "the VIP to be re-added")
		support.WaitUntil(t, waitFor, func() bool { return h.garp.Count() >= 6 }, "a new burst after re-adding")
		if !strings.Contains(h.logs.String(), "VIP had vanished from the interface; re-added it") {
			t.Errorf("no log line about the vanished VIP:\n%s", h.logs)
		}
		if !h.a.Held() {
			t.Error("Held() false while the VIP is on the interface")
		}
	})
}

func TestOwnershipRevokedMidBurstStopsBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.GARPCount = 10
		cfg.GARPInterval = 0
		h := newHarness(t, cfg)
		// Runs on Run's goroutine between two sends of the burst.
		h.garp.SetHook(func(n int) {
			if n == 2 {
				h.a.SetOwner(false, "lost election")
			}
		})
		h.start()
		h.a.SetOwner(true, "elected")
		support.WaitUntil(t, waitFor, func() bool {
			return h.garp.Count() >= 2 && !h.a.Held() && h.link.Count(viptest.OpDel) == 1
		}, "the VIP to be released")
		if err := h.stop(); err != nil {
			t.Fatal(err)
		}
		if n := h.garp.Count(); n != 2 {
			t.Errorf("sent %d announcements, want 2: the burst must stop once ownership is revoked", n)
		}
	})
}

func TestCancelWithdrawsVIP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.start()
		h.a.SetOwner(true, "elected")
		h.awaitHeld(true)
		if err := h.stop(); err != nil {
			t.Fatalf("Run returned %v on cancel, want nil", err)
		}
		if h.link.Has("eth0", testVIP) {
			t.Error("VIP still on the interface after shutdown")
		}
		if h.a.Held() {
			t.Error("Held() true after shutdown")
		}
	})
}

func TestPermissionErrorIsFatal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.link.SetErr(viptest.OpReplace, fmt.Errorf("netlink: %w", syscall.EPERM))
		h.start()
		h.a.SetOwner(true, "elected")
		err := h.wait()
		if err == nil {
			t.Fatal("Run returned nil, want a fatal error")
		}
		if !strings.Contains(err.Error(), "add 192.168.66.160/24 to eth0: needs CAP_NET_ADMIN") {
			t.Errorf("error %q does not say what needs CAP_NET_ADMIN", err)
		}
		if !errors.Is(err, os.ErrPermission) {
			t.Errorf("error %v does not match os.ErrPermission", err)
		}
	})
}

func TestGARPPermissionErrorIsFatalAndWithdraws(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.garp.SetErr(syscall.EPERM)
		h.start()
		h.a.SetOwner(true, "elected")
		err := h.wait()
		if err == nil || !strings.Contains(err.Error(), "needs CAP_NET_RAW") {
			t.Fatalf("Run = %v, want an error naming CAP_NET_RAW", err)
		}
		if h.link.Has("eth0", testVIP) {
			t.Error("VIP left on the interface after a fatal error")
		}
	})
}

func TestTransientErrorsAreRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.link.SetErr(viptest.OpReplace, syscall.EBUSY)
		h.start()
		h.a.SetOwner(true, "elected")
		support.WaitUntil(t, waitFor, func() bool { return h.link.Count(viptest.OpReplace) >= 3 }, "retries")
		if st := h.a.Status(); st.Held || !strings.Contains(st.LastError, "add 192.168.66.160/24 to eth0") {
			t.Errorf("status while failing = %+v", st)
		}
		h.link.SetErr(viptest.OpReplace, nil)
		h.awaitHeld(true)
		if st := h.a.Status(); st.LastError != "" {
			t.Errorf("LastError = %q after success, want empty", st.LastError)
		}
	})
}

func TestGARPErrorIsNotFatal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.garp.SetErr(errors.New("network is down"))
		h.start()
		h.a.SetOwner(true, "elected")
		support.WaitUntil(t, waitFor, func() bool {
			return strings.Contains(h.a.Status().LastError, "network is down")
		}, "the error to be recorded")
		if !h.a.Held() {
			t.Error("VIP given up after a failed announcement")
		}
	})
}

func TestReannounceOnlyWhileHolding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.GARPCount = 2
		h := newHarness(t, cfg)
		h.start()

		h.a.Reannounce("partition healed")
		h.sync()
		if n := h.garp.Count(); n != 0 {
			t.Fatalf("%d announcements without holding the VIP", n)
		}

		h.a.SetOwner(true, "elected")
		support.WaitUntil(t, waitFor, func() bool { return h.garp.Count() == 2 }, "the claim burst")
		h.a.Reannounce("membership changed")
		support.WaitUntil(t, waitFor, func() bool { return h.garp.Count() == 4 }, "the reannounce burst")
		if !strings.Contains(h.logs.String(), "reannounce: membership changed") {
			t.Errorf("no log line for the reannounce burst:\n%s", h.logs)
		}

		h.a.SetOwner(false, "lost election")
		h.awaitHeld(false)
		h.a.Reannounce("membership changed")
		h.sync()
		if err := h.stop(); err != nil {
			t.Fatal(err)
		}
		if n := h.garp.Count(); n != 4 {
			t.Errorf("%d announcements, want 4: none after release", n)
		}
	})
}

func TestPeriodicGARPWhileHolding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.GARPCount = 1
		cfg.GARPRefresh = 5 * time.Millisecond
		h := newHarness(t, cfg)
		h.start()
		h.a.SetOwner(true, "elected")
		support.WaitUntil(t, waitFor, func() bool { return h.garp.Count() >= 4 }, "periodic announcements")
	})
}

func TestSetOwnerBeforeRunAdoptsOwnStaleAddress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testConfig())
		h.link.Set("eth0", vip.Addr{Prefix: testVIP, Label: "eth0:halb", ValidLifetime: time.Hour})
		h.a.SetOwner(true, "elected")
		h.start()
		h.awaitHeld(true)
		if h.link.Count(viptest.OpDel) != 0 {
			t.Error("removed the VIP it was about to hold")
		}
		if !h.link.Has("eth0", testVIP) {
			t.Error("VIP missing")
		}
	})
}

// Found by `halb-lab chaos` (seed 1001, steps 65 and 88): a peer that
// wrongly declared the holder dead claimed the VIP for 80 ms and sent one
// gratuitous ARP; the holder never noticed, so the client's neighbour entry
// pointed at the peer, which had let the VIP go, for up to the periodic
// refresh. The holder answers another host's announcement once it is quiet.
func TestForeignAnnouncementIsAnsweredOnceQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.GARPCount = 2
		cfg.GARPInterval = 20 * time.Millisecond
		h := newHarness(t, cfg)
		h.start()
		peer := net.HardwareAddr{2, 0, 0, 0, 0, 2}
		// noAnswer asserts that the count stays want over the time in which an
		// answer would have come.
		noAnswer := func(want int, why string) {
			t.Helper()
			time.Sleep(2 * h.a.ForeignQuiet()) // in the bubble: no answer may come within twice the quiet time
			h.sync()
			if n := h.garp.Count(); n != want {
				t.Fatalf("%d announcements, want %d: %s", n, want, why)
			}
		}

		h.a.Foreign(peer)
		noAnswer(0, "none without holding the VIP")

		// A handover: the new holder announces, then this node lets go before
		// the quiet time is up and must not pull the neighbours back.
		h.a.SetOwner(true, "elected")
		support.WaitUntil(t, waitFor, func() bool { return h.garp.Count() == 2 }, "the claim burst")
		h.a.Foreign(peer)
		h.a.SetOwner(false, "handed over to lb2")
		h.awaitHeld(false)
		noAnswer(2, "none after handing the VIP over")

		h.a.SetOwner(true, "elected")
		support.WaitUntil(t, waitFor, func() bool { return h.garp.Count() == 4 }, "the claim burst")
		start := time.Now()
		h.a.Foreign(peer)
		support.WaitUntil(t, waitFor, func() bool { return h.garp.Count() == 6 }, "the answer to the peer's announcement")
		if quiet := time.Since(start); quiet < h.a.ForeignQuiet() {
			t.Errorf("answered after %s, before the peer's burst (%s) could have ended", quiet, h.a.ForeignQuiet())
		}
		if !strings.Contains(h.logs.String(), "another host (02:00:00:00:00:02) announced the VIP") {
			t.Errorf("no log line naming the other host:\n%s", h.logs)
		}

		// Two holders that hear each other must not answer each other forever:
		// the next answer waits for the gap (10 s without a periodic refresh).
		h.a.Foreign(peer)
		noAnswer(6, "a second answer came before the gap")
	})
}
