package cli

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestMissingArgumentsAreNamed(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"server", "drain"}, "halb: server drain: missing NAME|ADDRESS|BACKEND/SERVER, the server: its name or address in every backend, or one backend's server (e.g. talos-lon-cp01)\n"},
		{[]string{"node", "maintenance"}, "halb: node maintenance: missing on|off"},
		{[]string{"import", "haproxy"}, "halb: import haproxy: missing FILE, the haproxy.cfg to translate"},
		{[]string{"import", "haproxy", "a.cfg", "b.cfg"}, "halb: import haproxy: takes one FILE, got 2: a.cfg b.cfg\n"},
		{[]string{"server"}, "halb: server: missing subcommand, one of: disable, drain, enable\n"},
		{[]string{"server", "stop"}, `halb: server: unknown subcommand "stop"; want one of: disable, drain, enable`},
		{[]string{"keys"}, "halb: keys: missing subcommand, one of: install, list, remove, use\n"},
		{[]string{"check", "a.yaml", "b.yaml"}, "halb: check: takes one config FILE, got 2"},
		{[]string{"check", "--config", "a.yaml", "b.yaml"}, "halb: check: give the config as FILE or as --config, not both\n"},
		{[]string{"keygen"}, "halb: keygen: missing --out, the file to write the key to (- for standard output) (e.g. --out /etc/halb/gossip.key)\n"},
		{[]string{"keys", "install"}, "halb: keys install: missing --key-file, the file holding the new key"},
		{[]string{"keys", "use"}, "halb: keys use: missing ID | --key-file FILE, which key"},
		{[]string{"keys", "remove"}, "halb: keys remove: missing ID | --key-file FILE, which key"},
		{[]string{"drill", "lb2"}, "halb: drill: takes no arguments, got 1: lb2\n"},
		{[]string{"reload", "/etc/halb/halb.yaml"}, "halb: reload: takes no arguments, got 1: /etc/halb/halb.yaml\n"},
		{[]string{"keys", "list", "-o", "yaml"}, "halb: keys list: -o \"yaml\": want text or json"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, stderr := mainOutput(tt.args...)
			if code != 1 || !strings.HasPrefix(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit 1 and stderr starting %q", code, stderr, tt.want)
			}
		})
	}
}

func TestCheckTakesTheConfigAsArgument(t *testing.T) {
	const cfg = "../../deploy/examples/loopback.yaml"
	for _, args := range [][]string{{"check", cfg}, {"check", "--config", cfg}, {"check", "-c", cfg}} {
		code, stdout, stderr := mainOutput(args...)
		if code != 0 || !strings.HasPrefix(stdout, cfg+": OK: ") {
			t.Fatalf("halb %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}

// -o is the output format wherever a command has one; files are --out.
func TestShortOMeansOutputFormat(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if f := c.LocalFlags().ShorthandLookup("o"); f != nil && f.Name != "output" {
			t.Errorf("%s: -o is --%s, want --output", c.CommandPath(), f.Name)
		}
		if f := c.LocalFlags().Lookup("output"); f != nil && f.Shorthand != "o" {
			t.Errorf("%s: --output has no -o", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(NewRoot(nil, nil))
}
