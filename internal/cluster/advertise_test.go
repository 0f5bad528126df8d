package cluster

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/memberlist"

	"halb/test/support"
)

// lossyAdvertiser stands in for memberlist: it drops the first update, as
// memberlist does when a refutation at a higher incarnation races with it.
type lossyAdvertiser struct {
	c *Cluster

	mu      sync.Mutex
	meta    []byte
	updates int
}

func (a *lossyAdvertiser) UpdateNode(time.Duration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.updates++
	if a.updates > 1 {
		a.c.mu.Lock()
		a.meta = bytes.Clone(a.c.meta)
		a.c.mu.Unlock()
	}
	return nil
}

func (a *lossyAdvertiser) LocalNode() *memberlist.Node {
	a.mu.Lock()
	defer a.mu.Unlock()
	return &memberlist.Node{Name: "a", Meta: bytes.Clone(a.meta)}
}

func (a *lossyAdvertiser) advertised() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return bytes.Clone(a.meta)
}

// Found by `halb-lab chaos` (seed 4004, steps 26-27): after a partition
// healed, a node's peer went on hearing its state from before the heal for
// over 40 s: the update was lost to a racing refutation, and nothing
// re-advertised it until the state changed again.
func TestLostStateUpdateIsReadvertised(t *testing.T) {
	c := &Cluster{update: make(chan struct{}, 1), log: slog.New(slog.DiscardHandler)}
	ml := &lossyAdvertiser{c: c}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.updateLoop(ctx, ml) }()
	defer func() { cancel(); <-done }()

	c.SetLocal(State{Priority: 100, Eligible: true, Holder: map[string]string{"192.168.66.160": "b"}})
	want := func() []byte {
		c.mu.Lock()
		defer c.mu.Unlock()
		return bytes.Clone(c.meta)
	}
	if !support.Eventually(5*readvertiseEvery, func() bool { return bytes.Equal(ml.advertised(), want()) }) {
		t.Fatalf("memberlist still advertises %q, want the state set: %q", ml.advertised(), want())
	}
}

// stuckAdvertiser stands in for memberlist when no broadcast can leave
// (the only peer just died): UpdateNode applies the state at once, as
// memberlist does, then waits for its whole timeout.
type stuckAdvertiser struct {
	c *Cluster

	mu   sync.Mutex
	meta []byte
}

func (a *stuckAdvertiser) UpdateNode(timeout time.Duration) error {
	a.c.mu.Lock()
	meta := bytes.Clone(a.c.meta)
	a.c.mu.Unlock()
	a.mu.Lock()
	a.meta = meta
	a.mu.Unlock()
	time.Sleep(timeout)
	return errors.New("timeout waiting for update broadcast")
}

func (a *stuckAdvertiser) LocalNode() *memberlist.Node {
	a.mu.Lock()
	defer a.mu.Unlock()
	return &memberlist.Node{Name: "b", Meta: bytes.Clone(a.meta)}
}

// Found by TestHooksDoNotDelayFailover in CI: the standby took the VIP
// over while its update for an earlier change still waited (up to 1 s)
// for a broadcast that could not leave, the only peer being dead; "holds
// the VIP" was advertised only after that wait, and the old holder,
// restarted meanwhile, joined, saw no holder and claimed the VIP itself.
// A state set while an update waits is advertised within a blink.
func TestStateSetWhileABroadcastCannotLeaveIsAdvertised(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &Cluster{update: make(chan struct{}, 1), log: slog.New(slog.DiscardHandler)}
		ml := &stuckAdvertiser{c: c}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); c.updateLoop(ctx, ml) }()
		defer func() { cancel(); <-done }()

		c.SetLocal(State{Priority: 100, Eligible: true})
		synctest.Wait() // the first update waits for its broadcast
		claimed := State{Priority: 100, Eligible: true, Holds: []string{"192.168.66.160"}}
		c.SetLocal(claimed)
		time.Sleep(50 * time.Millisecond)
		want, err := EncodeState(claimed)
		if err != nil {
			t.Fatal(err)
		}
		if got := ml.LocalNode().Meta; !bytes.Equal(got, want) {
			t.Fatalf("50 ms after the claim memberlist advertises %q, want the claim %q", got, want)
		}
	})
}
