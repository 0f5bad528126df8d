// Command halb-bench-failover measures failover in the namespace lab — halb
// against keepalived + HAProxy — and soaks halb for false failovers; see
// docs/performance.md. It runs behind `make bench-failover`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"halb/test/benchresult"
	"halb/test/failbench"
	"halb/test/keepalivedlab"
	"halb/test/tool"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:   "halb-bench-failover",
		Short: "Failover and false-failover benchmarks in the namespace lab (needs root)",
	}
	root.AddCommand(newRunCmd(stderr), newCheckCmd(), newRenderCmd(), newBGPCmd(stderr))
	return tool.Main(root, args, stdout, stderr)
}

type runFlags struct {
	halb, labBin, results, workdir string
	systems, scenarios, soakOn     []string
	reps                           int
	longLivedWorkers               int
	quick, keep                    bool
	idle, stress                   time.Duration
	cpus, loadProbes, soakHeld     int
	shareConns                     int
	shareWindow                    time.Duration
	verbose                        bool
}

func newRunCmd(stderr io.Writer) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the failover scenarios and the soak, and merge the results into bench/results",
		Long: `run builds one namespace lab per system (client, 2 LBs, 3 control planes),
makes the client open a connection to VIP:6443 every 10 ms, and times the
outage of each scenario:

  kill      the holder is frozen (SIGSTOP) and killed (SIGKILL)
  linkdown  the holder's link goes down
  backends  the holder can no longer reach any control plane
  planned   planned handover: halb drill / keepalived stopped with SIGTERM
  failback  the preferred node returns after a crash and takes the VIP back
  baseline  nothing fails: the probe's noise floor on this machine
  longlived-kill, longlived-linkdown, longlived-stop, longlived-drill
            1000 idle TLS connections through the VIP (no keep-alive) when
            the holder is killed (kill -9), cut off (link down), stopped
            (SIGTERM; keepalived and HAProxy) or hands over (halb drill;
            keepalived SIGTERM): when each fails, when a new one works, and
            the steps of each reconnection
  longlived-echo-kill, longlived-echo-linkdown, longlived-echo-stop,
  longlived-echo-drill
            the same with plain TCP connections to an echo server
  soak      false failovers: halb idle, then under CPU stress and load, each
            halb lab holding --soak-held idle connections through its VIP
            (the table of client connections shared all along)
  tableshare
            what sharing the table of client connections costs: gossip
            bytes/s and CPU of the holder and its peer, without connections
            and with --tableshare-conns idle ones open (halb-lan)

Systems: halb-lan, halb-fast (halb's profiles), halb-lan-notickle (tickle ACKs
off; long-lived kill and link down only), halb-lan-nohandoff (halb-lan with
vips[].handoff off, planned, long-lived stop and drill only, to compare the
flow hand-off),
keepalived-default (VRRPv2 advert_int 1) and keepalived-tuned (VRRPv3
advert_int 0.1), each with HAProxy.
Results go to <results>/<date>.json (parts "failover", "soak" and
"tableshare"), a table to
stdout and <results>/<date>-failover.md.`,
		Example: `  halb-bench-failover run --quick
  halb-bench-failover run --systems halb-fast --scenarios kill,planned
  halb-bench-failover run --scenarios soak --soak-idle 10m --soak-stress 10m
  halb-bench-failover run --scenarios tableshare --tableshare-conns 20000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.Context(), cmd.OutOrStdout(), stderr, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.halb, "halb", "", "halb binary (default: next to this program)")
	fl.StringVar(&f.labBin, "lab-bin", "", "halb-lab binary (default: next to this program)")
	fl.StringVar(&f.results, "results", "bench/results", "directory of the results files")
	fl.StringVar(&f.workdir, "workdir", "", "labs' configs and logs (default: a temporary directory, removed unless --keep)")
	fl.BoolVar(&f.keep, "keep", false, "keep the workdir with every config and log")
	fl.StringSliceVar(&f.systems, "systems", nil, "systems to measure (default all): "+strings.Join(failbench.AllSystems(), ","))
	fl.StringSliceVar(&f.scenarios, "scenarios", nil, "scenarios to run (default all): "+strings.Join(append(failbench.AllScenarios(), "soak", "tableshare"), ","))
	fl.IntVar(&f.reps, "reps", 0, "repetitions per scenario and system (default 10, 3 with --quick)")
	fl.IntVar(&f.longLivedWorkers, "longlived-workers", 0, "reconnections in flight at most in the long-lived scenarios (0: every failed connection at once, as clients on their own hosts)")
	fl.BoolVar(&f.quick, "quick", false, "3 repetitions and a 1+1 minute soak")
	fl.DurationVar(&f.idle, "soak-idle", 0, "soak phase with no traffic (default 10m, 1m with --quick)")
	fl.DurationVar(&f.stress, "soak-stress", 0, "soak phase under stress and load (default 10m, 1m with --quick)")
	fl.StringSliceVar(&f.soakOn, "soak-systems", []string{failbench.HalbLAN, failbench.HalbFast, failbench.KeepalivedTuned}, "systems soaked side by side (keepalived ones as a reference)")
	fl.IntVar(&f.cpus, "soak-cpus", 2, "stress-ng --cpu workers during the stress phase")
	fl.IntVar(&f.loadProbes, "soak-load", 2, "connection probes through each VIP during the stress phase")
	fl.IntVar(&f.soakHeld, "soak-held", 2000, "idle connections held through each halb VIP during the soak (0: none)")
	fl.IntVar(&f.shareConns, "tableshare-conns", 20000, "idle connections held through the VIP while the table sharing is measured")
	fl.DurationVar(&f.shareWindow, "tableshare-window", 0, "each table-sharing measuring window (default 30s, 10s with --quick)")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log the labs' steps")
	return cmd
}

func runBench(ctx context.Context, out, stderr io.Writer, f runFlags) error {
	if os.Geteuid() != 0 {
		return errors.New("the namespace lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)")
	}
	bins, err := findBins(f)
	if err != nil {
		return err
	}
	scenarios := f.scenarios
	soak := len(scenarios) == 0 || slices.Contains(scenarios, "soak")
	share := len(scenarios) == 0 || slices.Contains(scenarios, "tableshare")
	scenarios = slices.DeleteFunc(slices.Clone(scenarios), func(s string) bool { return s == "soak" || s == "tableshare" })
	failover := len(f.scenarios) == 0 || len(scenarios) > 0
	for _, need := range needs(f, failover, soak, share) {
		if _, err := exec.LookPath(need); err != nil {
			return fmt.Errorf("%s is needed: apt-get install -y %s", need, need)
		}
	}
	workdir := f.workdir
	if workdir == "" {
		if workdir, err = os.MkdirTemp("", "halb-bench-failover-"); err != nil {
			return err
		}
	}
	if !f.keep {
		defer func() { _ = os.RemoveAll(workdir) }()
	} else {
		_, _ = fmt.Fprintf(out, "workdir kept: %s\n", workdir)
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	machine := benchresult.ReadMachine(commit())
	var errs []error
	if failover {
		_, err := failbench.RunFailover(ctx, failbench.Options{
			Bins: bins, Systems: f.systems, Scenarios: scenarios, Reps: f.reps, Quick: f.quick, LongLivedWorkers: f.longLivedWorkers,
			WorkDir: workdir, ResultsDir: f.results, Machine: machine, Out: out, Log: log,
		})
		errs = append(errs, err)
	}
	if soak && ctx.Err() == nil {
		errs = append(errs, runSoak(ctx, f, bins, workdir, machine, out, log))
	}
	if share && ctx.Err() == nil {
		errs = append(errs, runTableShare(ctx, f, bins, workdir, machine, out, log))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	_, _ = fmt.Fprintf(out, "markdown: %s\n", failbench.MarkdownPath(f.results, time.Now()))
	return nil
}

// findBins names the programs a run needs: by default halb and halb-lab
// next to this one, which keepalived's check runs as well.
func findBins(f runFlags) (failbench.Bins, error) {
	self, err := os.Executable()
	if err != nil {
		return failbench.Bins{}, fmt.Errorf("find own binary: %w", err)
	}
	bins := failbench.Bins{Halb: f.halb, Lab: f.labBin, Check: self}
	if bins.Halb == "" {
		bins.Halb = filepath.Join(filepath.Dir(self), "halb")
	}
	if bins.Lab == "" {
		bins.Lab = filepath.Join(filepath.Dir(self), "halb-lab")
	}
	for _, b := range []string{bins.Halb, bins.Lab} {
		if _, err := os.Stat(b); err != nil {
			return bins, fmt.Errorf("%w (build with `make build`, or pass --halb/--lab-bin)", err)
		}
	}
	return bins, nil
}

// runSoak runs the false-failover soak.
func runSoak(ctx context.Context, f runFlags, bins failbench.Bins, workdir string, machine benchresult.Machine, out io.Writer, log *slog.Logger) error {
	idle, stress := f.idle, f.stress
	if idle == 0 {
		idle = pick(f.quick, time.Minute, 10*time.Minute)
	}
	if stress == 0 {
		stress = pick(f.quick, time.Minute, 10*time.Minute)
	}
	_, err := failbench.RunSoak(ctx, failbench.SoakOptions{
		Bins: bins, Systems: f.soakOn, Idle: idle, Stress: stress, CPUs: f.cpus, LoadProbes: f.loadProbes,
		Held: f.soakHeld, Quick: f.quick, WorkDir: workdir, ResultsDir: f.results, Machine: machine, Out: out, Log: log,
	})
	return err
}

// runTableShare measures what sharing the connection table costs.
func runTableShare(ctx context.Context, f runFlags, bins failbench.Bins, workdir string, machine benchresult.Machine, out io.Writer, log *slog.Logger) error {
	window := f.shareWindow
	if window == 0 {
		window = pick(f.quick, 10*time.Second, 30*time.Second)
	}
	_, err := failbench.RunTableShare(ctx, failbench.TableShareOptions{
		Bins: bins, Conns: f.shareConns, Window: window,
		WorkDir: workdir, ResultsDir: f.results, Machine: machine, Out: out, Log: log,
	})
	return err
}

// needs lists the programs the chosen parts run.
func needs(f runFlags, failover, soak, share bool) []string {
	out := []string{"ip"}
	if share {
		out = append(out, "nft")
	}
	var systems []string
	if failover {
		systems = f.systems
		if len(systems) == 0 {
			systems = failbench.AllSystems()
		}
	}
	if soak {
		systems = append(systems, f.soakOn...)
		out = append(out, "stress-ng")
	}
	if slices.ContainsFunc(systems, func(s string) bool { return strings.HasPrefix(s, "keepalived") }) {
		out = append(out, "keepalived", "haproxy")
	}
	return out
}

func pick(quick bool, q, full time.Duration) time.Duration {
	if quick {
		return q
	}
	return full
}

// commit names the source measured: the short hash, "-dirty" with local changes.
func commit() string {
	b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(b))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += "-dirty"
	}
	return c
}

func newCheckCmd() *cobra.Command {
	var sock string
	cmd := &cobra.Command{
		Use:   "chk-haproxy --socket PATH",
		Short: "Exit 0 when HAProxy answers and each of its backends has a server up (keepalived's track_script)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return keepalivedlab.BackendsUp(cmd.Context(), sock, keepalivedlab.Backends())
		},
	}
	cmd.Flags().StringVar(&sock, "socket", "", "HAProxy stats socket")
	_ = cmd.MarkFlagRequired("socket")
	return cmd
}

func newRenderCmd() *cobra.Command {
	var results, date string
	cmd := &cobra.Command{
		Use:   "render [--date YYYY-MM-DD]",
		Short: "Write <results>/<date>-failover.md again from <results>/<date>.json (after merging results files by hand)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			day := time.Now()
			if date != "" {
				d, err := time.Parse("2006-01-02", date)
				if err != nil {
					return fmt.Errorf("--date %q: want YYYY-MM-DD", date)
				}
				day = d
			}
			if err := failbench.WriteMarkdown(results, day); err != nil {
				return err
			}
			_, _ = fmt.Fprintln(cmd.OutOrStdout(), failbench.MarkdownPath(results, day))
			return nil
		},
	}
	cmd.Flags().StringVar(&results, "results", "bench/results", "directory of the results files")
	cmd.Flags().StringVar(&date, "date", "", "day of the results (default today, UTC)")
	return cmd
}
