package support

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// StopTimeout bounds how long Stop waits for a background function to
// return after its context is cancelled.
const StopTimeout = 15 * time.Second

// Task is a function running in the background under a context of its own,
// typically a component's Run.
type Task struct {
	cancel   context.CancelFunc
	done     chan struct{}
	err      error
	mu       sync.Mutex
	observed bool // the test looked at the result, so cleanup need not
}

// Go runs fn in a goroutine with a context that is cancelled, and waited
// for, when t ends (or earlier through Stop). If the test never looks at
// fn's result, a non-nil error other than context.Canceled fails t at
// cleanup, as does fn not returning within StopTimeout of cancellation.
func Go(t testing.TB, fn func(ctx context.Context) error) *Task {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	k := &Task{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(k.done)
		k.err = fn(ctx)
	}()
	t.Cleanup(func() {
		k.cancel()
		if !k.waitFor(StopTimeout) {
			t.Errorf("background function did not return within %s of cancel", StopTimeout)
			return
		}
		k.mu.Lock()
		observed := k.observed
		k.mu.Unlock()
		if !observed && k.err != nil && !errors.Is(k.err, context.Canceled) {
			t.Errorf("background function: %v", k.err)
		}
	})
	return k
}

// Stop cancels the task's context and returns fn's result once it has
// returned; it fails t if that takes longer than StopTimeout. Calling Stop
// again returns the same result.
func (k *Task) Stop(t testing.TB) error {
	t.Helper()
	k.cancel()
	return k.Wait(t, StopTimeout)
}

// Wait returns fn's result once fn has returned on its own, failing t if it
// has not within the given time. The context is left alone.
func (k *Task) Wait(t testing.TB, within time.Duration) error {
	t.Helper()
	if !k.waitFor(within) {
		t.Fatalf("background function did not return within %s", within)
	}
	k.mu.Lock()
	k.observed = true
	k.mu.Unlock()
	return k.err
}

// Done is closed when fn has returned.
func (k *Task) Done() <-chan struct{} { return k.done }

func (k *Task) waitFor(within time.Duration) bool {
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-k.done:
		return true
	case <-timer.C:
		return false
	}
}

// AwaitReady waits until ready is closed (a component's Ready channel),
// failing t if fn returns first, with its error, or if within passes.
func (k *Task) AwaitReady(t testing.TB, ready <-chan struct{}, within time.Duration) {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-ready:
	case <-k.done:
		k.mu.Lock()
		k.observed = true
		k.mu.Unlock()
		t.Fatalf("background function returned before it was ready: %v", k.err)
	case <-timer.C:
		t.Fatalf("not ready within %s", within)
	}
}
