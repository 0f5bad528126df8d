// Command halb-lab builds and drives halb's network-namespace lab: fake
// control planes, a client-side prober, and `up`/`down` for a lab to poke at.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:   "halb-lab",
		Short: "Build and drive halb's network-namespace lab (needs root)",
		Long: `halb-lab builds a lab of network namespaces: LB hosts running halb, fake
Kubernetes/Talos control planes and a client, joined by a bridge that lives in
its own namespace. Nothing is added to the host's own network namespace.

The integration tests use it; so can you:
  halb-lab up --halb bin/halb --workdir /tmp/halb-lab
  ip netns exec <prefix>-cl curl -k https://192.168.66.160:6443/healthz
  halb-lab down --workdir /tmp/halb-lab`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	root.AddCommand(
		newFakecpCmd(log),
		newProbeCmd(),
		newUpCmd(log),
		newDownCmd(),
		newDemoCmd(),
		newChaosCmd(),
	)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		_, _ = fmt.Fprintf(stderr, "halb-lab: %v\n", err)
		return 1
	}
	return 0
}

// exitError carries an exit status whose message was already printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
