package cli

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"halb/internal/admin"
)

// spreadDaemon is a fakeDaemon that also changes servers cluster-wide,
// with one member unreachable.
type spreadDaemon struct{ fakeDaemon }

func (s *spreadDaemon) SetServerEverywhere(match, state string) (admin.ServerSpread, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if match != "cp1" {
		return admin.ServerSpread{}, fmt.Errorf("no server is called %q: %w", match, admin.ErrNotFound)
	}
	s.actions = append(s.actions, state+" everywhere "+match)
	return admin.ServerSpread{Match: match, State: state,
		Local: []admin.ServerRef{{Backend: "kubernetes", Server: "cp1", Address: "172.16.25.11:6443"}},
		Peers: []string{"lb2"}, PeerErrors: map[string]string{"lb3": "not a member"}}, nil
}

func TestServerDrainEverywhere(t *testing.T) {
	checkLeaks(t)
	d := &spreadDaemon{fakeDaemon{snap: snapshot(false)}}
	sock := serve(t, d)
	out, errOut, code := run(context.Background(), newServerCmd(), "drain", "cp1", "--socket", sock)
	if code != 1 || !strings.Contains(out, "kubernetes/cp1 (172.16.25.11:6443): draining") || !strings.Contains(out, "sent to lb2") ||
		!strings.Contains(out, "NOT sent to lb3: not a member") || !strings.Contains(errOut, "1 member(s) not reached") {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	_, errOut, code = run(context.Background(), newServerCmd(), "drain", "cp9", "--socket", sock)
	if code != 1 || !strings.Contains(errOut, `no server is called "cp9"`) {
		t.Errorf("unknown: exit %d, stderr %q", code, errOut)
	}
}

func TestWaitIdleShowsConnectionsFalling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conns := []int64{5, 2, 0}
		calls := 0
		status := func(context.Context) (admin.Snapshot, error) {
			n := conns[min(calls, len(conns)-1)]
			calls++
			return admin.Snapshot{Backends: []admin.Backend{
				{Name: "k8s", Servers: []admin.BackendServer{{Name: "cp1", Address: "10.0.0.1:6443", Current: n}, {Name: "cp2", Address: "10.0.0.2:6443", Current: 9}}},
				{Name: "talos", Servers: []admin.BackendServer{{Name: "cp1", Address: "10.0.0.1:50000", Current: n}}},
			}}, nil
		}
		var out bytes.Buffer
		t0 := time.Now()
		if err := waitIdle(t.Context(), status, "10.0.0.1", time.Second, &out); err != nil {
			t.Fatal(err)
		}
		if time.Since(t0) != 2*time.Second {
			t.Errorf("returned after %s, want 2s (third look)", time.Since(t0))
		}
		for _, w := range []string{"10 open connection(s) (k8s 5, talos 5)", "4 open connection(s)", "is idle"} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("output lacks %q:\n%s", w, out.String())
			}
		}

		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		calls = 0
		conns = []int64{7}
		err := waitIdle(ctx, status, "cp1", time.Second, &out)
		if err == nil || !strings.Contains(err.Error(), "14 open connection(s) at the timeout") {
			t.Errorf("timeout: %v", err)
		}
	})
}
