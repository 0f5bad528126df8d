package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
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
