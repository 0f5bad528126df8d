//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"halb/internal/admin"
	"halb/test/fakecp"
	"halb/test/lab"
)

// verdictBound is how long a case may take to show in `halb status`: a
// server's fall or rise (2 checks every 500 ms), a member's detection, a
// reload's gossip.
const verdictBound = 20 * time.Second

// apiStatus fetches GET /v1/status from node's admin socket as a
// monitoring system would, verdict included.
func apiStatus(ctx context.Context, l *lab.Lab, node string) (admin.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", l.AdminSocket(node))
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://halb/v1/status", nil)
	if err != nil {
		return admin.Status{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return admin.Status{}, fmt.Errorf("GET /v1/status on %s: %w", node, err)
	}
	defer func() { _ = resp.Body.Close() }()
	var s admin.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return admin.Status{}, fmt.Errorf("decode /v1/status of %s: %w", node, err)
	}
	return s, nil
}

// expectVerdict waits until `halb status` on node exits with want's code
// and names a problem containing problem ("" for OK: none at all), then
// checks that /v1/status says the same, with that problem at level want.
func expectVerdict(t *testing.T, ctx context.Context, l *lab.Lab, node string, want admin.Level, problem string) {
	t.Helper()
	// The CLI and the API are asked in the same round: the verdict can
	// move between two looks (a make-before-break overlap shows two
	// holders for a moment), and both must agree on the awaited state.
	until(t, ctx, verdictBound, fmt.Sprintf("halb status and /v1/status on %s: %s naming %q", node, want, problem), func() (bool, string) {
		out, code := halbStatus(ctx, l, node)
		if code != want.Code() || !strings.Contains(out, problem) {
			return false, fmt.Sprintf("halb status: exit %d:\n%s", code, out)
		}
		s, err := apiStatus(ctx, l, node)
		if err != nil {
			return false, fmt.Sprintf("/v1/status: %v", err)
		}
		if msg := apiVerdict(s, want, problem); msg != "" {
			return false, "/v1/status: " + msg
		}
		return true, ""
	})
}

// apiVerdict says how the API's status s differs from verdict want with a
// problem naming problem, or "" if it does not.
func apiVerdict(s admin.Status, want admin.Level, problem string) string {
	if s.Verdict != want || s.Code != want.Code() {
		return fmt.Sprintf("verdict %s, exit code %d; want %s, %d; problems %q", s.Verdict, s.Code, want, want.Code(), s.Texts())
	}
	if want == admin.LevelOK {
		if len(s.Problems) != 0 {
			return fmt.Sprintf("OK with problems %q", s.Texts())
		}
		return ""
	}
	for _, p := range s.Problems {
		if p.Level == want && strings.Contains(p.Text, problem) {
			return ""
		}
	}
	return fmt.Sprintf("no %s problem naming %q in %+v", want, problem, s.Problems)
}

// allOK waits until every LB node's status is OK again, between cases.
func allOK(t *testing.T, ctx context.Context, l *lab.Lab) {
	t.Helper()
	for _, n := range l.LBNames() {
		expectVerdict(t, ctx, l, n, admin.LevelOK, "")
	}
}

// reloadWith writes node's config, edited (nil: the lab's own), and
// reloads its halb.
func reloadWith(t *testing.T, ctx context.Context, l *lab.Lab, node string, edit func(string) string) {
	t.Helper()
	if err := l.WriteConfig(ctx, node, edit); err != nil {
		t.Fatal(err)
	}
	if out, err := runBounded(ctx, env.halb, "reload", "--socket", l.AdminSocket(node)); err != nil {
		t.Fatalf("halb reload on %s: %v\n%s", node, err, out)
	}
}

// withoutTalosconfig drops the Talos backend's client credentials, so the
// Talos API refuses its check's handshake.
func withoutTalosconfig(text string) string {
	lines := strings.Split(text, "\n")
	var out []string
	for i, line := range lines {
		if strings.Contains(line, "talosconfig:") {
			continue
		}
		if strings.TrimSpace(line) == "tls:" && i+1 < len(lines) && strings.Contains(lines[i+1], "talosconfig:") {
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// Issue 15 (1): each verdict of `halb status` and /v1/status, produced in
// turn in one lab, with its exit code and the problem it names; the lab is
// restored to OK between cases.
func TestStatusVerdicts(t *testing.T) {
	l, ctx := newLab(t, lab.Options{StartHalb: true}, true)
	holder, err := l.WaitStable(ctx, stableBound, l.LBNames()...)
	if err != nil {
		t.Fatal(err)
	}
	standby := others(l, holder)[0]
	setCPs := func(st fakecp.State, cps ...int) {
		t.Helper()
		for _, i := range cps {
			if err := l.CP(i).SetState(ctx, st); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("ok", func(t *testing.T) { allOK(t, ctx, l) })

	t.Run("degraded: a control plane down", func(t *testing.T) {
		setCPs(fakecp.Stopped, 1)
		t.Cleanup(func() { setCPs(fakecp.Serving, 1) })
		expectVerdict(t, ctx, l, holder, admin.LevelDegraded, "backend k8s_controlplane: server cp1 ("+lab.CPAddr(1).String()+":6443) is down")
	})
	allOK(t, ctx, l)

	t.Run("degraded: a peer in maintenance", func(t *testing.T) {
		if out, err := runBounded(ctx, env.halb, "node", "maintenance", "on", "--socket", l.AdminSocket(standby)); err != nil {
			t.Fatalf("maintenance on: %v\n%s", err, out)
		}
		t.Cleanup(func() {
			if out, err := runBounded(ctx, env.halb, "node", "maintenance", "off", "--socket", l.AdminSocket(standby)); err != nil {
				t.Errorf("maintenance off: %v\n%s", err, out)
			}
		})
		expectVerdict(t, ctx, l, holder, admin.LevelDegraded, "member "+standby+" is in maintenance")
	})
	allOK(t, ctx, l)

	t.Run("degraded: a peer stopped", func(t *testing.T) {
		if err := l.StopHalb(standby, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := l.StartHalb(ctx, standby); err != nil {
				t.Error(err)
			}
		})
		snap, err := l.Status(ctx, holder)
		if err != nil {
			t.Fatal(err)
		}
		addr := ""
		for _, m := range snap.Members {
			if m.Name == standby {
				addr = m.Address
			}
		}
		expectVerdict(t, ctx, l, holder, admin.LevelDegraded, "member "+standby+" ("+addr+") is not reachable")
	})
	allOK(t, ctx, l)

	t.Run("degraded: configs differ", func(t *testing.T) {
		reloadWith(t, ctx, l, standby, func(s string) string { return strings.Replace(s, "fall: 2", "fall: 3", 1) })
		t.Cleanup(func() { reloadWith(t, ctx, l, standby, nil) })
		expectVerdict(t, ctx, l, holder, admin.LevelDegraded, "member "+standby+" runs another config")
	})
	allOK(t, ctx, l)

	t.Run("degraded: a check rejected for credentials", func(t *testing.T) {
		reloadWith(t, ctx, l, standby, withoutTalosconfig)
		t.Cleanup(func() { reloadWith(t, ctx, l, standby, nil) })
		expectVerdict(t, ctx, l, standby, admin.LevelDegraded, "backend talos_controlplane: server cp1 ("+lab.CPAddr(1).String()+":50000): check rejected: credentials")
	})
	allOK(t, ctx, l)

	t.Run("fail: no usable server", func(t *testing.T) {
		// Panic routing (the default) would still forward, which is only
		// DEGRADED; without it the frontend has nowhere to send clients.
		noPanic := func(s string) string {
			return strings.ReplaceAll(s, "    balance: roundrobin\n", "    balance: roundrobin\n    panic_routing: false\n")
		}
		for _, n := range l.LBNames() {
			reloadWith(t, ctx, l, n, noPanic)
		}
		setCPs(fakecp.Stopped, 1, 2, 3)
		t.Cleanup(func() {
			setCPs(fakecp.Serving, 1, 2, 3)
			for _, n := range l.LBNames() {
				reloadWith(t, ctx, l, n, nil)
			}
		})
		expectVerdict(t, ctx, l, holder, admin.LevelFail, "frontend k8s_apiserver: backend k8s_controlplane has no healthy server")
	})
	allOK(t, ctx, l)

	t.Run("fail: no holder", func(t *testing.T) {
		// A pair with a witness: the node left alone that cannot reach
		// the witness takes itself for the one cut off and holds nothing.
		// The witness is a restart-only setting.
		witness := lab.CPAddr(3)
		for _, n := range l.LBNames() {
			if err := l.WriteConfig(ctx, n, func(s string) string {
				return strings.Replace(s, "\n  nodes:\n", "\n  witness: "+witness.String()+"\n  nodes:\n", 1)
			}); err != nil {
				t.Fatal(err)
			}
			if err := l.StopHalb(n, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range l.LBNames() {
			if err := l.StartHalb(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		holder, err := l.WaitStable(ctx, stableBound, l.LBNames()...)
		if err != nil {
			t.Fatal(err)
		}
		allOK(t, ctx, l)
		if err := l.StopHalb(others(l, holder)[0], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := l.Partition(ctx, holder, "cp3"); err != nil {
			t.Fatal(err)
		}
		expectVerdict(t, ctx, l, holder, admin.LevelFail, "VIP "+lab.VIP().String()+": no member holds it")
	})
}
