package support

import (
	"testing"
	"time"
)

// WaitUntil calls cond until it returns true, and fails t naming what if
// within passes first. It polls with a backoff from 1 ms up to 20 ms, so a
// quick condition is seen quickly and a slow one costs little CPU; under
// testing/synctest the polling sleeps advance the bubble's fake clock.
func WaitUntil(t testing.TB, within time.Duration, cond func() bool, what string) {
	t.Helper()
	if !Eventually(within, cond) {
		t.Fatalf("%s: not within %s", what, within)
	}
}

// Eventually reports whether cond returned true within the given time,
// polling like WaitUntil; for callers that add their own failure detail.
func Eventually(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	pause := time.Millisecond
	for !cond() {
		if !time.Now().Before(deadline) {
			return cond()
		}
		time.Sleep(min(pause, time.Until(deadline)))
		pause = min(2*pause, 20*time.Millisecond)
	}
	return true
}

// Receive returns the next value from ch, failing t naming what if none
// arrives within the given time or ch is closed.
func Receive[T any](t testing.TB, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return v
	case <-timer.C:
		t.Fatalf("%s: nothing within %s", what, within)
	}
	var zero T
	return zero
}

// Consistently checks that cond keeps returning true for the whole of d,
// polling every 10 ms, and fails t naming what at the first false. It is
// for asserting that something does not happen ("b never takes the VIP
// while a holds it"), where the waiting is the behaviour under test.
func Consistently(t testing.TB, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if !cond() {
			t.Fatalf("%s: stopped holding after %s of %s", what, d-time.Until(deadline), d)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		time.Sleep(min(10*time.Millisecond, left))
	}
}
