package cli

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"

	"github.com/spf13/cobra"
)

func newKeygenCmd() *cobra.Command {
	var out, group string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen --out FILE [--group GROUP]",
		Short: "Write a new gossip encryption key",
		Long: `Keygen writes a random 32-byte AES key, base64-encoded, readable only by its
owner (0600), or with --group also by that group (0640), which is what the
packaged service needs: it runs as user and group halb. Every node of a
cluster needs the same key: copy the file to each LB host and point
cluster.key_file at it.`,
		Example: `  halb keygen --out /etc/halb/gossip.key --group halb
  scp -p /etc/halb/gossip.key lb2:/etc/halb/gossip.key`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requiredFlag(cmd, "out", "the file to write the key to (- for standard output)", "/etc/halb/gossip.key"); err != nil {
				return err
			}
			key := make([]byte, 32)
			if _, err := rand.Read(key); err != nil {
				return fmt.Errorf("generate key: %w", err)
			}
			text := base64.StdEncoding.EncodeToString(key) + "\n"
			gid := -1
			if group != "" {
				if out == "-" {
					return errors.New("--group applies to a file; with --out - there is none")
				}
				g, err := user.LookupGroup(group)
				if err != nil {
					return fmt.Errorf("--group %s: %w", group, err)
				}
				if gid, err = strconv.Atoi(g.Gid); err != nil {
					return fmt.Errorf("--group %s: gid %q: %w", group, g.Gid, err)
				}
			}
			if out == "-" {
				_, err := fmt.Fprint(cmd.OutOrStdout(), text)
				return err
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(out, flags, 0o600)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s exists: replacing a cluster's key cuts nodes off; use --force if you mean it", out)
			}
			if err != nil {
				return fmt.Errorf("write key: %w", err)
			}
			if err := shareWithGroup(f, gid); err != nil {
				_ = f.Close()
				return fmt.Errorf("write key %s: %w", out, err)
			}
			if _, err := f.WriteString(text); err != nil {
				_ = f.Close()
				return fmt.Errorf("write key: %w", err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("write key: %w", err)
			}
			_, err = fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s; copy it to every node of the cluster\n", out)
			return err
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write (- for standard output)")
	cmd.Flags().StringVar(&group, "group", "", "group that may read the key (mode 0640), e.g. halb for the packaged service")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	return cmd
}

// shareWithGroup hands the key file to group gid and makes it readable by
// that group (0640), before any key byte is written; gid -1 leaves it 0600.
// A file replaced with --force gets the mode too: OpenFile's mode applies
// only to new files.
func shareWithGroup(f *os.File, gid int) error {
	mode := os.FileMode(0o600)
	if gid >= 0 {
		if err := f.Chown(-1, gid); err != nil {
			return fmt.Errorf("give it to group %d: %w", gid, err)
		}
		mode = 0o640
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("set mode %#o: %w", mode, err)
	}
	return nil
}
