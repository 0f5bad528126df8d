package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"text/tabwriter"
	"time"

	"halb/internal/config"
	"halb/internal/health"
)

// tlsFiles lists the files a backend's check reads, by field.
func tlsFiles(hc config.HealthCheck) []struct{ field, path string } {
	o := hc.TLS
	return []struct{ field, path string }{
		{"ca_file", o.CAFile}, {"cert_file", o.CertFile}, {"key_file", o.KeyFile},
		{"talosconfig", o.Talosconfig}, {"kubeconfig", o.Kubeconfig},
	}
}

// credentialProblems loads the check credentials of every tls and https
// backend whose files all exist here: a malformed file is an error naming
// it and the field inside; an admin credential is a warning. A missing
// file is only a warning (fileWarnings), as the config may be checked on
// another host than the one that runs it.
func credentialProblems(cfg *config.Config) (errs []error, warns []string) {
	for i, b := range cfg.Backends {
		if b.Health.Type != config.CheckTLS && b.Health.Type != config.CheckHTTPS {
			continue
		}
		missing := false
		for _, f := range tlsFiles(b.Health) {
			if f.path != "" {
				if _, err := os.Stat(f.path); err != nil {
					missing = true
				}
			}
		}
		if missing {
			continue
		}
		ws, err := health.CredentialWarnings(b.Health)
		if err != nil {
			errs = append(errs, fmt.Errorf("backends[%d].%w", i, err))
			continue
		}
		for _, w := range ws {
			warns = append(warns, fmt.Sprintf("backends[%d].%s", i, w))
		}
	}
	return errs, warns
}

// logCredentialWarnings logs, once at start, what should change about the
// credentials of the checks. A credential that cannot be loaded is the
// daemon's to report: it refuses to start.
func logCredentialWarnings(cfg *config.Config, log *slog.Logger) {
	for _, b := range cfg.Backends {
		ws, err := health.CredentialWarnings(b.Health)
		if err != nil {
			continue
		}
		for _, w := range ws {
			log.Warn("health check credentials", "component", "health", "backend", b.Name, "warning", w)
		}
	}
}

// probeOutcome is one server's result of `halb check --probe`.
type probeOutcome struct {
	backend, server string
	addr            netip.AddrPort
	res             health.Result
}

// probeServers runs every backend's check once against each of its
// servers, all at once, each bounded by its backend's timeout. It sends
// only to the configured servers. The outcomes are in config order.
func probeServers(ctx context.Context, cfg *config.Config) ([]probeOutcome, error) {
	var out []probeOutcome
	var checkers []health.Checker
	var timeouts []time.Duration
	for _, b := range cfg.Backends {
		c, err := health.NewChecker(b.Health)
		if err != nil {
			return nil, fmt.Errorf("backend %s: %w", b.Name, err)
		}
		for _, s := range b.Servers {
			out = append(out, probeOutcome{backend: b.Name, server: s.Name, addr: s.Address})
			checkers = append(checkers, c)
			timeouts = append(timeouts, b.Health.Timeout)
		}
	}
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() { out[i].res = health.Probe(ctx, checkers[i], out[i].addr, timeouts[i]) })
	}
	wg.Wait()
	return out, ctx.Err()
}

// verdict names a probe's result for operators.
func verdict(res health.Result) string {
	switch {
	case res.OK:
		return "ok"
	case res.Inconclusive:
		return "inconclusive"
	case res.Failure == health.NotReady:
		return "not ready"
	case res.Failure == health.Rejected:
		return "rejected: credentials"
	}
	return "gone"
}

// printProbes writes one line per server and reports how many failed.
func printProbes(w io.Writer, outcomes []probeOutcome) (failed int, err error) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "BACKEND\tSERVER\tADDRESS\tRESULT\tDIAGNOSIS")
	for _, o := range outcomes {
		if !o.res.OK {
			failed++
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.backend, o.server, o.addr, verdict(o.res), o.res.Reason)
	}
	if err := tw.Flush(); err != nil {
		return failed, err
	}
	if failed == 0 {
		_, err = fmt.Fprintf(w, "all %d check(s) passed\n", len(outcomes))
	} else {
		_, err = fmt.Fprintf(w, "%d of %d check(s) failed\n", failed, len(outcomes))
	}
	return failed, err
}
