// Command halb-docs writes halb's man pages and shell completions for the
// .deb (`make deb`): halb-docs --man DIR --completions DIR.
package main

import (
	"io"
	"os"

	"github.com/spf13/cobra"

	"halb/internal/cli"
	"halb/test/tool"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var man, completions string
	root := &cobra.Command{
		Use:   "halb-docs --man DIR --completions DIR",
		Short: "Write halb's man pages and shell completions",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return cli.WriteDocs(man, completions)
		},
	}
	root.Flags().StringVar(&man, "man", "", "directory for the man pages (section 1)")
	root.Flags().StringVar(&completions, "completions", "", "directory for the bash, zsh and fish completions")
	_ = root.MarkFlagRequired("man")
	_ = root.MarkFlagRequired("completions")
	return tool.Main(root, args, stdout, stderr)
}
