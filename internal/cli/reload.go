package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"halb/internal/admin"
)

func newReloadCmd() *cobra.Command {
	var sock socketFlags
	cmd := &cobra.Command{
		Use:   "reload [--socket PATH]",
		Short: "Make the running halb re-read its config file",
		Long: `Reload asks the running halb to re-read its config file, like SIGHUP, and
says whether it worked. What changed is applied without a restart, all of it
or nothing: frontends and backends added, removed or changed, servers added
or removed (a removed server's open connections may finish for
timeouts.drain), weights, backup flags, health-check settings, timeouts for
new connections, maxconn, priorities, policy, quorum and gossip peers.

A frontend that keeps its name and bind address keeps its listening socket
and its open connections; its backend and maxconn change in place. A frontend
moved to a new address listens there before the old address is closed, and
its connections on the old one drain for timeouts.drain; a frontend that
takes over an address another one had takes over its socket. Established
connections to servers that remain are untouched, and the VIP moves only if
the election result changes.

An invalid file, one that changes what needs a restart (VIPs, gossip port,
key, profile or witness, this node's address, admin, stats, log), or one with
a bind address that cannot be bound (in use by another process) is refused
with every reason; halb then keeps running exactly as before. Exit status 0
when applied, 1 when refused or halb cannot be reached.`,
		Example: `  vi /etc/halb/halb.yaml && halb check -c /etc/halb/halb.yaml && halb reload
  systemctl reload halb`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := sock.path()
			if err != nil {
				// The socket path comes from the file that does not load:
				// the daemon cannot be asked, and it would refuse the file too.
				_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "reload refused, the running halb was not asked and runs as before:\n%v\n", err)
				return exitError{code: 1}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			if err := admin.Dial(path).Reload(ctx); err != nil {
				var ae *admin.APIError
				if errors.As(err, &ae) {
					_, _ = fmt.Fprintln(cmd.ErrOrStderr(), reloadFailure(ae.Message))
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

// reloadFailure words the daemon's answer to a failed reload. The daemon
// applies nothing unless it can apply everything, with one exception it
// words "config applied, but: ...": a listener that died while being
// handed to its successor.
func reloadFailure(msg string) string {
	if rest, ok := strings.CutPrefix(msg, "config applied, but: "); ok {
		return "reload applied, but a frontend has no listener (see halb status):\n" + rest
	}
	// The daemon's own "refused" would say it twice.
	for _, p := range []string{"reload refused, nothing changed: ", "reload refused: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return "reload refused, nothing changed, halb runs as before:\n" + msg
}
