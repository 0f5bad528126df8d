package cli

import (
	"errors"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// exitError carries a specific exit status; its message, if any, has
// already been printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Main runs halb with args and returns the process exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	_, _ = fmt.Fprintf(stderr, "halb: %v\n", err)
	return 1
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "halb",
		Short: "Keep a Kubernetes/Talos control-plane endpoint alive",
		Long: `halb replaces HAProxy (TCP mode) + keepalived with one daemon per load-balancer host:
an L4 proxy with health checks for the Kubernetes API (6443) and the Talos API
(50000), gossip membership between LB hosts, and a virtual IP that moves to a
healthy host within a second when its holder dies.

Start with an example config:
  halb check --config deploy/examples/talos.yaml
  halb keygen --out /etc/halb/gossip.key
  halb run --config /etc/halb/halb.yaml --node lb1`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newRunCmd(),
		newCheckCmd(),
		newKeygenCmd(),
		newKeysCmd(),
		newStatusCmd(),
		newServerCmd(),
		newNodeCmd(),
		newImportCmd(),
		newDrillCmd(),
		newReloadCmd(),
		newPasswdCmd(),
		newVersionCmd(),
	)
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Long += "\n\nExample:\n  halb completion bash > /etc/bash_completion.d/halb"
		}
	}
	return root
}

// buildVersion reports the module version and VCS revision stamped by the
// Go toolchain, so no linker flags are needed for `halb version`.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return fmt.Sprintf("%s (%s%s)", v, rev, dirty)
	}
	return v
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print halb's version",
		Example: "  halb version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "halb %s\n", buildVersion())
			return err
		},
	}
}
