package cli

import (
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
	"halb/internal/sdnotify"
)

func newRunCmd() *cobra.Command {
	var path, node, logLevel, socket string
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

SIGHUP (or halb reload) re-reads the config and applies what changed; an
invalid file changes nothing.

SIGINT or SIGTERM stop halb gracefully: it hands each VIP it holds to another
eligible node (make-before-break), leaves the cluster, stops accepting, lets
open connections finish for up to timeouts.drain, and exits 0.`,
		Example: `  halb run --config /etc/halb/halb.yaml --node lb1
  halb run --config deploy/examples/loopback.yaml --log-level debug`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			}
			override(cfg)
			if node, err = chooseNode(node, cfg.Cluster); err != nil {
				return err
			}
			log := newLogger(cmd.ErrOrStderr(), cfg.Log)
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
			// SIGHUP re-reads the config; a bad file is logged and
			// changes nothing.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						_ = d.Reload() // the daemon logs the outcome
					}
				}
			}()
			return d.Run(ctx)
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/halb/halb.yaml", "config file")
	cmd.Flags().StringVar(&node, "node", "", "this node's name in cluster.nodes (default: $HALB_NODE, else the entry with a local address, else the host name)")
	cmd.Flags().StringVar(&logLevel, "log-level", "", "override log.level: debug, info, warn, error")
	cmd.Flags().StringVar(&socket, "socket", "", "override admin.socket")
	return cmd
}

func newLogger(w io.Writer, l config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: level}
	return slog.New(logHandler(w, l.Format, opts))
}

// raiseFileLimit lifts the soft open-file limit to the hard one, as a
// proxy needs two descriptors per connection, and warns with the numbers
// when maxconn cannot fit.
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
	// Two sockets per proxied connection, plus listeners, checks, gossip.
	need := uint64(2*maxconn) + fileReserve
	if maxconn > 0 && need > lim.Cur {
		log.Warn("maxconn does not fit the open-file limit: connections beyond it fail to be accepted or dialled",
			"maxconn", maxconn, "fds_needed", need, "fd_limit", lim.Cur,
			"fix", "raise LimitNOFILE (systemd) or ulimit -n, or lower maxconn")
	}
}

// fileReserve is what halb needs besides proxied connections.
const fileReserve = 256
