package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"halb/internal/probe"
	"halb/test/lab"
)

// demoBGP bounds: the flows outlive each route change and end within the
// drain, so a withdrawn node's sessions can finish.
const (
	demoBGPHold  = 3 * time.Second // BGP hold time
	demoBGPDrain = 8 * time.Second // timeouts.drain
	demoFlows    = 60
	demoFlowHold = 4 * time.Second
)

func newDemoBGPCmd() *cobra.Command {
	var halbBin, router string
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo-bgp [--halb PATH] [--router pinned|plain]",
		Short: "Three LB nodes announcing one VIP by BGP to an FRR router: ECMP, a maintenance withdrawal, a kill -9",
		Long: `Demo-bgp builds a routed lab: a client behind a router namespace running FRR
(zebra and bgpd), three LB nodes running halb in BGP mode on the router's other
leg, two fake control planes. Every LB node announces the VIP 192.168.70.160 and
the router spreads flows over them (a 3-way ECMP route). Then, while the client
opens a new connection every 10 ms and holds 60 established connections (each
asking every 100 ms, each knowing which LB carries it):
  1. lb3 goes into maintenance: it withdraws its route and serves its open
     sessions for timeouts.drain; no new connection may fail;
  2. lb3 comes back; lb2 is killed with SIGKILL: its BGP session closes, the
     router drops its path; new connections fail only until then.
It prints the route, the responders by LB and the measured figures.

--router pinned (the default) makes the router pin established flows to the LB
node they started on, as a stateful or resilient-hashing router does: the
withdrawn node's sessions finish and only the killed node's break.
--router plain is FRR 8.4 on Linux as it comes (hash-threshold ECMP): a
withdrawn node's open sessions move to other nodes and are reset there, and a
departure can move some flows of the surviving nodes too.

The lab is torn down by PID at the end, also on failure or Ctrl-C.
Exit status: 0 when every step behaved as expected, 1 otherwise.`,
		Example: `  sudo make demo-bgp
  sudo halb-lab demo-bgp --halb bin/halb --router plain`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if router != "pinned" && router != "plain" {
				return fmt.Errorf("--router %q: want pinned or plain", router)
			}
			if _, err := os.Stat(filepath.Join(lab.DefaultFRRDir, "bgpd")); err != nil {
				return fmt.Errorf("the demo's router needs FRR: apt-get install -y frr (%w)", err)
			}
			if _, err := exec.LookPath("nft"); err != nil && router == "pinned" {
				return errors.New("the pinned router needs nft: apt-get install -y nftables")
			}
			opts := lab.Options{LBs: 3, CPs: 2, Router: true, PinFlows: router == "pinned",
				Mutate: lab.BGPMode(demoBGPHold, demoBGPDrain)}
			return runDemo(cmd, halbBin, "demo-bgp", keep, opts, func(ctx context.Context, d *demo) error {
				ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
				defer cancel()
				return (&demoBGP{demo: d, pinned: router == "pinned"}).run(ctx)
			})
		},
	}
	cmd.Flags().StringVar(&halbBin, "halb", "", "halb binary (default: next to halb-lab, then $PATH)")
	cmd.Flags().StringVar(&router, "router", "pinned", "pinned (flows stay on their LB node) or plain (FRR's hash-threshold ECMP)")
	cmd.Flags().BoolVar(&keep, "keep-logs", false, "keep the workdir with configs and logs")
	return cmd
}

type demoBGP struct {
	*demo
	pinned  bool
	figures []string
}

var demoBGPAPI = netip.AddrPortFrom(lab.BGPVIP(), 6443)

// lbName names the LB node of a lab address.
func lbName(addr string) string {
	for i := 1; i <= 9; i++ {
		if lab.LBAddr(i).String() == addr {
			return fmt.Sprintf("lb%d", i)
		}
	}
	return addr
}

func (d *demoBGP) run(ctx context.Context) error {
	l := d.l
	kind := "pinned: established flows stay on their LB node"
	if !d.pinned {
		kind = "plain hash-threshold ECMP, as FRR 8.4 on Linux installs it"
	}
	d.title("build the routed lab: client -> FRR router -> lb1, lb2, lb3 (halb, BGP mode) -> cp1, cp2")
	if err := l.Up(ctx); err != nil {
		return err
	}
	d.say("   lab %s: client %s behind router %s (AS %d); LB nodes .151-.153 (AS %d); VIP %s; router %s",
		l.Prefix(), lab.RoutedClientAddr(), lab.RouterAddr(), lab.RouterASN, lab.LBASN, lab.BGPVIP(), kind)
	all := []netip.Addr{lab.LBAddr(1), lab.LBAddr(2), lab.LBAddr(3)}
	took, err := l.WaitRouterNextHops(ctx, lab.BGPVIP(), all, 30*time.Second)
	d.expect(err == nil, "the router has a 3-way ECMP route %s after %s", lab.BGPVIP(), took.Round(time.Millisecond))
	if err != nil {
		return err
	}
	d.route(ctx)

	d.title("all three LB nodes carry traffic")
	rep, err := d.flows(ctx, func() error { return nil })
	if err != nil {
		return err
	}
	by := rep.ByLB()
	d.expect(len(by) == 3, "%d flows from the client, by LB: %s", len(rep.Flows), perLB(by))

	d.title("maintenance on lb3: it withdraws its route first, then drains")
	var r probe.Report
	rep, r, err = d.during(ctx, func() error {
		out, err := exec.CommandContext(ctx, d.halb, "node", "maintenance", "on", "--socket", l.AdminSocket("lb3")).CombinedOutput()
		if err != nil {
			return fmt.Errorf("halb node maintenance on: %w: %s", err, out)
		}
		took, err = l.WaitRouterNextHops(ctx, lab.BGPVIP(), all[:2], 10*time.Second)
		return err
	})
	if err != nil {
		return err
	}
	d.say("   route down to 2 ways %s after the command", took.Round(time.Millisecond))
	d.route(ctx)
	own, other := d.survival(rep, "lb3")
	d.expect(r.Failures == 0, "new connections: %d, failed %d", r.Attempts, r.Failures)
	if d.pinned {
		d.expect(own[0] == own[1], "lb3's open sessions finished normally: %d of %d (drained, not reset)", own[0], own[1])
		d.expect(other[0] == other[1], "the other nodes' sessions lived: %d of %d", other[0], other[1])
	} else {
		d.say("   lb3's open sessions finished: %d of %d (plain ECMP re-hashes them to nodes that reset them)", own[0], own[1])
		d.say("   the other nodes' sessions lived: %d of %d", other[0], other[1])
	}
	d.figures = append(d.figures, fmt.Sprintf("withdraw (maintenance): route gone in %s; %d of %d new connections failed; lb3's sessions finished %d/%d; others' %d/%d",
		took.Round(time.Millisecond), r.Failures, r.Attempts, own[0], own[1], other[0], other[1]))

	d.title("lb3 out of maintenance announces again")
	if out, err := exec.CommandContext(ctx, d.halb, "node", "maintenance", "off", "--socket", l.AdminSocket("lb3")).CombinedOutput(); err != nil {
		return fmt.Errorf("halb node maintenance off: %w: %s", err, out)
	}
	took, err = l.WaitRouterNextHops(ctx, lab.BGPVIP(), all, 10*time.Second)
	d.expect(err == nil, "3 ways again after %s", took.Round(time.Millisecond))
	if err != nil {
		return err
	}

	d.title("kill -9 of lb2: the kernel closes its BGP session, the router drops the path")
	rep, r, err = d.during(ctx, func() error {
		if err := l.StopHalb("lb2", syscall.SIGKILL); err != nil {
			return err
		}
		took, err = l.WaitRouterNextHops(ctx, lab.BGPVIP(), []netip.Addr{all[0], all[2]}, demoBGPHold+2*time.Second)
		return err
	})
	if err != nil {
		return err
	}
	d.say("   route down to 2 ways %s after the kill", took.Round(time.Millisecond))
	d.route(ctx)
	window := time.Duration(0)
	if r.Failures > 0 {
		window = r.LastFailure.Sub(r.FirstFailure)
	}
	own, other = d.survival(rep, "lb2")
	d.expect(window <= time.Second, "new connections: %d, failed %d, all within %s (bound 1s)", r.Attempts, r.Failures, window.Round(time.Millisecond))
	d.expect(own[0] == 0, "lb2's sessions broke, as a crash must: %d of %d finished", own[0], own[1])
	if d.pinned {
		d.expect(other[0] == other[1], "only lb2's sessions broke: the other nodes' lived, %d of %d", other[0], other[1])
	} else {
		d.say("   the other nodes' sessions lived: %d of %d (plain ECMP moves some of them)", other[0], other[1])
	}
	d.figures = append(d.figures, fmt.Sprintf("crash (kill -9): route gone in %s; %d of %d new connections failed within %s; others' sessions lived %d/%d",
		took.Round(time.Millisecond), r.Failures, r.Attempts, window.Round(time.Millisecond), other[0], other[1]))

	d.title("measured (" + kind + ")")
	for _, f := range d.figures {
		d.say("   %s", f)
	}
	return nil
}

// route prints the router's kernel route to the VIP.
func (d *demoBGP) route(ctx context.Context) {
	lines := strings.Split(d.l.RouterRoute(ctx, lab.BGPVIP()), "\n")
	for i, line := range lines {
		lines[i] = strings.TrimSpace(line)
	}
	d.say("   router: %s", strings.Join(lines, "\n             "))
	hops, err := d.l.RouterNextHops(ctx, lab.BGPVIP())
	if err == nil {
		var names []string
		for _, h := range hops {
			names = append(names, lbName(h.String()))
		}
		d.say("   next hops: %s", strings.Join(names, ", "))
	}
}

// flows opens the demo's flows, runs act while they live, and returns
// their report.
func (d *demoBGP) flows(ctx context.Context, act func() error) (lab.FlowsReport, error) {
	fr, err := d.l.StartFlows(ctx, demoBGPAPI, demoFlows, demoFlowHold)
	if err != nil {
		return lab.FlowsReport{}, err
	}
	actErr := act()
	rep, err := fr.Wait(ctx)
	return rep, errors.Join(actErr, err)
}

// during runs act while flows live and a probe opens new connections.
func (d *demoBGP) during(ctx context.Context, act func() error) (lab.FlowsReport, probe.Report, error) {
	var r probe.Report
	rep, err := d.flows(ctx, func() error {
		run, err := d.l.StartProbe(ctx, demoBGPAPI, probe.ModeHTTPS, 30*time.Second)
		if err != nil {
			return err
		}
		actErr := act()
		// Probe on past the route change, to catch late failures.
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		r, err = run.Stop()
		return errors.Join(actErr, err)
	})
	return rep, r, err
}

// survival counts the flows that finished: [finished, all] of node's
// own and of the other nodes'.
func (d *demoBGP) survival(rep lab.FlowsReport, node string) (own, other [2]int) {
	for _, f := range rep.Flows {
		c := &other
		if lbName(f.LB) == node {
			c = &own
		}
		c[1]++
		if f.How == lab.FlowFinished {
			c[0]++
		}
	}
	d.say("   flows by LB: %s", perLB(rep.ByLB()))
	return own, other
}

// perLB renders flows per LB and outcome: "lb1 20 finished, lb2 ...".
func perLB(by map[string]map[string]int) string {
	var lbs []string
	for a := range by {
		lbs = append(lbs, a)
	}
	sort.Strings(lbs)
	var parts []string
	for _, a := range lbs {
		var hows []string
		for how, n := range by[a] {
			hows = append(hows, fmt.Sprintf("%d %s", n, how))
		}
		slices.Sort(hows)
		parts = append(parts, lbName(a)+" "+strings.Join(hows, "/"))
	}
	return strings.Join(parts, ", ")
}
