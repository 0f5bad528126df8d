package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/cobra"

	"halb/internal/probe"
	"halb/test/fakecp"
	"halb/test/tool"
)

func newProbeCmd() *cobra.Command {
	var target, mode, output, path, certFile, keyFile, caFile string
	var interval, timeout, duration time.Duration
	var maxFailures int
	cmd := &cobra.Command{
		Use:   "probe --target IP:PORT [--mode tcp|tls|https] [--duration D]",
		Short: "Open a new connection every few milliseconds and report the outage",
		Long: `Probe connects to the target every --interval (attempts never overlap; each
is bounded by --timeout) until --duration passes or it gets SIGINT/SIGTERM,
then prints a report: attempts, failures, the longest stretch without a
success (counted from the start and up to the end), and which servers
answered. It prints "started" on standard error after its first attempt.

Against control planes that authenticate (the lab's, like Talos), tls and
https probes present a client certificate (--cert, --key), as kubectl and
talosctl do, and verify the server against --ca; without --ca the server
is not verified.

Exit status: 0, or 2 when more than --max-failures attempts failed.`,
		Example: `  ip netns exec hl1a2b-cl halb-lab probe --target 192.168.66.160:6443 --mode https --duration 30s \
      --cert LAB/pki/admin.crt --key LAB/pki/admin.key --ca LAB/pki/k8s-ca.crt
  halb-lab probe --target 127.0.0.11:8443 --mode https --duration 2s -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := netip.ParseAddrPort(target)
			if err != nil {
				return fmt.Errorf("--target %q: %w", target, err)
			}
			switch mode {
			case probe.ModeTCP, probe.ModeTLS, probe.ModeHTTPS:
			default:
				return fmt.Errorf("--mode %q: want tcp, tls or https", mode)
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %q: want text or json", output)
			}
			conf, err := probeTLS(certFile, keyFile, caFile)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			rep := probe.Run(ctx, probe.Options{
				Target: t, Mode: mode, Interval: interval, Timeout: timeout, Path: path, TLS: conf,
				ResponderHeader: fakecp.NameHeader,
				Started:         func() { _, _ = fmt.Fprintln(cmd.ErrOrStderr(), "started") },
			})
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				err = enc.Encode(rep)
			} else {
				_, err = fmt.Fprintln(cmd.OutOrStdout(), rep.String())
			}
			if err != nil {
				return err
			}
			if maxFailures >= 0 && rep.Failures > maxFailures {
				return tool.ExitError{Code: 2}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "address to probe, IP:PORT")
	cmd.Flags().StringVar(&mode, "mode", probe.ModeTCP, "tcp, tls or https")
	cmd.Flags().StringVar(&path, "path", probe.DefaultPath, "request path (https)")
	cmd.Flags().DurationVar(&interval, "interval", probe.DefaultInterval, "time between attempts")
	cmd.Flags().DurationVar(&timeout, "timeout", probe.DefaultTimeout, "bound on one attempt")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "how long to probe; 0 until a signal")
	cmd.Flags().IntVar(&maxFailures, "max-failures", -1, "exit 2 when more attempts failed; -1 never")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	cmd.Flags().StringVar(&certFile, "cert", "", "client certificate (PEM) for tls and https")
	cmd.Flags().StringVar(&keyFile, "key", "", "key of --cert (PEM)")
	cmd.Flags().StringVar(&caFile, "ca", "", "CA (PEM) to verify the server with")
	cmd.MarkFlagsRequiredTogether("cert", "key")
	_ = cmd.MarkFlagRequired("target")
	return cmd
}

// probeTLS builds the probe's client TLS config from the flags; nil when
// none is set.
func probeTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" && caFile == "" {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert %s, --key %s: %w", certFile, keyFile, err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	if caFile == "" {
		conf.InsecureSkipVerify = true //nolint:gosec // asked for: a client certificate without a CA
		return conf, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	conf.RootCAs = x509.NewCertPool()
	if !conf.RootCAs.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--ca %s: no PEM certificate", caFile)
	}
	return conf, nil
}
