package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"halb/internal/admin"
)

func newReloadCmd() *cobra.Command {
	var sock socketFlags
	cmd := &cobra.Command{
		Use:   "reload [--socket PATH]",
		Short: "Make the running halb re-read its config file",
		Long: `Reload asks the running halb to re-read its config file, like SIGHUP, and
says whether it worked. What changed is applied without a restart:
frontends and backends added, removed or changed (a removed or changed
frontend stops accepting and its sessions drain), servers added or removed (a
removed server's open connections may finish for timeouts.drain), weights,
backup flags, health-check settings, timeouts for new connections, maxconn,
priorities, policy, quorum and gossip peers. Established connections through
unchanged frontends to servers that remain are untouched, and the VIP moves
only if the election result changes.

An invalid file, or one that changes what needs a restart (VIPs, gossip port,
key, profile or witness, this node's address, admin, stats, log), is refused
with every reason; halb then keeps running as before. Exit status 0 when applied,
1 when refused or halb cannot be reached.`,
		Example: `  vi /etc/halb/halb.yaml && halb check -c /etc/halb/halb.yaml && halb reload
  systemctl reload halb`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := sock.path()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			if err := admin.Dial(path).Reload(ctx); err != nil {
				var ae *admin.APIError
				if errors.As(err, &ae) {
					_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "reload refused, halb runs as before:\n%s\n", ae.Message)
					return exitError{code: 1}
				}
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), "reloaded")
			return err
		},
	}
	sock.register(cmd.Flags())
	return cmd
}
