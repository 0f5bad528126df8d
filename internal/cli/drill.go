package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"halb/internal/admin"
	"halb/internal/drill"
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
	node      string
}

// DrillReport is what `halb drill -o json` prints.
type DrillReport = drill.Report

// DrillEvent is one step of a drill, timed from the request.
type DrillEvent = drill.Event

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
--hard simulates a crash of the holder's process without killing it: for a
bounded time (--hold) the holder drops all gossip, stops its heartbeats and
closes its gossip port, so peers are refused as after kill -9, and drops the
VIP; then it comes back as a restarted process. The report shows how long
the cluster took to notice. It is not a link or host failure.

It refuses when no other node is eligible or a drill is already running.
After the drill the election decides again: with policy preempt a
higher-priority old holder takes the VIP back after preempt_delay. --back
moves it back at once, with a second measured drill.

A VIP announced by BGP has no holder: every eligible node announces it. A
drill of one withdraws one node (--node, default the node asked) for --hold or
until the drill ends, while the other nodes keep announcing it; the report
shows when the node withdrew, and no new connection should fail (the node
serves what the routers still send it until they converge). The probes must
cross the routers to mean anything: run such a drill from a client host with
the node's admin socket forwarded (ssh -L /tmp/halb.sock:/run/halb/admin.sock
lb1), not on an LB node, which has the VIP itself.

Exit status: 0 pass, 1 fail (outage above --max-outage, or a failed probe in
a planned drill) or error.`,
		Example: `  halb drill                          # planned move of the first VIP to the best other node
  halb drill --to lb2 --back          # to lb2, then back again
  halb drill --hard --max-outage 2s   # the holder plays dead, as after kill -9
  halb drill -o json | jq .outage_ns`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDrill(cmd, sock, o)
		},
	}
	sock.register(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&o.vip, "vip", "", "VIP to move (default: the first)")
	f.StringVar(&o.to, "to", "", "node to move it to (default: the best other eligible node)")
	f.StringVar(&o.node, "node", "", "BGP VIP: the node that withdraws (default: the node asked)")
	f.BoolVar(&o.hard, "hard", false, "simulate a crash of the holder (gossip port closed, no heartbeats) instead of a hand-over")
	f.BoolVar(&o.back, "back", false, "move the VIP back to its holder afterwards (a second drill)")
	f.DurationVar(&o.maxOutage, "max-outage", time.Second, "longest acceptable gap between successful probes")
	f.StringVar(&o.mode, "probe", probe.ModeTCP, "probe kind: tcp (connect), tls (handshake) or https (GET /healthz)")
	f.DurationVar(&o.interval, "interval", 10*time.Millisecond, "time between probe connections")
	f.DurationVar(&o.timeout, "timeout", 15*time.Second, "longest wait for the VIP to move")
	f.DurationVar(&o.settle, "settle", time.Second, "probing after the move, to catch late failures")
	f.DurationVar(&o.hold, "hold", 0, "how long the old holder stays out (default 30s planned, 5s hard); the drill ends it earlier")
	f.StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	return cmd
}

// runDrill runs one drill (and, with --back, the move back) against the
// daemon behind sock and prints the report.
func runDrill(cmd *cobra.Command, sock socketFlags, o drillOptions) error {
	path, err := sock.path()
	if err != nil {
		return err
	}
	if o.output != "text" && o.output != "json" {
		return fmt.Errorf("%s: -o %q: want text or json", commandName(cmd), o.output)
	}
	switch o.mode {
	case probe.ModeTCP, probe.ModeTLS, probe.ModeHTTPS:
	default:
		return fmt.Errorf("--probe %q: want tcp, tls or https", o.mode)
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := admin.Dial(path)
	do := drill.Options{MaxOutage: o.maxOutage, Mode: o.mode, Interval: o.interval, Timeout: o.timeout,
		Settle: o.settle, RequestTimeout: requestTimeout}
	rep, err := drill.Run(ctx, c, do, admin.DrillRequest{VIP: o.vip, To: o.to, Hard: o.hard, Hold: o.hold, Node: o.node})
	if err != nil {
		return err
	}
	// A BGP drill's node announces again when the drill ends: there
	// is nothing to move back.
	if o.back && rep.Pass && rep.Mode != drill.ModeBGP {
		back, err := drill.Run(ctx, c, do, admin.DrillRequest{VIP: rep.VIP, To: rep.From, Hold: o.hold})
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
}

func printDrill(w io.Writer, r DrillReport) {
	kind := "planned"
	if r.Hard {
		kind = "hard"
	}
	if r.Mode == drill.ModeBGP {
		_, _ = fmt.Fprintf(w, "BGP withdrawal drill of %s: %s withdraws, %s announce\n", r.VIP, r.From, r.To)
	} else {
		_, _ = fmt.Fprintf(w, "%s drill of %s: %s -> %s\n", kind, r.VIP, r.From, r.To)
	}
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
	if r.LongLived != "" {
		_, _ = fmt.Fprintf(w, "  %s\n", r.LongLived)
	}
	if h := r.Handoff; h != nil {
		_, _ = fmt.Fprintf(w, "  long-lived connections: %d handed off (%s), %d still open at the old holder, %d closed at the end of drain\n",
			h.HandedOff, orNone(h.Role, "hand-off over: "+h.EndReason), h.Forwarded, h.ClosedAtDrain)
	}
	_, _ = fmt.Fprintf(w, "  outage: %s, failed probes: %d\n%s\n", r.Outage.Round(time.Millisecond), r.Failed, r.Verdict)
	if r.Back != nil {
		_, _ = fmt.Fprintln(w)
		printDrill(w, *r.Back)
	}
}

// orNone is s, or alt when s is empty.
func orNone(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}
