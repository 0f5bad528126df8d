package main

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"halb/test/lab"
)

func newFlowsCmd() *cobra.Command {
	var o lab.FlowsOptions
	var target, out string
	cmd := &cobra.Command{
		Use:   "flows --target IP:PORT --count N --hold D",
		Short: "Open N long-lived connections through the VIP and report which LB carried each and how it ended",
		Long: `Flows opens --count TLS connections to --target at once, each asking
GET /healthz every --interval on the same connection (keep-alive) for --hold,
then closing it. The fake control plane names in each answer the address the
request came from, which behind halb is the LB node's, so each flow knows the
node that carried it. A flow ends as
  finished     every request answered until --hold
  broken       a request failed (reset, EOF, timeout) while it lived
  failed-open  no connection or no first answer
It prints "opened" on standard error once every flow has its first answer,
and writes a JSON report to --out (or standard output) when all have ended.`,
		Example: `  ip netns exec hl1a2b-rt halb-lab flows --target 192.168.70.160:6443 --count 60 --hold 5s \
    --cert pki/admin.crt --key pki/admin.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ap, err := netip.ParseAddrPort(target)
			if err != nil {
				return fmt.Errorf("--target %q: %w", target, err)
			}
			if o.Count < 1 || o.Count > 10000 {
				return fmt.Errorf("--count %d: want 1-10000", o.Count)
			}
			o.Target = ap
			rep, err := lab.RunFlows(cmd.Context(), o, func() { _, _ = fmt.Fprintln(cmd.ErrOrStderr(), "opened") })
			if err != nil {
				return err
			}
			return writeReport(cmd, out, rep)
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target", "", "Kubernetes-API-like target IP:PORT")
	f.IntVar(&o.Count, "count", 60, "flows opened at once")
	f.DurationVar(&o.Hold, "hold", 5*time.Second, "each flow's lifetime")
	f.DurationVar(&o.Interval, "interval", 100*time.Millisecond, "between two requests of one flow")
	f.StringVar(&o.Cert, "cert", "", "client certificate (PEM)")
	f.StringVar(&o.Key, "key", "", "client key (PEM)")
	f.DurationVar(&o.ConnectTimeout, "timeout", 2*time.Second, "bound on opening a flow and on each request")
	f.StringVar(&out, "out", "", "write the JSON report to this file instead of standard output")
	return cmd
}
