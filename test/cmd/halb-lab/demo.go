package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"halb/internal/admin"
	"halb/internal/probe"
	"halb/test/fakecp"
	"halb/test/lab"
)

func newDemoCmd() *cobra.Command {
	var halbBin string
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo [--halb PATH]",
		Short: "Walk through halb's whole job in a throwaway lab: failover, handback, drain",
		Long: `Demo builds a lab (two LB nodes running halb, three fake control planes, a
client), then, while the client opens a new connection to the VIP every 10 ms,
it kills a control plane, upgrades one gracefully under watches and streams,
kills the VIP holder with SIGKILL, brings it back,
and stops it for maintenance. After each step it prints what the client saw.
The lab is torn down at the end, also on failure or Ctrl-C.

Exit status: 0 when every step behaved as halb promises, 1 otherwise.`,
		Example: `  sudo make demo
  sudo halb-lab demo --halb bin/halb`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := lab.Options{Policy: "preempt", PreemptDelay: 3 * time.Second}
			return runDemo(cmd, halbBin, "demo", keep, opts, func(ctx context.Context, d *demo) error { return d.run(ctx) })
		},
	}
	cmd.Flags().StringVar(&halbBin, "halb", "", "halb binary (default: next to halb-lab, then $PATH)")
	cmd.Flags().BoolVar(&keep, "keep-logs", false, "keep the workdir with configs and logs")
	return cmd
}

type demo struct {
	halb   string
	l      *lab.Lab
	out    io.Writer
	step   int
	failed int
}

func (d *demo) say(format string, args ...any) { _, _ = fmt.Fprintf(d.out, format+"\n", args...) }

func (d *demo) title(s string) {
	d.step++
	d.say("\n== %d. %s", d.step, s)
}

func (d *demo) expect(ok bool, format string, args ...any) {
	mark := "ok  "
	if !ok {
		mark = "FAIL"
		d.failed++
	}
	d.say("   [%s] %s", mark, fmt.Sprintf(format, args...))
}

var (
	demoAPI   = netip.AddrPortFrom(lab.VIP(), 6443)
	demoTalos = netip.AddrPortFrom(lab.VIP(), 50000)
)

func (d *demo) run(ctx context.Context) error {
	scenes := []func(context.Context) error{
		d.up, d.status, d.credentials, d.clientProbes, d.drill, d.cpDies,
		func(ctx context.Context) error { return d.upgrade(ctx, 3) },
		d.holderCrashes, d.holderReturns, d.maintenance,
	}
	for _, scene := range scenes {
		if err := scene(ctx); err != nil {
			return err
		}
	}
	d.say("\nlogs of every process: %s", filepath.Join(d.l.WorkDir(), "*.log"))
	return nil
}

// up builds the lab and sees lb1 take the VIP.
func (d *demo) up(ctx context.Context) error {
	l := d.l
	d.title("build the lab: namespaces, bridge, 3 fake control planes, halb on lb1 and lb2")
	if err := l.Up(ctx); err != nil {
		return err
	}
	d.say("   lab %s: client 192.168.66.100, lb1 .151, lb2 .152, cp1-3 .161-.163, VIP %s", l.Prefix(), lab.VIP())
	holder, err := l.WaitStable(ctx, 20*time.Second, l.LBNames()...)
	if err != nil {
		return err
	}
	if _, err := l.WaitHolder(ctx, 5*time.Second, lab.Only(holder)); err != nil {
		return err
	}
	d.expect(holder == "lb1", "%s holds the VIP (lb1 has the higher priority)", holder)
	return nil
}

// status shows `halb status` as lb2 sees the cluster.
func (d *demo) status(ctx context.Context) error {
	l := d.l
	d.title("halb status, asked on lb2: who holds the VIP, do the members agree, how are the backends")
	// Gossip carries lb1's claim to lb2 within tens of milliseconds; ask
	// until lb2 agrees, bounded, and show the last answer either way.
	var out []byte
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		out, err = exec.CommandContext(ctx, d.halb, "status", "--socket", l.AdminSocket("lb2")).CombinedOutput()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		d.say("   %s", line)
	}
	d.expect(err == nil, "halb status exits 0: one agreed holder, every frontend has a healthy server")
	return nil
}

// credentials checks that no control plane rejected halb's health checks.
func (d *demo) credentials(ctx context.Context) error {
	l := d.l
	d.title("the control planes authenticate, like Talos: halb's checks carry credentials")
	d.say("   checks: %s (least privilege), %s (os:reader)", fakecp.HealthKubeconfig, fakecp.HealthTalosconfig)
	rejected := 0
	for i := range l.CPNames() {
		st, err := l.CP(i + 1).Status(ctx)
		if err != nil {
			return err
		}
		for _, c := range []fakecp.Counters{st.API, st.Talos} {
			for _, m := range []map[string]int{c.HandshakeFailures, c.Unauthorized, c.Forbidden} {
				for _, n := range m {
					rejected += n
				}
			}
		}
	}
	d.expect(rejected == 0, "no check was rejected: %d failed handshakes, 401s or 403s on the control planes", rejected)
	return nil
}

// clientProbes probes both VIP ports with the admin's credentials.
func (d *demo) clientProbes(ctx context.Context) error {
	l := d.l
	d.title("the client uses the VIP with the admin's credentials: Kubernetes API on 6443, Talos API on 50000")
	r, err := l.Probe(ctx, demoAPI, probe.ModeHTTPS, 2*time.Second)
	if err != nil {
		return err
	}
	d.report(r)
	d.expect(r.Failures == 0 && len(r.Responders) == 3, "no failed connection, all three control planes answer")
	r, err = l.Probe(ctx, demoTalos, probe.ModeTLS, time.Second)
	if err != nil {
		return err
	}
	d.report(r)
	d.expect(r.Failures == 0 && len(r.Responders) == 3, "no failed connection, all three control planes answer")
	return nil
}

// drill runs a planned failover drill from lb2 and back.
func (d *demo) drill(ctx context.Context) error {
	l := d.l
	d.title("a planned failover drill, run on lb2: lb1 -> lb2 and back, measured")
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.NS("lb2"), d.halb, "drill", "--back",
		"--socket", l.AdminSocket("lb2")).CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		d.say("   %s", line)
	}
	d.expect(err == nil, "halb drill passes: make-before-break both ways, no failed probe")
	_, err = l.WaitHolder(ctx, 5*time.Second, lab.Only("lb1"))
	return err
}

// cpDies stops cp2's API server under client traffic.
func (d *demo) cpDies(ctx context.Context) error {
	l := d.l
	d.title("cp2's API server dies (connections refused)")
	err := d.during(ctx, 3*time.Second, func() error {
		return l.CP(2).SetState(ctx, fakecp.Stopped)
	}, func(r probe.Report) {
		d.expect(r.Failures == 0, "the client never notices: halb retries the next server and marks cp2 down")
		d.expect(r.Responders["cp2"] == 0 || r.Responders["cp2"] < r.Successes/10, "cp2 stops answering (%d of %d)", r.Responders["cp2"], r.Successes)
	})
	if err != nil {
		return err
	}
	return l.CP(2).SetState(ctx, fakecp.Serving)
}

// holderCrashes kills the holder lb1 and times the failover to lb2.
func (d *demo) holderCrashes(ctx context.Context) error {
	l := d.l
	d.title("the VIP holder lb1 crashes (kill -9: no goodbye, no cleanup)")
	mac2, err := l.MAC(ctx, "lb2")
	if err != nil {
		return err
	}
	var took time.Duration
	err = d.during(ctx, 0, func() error {
		t0 := time.Now()
		if err := l.StopHalb("lb1", syscall.SIGKILL); err != nil {
			return err
		}
		_, err := l.WaitHolder(ctx, 5*time.Second, func(h []string) bool { return slices.Contains(h, "lb2") })
		took = time.Since(t0)
		if err != nil {
			return err
		}
		return waitFor(ctx, 5*time.Second, func() bool {
			n, err := l.ClientNeigh(ctx, lab.VIP())
			return err == nil && n.MAC == mac2
		})
	}, func(r probe.Report) {
		d.expect(took < 3*time.Second, "lb2 took the VIP after %s", took.Round(time.Millisecond))
		d.expect(r.LongestGap < 3*time.Second, "the client's longest gap was %s (failure detection, then gratuitous ARP)", r.LongestGap.Round(time.Millisecond))
	})
	if err != nil {
		return err
	}
	n, err := l.ClientNeigh(ctx, lab.VIP())
	if err != nil {
		return err
	}
	d.expect(n.MAC == mac2, "the client's ARP entry for the VIP now names lb2 (%s %s)", n.MAC, strings.Join(n.State, ","))
	if how := noticed(l.Log("lb2")); how != "" {
		d.say("   lb2 noticed: %s", how)
	}
	return nil
}

// noticed returns what the last down verdict in a halb log says noticed
// the death first (the noticed= attribute), or "".
func noticed(log string) string {
	const key = `noticed="`
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		line := lines[i]
		if !strings.Contains(line, "treating it as down") {
			continue
		}
		_, rest, ok := strings.Cut(line, key)
		if !ok {
			return "its heartbeats stopped"
		}
		how, _, _ := strings.Cut(rest, `"`)
		return how
	}
	return ""
}

// holderReturns restarts lb1, which takes the VIP back after preempt_delay.
func (d *demo) holderReturns(ctx context.Context) error {
	l := d.l
	d.title("lb1 comes back; after preempt_delay (3s) it takes the VIP back, make-before-break")
	return d.during(ctx, 0, func() error {
		if err := l.StartHalb(ctx, "lb1"); err != nil {
			return err
		}
		t0 := time.Now()
		_, err := l.WaitHolder(ctx, 15*time.Second, lab.Only("lb1"))
		d.say("   lb1 holds the VIP %s after it started", time.Since(t0).Round(time.Millisecond))
		return err
	}, func(r probe.Report) {
		d.expect(r.Failures == 0, "no client connection failed during the handback")
	})
}

// maintenance stops lb1 with SIGTERM: a planned handover, then a drain.
func (d *demo) maintenance(ctx context.Context) error {
	l := d.l
	d.title("lb1 is stopped for maintenance (SIGTERM): it hands over first, then drains")
	return d.during(ctx, 0, func() error {
		if err := l.StopHalb("lb1", syscall.SIGTERM); err != nil {
			return err
		}
		_, err := l.WaitHolder(ctx, 5*time.Second, lab.Only("lb2"))
		return err
	}, func(r probe.Report) {
		d.expect(r.Failures == 0, "no client connection failed during the planned handover")
	})
}

// upgrade restarts control plane n gracefully, as `talosctl upgrade` does
// (kube-apiserver's --shutdown-delay-duration: /readyz fails first, the
// listener closes after the delay, then it comes back), while the client
// sends HTTPS requests and holds watches and Talos streams.
func (d *demo) upgrade(ctx context.Context, n int) error {
	l, name := d.l, fmt.Sprintf("cp%d", n)
	d.title(name + " is upgraded: /readyz fails, 3s later its listener closes, then it comes back")
	pr, err := l.StartProbe(ctx, demoAPI, probe.ModeHTTPS, 2*time.Minute)
	if err != nil {
		return err
	}
	streams, err := l.StartStreams(ctx, 5, 5, 2*time.Minute)
	if err != nil {
		_, _ = pr.Stop()
		return err
	}
	c := l.CP(n)
	act := func() error {
		if err := c.Shutdown(ctx, 3*time.Second); err != nil {
			return err
		}
		if err := waitFor(ctx, 10*time.Second, func() bool {
			st, err := c.Status(ctx)
			return err == nil && st.State == fakecp.Stopped
		}); err != nil {
			return fmt.Errorf("%s did not stop: %w", name, err)
		}
		if err := c.SetState(ctx, fakecp.Serving); err != nil {
			return err
		}
		return waitFor(ctx, 10*time.Second, func() bool {
			snap, err := l.Status(ctx, "lb1")
			if err != nil {
				return false
			}
			for _, b := range snap.Backends {
				for _, sv := range b.Servers {
					if sv.Name == name && sv.State != admin.StateUp {
						return false
					}
				}
			}
			return true
		})
	}
	actErr := act()
	r, perr := pr.Stop()
	sr, serr := streams.Stop()
	if err := errors.Join(actErr, perr, serr); err != nil {
		return err
	}
	d.report(r)
	ended := 0
	for _, c := range sr.Clean {
		ended += c
	}
	d.say("   streams: %d opened, %d ended by their server, %d cut, %d failed opens", sr.Opened, ended, len(sr.Cut), sr.FailedOpens)
	d.expect(r.Failures == 0, "no HTTPS request failed: halb stopped sending %s new connections once /readyz failed", name)
	d.expect(len(sr.Cut) == 0 && sr.FailedOpens == 0, "no watch or Talos stream was cut: each ended when its server closed it, and reopened elsewhere")
	return nil
}

// during probes the VIP while act runs, keeps probing for settle plus half a
// second afterwards, and hands the report to check.
func (d *demo) during(ctx context.Context, settle time.Duration, act func() error, check func(probe.Report)) error {
	// New TCP connections every 10 ms: what "no failed connection" means
	// for a moving L2 VIP (a TLS handshake in flight when the client's ARP
	// entry flips is reset by the new holder, with any VRRP setup too).
	pr, err := d.l.StartProbe(ctx, demoAPI, probe.ModeTCP, 2*time.Minute)
	if err != nil {
		return err
	}
	actErr := act()
	if actErr == nil {
		// Observation window after the event, not synchronisation.
		select {
		case <-ctx.Done():
		case <-time.After(settle + 500*time.Millisecond):
		}
	}
	r, err := pr.Stop()
	if err != nil {
		return errors.Join(actErr, err)
	}
	d.report(r)
	if actErr != nil {
		return actErr
	}
	check(r)
	return nil
}

func (d *demo) report(r probe.Report) {
	names := make([]string, 0, len(r.Responders))
	for n, c := range r.Responders {
		names = append(names, fmt.Sprintf("%s:%d", n, c))
	}
	slices.Sort(names)
	// A plain TCP probe cannot tell which server answered.
	by := ""
	if len(names) > 0 {
		by = ", answered by " + strings.Join(names, " ")
	}
	d.say("   client -> %s (%s): %d connections, %d failed, longest gap %s%s",
		r.Target, r.Mode, r.Attempts, r.Failures, r.LongestGap.Round(time.Millisecond), by)
	if len(r.Errors) > 0 {
		d.say("   failures: %v", r.Errors)
	}
	if r.Failures > 0 && r.Failures <= 3 {
		for _, f := range r.Failed {
			d.say("     %s %s", f.At.Format("15:04:05.000"), f.Error)
		}
	}
}

// waitFor polls cond every 20 ms for at most d.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met within %s", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
