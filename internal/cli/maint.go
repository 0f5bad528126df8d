package cli

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"halb/internal/admin"
)

func newServerCmd() *cobra.Command {
	var sock socketFlags
	cmd := &cobra.Command{
		Use:   "server enable|disable|drain NAME|ADDRESS|BACKEND/SERVER",
		Short: "Take a backend server out of rotation, or put it back",
		Long: `Server changes the administrative state of backend servers, like HAProxy's
"set server ... state". The config file is not changed; the state is kept
in admin.state_file, so it survives a restart.

A NAME or ADDRESS (with or without the port) acts on every backend holding
that server, on every node of the cluster: the node behind the admin
socket applies it and sends it to every alive member over gossip. A
BACKEND/SERVER acts on that one server, on this node only.

  drain    no new connections go to the server; open ones run to their end
  disable  the server is out of service and gets no connections
  enable   the server is back in rotation once its health checks pass

drain --wait then shows the server's open connections on this node each
second and returns once they reach 0, or fails at --timeout. Run it on the
node holding the VIP: connections through other nodes are not counted.

Exit status: 0 done, 1 halb could not be reached or refused (for example
an unknown server; the reason is printed), or --wait timed out.`,
		Example: `  halb server drain talos-lon-cp01 --wait --timeout 10m
  talosctl upgrade --nodes 172.16.25.11 ...
  halb server enable talos-lon-cp01
  halb server disable k8s_controlplane/talos-lon-cp01`,
	}
	sock.register(cmd.PersistentFlags())
	for _, a := range []struct{ action, short, done string }{
		{admin.ActionDrain, "Send no new connections to a server; let open ones finish", "draining: no new connections, open ones run to their end"},
		{admin.ActionDisable, "Take a server out of service", "disabled: out of service"},
		{admin.ActionEnable, "Put a drained or disabled server back into rotation", "enabled: back in rotation once its health checks pass"},
	} {
		var wait bool
		var timeout time.Duration
		sub := &cobra.Command{
			Use:     a.action + " NAME|ADDRESS|BACKEND/SERVER",
			Short:   a.short,
			Example: fmt.Sprintf("  halb server %s talos-lon-cp01\n  halb server %s k8s_controlplane/talos-lon-cp01", a.action, a.action),
			Args:    oneArg("NAME|ADDRESS|BACKEND/SERVER", "the server: its name or address in every backend, or one backend's server", "talos-lon-cp01"),
			RunE: func(cmd *cobra.Command, args []string) error {
				path, err := sock.path()
				if err != nil {
					return err
				}
				c := admin.Dial(path)
				if err := setServer(cmd, c, args[0], a.action, a.done); err != nil {
					return err
				}
				if !wait {
					return nil
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				return waitIdle(ctx, c.Status, args[0], time.Second, cmd.OutOrStdout())
			},
		}
		if a.action == admin.ActionDrain {
			sub.Flags().BoolVar(&wait, "wait", false, "show the server's open connections and return once they reach 0")
			sub.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "with --wait, give up after this long")
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

// setServer applies action to the server arg names: one backend's server
// on this node for BACKEND/SERVER, else every match on every node.
func setServer(cmd *cobra.Command, c *admin.Client, arg, action, done string) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
	defer cancel()
	out := cmd.OutOrStdout()
	if backend, server, ok := strings.Cut(arg, "/"); ok {
		if backend == "" || server == "" || strings.Contains(server, "/") {
			return fmt.Errorf("%q: want NAME, ADDRESS or BACKEND/SERVER, e.g. talos-lon-cp01", arg)
		}
		if err := c.SetServerAdmin(ctx, backend, server, action); err != nil {
			return fmt.Errorf("%s %s/%s: %w", action, backend, server, err)
		}
		_, err := fmt.Fprintf(out, "%s/%s: %s (this node only)\n", backend, server, done)
		return err
	}
	res, err := c.SetServerEverywhere(ctx, arg, action)
	if err != nil {
		return fmt.Errorf("%s %s: %w", action, arg, err)
	}
	var b strings.Builder
	for _, r := range res.Local {
		fmt.Fprintf(&b, "%s/%s (%s): %s\n", r.Backend, r.Server, r.Address, done)
	}
	if len(res.Peers) > 0 {
		fmt.Fprintf(&b, "sent to %s\n", strings.Join(res.Peers, ", "))
	}
	peers := slices.Sorted(maps.Keys(res.PeerErrors))
	for _, p := range peers {
		fmt.Fprintf(&b, "NOT sent to %s: %s\n", p, res.PeerErrors[p])
	}
	if _, err := io.WriteString(out, b.String()); err != nil {
		return err
	}
	if len(peers) > 0 {
		return fmt.Errorf("%s %s: %d member(s) not reached; run the command again once they are up", action, arg, len(peers))
	}
	return nil
}

// waitIdle prints the open connections of the servers match names every
// interval until they reach 0 or ctx ends.
func waitIdle(ctx context.Context, status func(context.Context) (admin.Snapshot, error), match string, every time.Duration, out io.Writer) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	start := time.Now()
	for {
		snap, err := status(ctx)
		if err != nil {
			return fmt.Errorf("wait for %s to drain: %w", match, err)
		}
		total, parts := openConns(snap, match)
		if _, err := fmt.Fprintf(out, "%s  %s: %d open connection(s)%s\n", time.Since(start).Round(time.Second), match, total, parts); err != nil {
			return err
		}
		if total == 0 {
			_, err := fmt.Fprintf(out, "%s is idle on this node\n", match)
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s still has %d open connection(s) at the timeout", match, total)
		case <-tick.C:
		}
	}
}

// openConns sums the open connections of the servers match names (as
// SetServerEverywhere matches them) and lists them per backend.
func openConns(s admin.Snapshot, match string) (int64, string) {
	var total int64
	var parts []string
	for _, b := range s.Backends {
		for _, sv := range b.Servers {
			host, _, _ := net.SplitHostPort(sv.Address)
			if sv.Name != match && sv.Address != match && host != match {
				continue
			}
			total += sv.Current
			parts = append(parts, fmt.Sprintf("%s %d", b.Name, sv.Current))
		}
	}
	if len(parts) == 0 {
		return 0, ""
	}
	return total, " (" + strings.Join(parts, ", ") + ")"
}

func newNodeCmd() *cobra.Command {
	var sock socketFlags
	cmd := &cobra.Command{
		Use:   "node maintenance on|off",
		Short: "Put this node into maintenance, or take it out",
		Example: `  halb node maintenance on
  halb node maintenance off`,
	}
	sock.register(cmd.PersistentFlags())
	cmd.AddCommand(&cobra.Command{
		Use:   "maintenance on|off",
		Short: "Hand this node's VIPs to another node before work on it, or end that",
		Long: `Maintenance on makes the election pass over this node: a VIP it holds
moves to another eligible node, make-before-break, so no new connection
fails. Maintenance off makes the node eligible again; under the preempt
policy it may take a VIP back after the preempt delay.

Exit status: 0 done, 1 halb could not be reached or refused (the reason is
printed).`,
		Example: `  halb node maintenance on
  halb status            # check the VIP moved to another node
  halb node maintenance off`,
		Args:      oneArg("on|off", "whether to start or end maintenance", "on"),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var on bool
			switch args[0] {
			case "on":
				on = true
			case "off":
			default:
				return fmt.Errorf("maintenance %q: want on or off", args[0])
			}
			path, err := sock.path()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			defer cancel()
			if err := admin.Dial(path).SetMaintenance(ctx, on); err != nil {
				return fmt.Errorf("maintenance %s: %w", args[0], err)
			}
			msg := "maintenance on: this node hands over its VIPs and is not elected; see halb status"
			if !on {
				msg = "maintenance off: this node is eligible again"
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), msg)
			return err
		},
	})
	return cmd
}
