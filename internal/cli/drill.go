package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"halb/internal/admin"
	"halb/internal/probe"
)

// drillOptions are the flags of `halb drill`.
type drillOptions struct {
	vip       string
	to        string
	hard      bool
	back      bool
	maxOutage time.Duration
	mode      string
	interval  time.Duration
	timeout   time.Duration
	settle    time.Duration
	hold      time.Duration
	output    string
}

// DrillReport is what `halb drill -o json` prints.
type DrillReport struct {
	VIP      string         `json:"vip"`
	From     string         `json:"from"`
	To       string         `json:"to"`
	Hard     bool           `json:"hard"`
	Timeline []DrillEvent   `json:"timeline"`
	Outage   time.Duration  `json:"outage_ns"` // longest gap between successes, any frontend
	Detected time.Duration  `json:"detected_ns,omitempty"`
	Failed   int            `json:"failed_probes"`
	Probes   []probe.Report `json:"probes"`
	Pass     bool           `json:"pass"`
	Verdict  string         `json:"verdict"`
	Back     *DrillReport   `json:"back,omitempty"`
}

// DrillEvent is one step of a drill, timed from the request.
type DrillEvent struct {
	What  string        `json:"what"`
	After time.Duration `json:"after_ns"`
}

func newDrillCmd() *cobra.Command {
	var sock socketFlags
	var o drillOptions
	cmd := &cobra.Command{
		Use:   "drill [--vip IP] [--to NODE] [--hard] [--back]",
		Short: "Move a VIP to another node while probing it, and report the outage",
		Long: `Drill proves that failover works, on demand. It asks the cluster to move a VIP
from its holder to another eligible node (the best other one, or --to NODE),
while this host opens a new connection to every frontend on the VIP every
10 ms. It prints a timeline (requested; new holder holds the VIP; old holder
released it; first success afterwards), the outage (the longest gap between
successful probes), the failed probes, and a verdict.

A planned drill is make-before-break: the new holder adds and announces the
VIP before the old one removes it, so no new connection should fail.
--hard exercises the real failure path without killing anything: the holder
goes silent on gossip for a bounded time, as if it had crashed, and drops the
VIP; the report shows how long the cluster took to notice.

It refuses when no other node is eligible or a drill is already running.
After the drill the election decides again: with policy preempt a
higher-priority old holder takes the VIP back after preempt_delay. --back
moves it back at once, with a second measured drill.

Exit status: 0 pass, 1 fail (outage above --max-outage, or a failed probe in
a planned drill) or error.`,
		Example: `  halb drill                          # planned move of the first VIP to the best other node
  halb drill --to lb2 --back          # to lb2, then back again
  halb drill --hard --max-outage 2s   # silent holder, as in a crash
  halb drill -o json | jq .outage_ns`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := sock.path()
			if err != nil {
				return err
			}
			if o.output != "text" && o.output != "json" {
				return fmt.Errorf("-o %q: want text or json", o.output)
			}
			switch o.mode {
			case probe.ModeTCP, probe.ModeTLS, probe.ModeHTTPS:
			default:
				return fmt.Errorf("--probe %q: want tcp, tls or https", o.mode)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			c := admin.Dial(path)
			rep, err := runDrill(ctx, c, o, admin.DrillRequest{VIP: o.vip, To: o.to, Hard: o.hard, Hold: o.hold})
			if err != nil {
				return err
			}
			if o.back && rep.Pass {
				back, err := runDrill(ctx, c, o, admin.DrillRequest{VIP: rep.VIP, To: rep.From, Hold: o.hold})
				if err != nil {
					return fmt.Errorf("move back: %w", err)
				}
				rep.Back = &back
				rep.Pass = back.Pass
			}
			if o.output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printDrill(cmd.OutOrStdout(), rep)
			}
			if !rep.Pass {
				return exitError{code: 1}
			}
			return nil
		},
	}
	sock.register(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&o.vip, "vip", "", "VIP to move (default: the first)")
	f.StringVar(&o.to, "to", "", "node to move it to (default: the best other eligible node)")
	f.BoolVar(&o.hard, "hard", false, "the holder goes silent on gossip as if crashed, instead of handing over")
	f.BoolVar(&o.back, "back", false, "move the VIP back to its holder afterwards (a second drill)")
	f.DurationVar(&o.maxOutage, "max-outage", time.Second, "longest acceptable gap between successful probes")
	f.StringVar(&o.mode, "probe", probe.ModeTCP, "probe kind: tcp (connect), tls (handshake) or https (GET /healthz)")
	f.DurationVar(&o.interval, "interval", 10*time.Millisecond, "time between probe connections")
	f.DurationVar(&o.timeout, "timeout", 15*time.Second, "longest wait for the VIP to move")
	f.DurationVar(&o.settle, "settle", time.Second, "probing after the move, to catch late failures")
	f.DurationVar(&o.hold, "hold", 0, "how long the old holder stays out (default 30s planned, 5s hard); the drill ends it earlier")
	f.StringVarP(&o.output, "output", "o", "text", "output: text or json")
	return cmd
}

// runDrill runs one drill and measures it.
func runDrill(ctx context.Context, c *admin.Client, o drillOptions, req admin.DrillRequest) (DrillReport, error) {
	snap, err := status(ctx, c)
	if err != nil {
		return DrillReport{}, err
	}
	vip := req.VIP
	if vip == "" && len(snap.VIPs) > 0 {
		vip = snap.VIPs[0].Address
	}
	var targets []netip.AddrPort
	for _, f := range snap.Frontends {
		ap, err := netip.ParseAddrPort(f.Bind)
		if err == nil && ap.Addr().String() == vip {
			targets = append(targets, ap)
		}
	}
	if len(targets) == 0 {
		return DrillReport{}, fmt.Errorf("no frontend listens on VIP %q: nothing to probe", vip)
	}

	if req.To != "" {
		// Moving back: the old holder rejoins the election a gossip round
		// after the first drill ended. Wait for it, bounded.
		for deadline := time.Now().Add(o.timeout); !eligible(snap, req.To) && time.Now().Before(deadline); {
			select {
			case <-ctx.Done():
				return DrillReport{}, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			if s, err := status(ctx, c); err == nil {
				snap = s
			}
		}
	}

	pctx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	// lastOK is the latest success of any probe, to place "first success
	// after the new holder took the VIP" on the timeline.
	var okMu sync.Mutex
	var lastOK time.Time
	succeeded := func(at time.Time) {
		okMu.Lock()
		lastOK = at
		okMu.Unlock()
	}
	reports := make([]probe.Report, len(targets))
	var wg sync.WaitGroup
	started := make(chan struct{}, len(targets))
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reports[i] = probe.Run(pctx, probe.Options{Target: t, Mode: o.mode, Interval: o.interval,
				Timeout: 500 * time.Millisecond, Started: func() { started <- struct{}{} }, Succeeded: succeeded})
		}()
	}
	for range targets {
		select {
		case <-started:
		case <-ctx.Done():
			return DrillReport{}, ctx.Err()
		}
	}

	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	start, err := c.StartDrill(rctx, req)
	cancel()
	if err != nil {
		stopProbes()
		wg.Wait()
		return DrillReport{}, err
	}
	rep := DrillReport{VIP: start.VIP, From: start.From, To: start.To, Hard: start.Hard}
	if start.Hard && start.From == snap.Node.Name {
		rep.Timeline = append(rep.Timeline, DrillEvent{What: "note: this node is the holder and goes deaf during the drill; run hard drills from another node"})
	}
	t0 := time.Now()
	event := func(what string) { rep.Timeline = append(rep.Timeline, DrillEvent{What: what, After: time.Since(t0)}) }
	event("requested: " + start.From + " -> " + start.To)

	var added, released, detected, served bool
	var addedAt time.Time
	deadline := time.Now().Add(o.timeout)
	for (!added || !released || !served) && time.Now().Before(deadline) && ctx.Err() == nil {
		if added && !served {
			okMu.Lock()
			at := lastOK
			okMu.Unlock()
			if at.After(addedAt) {
				served = true
				rep.Timeline = append(rep.Timeline, DrillEvent{What: "first successful probe since " + start.To + " took the VIP", After: at.Sub(t0)})
			}
		}
		s, err := status(ctx, c)
		if err == nil {
			for _, m := range s.Members {
				holds := slices.Contains(m.Holds, start.VIP)
				switch {
				case m.Name == start.To && m.Alive && holds && !added:
					added, addedAt = true, time.Now()
					event(start.To + " holds the VIP and has announced it (gratuitous ARP)")
				case m.Name == start.From && !m.Alive && start.Hard && !detected:
					detected = true
					rep.Detected = time.Since(t0)
					event(start.From + " declared dead by this node")
				case m.Name == start.From && (!holds || !m.Alive) && !released:
					released = true
					event(start.From + " released the VIP")
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	moved := added && released && served
	if moved {
		select {
		case <-ctx.Done():
		case <-time.After(o.settle):
		}
	}
	stopProbes()
	wg.Wait()
	// End the drill so the old holder rejoins the election; a failure here
	// only means the drill's own bound will end it.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	_ = c.EndDrill(ectx)
	cancel()

	rep.Probes = reports
	for _, r := range reports {
		rep.Outage = max(rep.Outage, r.LongestGap)
		rep.Failed += r.Failures
	}
	switch {
	case !moved:
		rep.Verdict = fmt.Sprintf("FAIL: the VIP did not move within %s", o.timeout)
	case rep.Outage > o.maxOutage:
		rep.Verdict = fmt.Sprintf("FAIL: outage %s exceeds --max-outage %s", rep.Outage.Round(time.Millisecond), o.maxOutage)
	case !start.Hard && rep.Failed > 0:
		rep.Verdict = fmt.Sprintf("FAIL: %d probe(s) failed during a planned move, want 0", rep.Failed)
	default:
		rep.Pass = true
		rep.Verdict = fmt.Sprintf("PASS: outage %s within %s, %d failed probe(s)", rep.Outage.Round(time.Millisecond), o.maxOutage, rep.Failed)
	}
	return rep, nil
}

// eligible reports whether node is an alive, eligible member in s.
func eligible(s admin.Snapshot, node string) bool {
	for _, m := range s.Members {
		if m.Name == node {
			return m.Alive && m.Eligible
		}
	}
	return false
}

func status(ctx context.Context, c *admin.Client) (admin.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return c.Status(ctx)
}

func printDrill(w io.Writer, r DrillReport) {
	kind := "planned"
	if r.Hard {
		kind = "hard"
	}
	_, _ = fmt.Fprintf(w, "%s drill of %s: %s -> %s\n", kind, r.VIP, r.From, r.To)
	for _, e := range r.Timeline {
		_, _ = fmt.Fprintf(w, "  +%-8s %s\n", e.After.Round(time.Millisecond), e.What)
	}
	for _, p := range r.Probes {
		_, _ = fmt.Fprintf(w, "  probe %s (%s): %d attempts, %d failed, longest gap %s\n",
			p.Target, p.Mode, p.Attempts, p.Failures, p.LongestGap.Round(time.Millisecond))
	}
	if r.Hard {
		_, _ = fmt.Fprintf(w, "  detection: %s\n", r.Detected.Round(time.Millisecond))
	}
	_, _ = fmt.Fprintf(w, "  outage: %s, failed probes: %d\n%s\n", r.Outage.Round(time.Millisecond), r.Failed, r.Verdict)
	if r.Back != nil {
		_, _ = fmt.Fprintln(w)
		printDrill(w, *r.Back)
	}
}
