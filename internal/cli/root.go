package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"halb/internal/journal"
	"halb/internal/version"
)

// exitError carries a specific exit status; its message, if any, has
// already been printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Main runs halb with args and returns the process exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	root := NewRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	_, _ = fmt.Fprintf(stderr, "%shalb: %v\n", errorPrefix(stderr), err)
	return 1
}

// errorPrefix is journald's error priority when stderr is the journal, so
// the error that ends halb shows under `journalctl -p err`; else nothing.
func errorPrefix(stderr io.Writer) string {
	if f, ok := stderr.(*os.File); ok && journal.IsStream(f, os.Getenv("JOURNAL_STREAM")) {
		return journal.Priority(slog.LevelError)
	}
	return ""
}

// NewRoot builds the halb command tree; Main runs it, and the man pages and
// shell completions of the package are generated from it.
func NewRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "halb",
		Short: "Keep a Kubernetes/Talos control-plane endpoint alive",
		Long: `halb replaces HAProxy (TCP mode) + keepalived with one daemon per load-balancer host:
an L4 proxy with health checks for the Kubernetes API (6443) and the Talos API
(50000), gossip membership between LB hosts, and a virtual IP that moves to a
healthy host within a second when its holder dies.

Start with an example config:
  halb check deploy/examples/talos.yaml
  halb keygen --out /etc/halb/gossip.key --group halb
  halb run --config /etc/halb/halb.yaml --node lb1

halb run finds this host's entry in cluster.nodes by --node, $HALB_NODE, a
local address or the host name. man halb-run, and /usr/share/doc/halb, say more.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// --version prints what `halb version` prints first, which is also
		// the .deb's version, so scripts can compare the two.
		Version: buildVersion(),
	}
	root.SetVersionTemplate("halb {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newRunCmd(),
		configArg(newCheckCmd()),
		newKeygenCmd(),
		newKeysCmd(),
		newStatusCmd(),
		newServerCmd(),
		newNodeCmd(),
		newEventsCmd(),
		newImportCmd(),
		newDrillCmd(),
		newReloadCmd(),
		newPasswdCmd(),
		newVersionCmd(),
	)
	root.InitDefaultCompletionCmd()
	requireSubcommands(root)
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Long += "\n\nExample:\n  halb completion bash > /etc/bash_completion.d/halb"
		}
	}
	return root
}

// buildVersion is the version the daemon gossips and reports in its
// status: the same string as `halb version` and the .deb's version.
func buildVersion() string { return version.String() }

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print halb's version",
		Long: `Version prints "halb VERSION" on the first line, the same as halb --version
and the version of the halb package, then the commit and Go toolchain the
binary was built from.`,
		Example: "  halb version\n  halb --version",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			if _, err := fmt.Fprintf(w, "halb %s\n", buildVersion()); err != nil {
				return err
			}
			c := version.Commit()
			if c == "" {
				c = "unknown"
			}
			_, err := fmt.Fprintf(w, "commit %s, built with %s for %s/%s\n", c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
