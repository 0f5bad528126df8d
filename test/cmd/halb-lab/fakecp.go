package main

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/spf13/cobra"

	"halb/test/fakecp"
)

func newFakecpCmd(log *slog.Logger) *cobra.Command {
	var name, control, pki string
	var listen, sans []string
	var httpsPort, tlsPort uint16
	cmd := &cobra.Command{
		Use:   "fakecp --name NAME --listen IP [--pki DIR] [--control SOCK]",
		Short: "Run a fake Talos control plane (Kubernetes API and Talos API ports) until stopped",
		Long: `Fakecp serves a Kubernetes-API-like HTTPS port and a Talos-API-like TLS port
that authenticate like a stock Talos node when given --pki (a directory
made by the lab: CAs, client certificates, kubeconfigs, talosconfigs):

  API port (6443), like kube-apiserver with anonymous auth off: a request
  without a client certificate from the cluster CA or the bearer token gets
  401. Any user may GET /healthz, /livez, /readyz ("ok"; ?verbose lists the
  checks); other paths need system:masters ("ok NAME"), else 403; ?watch=1
  streams a JSON line every 100 ms. Every answer has header X-Fakecp: NAME.
  Talos port (50000), like apid: TLS 1.3, a client certificate from the OS
  CA required; then NAME and close, or with ALPN h2 "NAME tick N" lines.

Without --pki it uses a self-signed certificate and answers anyone. The
server certificates name the listen addresses and every --san. The control
socket, plain HTTP, changes its behaviour and reports counters of failed
handshakes, 401s and 403s by client address:

  curl --unix-socket SOCK -X POST http://x/fail-health/on      # health endpoints answer 500
  curl --unix-socket SOCK -X POST 'http://x/shutdown?delay=2s' # /readyz fails, stop after 2s
  curl --unix-socket SOCK -X POST http://x/stop                # connections refused
  curl --unix-socket SOCK -X POST http://x/blackhole           # accepted, never answered
  curl --unix-socket SOCK -X POST http://x/start               # normal again
  curl --unix-socket SOCK -X POST 'http://x/slow-accept?delay=5ms&backlog=8' # slow to accept
  curl --unix-socket SOCK http://x/state`,
		Example: `  ip netns exec hl1a2b-cp1 halb-lab fakecp --name cp1 --listen 192.168.66.161 --san 192.168.66.160 --pki /tmp/lab/pki --control /tmp/lab/cp1.sock
  halb-lab fakecp --name local --listen 127.0.0.11 --https-port 8443 --tls-port 8500`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := fakecp.Options{Name: name, ControlSocket: control, PKIDir: pki}
			for _, sa := range sans {
				a, err := netip.ParseAddr(sa)
				if err != nil {
					return fmt.Errorf("--san %q: %w", sa, err)
				}
				opts.SANs = append(opts.SANs, a)
			}
			for _, l := range listen {
				a, err := netip.ParseAddr(l)
				if err != nil {
					return fmt.Errorf("--listen %q: %w", l, err)
				}
				opts.HTTPS = append(opts.HTTPS, netip.AddrPortFrom(a, httpsPort))
				opts.TLS = append(opts.TLS, netip.AddrPortFrom(a, tlsPort))
			}
			return fakecp.New(opts, log).Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name reported in every answer")
	cmd.Flags().StringSliceVar(&listen, "listen", nil, "IP address to listen on (repeatable)")
	cmd.Flags().StringVar(&control, "control", "", "unix socket of the control API")
	cmd.Flags().StringVar(&pki, "pki", "", "PKI directory (CAs, token) to authenticate clients with; none answers anyone")
	cmd.Flags().StringSliceVar(&sans, "san", nil, "extra IP address in the server certificates, e.g. the VIP (repeatable)")
	cmd.Flags().Uint16Var(&httpsPort, "https-port", 6443, "Kubernetes-API-like HTTPS port")
	cmd.Flags().Uint16Var(&tlsPort, "tls-port", 50000, "Talos-API-like TLS port")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("listen")
	return cmd
}
