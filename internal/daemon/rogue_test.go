package daemon

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"halb/internal/cluster"
	"halb/internal/round"
	"halb/test/support"
)

// metaPeer is a bare memberlist node that gossips whatever metadata the
// test gives it, standing in for a peer with the right key whose state
// this node cannot read (a newer halb, or a corrupt one).
type metaPeer struct {
	mu   sync.Mutex
	meta []byte
	ml   *memberlist.Memberlist
}

func (p *metaPeer) NodeMeta(limit int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.meta) > limit {
		return nil
	}
	return p.meta
}
func (p *metaPeer) NotifyMsg([]byte)                  {}
func (p *metaPeer) GetBroadcasts(_, _ int) [][]byte   { return nil }
func (p *metaPeer) LocalState(bool) []byte            { return nil }
func (p *metaPeer) MergeRemoteState(_ []byte, _ bool) {}

// startMetaPeer runs the peer as node name on addr:port and joins join.
func startMetaPeer(t *testing.T, name, addr string, port int, join string, meta []byte) *metaPeer {
	t.Helper()
	p := &metaPeer{meta: meta}
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.BindAddr, mc.AdvertiseAddr = addr, addr
	mc.BindPort, mc.AdvertisePort = port, port
	mc.Label = "halb" // as halb's gossip, or halb drops every packet unread
	mc.ProbeInterval = 200 * time.Millisecond
	mc.GossipInterval = 50 * time.Millisecond
	mc.LogOutput = io.Discard
	mc.Delegate = p
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	p.ml = ml
	t.Cleanup(func() {
		_ = ml.Leave(time.Second)
		_ = ml.Shutdown()
	})
	support.WaitUntil(t, 5*time.Second, func() bool {
		_, err := ml.Join([]string{join})
		return err == nil
	}, "the peer to join")
	return p
}

// set gossips new metadata at once.
func (p *metaPeer) set(t *testing.T, meta []byte) {
	t.Helper()
	p.mu.Lock()
	p.meta = meta
	p.mu.Unlock()
	if err := p.ml.UpdateNode(time.Second); err != nil {
		t.Fatal(err)
	}
}

// stateError returns what n's snapshot says about member name's state.
func stateError(n *node, name string) (string, bool) {
	for _, m := range n.d.api.Snapshot().Members {
		if m.Name == name {
			return m.StateErr, m.Alive
		}
	}
	return "", false
}

// keepsHolding fails the test if n releases the VIP within d.
func keepsHolding(t *testing.T, n *node, d time.Duration, why string) {
	t.Helper()
	support.Consistently(t, d, n.holds, n.name+" keeps the VIP: "+why)
}

// A configured peer that speaks a newer state format, then a corrupt one,
// claims in it the highest priority and the VIP. This node cannot read
// that, so it must neither crash nor believe it: it takes the VIP, keeps
// it, and shows the peer's state error. Once the same claim arrives in a
// format it reads, the VIP moves — proof that only unreadability held it.
func TestUnreadablePeerDoesNotMisleadElection(t *testing.T) {
	cfg := pairConfig(t, "preempt")
	b := startNode(t, cfg, "b")
	addr := vipPrefix.Addr().String()
	claim, err := cluster.EncodeState(cluster.State{
		Priority: 1000, Eligible: true, Stable: true,
		Frontends: map[string]bool{"api": true}, Holds: []string{addr},
		Holder: map[string]string{addr: "a"}, Version: "v9",
	})
	if err != nil {
		t.Fatal(err)
	}
	newer := append([]byte{claim[0] + 1}, claim[1:]...)
	peer := startMetaPeer(t, "a", "127.0.0.61", cfg.Cluster.Port, fmt.Sprintf("127.0.0.62:%d", cfg.Cluster.Port), newer)

	support.WaitUntil(t, 5*time.Second, func() bool {
		e, alive := stateError(b, "a")
		return alive && strings.Contains(e, "unknown format version 2")
	}, "b to read a's state as unreadable")
	// b waits out the settle time for a peer whose state it cannot read,
	// then claims: nobody it can trust holds the VIP.
	support.WaitUntil(t, 3*round.SettleTimeout, b.holds, "b to hold the VIP")
	if v := b.d.api.Snapshot().VIPs[0]; v.Holder != "b" {
		t.Errorf("b's view of the holder = %q, want b", v.Holder)
	}
	keepsHolding(t, b, 5*reconcileEvery, "a peer in a newer format claims it")

	peer.set(t, []byte("\x01\xff corrupt"))
	support.WaitUntil(t, 5*time.Second, func() bool {
		e, _ := stateError(b, "a")
		return strings.Contains(e, "unknown flags")
	}, "b to see the corrupt state")
	keepsHolding(t, b, 5*reconcileEvery, "a peer with a corrupt state claims it")

	peer.set(t, claim)
	support.WaitUntil(t, 5*time.Second, func() bool {
		e, _ := stateError(b, "a")
		return e == "" && !b.holds()
	}, "b to hand the VIP to a once it reads a's claim")
}
