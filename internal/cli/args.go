package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// oneArg accepts exactly one positional argument and, unlike cobra's
// "accepts 1 arg(s), received 0", says which one is missing: name as in the
// usage line, what it is, and an example.
func oneArg(name, what, example string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return fmt.Errorf("%s: missing %s, %s (e.g. %s)", commandName(cmd), name, what, example)
		case len(args) > 1:
			return fmt.Errorf("%s: takes one %s, got %d: %s", commandName(cmd), name, len(args), strings.Join(args, " "))
		}
		return nil
	}
}

// noArgs accepts no positional argument and says so, unlike cobra's
// "unknown command" for a leaf command, which reads as a typo in its name.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s: takes no arguments, got %d: %s", commandName(cmd), len(args), strings.Join(args, " "))
	}
	return nil
}

// requiredFlag fails naming the flag, what it is and an example, like
// oneArg for a missing argument, when cmd's flag name was not given: cobra's
// MarkFlagRequired says only `required flag(s) "out" not set`.
func requiredFlag(cmd *cobra.Command, name, what, example string) error {
	if cmd.Flags().Changed(name) {
		return nil
	}
	return fmt.Errorf("%s: missing --%s, %s (e.g. --%s %s)", commandName(cmd), name, what, name, example)
}

// subcommandRequired makes a command that only groups subcommands fail with
// the list of them, instead of printing its help and exiting 0, so a script
// that forgot the subcommand does not look successful.
func subcommandRequired(cmd *cobra.Command, args []string) error {
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	if len(args) > 0 {
		return fmt.Errorf("%s: unknown subcommand %q; want one of: %s", commandName(cmd), args[0], strings.Join(names, ", "))
	}
	return fmt.Errorf("%s: missing subcommand, one of: %s", commandName(cmd), strings.Join(names, ", "))
}

// requireSubcommands gives every command below root that only groups
// subcommands the subcommandRequired behaviour.
func requireSubcommands(root *cobra.Command) {
	for _, c := range root.Commands() {
		if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
			c.Args = cobra.ArbitraryArgs
			c.RunE = subcommandRequired
		}
		requireSubcommands(c)
	}
}

// commandName is cmd's path without "halb ", which Main already prints
// before every error.
func commandName(cmd *cobra.Command) string {
	_, name, ok := strings.Cut(cmd.CommandPath(), " ")
	if !ok { // a command run on its own, as tests do
		return cmd.Name()
	}
	return name
}

// configArg lets cmd, which has a --config flag, take the config file as its
// one positional argument too (`halb check FILE`, like `haproxy -c -f FILE`).
func configArg(cmd *cobra.Command) *cobra.Command {
	cmd.Use = strings.Replace(cmd.Use, "--config FILE", "[FILE | --config FILE]", 1)
	cmd.Example = strings.TrimRight(cmd.Example, "\n") + "\n  halb " + cmd.Name() + " deploy/examples/talos.yaml"
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) > 1:
			return fmt.Errorf("%s: takes one config FILE, got %d: %s", commandName(cmd), len(args), strings.Join(args, " "))
		case len(args) == 1 && cmd.Flags().Changed("config"):
			return fmt.Errorf("%s: give the config as FILE or as --config, not both", commandName(cmd))
		}
		return nil
	}
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 1 {
			return cmd.Flags().Set("config", args[0])
		}
		return nil
	}
	return cmd
}
