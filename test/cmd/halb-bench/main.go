// Command halb-bench measures halb's proxy beside HAProxy and the direct
// path in a network-namespace lab (`make bench-proxy`), and provides the
// servers and the client agent the measurement runs inside the lab.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"halb/test/loadgen"
	"halb/test/proxybench"
	"halb/test/tool"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	root := &cobra.Command{
		Use:   "halb-bench",
		Short: "Benchmark halb's proxy beside HAProxy and the direct path (needs root)",
	}
	root.AddCommand(newProxyCmd(log), newServeCmd(log), newAgentCmd())
	return tool.Main(root, args, stdout, stderr)
}

func newProxyCmd(log *slog.Logger) *cobra.Command {
	var opts proxybench.Options
	var results, commit string
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Measure throughput, connection rate, latency and idle memory of halb, HAProxy and the direct path",
		Long: `Proxy builds a namespace lab (client, one LB host, three control planes),
runs echo and sink servers on the control planes, halb and HAProxy 2.6 (plain
and with splice forced) on the LB host with the same TCP-mode config, and
measures each the same way from the client, repetition after repetition. It
prints a table, merges the figures under "proxy" into RESULTS/<date>.json and
writes RESULTS/<date>-proxy.md.`,
		Example: `  sudo bin/halb-bench proxy --halb bin/halb --halb-lab bin/halb-lab
  sudo bin/halb-bench proxy --quick --only rr,idle`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("the benchmark builds network namespaces and needs root")
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find halb-bench binary: %w", err)
			}
			opts.BenchBin = self
			if opts.HalbBin == "" {
				opts.HalbBin = filepath.Join(filepath.Dir(self), "halb")
			}
			if opts.LabBin == "" {
				opts.LabBin = filepath.Join(filepath.Dir(self), "halb-lab")
			}
			if commit == "" {
				out, _ := exec.CommandContext(cmd.Context(), "git", "rev-parse", "--short", "HEAD").Output()
				commit = strings.TrimSpace(string(out))
			}
			b, err := proxybench.New(opts, log)
			if err != nil {
				return err
			}
			start := time.Now()
			s, err := b.Run(cmd.Context())
			if err != nil {
				return err
			}
			if err := s.WriteText(cmd.OutOrStdout()); err != nil {
				return err
			}
			js, md, err := s.Save(results, commit, time.Now())
			if err != nil {
				return err
			}
			_, _ = fmt.Fprintf(cmd.OutOrStdout(), "\nwrote %s and %s in %s\n", js, md, time.Since(start).Round(time.Second))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.HalbBin, "halb", "", "halb binary (default: next to halb-bench)")
	f.StringVar(&opts.LabBin, "halb-lab", "", "halb-lab binary (default: next to halb-bench)")
	f.StringVar(&opts.HAProxyBin, "haproxy", "", "haproxy binary (default: haproxy from $PATH)")
	f.BoolVar(&opts.Quick, "quick", false, "1 s measurements and 1000 idle connections")
	f.IntVar(&opts.Reps, "reps", 0, "repetitions (default 3)")
	f.Float64Var(&opts.Seconds, "seconds", 0, "length of one measurement (default 3, quick 1)")
	f.IntVar(&opts.IdleConns, "idle-conns", 0, "idle connections to open (default 5000, quick 1000)")
	f.StringSliceVar(&opts.Only, "only", nil, "measure only these parts: bulk, churn, rr, idle")
	f.BoolVar(&opts.NoSplice, "no-splice", false, "leave out HAProxy with splice forced")
	f.BoolVar(&opts.Perf, "perf", false, "count each proxy's system calls per measurement with perf stat (slows the proxies a little)")
	f.StringVar(&opts.Profile, "profile", "", "write a perf record -g CPU profile of each proxy per measurement into this directory")
	f.BoolVar(&opts.Strace, "strace", false, "keep strace -c -f tables of each proxy per measurement in the workdir (slows the proxies a lot)")
	f.StringVar(&opts.WorkDir, "workdir", "", "keep configs and logs here (default: a temporary directory, removed on success)")
	f.StringVar(&results, "results", "bench/results", "results directory")
	f.StringVar(&commit, "commit", "", "commit recorded with the results (default: git rev-parse --short HEAD)")
	return cmd
}

func newServeCmd(log *slog.Logger) *cobra.Command {
	var listen string
	var echoPort, sinkPort uint16
	cmd := &cobra.Command{
		Use:   "serve --listen IP",
		Short: "Serve echo and sink ports for the benchmark (run in a control plane's namespace)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := netip.ParseAddr(listen)
			if err != nil {
				return fmt.Errorf("--listen %q: %w", listen, err)
			}
			return loadgen.NewServer(netip.AddrPortFrom(a, echoPort), netip.AddrPortFrom(a, sinkPort), log).Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "IP address to listen on")
	cmd.Flags().Uint16Var(&echoPort, "echo-port", 7000, "echo port (request/response, churn)")
	cmd.Flags().Uint16Var(&sinkPort, "sink-port", 7001, "sink port (bulk streams)")
	_ = cmd.MarkFlagRequired("listen")
	return cmd
}

func newAgentCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "agent --socket PATH",
		Short: "Run load jobs sent as JSON lines over a unix socket (run in the client's namespace)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = os.Remove(socket)
			ln, err := net.Listen("unix", socket)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", socket, err)
			}
			return loadgen.ServeAgent(cmd.Context(), ln)
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "unix socket to take jobs on")
	_ = cmd.MarkFlagRequired("socket")
	return cmd
}
