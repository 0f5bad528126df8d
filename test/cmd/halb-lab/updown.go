package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"halb/test/lab"
)

func newUpCmd(log *slog.Logger) *cobra.Command {
	var opts lab.Options
	cmd := &cobra.Command{
		Use:   "up [--halb PATH] [--workdir DIR] [--prefix P] [--lbs N]",
		Short: "Build a lab and leave it running (tear it down with `halb-lab down`)",
		Long: `Up builds the namespaces <prefix>-sw (the bridge), <prefix>-lb1.. (halb),
<prefix>-cp1.. (fake control planes) and <prefix>-cl (the client) with the
seed topology's addresses, starts the fake control planes and halb on every LB
node, and exits, leaving them running. Configs, logs, sockets and PIDs are in
the workdir.`,
		Example: `  halb-lab up --halb bin/halb --workdir /tmp/halb-lab
  halb-lab up --halb bin/halb --workdir /tmp/halb-lab --lbs 3 --policy sticky`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find halb-lab binary: %w", err)
			}
			opts.LabBin = self
			if opts.HalbBin == "" {
				opts.HalbBin = findHalb(self)
			}
			if opts.HalbBin == "" {
				return errors.New("no halb binary: pass --halb PATH")
			}
			if opts.WorkDir == "" {
				return errors.New("pass --workdir DIR: `down` needs it to find the lab")
			}
			if _, err := os.Stat(filepath.Join(opts.WorkDir, "prefix")); err == nil {
				return fmt.Errorf("%s already holds a lab: run `halb-lab down --workdir %s` first", opts.WorkDir, opts.WorkDir)
			}
			opts.StartHalb = true
			l := lab.New(opts, log)
			if err := l.Up(cmd.Context()); err != nil {
				if cerr := l.Close(); cerr != nil {
					log.Error("tear down after a failed up", "err", cerr)
				}
				return err
			}
			p := l.Prefix()
			out := cmd.OutOrStdout()
			_, err = fmt.Fprintf(out, `lab %[1]s is up; workdir %[2]s (configs, logs, sockets)

  ip netns exec %[1]s-cl curl -sk https://%[3]s:6443/healthz
  ip netns exec %[1]s-cl %[4]s probe --target %[3]s:6443 --mode https --duration 30s
  ip -n %[1]s-lb1 addr show dev eth0                           # who holds the VIP
  %[5]s status --socket %[2]s/lb1.sock
  curl --unix-socket %[2]s/cp1.sock -X POST http://x/stop      # or /start, /fail-health/on
  ip -n %[1]s-sw link set lb1 down                             # cut lb1 off the LAN

  %[4]s down --workdir %[2]s
`, p, l.WorkDir(), lab.VIP(), self, opts.HalbBin)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.HalbBin, "halb", "", "halb binary (default: next to halb-lab, then $PATH)")
	f.StringVar(&opts.WorkDir, "workdir", "", "directory for configs, logs, sockets and PIDs")
	f.StringVar(&opts.Prefix, "prefix", "", "namespace prefix (default hl + 4 random hex digits)")
	f.IntVar(&opts.LBs, "lbs", 2, "LB nodes")
	f.IntVar(&opts.CPs, "cps", 3, "fake control planes")
	f.BoolVar(&opts.Insecure, "insecure", false, "gossip without encryption")
	f.StringVar(&opts.Policy, "policy", "", "cluster.policy: preempt or sticky")
	f.StringVar(&opts.Profile, "profile", "", "cluster.profile: lan or fast")
	f.DurationVar(&opts.PreemptDelay, "preempt-delay", 0, "cluster.preempt_delay")
	f.BoolVar(&opts.Quorum, "quorum", false, "cluster.quorum (3 or more LBs)")
	f.StringSliceVar(&opts.HalbArgs, "halb-arg", nil, "extra argument to `halb run` (repeatable)")
	return cmd
}

// findHalb looks for halb next to halb-lab, then on $PATH.
func findHalb(self string) string {
	p := filepath.Join(filepath.Dir(self), "halb")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath("halb"); err == nil {
		return p
	}
	return ""
}

func newDownCmd() *cobra.Command {
	var workdir, prefix string
	cmd := &cobra.Command{
		Use:   "down --workdir DIR | --prefix P",
		Short: "Tear down a lab: stop its processes, delete its namespaces",
		Long: `Down stops the processes recorded in the workdir (SIGTERM, then SIGKILL after
5 s; a PID is signalled only if its command line still names the workdir),
kills anything left in the lab's namespaces and deletes them. With only
--prefix it skips the PID records.`,
		Example: `  halb-lab down --workdir /tmp/halb-lab
  halb-lab down --prefix hl1a2b`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if workdir == "" && prefix == "" {
				return errors.New("pass --workdir or --prefix")
			}
			if workdir != "" {
				abs, err := filepath.Abs(workdir)
				if err != nil {
					return err
				}
				workdir = abs
			}
			if err := lab.Down(cmd.Context(), workdir, prefix); err != nil {
				return err
			}
			if workdir != "" {
				// The marker says a lab lives here; it no longer does.
				_ = os.Remove(filepath.Join(workdir, "prefix"))
				_ = os.RemoveAll(filepath.Join(workdir, "pids"))
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "lab down (%s)\n", time.Now().Format(time.TimeOnly))
			return err
		},
	}
	cmd.Flags().StringVar(&workdir, "workdir", "", "the lab's workdir (as given to up)")
	cmd.Flags().StringVar(&prefix, "prefix", "", "the lab's namespace prefix")
	return cmd
}
