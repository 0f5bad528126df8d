//go:build integration

package integration

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"halb/internal/probe"
	"halb/test/lab"
)

// bins are the binaries under test, built once by TestMain.
type bins struct {
	halb, lab string
	halbErr   error // why there is no halb binary
	skip      string
}

var env bins

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		if os.Getenv("HALB_REQUIRE_NETNS") == "1" {
			fmt.Fprintln(os.Stderr, "integration: HALB_REQUIRE_NETNS=1 but not root: the lab needs CAP_NET_ADMIN and CAP_SYS_ADMIN")
			return 1
		}
		env.skip = "the namespace lab needs root (set HALB_REQUIRE_NETNS=1 to fail instead of skipping)"
		return m.Run()
	}
	if _, err := exec.LookPath("ip"); err != nil {
		fmt.Fprintln(os.Stderr, "integration: iproute2's ip is required:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "halb-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	env.halb, env.lab = os.Getenv("HALB_BIN"), os.Getenv("HALB_LAB_BIN")
	if env.lab == "" {
		env.lab = filepath.Join(dir, "halb-lab")
		if err := build(env.lab, "./test/cmd/halb-lab"); err != nil {
			fmt.Fprintln(os.Stderr, "integration:", err)
			return 1
		}
	}
	if env.halb == "" {
		env.halb = filepath.Join(dir, "halb")
		// Tests that need no halb (TestLabSelf) still run when it does not build.
		env.halbErr = build(env.halb, "./cmd/halb")
	}
	return m.Run()
}

func build(out, pkg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = ".." // the module root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

const testTimeout = 3 * time.Minute

// newLab builds a lab for t and tears it down when t ends, also on failure,
// logging the tail of every halb log if t failed. needHalb false builds a
// lab with fake control planes only.
func newLab(t *testing.T, opts lab.Options, needHalb bool) (*lab.Lab, context.Context) {
	t.Helper()
	return newLabFor(t, opts, needHalb, testTimeout)
}

// newLabFor is newLab with a lab that lives for at most d.
func newLabFor(t *testing.T, opts lab.Options, needHalb bool, d time.Duration) (*lab.Lab, context.Context) {
	t.Helper()
	if env.skip != "" {
		t.Skip(env.skip)
	}
	opts.LabBin = env.lab
	if needHalb {
		if env.halbErr != nil {
			t.Fatalf("no halb binary: %v", env.halbErr)
		}
		opts.HalbBin = env.halb
	}
	opts.WorkDir = t.TempDir()
	if os.Getenv("HALB_LAB_KEEP") == "1" {
		// Keep configs and logs for a post-mortem; the namespaces still go.
		d, err := os.MkdirTemp("", "halb-"+strings.ReplaceAll(t.Name(), "/", "_")+"-")
		if err != nil {
			t.Fatal(err)
		}
		opts.WorkDir = d
		t.Cleanup(func() { t.Logf("lab workdir kept: %s", d) })
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	l := lab.New(opts, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})))
	t.Cleanup(func() {
		if t.Failed() {
			for _, lb := range l.LBNames() {
				t.Logf("--- tail of %s's log:\n%s", lb, l.LogTail(lb, 60))
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("tear down lab: %v", err)
		}
		cancel()
	})
	if err := l.Up(ctx); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l, ctx
}

var (
	vipAPI   = netip.AddrPortFrom(lab.VIP(), 6443)
	vipTalos = netip.AddrPortFrom(lab.VIP(), 50000)
)

// reach asserts that the client reaches the VIP's Kubernetes API with no
// failed connection over a window of d.
func reach(t *testing.T, ctx context.Context, l *lab.Lab, d time.Duration) probe.Report {
	t.Helper()
	// A precondition, not a measurement: on a loaded machine one probe of
	// a window can miss its 250 ms timeout, so up to three windows are
	// tried and each miss is logged. The failover itself is measured by
	// its own probe, which gets no second chance.
	var missed []string
	for range 3 {
		r, err := l.Probe(ctx, vipAPI, probe.ModeHTTPS, d)
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		if r.Failures == 0 && r.Successes > 0 {
			if len(missed) > 0 {
				t.Logf("client reached the VIP steadily after %d unsteady window(s): %v", len(missed), missed)
			}
			return r
		}
		missed = append(missed, r.String())
	}
	t.Fatalf("client cannot reach the VIP steadily in 3 windows: %v", missed)
	return probe.Report{}
}

// waitNeigh waits until the client's neighbour entry for the VIP names
// node's MAC.
func waitNeigh(t *testing.T, ctx context.Context, l *lab.Lab, node string, d time.Duration) {
	t.Helper()
	want, err := l.MAC(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(d)
	var n lab.Neigh
	for {
		n, err = l.ClientNeigh(ctx, lab.VIP())
		if err != nil {
			t.Fatal(err)
		}
		if n.MAC == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client's neighbour entry for the VIP is %s %v after %s, want %s (%s)", n.MAC, n.State, d, want, node)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// other returns the LB nodes except skip.
func others(l *lab.Lab, skip ...string) []string {
	var out []string
	for _, n := range l.LBNames() {
		if !slices.Contains(skip, n) {
			out = append(out, n)
		}
	}
	return out
}

// holdsNot asserts over d that none of nodes ever has the VIP and that
// exactly one of the rest does at every poll.
func holdsNot(t *testing.T, ctx context.Context, l *lab.Lab, d time.Duration, nodes ...string) {
	t.Helper()
	rest := others(l, nodes...)
	deadline := time.Now().Add(d)
	polls := 0
	for time.Now().Before(deadline) {
		h, err := l.Holder(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if slices.Contains(h, n) {
				t.Fatalf("%s holds the VIP (holders %v) %s into a %s window where it must not", n, h, d-time.Until(deadline), d)
			}
		}
		if !lab.ExactlyOne(rest...)(h) {
			t.Fatalf("holders %v: want exactly one of %v", h, rest)
		}
		polls++
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d polls over %s: %v never held the VIP", polls, d, nodes)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func fmtDurations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Round(time.Millisecond).String()
	}
	return strings.Join(parts, " ")
}

// failures lists a report's failed attempts, one per line. A failure after
// the TCP connect ("tls handshake: ... reset", "read response: ...") is a
// connection that was open when the client's ARP entry switched holders:
// the new holder's kernel knows nothing of it and resets it.
func failures(r probe.Report) string {
	var b strings.Builder
	for _, f := range r.Failed {
		fmt.Fprintf(&b, "\n  %s %s", f.At.Format("15:04:05.000"), f.Error)
	}
	return b.String()
}
