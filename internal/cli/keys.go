package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"halb/internal/admin"
	"halb/internal/config"
	"halb/internal/keyring"
)

func newKeysCmd() *cobra.Command {
	var sock socketFlags
	cmd := &cobra.Command{
		Use:   "keys list|install|use|remove",
		Short: "Rotate the gossip encryption key without downtime",
		Long: `Keys shows and changes the gossip keys of the halb behind the admin socket
(this node). Every installed key decrypts; the primary key also encrypts.
Keys are shown by ID (a hash), never printed. Each change is written to
cluster.keyring_file before it returns, so a restart keeps it; that file
then takes precedence over cluster.key_file.

Rotate a cluster's key in three rounds, each on every node before the next:

  1. halb keys install --key-file new.key   every node can read the new key
  2. halb keys use ID                       every node encrypts with it
  3. halb keys remove OLD-ID                the old key no longer opens anything

Nodes never stop understanding each other, so no VIP moves. A node still
on the old key after round 3 is refused and logged by the others.

Exit status: 0 done, 1 halb could not be reached or refused (the reason
is printed).`,
		Example: `  halb keygen --out /root/new.key && scp /root/new.key lb2:/root/new.key
  halb keys install --key-file /root/new.key     # on lb1, then on lb2
  halb keys list
  halb keys use 9f86d081884c7d65                 # on lb1, then on lb2
  halb keys remove 2c26b46b68ffc68f              # on lb1, then on lb2`,
	}
	sock.register(cmd.PersistentFlags())
	cmd.AddCommand(newKeysListCmd(&sock), newKeysInstallCmd(&sock))
	for _, op := range []keyChange{
		{"use", "Make an installed key the primary one, which encrypts this node's gossip",
			"now encrypting with %s: once every node does, remove the old key on each"},
		{"remove", "Remove a key that is not primary: gossip sealed with it is refused",
			"removed %s"},
	} {
		cmd.AddCommand(newKeyChangeCmd(&sock, op))
	}
	return cmd
}

func newKeysListCmd(sock *socketFlags) *cobra.Command {
	var output string
	list := &cobra.Command{
		Use:     "list [-o text|json]",
		Short:   "List this node's gossip keys by ID, primary first",
		Example: "  halb keys list\n  halb keys list -o json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("%s: -o %q: want text or json", commandName(cmd), output)
			}
			return keysDo(cmd, sock, func(ctx context.Context, c *admin.Client) (admin.Keyring, error) {
				return c.Keys(ctx)
			}, output, "")
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return list
}

func newKeysInstallCmd(sock *socketFlags) *cobra.Command {
	var installFile string
	install := &cobra.Command{
		Use:   "install --key-file FILE",
		Short: "Add a key that decrypts gossip; the primary key still encrypts",
		Long: `Install adds the key in FILE (as halb keygen writes it; - reads standard
input) to this node's keyring. The key is read from a file, never from the
command line, where other users could see it.`,
		Example: "  halb keys install --key-file /root/new.key\n  halb keygen --out - | tee new.key | halb keys install --key-file -",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requiredFlag(cmd, "key-file", "the file holding the new key (- for standard input)", "/root/new.key"); err != nil {
				return err
			}
			key, err := readOneKey(cmd.InOrStdin(), installFile)
			if err != nil {
				return err
			}
			req := admin.KeyRequest{Key: keyring.Encode(key)}
			return keysDo(cmd, sock, func(ctx context.Context, c *admin.Client) (admin.Keyring, error) {
				return c.ChangeKey(ctx, "install", req)
			}, "text", fmt.Sprintf("installed %s: once every node has it, run `halb keys use %s` on each", keyring.ID(key), keyring.ID(key)))
		},
	}
	install.Flags().StringVar(&installFile, "key-file", "", "file holding the key (- for standard input)")
	return install
}

// keyChange is a keys subcommand that names one installed key: use or
// remove. done is the message on success, with the key's ID.
type keyChange struct{ name, short, done string }

func newKeyChangeCmd(sock *socketFlags, op keyChange) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:     op.name + " ID | --key-file FILE",
		Short:   op.short,
		Example: fmt.Sprintf("  halb keys %s 9f86d081884c7d65\n  halb keys %s --key-file /root/old.key", op.name, op.name),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req admin.KeyRequest
			var id string
			switch {
			case len(args) == 1 && file != "":
				return fmt.Errorf("%s: give an ID or --key-file, not both", commandName(cmd))
			case len(args) == 1:
				req.ID, id = args[0], args[0]
			case file != "":
				key, err := readOneKey(cmd.InOrStdin(), file)
				if err != nil {
					return err
				}
				req.Key, id = keyring.Encode(key), keyring.ID(key)
			default:
				return fmt.Errorf("%s: missing ID | --key-file FILE, which key: its ID from halb keys list or the file holding it (e.g. 9f86d081884c7d65)", commandName(cmd))
			}
			return keysDo(cmd, sock, func(ctx context.Context, c *admin.Client) (admin.Keyring, error) {
				return c.ChangeKey(ctx, op.name, req)
			}, "text", fmt.Sprintf(op.done, id))
		},
	}
	c.Flags().StringVar(&file, "key-file", "", "file holding the key (- for standard input)")
	return c
}

// keysDo runs one admin request and prints the keyring it returns.
func keysDo(cmd *cobra.Command, sock *socketFlags, call func(context.Context, *admin.Client) (admin.Keyring, error), output, done string) error {
	path, err := sock.path()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
	defer cancel()
	kr, err := call(ctx, admin.Dial(path))
	if err != nil {
		return fmt.Errorf("keys %s: %w", cmd.Name(), err)
	}
	out := cmd.OutOrStdout()
	if output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(kr)
	}
	if done != "" {
		_, _ = fmt.Fprintln(out, done)
	}
	return printKeyring(out, kr)
}

func printKeyring(w io.Writer, kr admin.Keyring) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "ID\tPRIMARY")
	for _, k := range kr.Keys {
		p := "no"
		if k.Primary {
			p = "yes"
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\n", k.ID, p)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	file := kr.File
	if file == "" {
		file = "none (cluster.keyring_file is not set: keys cannot be changed)"
	}
	_, err := fmt.Fprintf(w, "keyring file: %s\n", file)
	return err
}

// readOneKey reads a file that must hold exactly one gossip key.
func readOneKey(stdin io.Reader, file string) ([]byte, error) {
	var keys [][]byte
	var err error
	if file == "-" {
		data, rerr := io.ReadAll(io.LimitReader(stdin, 64<<10))
		if rerr != nil {
			return nil, fmt.Errorf("read key from standard input: %w", rerr)
		}
		if keys, err = keyring.Parse(data); err != nil {
			err = fmt.Errorf("key on standard input: %w", err)
		}
	} else {
		keys, err = keyring.Read(file)
	}
	if err != nil {
		return nil, err
	}
	if len(keys) != 1 {
		return nil, fmt.Errorf("%s holds %d keys: give a file with one (as halb keygen writes it)", file, len(keys))
	}
	return keys[0], nil
}

// keyFileProblems checks the contents of the gossip key files that exist
// here: a malformed one is an error. A missing key_file is only a warning
// (fileWarnings), and a missing keyring_file is normal until the first
// `halb keys` change, but its directory must exist then.
func keyFileProblems(cfg *config.Config) (errs []error, warns []string) {
	if cfg.Cluster == nil || cfg.Cluster.InsecureGossip {
		return nil, nil
	}
	for _, f := range []struct{ field, path string }{
		{"cluster.key_file", cfg.Cluster.KeyFile},
		{"cluster.keyring_file", cfg.Cluster.KeyringFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := keyring.Read(f.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("%s: %w", f.field, err))
		}
	}
	if ring := cfg.Cluster.KeyringFile; ring != "" {
		if fi, err := os.Stat(filepath.Dir(ring)); err != nil || !fi.IsDir() {
			warns = append(warns, fmt.Sprintf("cluster.keyring_file: directory %s does not exist here: `halb keys` could not save a change", filepath.Dir(ring)))
		}
	}
	return errs, append(warns, exposedKeyFiles(cfg)...)
}

// exposedKeyFiles warns of gossip key files that other users could read
// or change. `halb check` prints these; `halb run` should log them at
// start.
func exposedKeyFiles(cfg *config.Config) []string {
	if cfg.Cluster == nil || cfg.Cluster.InsecureGossip {
		return nil
	}
	var warns []string
	for _, f := range []struct{ field, path string }{
		{"cluster.key_file", cfg.Cluster.KeyFile},
		{"cluster.keyring_file", cfg.Cluster.KeyringFile},
	} {
		if f.path == "" {
			continue
		}
		if err := keyring.CheckPrivate(f.path); err != nil {
			warns = append(warns, fmt.Sprintf("%s: %v", f.field, err))
		}
	}
	return warns
}
