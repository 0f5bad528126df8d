package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"halb/test/lab"
)

func newStreamsCmd() *cobra.Command {
	var o lab.StreamsOptions
	var api, talos, out string
	var duration time.Duration
	cmd := &cobra.Command{
		Use:   "streams --api IP:PORT --talos IP:PORT --duration D",
		Short: "Hold long-lived watches and Talos streams through the VIP and report how each ended",
		Long: `Streams holds --watches Kubernetes watch requests (GET ...?watch=true over
HTTPS, a chunked body the server writes to every 100 ms) and --talos-streams
Talos-API-like streams (TLS 1.3 with ALPN h2, a line every 100 ms, ended by
the server with an END line as a gRPC stream ends with its trailers), each
with the given client certificates, as kubelet, kubectl -w and talosctl logs -f
do. A stream that ends is opened again at once.

Each end is classified:
  clean   the server ended it (end of the chunked body; the END line)
  cut     the connection broke under it (reset, EOF without the end marker)
  stalled no data for --stall although the server writes every 100 ms
A reopen that fails is a failed open. At --duration or on SIGTERM it writes a
JSON report (clean ends per server, every cut, failed opens) to --out or
standard output and exits 0. It prints "started" on standard error once the
streams are being opened, and "all open" once each has opened once.`,
		Example: `  ip netns exec hl1a2b-cl halb-lab streams --api 192.168.66.160:6443 --talos 192.168.66.160:50000 \
    --k8s-cert pki/admin.crt --k8s-key pki/admin.key --talos-cert pki/talos-admin.crt --talos-key pki/talos-admin.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, t := range []struct {
				flag, v string
				dst     *netip.AddrPort
			}{{"--api", api, &o.API}, {"--talos", talos, &o.Talos}} {
				if t.v == "" {
					continue
				}
				ap, err := netip.ParseAddrPort(t.v)
				if err != nil {
					return fmt.Errorf("%s %q: %w", t.flag, t.v, err)
				}
				*t.dst = ap
			}
			ctx := cmd.Context()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			var opened atomic.Int64
			all := int64(o.Watches + o.TalosStreams)
			o.Opened = func() {
				if opened.Add(1) == all {
					_, _ = fmt.Fprintln(cmd.ErrOrStderr(), "all open")
				}
			}
			rep, err := lab.RunStreams(ctx, o, func() { _, _ = fmt.Fprintln(cmd.ErrOrStderr(), "started") })
			if err != nil {
				return err
			}
			return writeReport(cmd, out, rep)
		},
	}
	f := cmd.Flags()
	f.StringVar(&api, "api", "", "Kubernetes-API-like target IP:PORT (watches)")
	f.StringVar(&talos, "talos", "", "Talos-API-like target IP:PORT (TLS streams)")
	f.IntVar(&o.Watches, "watches", 5, "watch requests held at once")
	f.IntVar(&o.TalosStreams, "talos-streams", 5, "Talos streams held at once")
	f.StringVar(&o.K8sCert, "k8s-cert", "", "Kubernetes client certificate (PEM)")
	f.StringVar(&o.K8sKey, "k8s-key", "", "Kubernetes client key (PEM)")
	f.StringVar(&o.TalosCert, "talos-cert", "", "Talos client certificate (PEM)")
	f.StringVar(&o.TalosKey, "talos-key", "", "Talos client key (PEM)")
	f.DurationVar(&duration, "duration", time.Minute, "how long to hold streams")
	f.DurationVar(&o.ReopenPause, "reopen-pause", 20*time.Millisecond, "pause before reopening an ended stream")
	f.DurationVar(&o.ConnectTimeout, "timeout", 2*time.Second, "bound on opening one stream")
	f.DurationVar(&o.Stall, "stall", 3*time.Second, "no data for this long counts the stream as stalled")
	f.StringVar(&out, "out", "", "write the JSON report to this file instead of standard output")
	return cmd
}
