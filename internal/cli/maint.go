package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"halb/internal/admin"
)

func newServerCmd() *cobra.Command {
	var sock socketFlags
	cmd := &cobra.Command{
		Use:   "server enable|disable|drain BACKEND/SERVER",
		Short: "Take a backend server out of rotation, or put it back",
		Long: `Server changes the administrative state of one backend server in the halb
behind the admin socket (this node), like HAProxy's "set server ... state".
The config file is not changed.

  drain    no new connections go to the server; open ones run to their end
  disable  the server is out of service and gets no connections
  enable   the server is back in rotation once its health checks pass

Exit status: 0 done, 1 halb could not be reached or refused (for example
an unknown backend or server; the reason is printed).`,
		Example: `  halb server drain k8s_controlplane/talos-lon-cp01
  halb status            # wait until its connections reach 0
  halb server disable k8s_controlplane/talos-lon-cp01
  halb server enable k8s_controlplane/talos-lon-cp01`,
	}
	sock.register(cmd.PersistentFlags())
	for _, a := range []struct{ action, short, done string }{
		{admin.ActionDrain, "Send no new connections to a server; let open ones finish", "draining: no new connections, open ones run to their end"},
		{admin.ActionDisable, "Take a server out of service", "disabled: out of service"},
		{admin.ActionEnable, "Put a drained or disabled server back into rotation", "enabled: back in rotation once its health checks pass"},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:     a.action + " BACKEND/SERVER",
			Short:   a.short,
			Example: fmt.Sprintf("  halb server %s k8s_controlplane/talos-lon-cp01", a.action),
			Args:    oneArg("BACKEND/SERVER", "the server as named in the config", "k8s_controlplane/talos-lon-cp01"),
			RunE: func(cmd *cobra.Command, args []string) error {
				backend, server, ok := strings.Cut(args[0], "/")
				if !ok || backend == "" || server == "" || strings.Contains(server, "/") {
					return fmt.Errorf("%q: want BACKEND/SERVER, e.g. k8s_controlplane/talos-lon-cp01", args[0])
				}
				path, err := sock.path()
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
				defer cancel()
				if err := admin.Dial(path).SetServerAdmin(ctx, backend, server, a.action); err != nil {
					return fmt.Errorf("%s %s/%s: %w", a.action, backend, server, err)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s/%s: %s\n", backend, server, a.done)
				return err
			},
		})
	}
	return cmd
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
