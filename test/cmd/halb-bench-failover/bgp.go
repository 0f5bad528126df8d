package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"halb/test/benchresult"
	"halb/test/failbench"
	"halb/test/lab"
)

func newBGPCmd(stderr io.Writer) *cobra.Command {
	var halb, labBin, results, workdir string
	var systems, scenarios []string
	var reps int
	var quick, keep bool
	cmd := &cobra.Command{
		Use:   "bgp",
		Short: "One node leaves: BGP mode (ECMP of three behind FRR) beside ARP mode, new connections and established ones",
		Long: `bgp measures, per scenario, the new-connection outage and the share of
established connections that live on when one LB node leaves:

  withdraw  BGP: maintenance on lb3 (withdraw, drain); ARP: a planned drill
  crash     kill -9 (BGP: lb3; ARP: the holder, frozen then killed)
  linkdown  the node's link goes down (BGP: the router's hold time, 3 s)

on three systems: halb-bgp-pinned (the lab's router pins established flows),
halb-bgp-plain (FRR 8.4's hash-threshold ECMP as it comes) and halb-arp
(profile lan, the reference). Results go into the day's bench/results file
under "bgp", and a table into <date>-bgp.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return errors.New("the namespace lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)")
			}
			if _, err := os.Stat(filepath.Join(lab.DefaultFRRDir, "bgpd")); err != nil {
				return fmt.Errorf("the BGP lab's router needs FRR: apt-get install -y frr (%w)", err)
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own binary: %w", err)
			}
			bins := failbench.Bins{Halb: halb, Lab: labBin, Check: self}
			if bins.Halb == "" {
				bins.Halb = filepath.Join(filepath.Dir(self), "halb")
			}
			if bins.Lab == "" {
				bins.Lab = filepath.Join(filepath.Dir(self), "halb-lab")
			}
			if workdir == "" {
				if workdir, err = os.MkdirTemp("", "halb-bench-bgp-"); err != nil {
					return err
				}
			}
			if !keep {
				defer func() { _ = os.RemoveAll(workdir) }()
			}
			log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			_, err = failbench.RunBGP(cmd.Context(), failbench.BGPOptions{
				Bins: bins, Systems: systems, Scenarios: scenarios, Reps: reps, Quick: quick,
				WorkDir: workdir, ResultsDir: results, Machine: benchresult.ReadMachine(commit()),
				Out: cmd.OutOrStdout(), Log: log,
			})
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&halb, "halb", "", "halb binary (default: next to this one)")
	f.StringVar(&labBin, "lab-bin", "", "halb-lab binary (default: next to this one)")
	f.StringVar(&results, "results", "bench/results", "results directory")
	f.StringVar(&workdir, "workdir", "", "labs' configs and logs (default: a temporary directory)")
	f.StringSliceVar(&systems, "systems", nil, "systems (default all): "+strings.Join(failbench.AllBGPSystems(), ","))
	f.StringSliceVar(&scenarios, "scenarios", nil, "scenarios (default all): "+strings.Join(failbench.AllBGPScenarios(), ","))
	f.IntVar(&reps, "reps", 0, "repetitions per scenario and system (default 5, 2 with --quick)")
	f.BoolVar(&quick, "quick", false, "fewer repetitions")
	f.BoolVar(&keep, "keep", false, "keep the workdir")
	return cmd
}
