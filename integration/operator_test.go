//go:build integration

package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"halb/internal/admin"
	"halb/internal/probe"
	"halb/test/fakecp"
	"halb/test/lab"
)

// halbStatus runs the real `halb status` against node's admin socket.
func halbStatus(ctx context.Context, l *lab.Lab, node string, args ...string) (string, int) {
	cmd := exec.CommandContext(ctx, env.halb, append([]string{"status", "--socket", l.AdminSocket(node)}, args...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return string(out), code
}

// Issue 4: `halb status` on every node shows the same holder; a member cut
// off by a partition is flagged.
func TestStatusAgreesAndFlagsPartition(t *testing.T) {
	l, ctx := newLab(t, lab.Options{StartHalb: true}, true)
	holder, err := l.WaitStable(ctx, stableBound, l.LBNames()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.LBNames() {
		// Gossip carries the claim within tens of ms: poll, bounded.
		var out string
		var code int
		for deadline := time.Now().Add(5 * time.Second); ; {
			out, code = halbStatus(ctx, l, n)
			if code == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code != 0 {
			t.Fatalf("halb status on %s exited %d, want 0:\n%s", n, code, out)
		}
		snap, err := l.Status(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if got := snap.VIPs[0].Holder; got != holder {
			t.Errorf("%s says the holder is %q, the VIP is on %s", n, got, holder)
		}
	}

	if err := l.Partition(ctx, "lb1", "lb2"); err != nil {
		t.Fatal(err)
	}
	if err := waitMember(ctx, l, "lb1", "lb2", false, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	out, code := halbStatus(ctx, l, "lb1")
	if code != admin.CodeDegraded {
		t.Errorf("halb status on lb1 exited %d with lb2 cut off, want %d (degraded):\n%s", code, admin.CodeDegraded, out)
	}
	if !strings.Contains(out, "member lb2") {
		t.Errorf("lb1's status names no problem with lb2:\n%s", out)
	}
	var flagged bool
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "lb2" && f[2] == "no," {
			flagged = true
		}
	}
	if !flagged {
		t.Errorf("lb1's status does not flag lb2 as not alive after the partition:\n%s", out)
	}
	snap, err := l.Status(ctx, "lb1")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range snap.Members {
		if m.Name == "lb2" && m.Alive {
			t.Errorf("lb1 reports the cut-off lb2 alive: %+v", m)
		}
	}
	if err := l.Heal(ctx, "lb1", "lb2"); err != nil {
		t.Fatal(err)
	}
}

// healthz sends one keep-alive GET /healthz and returns the responder.
func healthz(c *tls.Conn, r *bufio.Reader) (string, error) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Fakecp"), nil
}

// Issue 4: `halb server drain` leaves open connections alone and sends new
// ones elsewhere.
func TestServerDrain(t *testing.T) {
	l, ctx := newLab(t, lab.Options{StartHalb: true}, true)
	holder, err := l.WaitStable(ctx, stableBound, l.LBNames()...)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := l.Dial(ctx, "cl", vipAPI.String())
	if err != nil {
		t.Fatal(err)
	}
	// kubectl's credentials: the control planes reject anonymous requests.
	conf, err := l.ClientTLS(fakecp.KubeAdmin)
	if err != nil {
		t.Fatal(err)
	}
	conf.ServerName = lab.VIP().String()
	c := tls.Client(raw, conf)
	defer func() { _ = c.Close() }()
	br := bufio.NewReader(c)
	server, err := healthz(c, br)
	if err != nil || server == "" {
		t.Fatalf("first request: %q, %v", server, err)
	}
	out, err := exec.CommandContext(ctx, env.halb, "server", "drain", "k8s_controlplane/"+server, "--socket", l.AdminSocket(holder)).CombinedOutput()
	if err != nil {
		t.Fatalf("halb server drain: %v\n%s", err, out)
	}
	r, err := l.Probe(ctx, vipAPI, probe.ModeHTTPS, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Failures != 0 || r.Responders[server] != 0 || len(r.Responders) != 2 {
		t.Errorf("after draining %s, new connections went to %v (failures %d), want only the two others", server, r.Responders, r.Failures)
	}
	again, err := healthz(c, br)
	if err != nil || again != server {
		t.Errorf("the open connection through drained %s: %q, %v; want it to keep working", server, again, err)
	}
	snap, err := l.Status(ctx, holder)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snap.Backends[0].Servers {
		if s.Name == server && s.State != admin.StateDrain {
			t.Errorf("status shows %s as %q, want %q", server, s.State, admin.StateDrain)
		}
	}
}

// Issue 5: restarting every LB node one after the other (SIGTERM, start)
// under a steady stream of new client connections loses none.
func TestRollingRestart(t *testing.T) {
	l, ctx := newLab(t, lab.Options{StartHalb: true, PreemptDelay: 2 * time.Second}, true)
	if _, err := l.WaitStable(ctx, stableBound, l.LBNames()...); err != nil {
		t.Fatal(err)
	}
	pr, err := l.StartProbe(ctx, vipAPI, probe.ModeTCP, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.LBNames() {
		if err := l.StopHalb(n, syscall.SIGTERM); err != nil {
			_, _ = pr.Stop()
			t.Fatalf("stop %s: %v", n, err)
		}
		if _, err := l.WaitHolder(ctx, failoverBound, lab.ExactlyOne(others(l, n)...)); err != nil {
			_, _ = pr.Stop()
			t.Fatalf("after stopping %s: %v", n, err)
		}
		if err := l.StartHalb(ctx, n); err != nil {
			_, _ = pr.Stop()
			t.Fatal(err)
		}
		if _, err := l.WaitStable(ctx, stableBound, l.LBNames()...); err != nil {
			_, _ = pr.Stop()
			t.Fatal(err)
		}
	}
	// lb1 takes the VIP back after preempt_delay: let that happen under
	// the probe too.
	if _, err := l.WaitHolder(ctx, 10*time.Second, lab.Only("lb1")); err != nil {
		_, _ = pr.Stop()
		t.Fatal(err)
	}
	// Keep probing half a second past the handback: an observation
	// window, not synchronisation.
	select {
	case <-ctx.Done():
	case <-time.After(500 * time.Millisecond):
	}
	r, err := pr.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rolling restart of %v: %v", l.LBNames(), r)
	if r.Failures != 0 {
		t.Errorf("%d new connections failed during the rolling restart, want 0%s", r.Failures, failures(r))
	}
}
