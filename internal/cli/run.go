package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"halb/internal/config"
	"halb/internal/daemon"
	"halb/internal/proxy"
	"halb/internal/sdnotify"
)

func newRunCmd() *cobra.Command {
	var path, node, logLevel, socket, stateFile string
	cmd := &cobra.Command{
		Use:   "run --config FILE [--node NAME]",
		Short: "Run the load balancer daemon in the foreground",
		Long: `Run starts halb: a listener per frontend, health checks for every server and,
with a cluster section, gossip with the other LB nodes and the VIP for the node
the election picks.

The node's identity is its entry under cluster.nodes: --node, else $HALB_NODE,
else the entry whose address is on this host, else the one named like the host
(full or short host name). Logs go to standard error; under journald with
syslog priorities and no timestamp of their own.

SIGHUP (or halb reload) re-reads the config and applies what changed, all of
it or nothing: an invalid file, or an address that cannot be bound, changes
nothing. A SIGHUP while halb is still starting is applied once it runs.

SIGINT or SIGTERM stop halb gracefully: it hands each VIP it holds to another
eligible node (make-before-break), leaves the cluster, stops accepting, lets
open connections finish for up to timeouts.drain, and exits 0.`,
		Example: `  halb run --config /etc/halb/halb.yaml --node lb1
  halb run --config deploy/examples/loopback.yaml --log-level debug`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// First of all, so that a SIGHUP (systemctl reload) while halb
			// starts is a reload request, not the default action that
			// ends the process. Requests wait until the daemon runs.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			if logLevel != "" {
				if err := config.CheckLogLevel(logLevel); err != nil {
					return fmt.Errorf("--log-level %w", err)
				}
			}
			cfg, err := config.Load(path)
			if err != nil {
				return fmt.Errorf("%s:\n%w", path, err)
			}
			override := func(c *config.Config) {
				if logLevel != "" {
					c.Log.Level = logLevel
				}
				if socket != "" {
					c.Admin.Socket = socket
				}
				if stateFile != "" {
					c.Admin.StateFile = stateFile
				}
			}
			override(cfg)
			if node, err = chooseNode(node, cfg.Cluster); err != nil {
				return err
			}
			log := newLogger(cmd.ErrOrStderr(), cfg.Log)
			logCredentialWarnings(cfg, log)
			for _, w := range exposedKeyFiles(cfg) {
				log.Warn("gossip key file is not private", "component", "cluster", "warning", w)
			}
			raiseFileLimit(cfg.MaxConn, log)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d, err := daemon.New(cfg, daemon.Options{
				ConfigPath: path,
				Override:   override,
				NodeName:   node,
				Version:    buildVersion(),
				Log:        log,
				Notify:     sdnotify.New(),
			})
			if err != nil {
				return err
			}
			go reloadOnHangup(ctx, d, hup, log)
			return d.Run(ctx)
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/halb/halb.yaml", "config file")
	cmd.Flags().StringVar(&node, "node", "", "this node's name in cluster.nodes (default: $HALB_NODE, else the entry with a local address, else the host name)")
	cmd.Flags().StringVar(&logLevel, "log-level", "", "override log.level: debug, info, warn, error")
	cmd.Flags().StringVar(&socket, "socket", "", "override admin.socket")
	cmd.Flags().StringVar(&stateFile, "state-file", "", "override admin.state_file")
	return cmd
}

// reloadOnHangup re-reads the config on each SIGHUP until ctx ends; a bad
// file is logged and changes nothing. A SIGHUP that comes while the daemon
// is still starting waits until it runs, so it is neither lost nor applied
// to a daemon half set up.
func reloadOnHangup(ctx context.Context, d *daemon.Daemon, hup <-chan os.Signal, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		select {
		case <-d.Running():
		default:
			log.Info("SIGHUP while starting: the reload waits until halb runs")
			select {
			case <-d.Running():
			case <-ctx.Done():
				return
			}
		}
		_ = d.Reload() // the daemon logs the outcome
	}
}

func newLogger(w io.Writer, l config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: level}
	return slog.New(logHandler(w, l.Format, opts))
}

// raiseFileLimit lifts the soft open-file limit to the hard one, as a
// proxy needs up to proxy.FilesPerConn descriptors per connection, and
// warns with the numbers when maxconn cannot fit.
func raiseFileLimit(maxconn int, log *slog.Logger) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("read the open-file limit", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			log.Warn("raise the open-file limit", "err", err)
		}
		_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	// Two sockets per proxied connection and a splice pipe per direction
	// moving bulk data, plus listeners, checks, gossip.
	if need := proxy.FilesNeeded(maxconn); need > lim.Cur {
		log.Warn("maxconn does not fit the open-file limit: connections beyond it fail to be accepted or dialled",
			"maxconn", maxconn, "fds_needed", need, "fd_limit", lim.Cur,
			"fds_per_conn", proxy.FilesPerConn, "why", "2 sockets, and a splice pipe (2 fds) per direction while bulk data flows",
			"fix", "raise LimitNOFILE (systemd) or ulimit -n, or lower maxconn")
	}
}
