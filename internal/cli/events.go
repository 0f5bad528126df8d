package cli

import (
	"context"
	"encoding/json"
	"errors"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"halb/internal/admin"
	"halb/internal/events"
)

func newEventsCmd() *cobra.Command {
	var sock socketFlags
	var since time.Duration
	var noFollow bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Stream this node's state changes as JSON lines",
		Long: `Events prints each state change of the halb behind the admin socket as one
JSON object per line, as it happens, until interrupted: vip_claimed,
vip_released, server_up, server_down, member_joined, member_left and
member_failed, with the facts (node, vip, backend, server, reason, time).
These are the events hooks: runs commands on.

--since first prints the kept events of that last stretch of time (the
daemon keeps the last 1024). A line {"event":"lost",...} says the reader
fell behind and missed some.

Exit status: 0 interrupted or, with --no-follow, done; 1 halb could not
be reached.`,
		Example: `  halb events
  halb events --since 1h --no-follow | jq -r 'select(.event=="server_down") | .server'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := sock.path()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			enc := json.NewEncoder(cmd.OutOrStdout())
			err = admin.Dial(path).Events(ctx, since, !noFollow, func(e events.Event) error { return enc.Encode(e) })
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	sock.register(cmd.Flags())
	cmd.Flags().DurationVar(&since, "since", 0, "first print the kept events of this last stretch, e.g. 30m")
	cmd.Flags().BoolVar(&noFollow, "no-follow", false, "print the kept events and exit instead of streaming")
	return cmd
}
