//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"halb/internal/probe"
	"halb/test/lab"
)

// bgpHold is the speakers' hold time: the bound on how long a hung node
// keeps its route. A killed one's session closes at once.
const bgpHold = 3 * time.Second

// TestBGPECMP runs halb's BGP speaker (halb-lab bgp-speaker, until the
// daemon announces by itself) on three LB nodes behind an FRR router and
// follows the router's kernel route to the VIP: three ways, two after a
// withdrawal, one after a crash, two after the withdrawn node announces
// again, one after a node hangs for the hold time, none after a graceful
// stop.
func TestBGPECMP(t *testing.T) {
	if _, err := os.Stat(filepath.Join(lab.DefaultFRRDir, "bgpd")); err != nil && env.skip == "" {
		if os.Getenv("HALB_REQUIRE_NETNS") == "1" {
			t.Fatalf("FRR is not installed (apt-get install frr): %v", err)
		}
		t.Skipf("FRR is not installed (apt-get install frr): %v", err)
	}
	l, ctx := newLab(t, lab.Options{LBs: 3, CPs: 1, Router: true}, false)
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"rt-bgpd", "rt-zebra", "bgp-lb1", "bgp-lb2", "bgp-lb3"} {
				t.Logf("--- tail of %s's log:\n%s", n, l.LogTail(n, 30))
			}
			if out, err := l.Vtysh(context.Background(), "show bgp summary"); err == nil {
				t.Logf("--- router:\n%s", out)
			}
		}
	})
	vip := lab.BGPVIP()
	speakers := map[string]*lab.Process{}
	var all []netip.Addr
	for i, lb := range l.LBNames() {
		if err := l.AddBGPVIP(ctx, lb); err != nil {
			t.Fatal(err)
		}
		if err := l.StartVIPServer(ctx, lb); err != nil {
			t.Fatal(err)
		}
		p, err := l.Spawn("bgp-"+lb, lb, env.lab, "bgp-speaker",
			"--asn", fmt.Sprint(lab.LBASN), "--router-id", lab.LBAddr(i+1).String(),
			"--peer", lab.RouterAddr().String(), "--peer-asn", fmt.Sprint(lab.RouterASN),
			"--hold", bgpHold.String(), "--announce", netip.PrefixFrom(vip, 32).String())
		if err != nil {
			t.Fatal(err)
		}
		speakers[lb] = p
		all = append(all, lab.LBAddr(i+1))
	}

	took, err := l.WaitRouterNextHops(ctx, vip, all, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("3-way ECMP route %s after %s", vip, took.Round(time.Millisecond))
	if out, err := l.Vtysh(ctx, "show ip route "+vip.String()); err == nil {
		t.Logf("FRR's route:\n%s", out)
	}
	nh, _ := runBounded(ctx, "ip", "-n", l.NS("rt"), "nexthop", "show")
	t.Logf("router's kernel nexthop objects:\n%s", nh)

	// The client's connections to the VIP are spread over the three.
	spread(t, ctx, l, "lb1", "lb2", "lb3")

	// A withdrawal (maintenance) takes lb3 out with its session up.
	if err := speakers["lb3"].Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	took, err = l.WaitRouterNextHops(ctx, vip, all[:2], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("withdrawal of lb3: 2 ways after %s", took.Round(time.Millisecond))
	spread(t, ctx, l, "lb1", "lb2")

	// A crash: the kernel closes the dead speaker's socket, so the router
	// drops the route without waiting for the hold time.
	if err := speakers["lb2"].Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took, err = l.WaitRouterNextHops(ctx, vip, all[:1], bgpHold+2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9 of lb2's speaker: 1 way after %s (hold time %s)", took.Round(time.Millisecond), bgpHold)

	// lb3 announces again over the session it kept.
	if err := speakers["lb3"].Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitRouterNextHops(ctx, vip, []netip.Addr{all[0], all[2]}, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// A hung node (stopped, its socket open) keeps its route until the
	// router's hold timer runs out: the bound docs/bgp.md names.
	if err := speakers["lb3"].Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	took, err = l.WaitRouterNextHops(ctx, vip, all[:1], bgpHold+3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hung lb3: 1 way after %s (hold time %s)", took.Round(time.Millisecond), bgpHold)
	if took < bgpHold/2 {
		t.Errorf("a hung node's route went after %s, before the hold time could expire: was the session closed?", took)
	}
	_ = speakers["lb3"].Signal(syscall.SIGKILL)

	// A graceful stop withdraws before it closes the session.
	if err := speakers["lb1"].Stop(syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitRouterNextHops(ctx, vip, nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if log := l.Log("bgp-lb1"); !strings.Contains(log, "bgp speaker stopped") {
		t.Errorf("lb1's speaker did not log a clean stop:\n%s", log)
	}
}

// spread probes the VIP from the client for a second and fails unless
// every connection succeeded and exactly nodes answered.
func spread(t *testing.T, ctx context.Context, l *lab.Lab, nodes ...string) {
	t.Helper()
	r, err := l.Probe(ctx, netip.AddrPortFrom(lab.BGPVIP(), 6443), probe.ModeHTTPS, time.Second)
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	var got []string
	for n := range r.Responders {
		got = append(got, n)
	}
	slices.Sort(got)
	if r.Failures != 0 || !slices.Equal(got, nodes) {
		t.Fatalf("client -> VIP: %v, answered by %v; want no failure and answers from %v%s", r, r.Responders, nodes, failures(r))
	}
	t.Logf("client -> VIP: %d connections, answered %v", r.Successes, r.Responders)
}

// runBounded runs a short command and returns its combined output.
func runBounded(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
