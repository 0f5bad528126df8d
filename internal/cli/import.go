package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"halb/internal/config"
	"halb/internal/haproxy"
	"halb/internal/smallfile"
)

func newImportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Translate an HAProxy config into a halb config",
		Long: `Import reads another load balancer's config and writes the halb config that
does the same, as far as halb can, with a warning for everything left out.`,
		Args: noArgs,
	}
	cmd.AddCommand(newImportHAProxyCmd())
	return cmd
}

// importOptions are the flags of halb import haproxy.
type importOptions struct {
	iface  string
	kaPath string
	out    string
	force  bool
	nodes  []string
	define []string
}

func newImportHAProxyCmd() *cobra.Command {
	var o importOptions
	cmd := &cobra.Command{
		Use:   "haproxy FILE [--node NAME=ADDRESS[:PRIORITY]]... [--out FILE]",
		Short: "Translate haproxy.cfg (TCP mode) into a halb config",
		Long: `Import haproxy reads an haproxy.cfg and writes a halb config: frontends and
backends in mode tcp, servers, health checks, timeouts and maxconn. Every
directive that is not carried over gets a warning on standard error naming
its line, grouped: "changes behaviour" (with what HAProxy or keepalived did
and what halb will do), "confirm" (assumptions to check) and "dropped, no
effect". Sections in mode http are skipped; a stats page becomes the stats
section, with logins from a password file (HAProxy's password is never
copied). .if conditions are evaluated with the variables given by --define.

The VIP is the address the frontends bind. With --node for each LB host the
output also has a cluster section (gossip key /etc/halb/gossip.key) and the
VIP on --vip-interface; without --node it has neither, and halb would proxy
without moving the address. With --keepalived, the vrrp_instance of that
keepalived.conf gives the VIP's prefix length and interface, nopreempt
(policy sticky), preempt_delay, and the priorities: the node whose address
is its unicast_src_ip (or whose name is its router_id) keeps its state and
priority, and the others are placed so that the MASTER stays preferred; the
assumption is printed. Without --vip-interface or keepalived the interface
is eth0, flagged for confirmation.

Exit status: 0 when a config was written (warnings or not), 1 when the input
cannot be read or yields no usable config; the errors name their lines.`,
		Example: `  halb import haproxy /etc/haproxy/haproxy.cfg \
      --node lb1=192.168.66.151:200 --node lb2=192.168.66.152:100 \
      --out /etc/halb/halb.yaml
  halb import haproxy haproxy.cfg --keepalived /etc/keepalived/keepalived.conf \
      --node lb1=192.168.66.151 --node lb2=192.168.66.152
  halb check --config /etc/halb/halb.yaml`,
		Args: oneArg("FILE", "the haproxy.cfg to translate", "/etc/haproxy/haproxy.cfg"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImportHAProxy(cmd, args[0], o)
		},
	}
	cmd.Flags().StringVar(&o.iface, "vip-interface", "eth0", "interface that carries the VIP on the LB hosts (without the flag: keepalived's, else eth0)")
	cmd.Flags().StringVar(&o.kaPath, "keepalived", "", "keepalived.conf to take the VIP's prefix and interface, nopreempt/preempt_delay and priority from")
	cmd.Flags().StringArrayVar(&o.nodes, "node", nil, "an LB host as NAME=ADDRESS[:PRIORITY]; repeat for each host")
	cmd.Flags().StringArrayVar(&o.define, "define", nil, "an environment variable HAProxy runs with, NAME=VALUE, for .if defined(NAME) and $NAME; repeat for each")
	cmd.Flags().StringVar(&o.out, "out", "", "file to write (default: standard output)")
	cmd.Flags().BoolVar(&o.force, "force", false, "overwrite an existing output file")
	return cmd
}

// runImportHAProxy is `halb import haproxy`: it translates the
// haproxy.cfg at path and writes the result where o says.
func runImportHAProxy(cmd *cobra.Command, path string, o importOptions) error {
	data, err := smallfile.Read(path, config.MaxFileSize)
	if err != nil {
		return fmt.Errorf("read haproxy config: %w", err)
	}
	opts, err := o.haproxyOptions(cmd, path)
	if err != nil {
		return err
	}
	stderr := cmd.ErrOrStderr()
	res, err := haproxy.Import(data, opts)
	if err != nil {
		return printImportErrors(cmd, path, err)
	}
	_, _ = fmt.Fprint(stderr, haproxy.FormatWarnings(res.Warnings, path))
	if o.out == "" || o.out == "-" {
		_, err := cmd.OutOrStdout().Write(res.YAML)
		return err
	}
	if err := writeImportOutput(o.out, res.YAML, o.force); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stderr, "wrote %s with %d warning(s); next: halb check --config %s\n", o.out, len(res.Warnings), o.out)
	return err
}

// haproxyOptions turns the flags into the importer's options, reading
// the keepalived.conf if one is named.
func (o importOptions) haproxyOptions(cmd *cobra.Command, path string) (haproxy.Options, error) {
	opts := haproxy.Options{Source: path, VIPInterface: o.iface, KeepalivedSource: o.kaPath}
	if len(o.define) > 0 {
		opts.Env = map[string]string{}
		for _, d := range o.define {
			name, value, ok := strings.Cut(d, "=")
			if !ok || name == "" {
				return opts, fmt.Errorf("--define %q: want NAME=VALUE, e.g. --define HAPROXY_LOCALPEER=lb1", d)
			}
			opts.Env[name] = value
		}
	}
	if !cmd.Flags().Changed("vip-interface") {
		// Let keepalived's interface win over the default.
		opts.VIPInterface = ""
	}
	if o.kaPath != "" {
		kdata, err := smallfile.Read(o.kaPath, config.MaxFileSize)
		if err != nil {
			return opts, fmt.Errorf("read keepalived config: %w", err)
		}
		k, err := haproxy.ParseKeepalived(kdata)
		if err != nil {
			return opts, printImportErrors(cmd, o.kaPath, err)
		}
		opts.Keepalived = k
	}
	for _, s := range o.nodes {
		n, err := haproxy.ParseNode(s)
		if err != nil {
			return opts, err
		}
		opts.Nodes = append(opts.Nodes, n)
	}
	return opts, nil
}

// printImportErrors prints each error of an import as FILE:LINE: MESSAGE
// and returns exit status 1.
func printImportErrors(cmd *cobra.Command, path string, err error) error {
	var es haproxy.Errors
	if !errors.As(err, &es) {
		return err
	}
	stderr := cmd.ErrOrStderr()
	for _, e := range es {
		if e.Line > 0 {
			_, _ = fmt.Fprintf(stderr, "%s:%d: %v\n", path, e.Line, e.Err)
		} else {
			_, _ = fmt.Fprintf(stderr, "%s: %v\n", path, e.Err)
		}
	}
	_, _ = fmt.Fprintf(stderr, "%s: not imported: %d error(s)\n", path, len(es))
	return exitError{code: 1}
}

// writeImportOutput writes data to path, refusing to replace a file unless force
// is set, so that a running config is not overwritten by accident.
func writeImportOutput(path string, data []byte, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists: use --force to replace it", path)
	}
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}
