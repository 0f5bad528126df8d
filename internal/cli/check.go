package cli

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"halb/internal/config"
	"halb/internal/stats"
)

// checkOptions are the flags of halb check.
type checkOptions struct {
	path, node, user string
	probe, host      bool
}

func newCheckCmd() *cobra.Command {
	var o checkOptions
	cmd := &cobra.Command{
		Use:   "check --config FILE [--node NAME | --host] [--user USER] [--probe]",
		Short: "Validate a config file, like haproxy -c; with --node, this host too; with --probe, run every health check once",
		Long: `Check parses and validates a config file without starting anything.

On success it prints a one-line summary and exits 0. Otherwise it prints every
problem as FILE:LINE: FIELD: MESSAGE and exits 1. Files the config refers to
(gossip key, TLS material, talosconfig, kubeconfig) are checked too: one that
exists is read and parsed, and an error names the file and the field inside
it; a missing one is a warning, since a config is often written on another
machine than the one that runs it. A check that would use an admin credential
(an os:admin talosconfig, a system:masters kubeconfig) is a warning.

--node NAME then checks this host as that entry of cluster.nodes (--host
picks the entry as halb run does: $HALB_NODE, else the entry with an
address of this host, else the one named like the host), and prints each
problem with its fix:
  - the VIPs' interface (cluster.nodes[].interface, else vips[].interface)
    exists and is up, with a carrier;
  - the node's address is assigned on this host;
  - the gossip port (tcp and udp) on the node's address, every frontend's
    bind, stats.bind and stats.metrics_bind are free; else it names the
    process that holds the port (e.g. haproxy during a migration), a
    wildcard listener on the same port included. Held by halb itself, it
    says that halb already runs, which is no problem;
  - the config, the gossip key and keyring, the check credentials and the
    stats password file exist and the user halb runs as (--user) can read
    them, judged from owner, group and mode of each file and of the
    directories above it (ACLs are not consulted). When that user does not
    exist here, it says so and skips this.
It only reads /proc and the interfaces: nothing is bound or sent. Run it as
root, so it can name the processes of other users.

--probe then runs every backend's health check once, now, from this host,
against every configured server (all at once, each bounded by its
health.timeout; nothing else is contacted), and prints one line per server:
backend, server, address, result and diagnosis. The result is one of
  ok                     the check passed
  gone                   nothing answered (refused, reset, unreachable, timeout)
  not ready              the server answered that it takes no new connections
                         (e.g. /readyz failing while kube-apiserver shuts down)
  rejected: credentials  the server refused the check's credentials, or the
                         check does not trust the server's certificate: the
                         server is alive and the check is misconfigured
Run it on each LB host before cutting over from HAProxy: on a Talos cluster an
anonymous check is rejected (kube-apiserver answers 401, apid requires a client
certificate), and halb would mark every server down. --node names this host in
the output so reports of several LB hosts can be told apart.

Exit status: 0 when the config is valid (and, with --node, this host is
ready, and with --probe, every check passed), 1 when the config or a file it
names is invalid or, with --node or --host, this host has a problem, 2 when
a probe failed.`,
		Example: `  halb check --config /etc/halb/halb.yaml
  halb check --config deploy/examples/talos.yaml
  halb check --config /etc/halb/halb.yaml --node lb1
  halb check --config /etc/halb/halb.yaml --host --user halb
  halb check --config /etc/halb/halb.yaml --probe --node lb1`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCheck(cmd, o)
		},
	}
	cmd.Flags().StringVarP(&o.path, "config", "c", "/etc/halb/halb.yaml", "config file to check")
	cmd.Flags().BoolVar(&o.probe, "probe", false, "run every health check once against every server, from this host")
	cmd.Flags().StringVar(&o.node, "node", "", "check this host as this entry of cluster.nodes; with --probe, this host's name in the output (default: host name)")
	cmd.Flags().BoolVar(&o.host, "host", false, "check this host as the entry of cluster.nodes that halb run would pick")
	cmd.Flags().StringVar(&o.user, "user", "halb", "with --node or --host: the user halb runs as, who must be able to read its files")
	return cmd
}

// runCheck is `halb check`: the config and the files it names, then,
// as asked, this host and the health checks.
func runCheck(cmd *cobra.Command, o checkOptions) error {
	cfg, err := checkConfig(cmd, o.path)
	if err != nil {
		return err
	}
	var hostErr error
	node := o.node
	if node != "" || o.host {
		if node, err = chooseNode(node, cfg.Cluster); err != nil {
			_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "%v\n", err)
			return exitError{code: 1}
		}
		if hostErr = runHostCheck(cmd, cfg, o.path, node, o.user); hostErr != nil && !errors.As(hostErr, new(exitError)) {
			return hostErr
		}
	}
	if o.probe {
		// A host problem (1) wins over a failed probe (2): it is
		// the one to fix first.
		err := runProbe(cmd, cfg, node)
		if hostErr == nil || (err != nil && !errors.As(err, new(exitError))) {
			return err
		}
	}
	return hostErr
}

// checkConfig loads and validates the config at path and checks the
// files it names, printing every problem and warning; on success it
// prints the one-line summary.
func checkConfig(cmd *cobra.Command, path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		var es config.Errors
		if !errors.As(err, &es) {
			return nil, err
		}
		for _, e := range es {
			_, _ = fmt.Fprintln(cmd.ErrOrStderr(), locate(path, e))
		}
		_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d error(s)\n", path, len(es))
		return nil, exitError{code: 1}
	}
	keyErrs, keyWarns := keyFileProblems(cfg)
	credErrs, credWarns := credentialProblems(cfg)
	tlsErrs, tlsWarns := statsTLSProblems(cfg, time.Now())
	credErrs, credWarns = append(credErrs, tlsErrs...), append(credWarns, tlsWarns...)
	for _, w := range slices.Concat(fileWarnings(cfg), keyWarns, credWarns) {
		_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "%s: warning: %s\n", path, w)
	}
	if errs := slices.Concat(keyErrs, credErrs); len(errs) > 0 {
		for _, e := range errs {
			_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", path, e)
		}
		_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d error(s)\n", path, len(errs))
		return nil, exitError{code: 1}
	}
	if _, err := fmt.Fprintf(cmd.OutOrStdout(), "%s: OK: %s\n", path, summary(cfg)); err != nil {
		return nil, err
	}
	return cfg, nil
}

// runHostCheck is `halb check --node`: it gathers this host's facts,
// judges them for node, prints the findings, and returns exitError 1 when
// one is a problem.
func runHostCheck(cmd *cobra.Command, cfg *config.Config, path, node, user string) error {
	var n config.Node
	if c := cfg.Cluster; c != nil {
		var ok bool
		if n, ok = c.Node(node); !ok {
			names := make([]string, 0, len(c.Nodes))
			for _, n := range c.Nodes {
				names = append(names, n.Name)
			}
			_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "--node %s: not in cluster.nodes (%s)\n", node, strings.Join(names, ", "))
			return exitError{code: 1}
		}
	}
	files := hostFiles(cfg, path)
	listeners := hostListeners(cfg, n)
	facts, err := gatherHostFacts("/proc", listeners, files, user)
	if err != nil {
		// Judge what could be read all the same: the error names what is missing.
		_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "host %s: %v\n", node, err)
	}
	problems := 0
	for _, p := range judgeHost(cfg, path, node, user, facts) {
		kind := ""
		if p.note {
			kind = "note: "
		} else {
			problems++
		}
		_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "host %s: %s%s\n", node, kind, p)
	}
	if err != nil || problems > 0 {
		_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "host %s: %d problem(s)\n", node, problems)
		return exitError{code: 1}
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "host %s: OK: %d port(s) and %d file(s) checked for user %s\n", node, len(listeners), len(files), user)
	return err
}

// runProbe is `halb check --probe`: it probes, prints, and sets the exit
// status.
func runProbe(cmd *cobra.Command, cfg *config.Config, node string) error {
	if node != "" && cfg.Cluster != nil {
		if _, ok := cfg.Cluster.Node(node); !ok {
			_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "--node %s: not in cluster.nodes\n", node)
			return exitError{code: 1}
		}
	}
	if node == "" {
		node, _ = os.Hostname()
	}
	outcomes, err := probeServers(cmd.Context(), cfg)
	if err != nil {
		_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "probe: %v\n", err)
		return exitError{code: 1}
	}
	w := cmd.OutOrStdout()
	if _, err := fmt.Fprintf(w, "probed %d server(s) from %s:\n", len(outcomes), node); err != nil {
		return err
	}
	failed, err := printProbes(w, outcomes)
	if err != nil {
		return err
	}
	if failed > 0 {
		return exitError{code: 2}
	}
	return nil
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
		for _, f := range tlsFiles(b.Health) {
			check(fmt.Sprintf("backends[%d].health.tls.%s", i, f.field), f.path)
		}
	}
	return ws
}

// statsTLSProblems loads the stats listener's certificate and key when
// both are readable here (fileWarnings reports those that are not): a pair
// that does not load is an error, as `halb run` refuses it; an expired
// certificate a warning, as it still serves.
func statsTLSProblems(cfg *config.Config, now time.Time) (errs []error, warns []string) {
	if cfg.Stats == nil || cfg.Stats.TLS == nil {
		return nil, nil
	}
	files := *cfg.Stats.TLS
	for _, f := range []string{files.CertFile, files.KeyFile} {
		if _, err := os.Stat(f); err != nil {
			return nil, nil
		}
	}
	cert, err := stats.LoadKeyPair(files)
	if err != nil {
		return []error{err}, nil
	}
	if w := stats.ExpiryWarning(files, cert, now); w != "" {
		warns = append(warns, w)
	}
	return nil, warns
}
