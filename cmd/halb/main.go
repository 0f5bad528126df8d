// Command halb keeps a Kubernetes/Talos control-plane endpoint alive: an L4
// proxy with health checks and a virtual IP that moves between LB hosts.
package main

import (
	"os"

	"halb/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
