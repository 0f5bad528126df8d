package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"halb/internal/config"
)

func newCheckCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate a config file, like haproxy -c",
		Long: `Check parses and validates a config file without starting anything.

On success it prints a one-line summary and exits 0. Otherwise it prints every
problem as FILE:LINE: FIELD: MESSAGE and exits 1. Files the config refers to
(gossip key, TLS material) are checked too; a missing one is a warning, since
a config is often written on another machine than the one that runs it.`,
		Example: `  halb check --config /etc/halb/halb.yaml
  halb check --config deploy/examples/talos.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				var es config.Errors
				if !errors.As(err, &es) {
					return err
				}
				for _, e := range es {
					_, _ = fmt.Fprintln(cmd.ErrOrStderr(), locate(path, e))
				}
				_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d error(s)\n", path, len(es))
				return exitError{code: 1}
			}
			keyErrs, keyWarns := keyFileProblems(cfg)
			for _, w := range append(fileWarnings(cfg), keyWarns...) {
				_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "%s: warning: %s\n", path, w)
			}
			if errs := keyErrs; len(errs) > 0 {
				for _, e := range errs {
					_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", path, e)
				}
				_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d error(s)\n", path, len(errs))
				return exitError{code: 1}
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: OK: %s\n", path, summary(cfg))
			return err
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/halb/halb.yaml", "config file to check")
	return cmd
}

func locate(path string, e *config.FieldError) string {
	loc := path
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", path, e.Line)
	}
	if e.Path != "" {
		return fmt.Sprintf("%s: %s: %v", loc, e.Path, e.Err)
	}
	return fmt.Sprintf("%s: %v", loc, e.Err)
}

func summary(cfg *config.Config) string {
	servers := 0
	for _, b := range cfg.Backends {
		servers += len(b.Servers)
	}
	s := fmt.Sprintf("%d frontend(s), %d backend(s) with %d server(s)", len(cfg.Frontends), len(cfg.Backends), servers)
	if cfg.Cluster != nil {
		s += fmt.Sprintf(", cluster of %d node(s), %d VIP(s)", len(cfg.Cluster.Nodes), len(cfg.VIPs))
	}
	return s + ", fingerprint " + cfg.Fingerprint
}

// fileWarnings lists referenced files that cannot be read here.
func fileWarnings(cfg *config.Config) []string {
	var ws []string
	check := func(field, file string) {
		if file == "" {
			return
		}
		if _, err := os.Stat(file); err != nil {
			ws = append(ws, fmt.Sprintf("%s: %v", field, err))
		}
	}
	if cfg.Cluster != nil {
		check("cluster.key_file", cfg.Cluster.KeyFile)
	}
	if cfg.Stats != nil {
		check("stats.password_file", cfg.Stats.PasswordFile)
	}
	for i, b := range cfg.Backends {
		p := fmt.Sprintf("backends[%d].health.tls", i)
		check(p+".ca_file", b.Health.TLS.CAFile)
		check(p+".cert_file", b.Health.TLS.CertFile)
		check(p+".key_file", b.Health.TLS.KeyFile)
	}
	return ws
}
