package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"halb/internal/admin"
	"halb/internal/config"
)

// socketFlags says where the admin socket is: --socket, else the
// admin.socket of --config, else the default.
type socketFlags struct {
	socket string
	config string
	flags  *pflag.FlagSet
}

func (s *socketFlags) register(fs *pflag.FlagSet) {
	s.flags = fs
	fs.StringVar(&s.socket, "socket", config.DefaultAdminSocket, "admin socket of the halb to talk to")
	fs.StringVarP(&s.config, "config", "c", "", "read the socket path (admin.socket) from this config file")
}

func (s *socketFlags) path() (string, error) {
	if s.config == "" || s.flags.Changed("socket") {
		return s.socket, nil
	}
	cfg, err := config.Load(s.config)
	if err != nil {
		return "", fmt.Errorf("%s:\n%w", s.config, err)
	}
	return cfg.Admin.Socket, nil
}

// requestTimeout bounds one admin request, so a wedged daemon cannot hang
// a script.
const requestTimeout = 10 * time.Second

func newStatusCmd() *cobra.Command {
	var (
		sock     socketFlags
		output   string
		watch    bool
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status [--socket PATH] [-o text|json] [--watch [--interval 2s]]",
		Short: "Show VIPs, members, frontends and servers as this node sees them",
		Long: `Status asks the local halb, over its admin socket, for its view of the
cluster and prints it: the node, each VIP and who holds it, every member with
its own view of the holder, the frontends' connections, and every backend
server's health.

A member whose view of a VIP's holder differs from the majority (or, without
a majority, from this node's) is flagged DISAGREES: the members do not see
each other, or run different configs (also flagged, as CONFIG DIFFERS).
After the tables, status says OK or lists every problem it found.

With -o json the snapshot is printed as JSON on standard output (the
fields of the admin API's GET /v1/status) and problems go to standard error.
With --watch the view is refreshed every --interval until Ctrl-C.

Colour is used only when standard output is a terminal and NO_COLOR is unset.

Exit status:
  0  OK: every VIP has exactly one holder that all alive members agree on,
     and every frontend's backend has a healthy server
  1  halb could not be reached (is it running? may you read the socket?),
     or the command was misused
  2  halb answered and reported a problem (split brain, no holder, a
     frontend without a healthy server, ...)
With --watch, the exit status is that of the last refresh.`,
		Example: `  halb status
  halb status -o json | jq '.vips[] | {address, holder}'
  halb status --watch --interval 1s
  halb status --config /etc/halb/halb.yaml
  halb status >/dev/null || echo "halb degraded or down"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: want text or json", output)
			}
			if watch && interval < 100*time.Millisecond {
				return fmt.Errorf("--interval %v: want at least 100ms", interval)
			}
			path, err := sock.path()
			if err != nil {
				return err
			}
			st := statusPrinter{
				client: admin.Dial(path),
				json:   output == "json",
				out:    cmd.OutOrStdout(),
				errOut: cmd.ErrOrStderr(),
				tty:    isTerminal(cmd.OutOrStdout()),
			}
			var code int
			if watch {
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				code = st.watch(ctx, interval)
			} else if code, err = st.once(cmd.Context()); err != nil {
				return err
			}
			if code != 0 {
				return exitError{code: code}
			}
			return nil
		},
	}
	sock.register(cmd.Flags())
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "refresh interval with --watch")
	return cmd
}

type statusPrinter struct {
	client      *admin.Client
	json        bool
	out, errOut io.Writer
	tty         bool
}

// once fetches and prints one snapshot and returns the exit status its
// verdict calls for.
func (p statusPrinter) once(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	snap, err := p.client.Status(ctx)
	if err != nil {
		return admin.CodeUnreachable, err
	}
	code, problems := admin.Verdict(snap)
	if p.json {
		b, err := json.MarshalIndent(snap, "", "  ")
		if err != nil {
			return admin.CodeUnreachable, fmt.Errorf("encode status: %w", err)
		}
		if _, err := fmt.Fprintf(p.out, "%s\n", b); err != nil {
			return admin.CodeUnreachable, err
		}
		for _, pr := range problems {
			_, _ = fmt.Fprintf(p.errOut, "halb: degraded: %s\n", pr)
		}
		return code, nil
	}
	color := p.tty && os.Getenv("NO_COLOR") == ""
	admin.Render(p.out, snap, color)
	paint := func(c, s string) string {
		if !color {
			return s
		}
		return c + s + "\x1b[0m"
	}
	if len(problems) == 0 {
		_, err = fmt.Fprintf(p.out, "\n%s\n", paint("\x1b[32m", "OK: one agreed holder per VIP, every frontend has a healthy server"))
		return code, err
	}
	_, _ = fmt.Fprintf(p.out, "\n%s\n", paint("\x1b[31m", fmt.Sprintf("DEGRADED: %d problem(s)", len(problems))))
	for _, pr := range problems {
		if _, err := fmt.Fprintf(p.out, "  - %s\n", pr); err != nil {
			return code, err
		}
	}
	return code, nil
}

// watch prints a snapshot every interval until ctx ends and returns the
// last exit status. A failed refresh is shown and retried, since halb may
// just be restarting.
func (p statusPrinter) watch(ctx context.Context, interval time.Duration) int {
	t := time.NewTicker(interval)
	defer t.Stop()
	code := admin.CodeUnreachable
	for {
		if p.tty {
			// Home the cursor and clear, like watch(1).
			_, _ = fmt.Fprint(p.out, "\x1b[H\x1b[2J")
		}
		if !p.json {
			_, _ = fmt.Fprintf(p.out, "Every %v: halb status  %s\n\n", interval, time.Now().Format(time.TimeOnly))
		}
		c, err := p.once(ctx)
		if ctx.Err() != nil {
			return code
		}
		code = c
		if err != nil {
			_, _ = fmt.Fprintf(p.errOut, "halb: %v\n", err)
		}
		if !p.tty && !p.json {
			_, _ = fmt.Fprintln(p.out)
		}
		select {
		case <-ctx.Done():
			return code
		case <-t.C:
		}
	}
}

// isTerminal reports whether w is a terminal, so escapes are not written
// into files and pipes.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
