package main

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/spf13/cobra"

	"halb/internal/fakecp"
)

func newFakecpCmd(log *slog.Logger) *cobra.Command {
	var name, control string
	var listen []string
	var httpsPort, tlsPort uint16
	cmd := &cobra.Command{
		Use:   "fakecp --name NAME --listen IP [--control SOCK]",
		Short: "Run a fake control plane (HTTPS /healthz and a TLS port) until stopped",
		Long: `Fakecp serves a Kubernetes-API-like HTTPS endpoint (GET /healthz, /readyz,
/livez answer "ok NAME" with header X-Fakecp: NAME) and a Talos-API-like TLS
port (handshake, then NAME, then close), with a throwaway self-signed
certificate. The control socket, plain HTTP, changes its behaviour:

  curl --unix-socket SOCK -X POST http://x/fail-health/on   # health endpoints answer 500
  curl --unix-socket SOCK -X POST http://x/stop             # connections refused
  curl --unix-socket SOCK -X POST http://x/blackhole        # accepted, never answered
  curl --unix-socket SOCK -X POST http://x/start            # normal again
  curl --unix-socket SOCK http://x/state`,
		Example: `  ip netns exec hl1a2b-cp1 halb-lab fakecp --name cp1 --listen 192.168.66.161 --control /tmp/lab/cp1.sock
  halb-lab fakecp --name local --listen 127.0.0.11 --https-port 8443 --tls-port 8500`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := fakecp.Options{Name: name, ControlSocket: control}
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
	cmd.Flags().Uint16Var(&httpsPort, "https-port", 6443, "Kubernetes-API-like HTTPS port")
	cmd.Flags().Uint16Var(&tlsPort, "tls-port", 50000, "Talos-API-like TLS port")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("listen")
	return cmd
}
