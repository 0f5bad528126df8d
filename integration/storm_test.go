//go:build integration

package integration

import (
	"strings"
	"testing"
	"time"

	"halb/internal/admin"
	"halb/test/lab"
)

// Storm parameters: stormClients connect through the VIP at the same
// moment (as clients do after a failover), and each control plane's kernel
// drops the first stormDroppedSYNs connection requests to its Talos port,
// as a kernel drops SYNs while a listen queue is full. So 150 of halb's
// first connects time out (the lab's timeouts.connect is 500ms), at the
// start of the storm only, while the control planes stay healthy and
// answer the retries.
const (
	stormClients     = 2000
	stormDroppedSYNs = 50
)

// A reconnect storm against healthy control planes that drop SYNs for a
// moment must not take any of them out (issue 19: passive health marked
// every server down at the first timeout, and the next clients got "no
// healthy server"), and every client must reach a control plane.
func TestReconnectStormKeepsServersUp(t *testing.T) {
	// halb's default check timings: the lab's (timeout 300ms, fall 2) are
	// tuned for fast failover tests, and on a small machine saturated by
	// the storm the checks' own handshakes then time out twice in a row.
	// This test is about passive health; checks keep their defaults.
	checks := func(_, yaml string) string {
		return strings.ReplaceAll(yaml, "interval: 500ms\n      timeout: 300ms\n      fall: 2",
			"interval: 2s\n      timeout: 1s\n      fall: 3")
	}
	l, ctx := newLab(t, lab.Options{LBs: 2, StartHalb: true, Mutate: checks}, true)
	holder, err := l.WaitStable(ctx, 30*time.Second, l.LBNames()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range l.CPNames() {
		if _, err := l.DropSYNs(ctx, cp, vipTalos.Port(), stormDroppedSYNs); err != nil {
			t.Fatal(err)
		}
	}
	logBefore := len(l.Log(holder))
	start := time.Now()
	// Plain TCP clients: a TLS storm of this size saturates a small CI
	// machine, and the fake control planes' own handshake deadlines then
	// fail clients whatever halb does.
	rep, err := l.Storm(ctx, vipTalos, stormClients, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("storm: %v", rep)
	if rep.Failed != 0 || rep.OK != stormClients {
		t.Errorf("clients: %d ok, %d failed (%v), want all %d served", rep.OK, rep.Failed, rep.Errors, stormClients)
	}

	// Every client reached a control plane: each counts a connection from
	// the holder that closed before a TLS hello. (A connect halb gave up
	// on that got through late counts too, so there may be more.)
	holderAddr := lab.LBAddr(1)
	for i, lb := range l.LBNames() {
		if lb == holder {
			holderAddr = lab.LBAddr(i + 1)
		}
	}
	reached := 0
	for i, cp := range l.CPNames() {
		cs, err := l.CP(i + 1).Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		reached += cs.Talos.ClosedBeforeHello[holderAddr.String()]
		t.Logf("%s: %d storm connections from %s", cp, cs.Talos.ClosedBeforeHello[holderAddr.String()], holder)
	}
	if reached < stormClients {
		t.Errorf("control planes saw %d storm connections from %s, want at least %d", reached, holder, stormClients)
	}

	st, err := l.Status(ctx, holder)
	if err != nil {
		t.Fatal(err)
	}
	failed := int64(0)
	for _, s := range servers(st, "talos_controlplane") {
		t.Logf("%s: %s since %s, %d connect failures, %d retries", s.Name, s.State, s.Since.Format("15:04:05.000"), s.ConnectFailures, s.Retries)
		failed += s.ConnectFailures
		if s.State != admin.StateUp || s.Since.After(start) {
			t.Errorf("%s is %s since %s, after the storm began at %s; want up throughout", s.Name, s.State, s.Since.Format("15:04:05.000"), start.Format("15:04:05.000"))
		}
	}
	if failed == 0 {
		t.Error("no connect to a control plane failed: the dropped SYNs did not take effect, so the storm tested nothing")
	}
	var downs []string
	for _, line := range strings.Split(l.Log(holder)[logBefore:], "\n") {
		if strings.Contains(line, `msg="server down`) {
			downs = append(downs, line)
		}
	}
	if len(downs) > 0 {
		t.Errorf("%d servers marked down during the storm:\n%s", len(downs), strings.Join(downs, "\n"))
	}
}

// servers returns the servers of backend name in st.
func servers(st admin.Snapshot, name string) []admin.BackendServer {
	for _, b := range st.Backends {
		if b.Name == name {
			return b.Servers
		}
	}
	return nil
}
