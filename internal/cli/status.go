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
After the tables, status gives its verdict and lists every problem it found:
  OK        every VIP has one agreed holder, every member is alive and
            eligible, every server is up and every frontend listens
  DEGRADED  clients are served but redundancy is lost: a server down, drained
            or disabled, a member down, unreachable, not eligible or in
            maintenance, configs or versions that differ, panic routing, a
            check rejected for credentials
  FAIL      clients are not served reliably: a VIP with no holder or with two
            (split brain), a frontend without a usable server or listener

With -o json the status is printed as JSON on standard output (GET
/v1/status: the snapshot plus verdict, exit_code and problems) and the
problems also go to standard error.
With --watch the view is refreshed every --interval until Ctrl-C.

Colour is used only when standard output is a terminal and NO_COLOR is unset.

Exit status, as a monitoring plugin (Nagios, Icinga, check_mk) reports it:
  0  OK
  1  DEGRADED (WARNING)
  2  FAIL (CRITICAL)
  3  halb could not be reached (is it running? may you read the socket?),
     or the command was misused (UNKNOWN)
Any problem is non-zero. With --watch, the exit status is that of the last
refresh.`,
		Example: `  halb status
  halb status -o json | jq '.vips[] | {address, holder}'
  halb status --watch --interval 1s
  halb status --config /etc/halb/halb.yaml
  halb status >/dev/null || echo "halb degraded, failing or down"`,
		Args: func(cmd *cobra.Command, args []string) error {
			return statusUnknown(cmd, noArgs(cmd, args))
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return statusUnknown(cmd, fmt.Errorf("%s: -o %q: want text or json", commandName(cmd), output))
			}
			if watch && interval < 100*time.Millisecond {
				return statusUnknown(cmd, fmt.Errorf("--interval %v: want at least 100ms", interval))
			}
			path, err := sock.path()
			if err != nil {
				return statusUnknown(cmd, err)
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
				return statusUnknown(cmd, err)
			}
			if code != 0 {
				return exitError{code: code}
			}
			return nil
		},
	}
	cmd.SetFlagErrorFunc(statusUnknown)
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
	st := admin.NewStatus(snap)
	if p.json {
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return admin.CodeUnreachable, fmt.Errorf("encode status: %w", err)
		}
		if _, err := fmt.Fprintf(p.out, "%s\n", b); err != nil {
			return admin.CodeUnreachable, err
		}
		for _, pr := range st.Problems {
			_, _ = fmt.Fprintf(p.errOut, "halb: %s: %s\n", pr.Level, pr.Text)
		}
		return st.Code, nil
	}
	color := p.tty && os.Getenv("NO_COLOR") == ""
	admin.Render(p.out, snap, color)
	return st.Code, writeVerdict(p.out, st.Assessment, color)
}

// writeVerdict prints the verdict line and the problems, failures marked.
func writeVerdict(w io.Writer, a admin.Assessment, color bool) error {
	paint := func(c, s string) string {
		if !color {
			return s
		}
		return c + s + "\x1b[0m"
	}
	var err error
	switch a.Verdict {
	case admin.LevelOK:
		_, err = fmt.Fprintf(w, "\n%s\n", paint("\x1b[32m", "OK: one agreed holder per VIP, every member alive and eligible, every server up"))
		return err
	case admin.LevelDegraded:
		_, err = fmt.Fprintf(w, "\n%s\n", paint("\x1b[33m", fmt.Sprintf("DEGRADED: %d problem(s), redundancy lost", len(a.Problems))))
	default:
		fails := 0
		for _, pr := range a.Problems {
			if pr.Level == admin.LevelFail {
				fails++
			}
		}
		_, err = fmt.Fprintf(w, "\n%s\n", paint("\x1b[31m", fmt.Sprintf("FAIL: %d failure(s) clients see, %d problem(s) in all", fails, len(a.Problems))))
	}
	if err != nil {
		return err
	}
	for _, pr := range a.Problems {
		line := "  - " + pr.Text
		if pr.Level == admin.LevelFail {
			line = paint("\x1b[31m", "  - FAIL: "+pr.Text)
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

// statusUnknown prints err and ends status with the UNKNOWN exit code, so
// a monitoring system never reads a failed call as WARNING; nil stays nil.
func statusUnknown(cmd *cobra.Command, err error) error {
	if err == nil {
		return nil
	}
	_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "%shalb: %v\n", errorPrefix(cmd.ErrOrStderr()), err)
	return exitError{code: admin.CodeUnreachable}
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
