package cli

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func newKeygenCmd() *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Write a new gossip encryption key",
		Long: `Keygen writes a random 32-byte AES key, base64-encoded, readable only by its
owner. Every node of a cluster needs the same key: copy the file to each LB
host and point cluster.key_file at it.`,
		Example: `  halb keygen --out /etc/halb/gossip.key
  scp /etc/halb/gossip.key lb2:/etc/halb/gossip.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key := make([]byte, 32)
			if _, err := rand.Read(key); err != nil {
				return fmt.Errorf("generate key: %w", err)
			}
			text := base64.StdEncoding.EncodeToString(key) + "\n"
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
	cmd.Flags().StringVarP(&out, "out", "o", "", "file to write (- for standard output)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}
