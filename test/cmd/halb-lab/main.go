// Command halb-lab builds and drives halb's network-namespace lab: fake
// control planes, a client-side prober, and `up`/`down` for a lab to poke at.
package main

import (
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"halb/test/tool"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
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
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	root.AddCommand(
		newFakecpCmd(log),
		newProbeCmd(),
		newUpCmd(log),
		newDownCmd(),
		newDemoCmd(),
		newChaosCmd(),
		newStreamsCmd(),
		newBGPSpeakerCmd(log),
		newStormCmd(),
		newFlowsCmd(),
		newDemoBGPCmd(),
	)
	return tool.Main(root, args, stdout, stderr)
}
