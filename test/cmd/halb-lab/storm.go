package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"halb/test/lab"
	"halb/test/tool"
)

func newStormCmd() *cobra.Command {
	var target, certFile, keyFile, caFile string
	var withTLS bool
	var o lab.StormOptions
	cmd := &cobra.Command{
		Use:   "storm --target IP:PORT --clients N [--concurrency M] [--tls --cert F --key F]",
		Short: "Open many connections at the same moment, as clients reconnecting after a failover",
		Long: `Storm opens --clients connections to a Talos-API-like TLS port, --concurrency
at a time (all by default): the first wave waits at a barrier and is
released together, and each client that ends starts the next. With --tls
each completes a TLS 1.3 handshake with the client certificate (--cert,
--key), verifying the server against --ca, and reads the server's name
line; without, each connects, closes its side and waits for the server's
close, so a reset (no server behind a proxy) is a failure. It prints a
JSON report: successes per server, failures by error, how long the
storm took and the slowest client.

Exit status: 0 when every client got an answer, 2 otherwise.`,
		Example: `  ip netns exec hl1a2b-cl halb-lab storm --target 192.168.66.160:50000 --clients 2000 \
      --tls --cert LAB/pki/talos-admin.crt --key LAB/pki/talos-admin.key --ca LAB/pki/os-ca.crt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := netip.ParseAddrPort(target)
			if err != nil {
				return fmt.Errorf("--target %q: %w", target, err)
			}
			if o.Clients < 1 {
				return fmt.Errorf("--clients %d: want 1 or more", o.Clients)
			}
			o.Target = t
			if withTLS {
				conf, err := probeTLS(certFile, keyFile, caFile)
				if err != nil {
					return err
				}
				if conf == nil {
					conf = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for: no credentials at all
				}
				conf.MinVersion = tls.VersionTLS13
				o.TLS = conf
			}
			rep := lab.RunStorm(cmd.Context(), o)
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				return err
			}
			if rep.Failed > 0 {
				return tool.ExitError{Code: 2}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target", "", "Talos-API-like TLS port, IP:PORT")
	f.IntVar(&o.Clients, "clients", 2000, "connections in all")
	f.IntVar(&o.Concurrency, "concurrency", 0, "connections being opened at any time; 0 opens all at once")
	f.DurationVar(&o.Timeout, "timeout", 10*time.Second, "bound on one client's connect, handshake and answer")
	f.BoolVar(&withTLS, "tls", false, "complete a TLS handshake and read the server's name; without, connect and close")
	f.StringVar(&certFile, "cert", "", "client certificate (PEM)")
	f.StringVar(&keyFile, "key", "", "key of --cert (PEM)")
	f.StringVar(&caFile, "ca", "", "CA (PEM) to verify the server with")
	cmd.MarkFlagsRequiredTogether("cert", "key")
	_ = cmd.MarkFlagRequired("target")
	return cmd
}
