package proxy

import (
	"testing"
	"time"

	"halb/internal/config"
	"halb/test/support"
)

// waitParked waits until the frontend has n directions parked.
func waitParked(t *testing.T, fe *testFrontend, n int) {
	t.Helper()
	if !support.Eventually(5*time.Second, func() bool { return fe.parker.count() == n }) {
		t.Fatalf("%d directions parked after 5s, want %d", fe.parker.count(), n)
	}
}

func TestColdSessionsParkAndResume(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts(), coldAfter: 20 * time.Millisecond})
	const sessions = 10
	var cs []*conn
	for range sessions {
		c := dial(t, fe.addr)
		c.greeting(t)
		c.echo(t, "before")
		cs = append(cs, c)
	}
	// Both directions of every quiet session park: no goroutine waits.
	waitParked(t, fe, 2*sessions)
	for _, c := range cs {
		c.echo(t, "after parking, bytes still flow both ways")
	}
	waitParked(t, fe, 2*sessions)
	// EOF reaches a parked direction too, and is passed on as before.
	_ = cs[0].Close()
	fe.log.waitEnd(t, "client closed")
	waitParked(t, fe, 2*(sessions-1))
}

// parksSoFar is how many times the frontend's directions have parked.
func parksSoFar(fe *testFrontend) uint64 {
	fe.parker.mu.Lock()
	defer fe.parker.mu.Unlock()
	return fe.parker.next
}

// Bytes that resume a parked direction count as activity: a session whose
// every exchange finds it parked outlives its idle timeouts many times.
func TestActivityAcrossParking(t *testing.T) {
	tm := testTimeouts()
	tm.ClientIdle = 600 * time.Millisecond
	tm.ServerIdle = 600 * time.Millisecond
	fe, c := coldSession(t, tm)
	waitParked(t, fe, 2)
	start := time.Now()
	for i := 0; time.Since(start) < 3*tm.ClientIdle && i < 500; i++ {
		before := parksSoFar(fe)
		c.echo(t, "tick")
		// Both directions woke for the echo; the next one waits until
		// both have parked again.
		support.WaitUntil(t, 5*time.Second, func() bool { return parksSoFar(fe) >= before+2 && fe.parker.count() == 2 },
			"both directions parked again after an echo")
	}
	_ = c.Close()
	fe.log.waitEnd(t, "client closed")
}

// coldSession starts a frontend whose sessions park after 10 ms and opens
// one session through it.
func coldSession(t *testing.T, tm config.Timeouts) (*testFrontend, *conn) {
	t.Helper()
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	fe := startFrontend(t, p, Options{Timeouts: tm, coldAfter: 10 * time.Millisecond})
	c := dial(t, fe.addr)
	c.greeting(t)
	return fe, c
}

func TestIdleTimeoutWhileParked(t *testing.T) {
	tm := testTimeouts()
	tm.ClientIdle = 200 * time.Millisecond
	fe, c := coldSession(t, tm)
	waitParked(t, fe, 2)
	// The idle timer, not a goroutine, ends it: 200 ms after the greeting.
	c.expectClosed(t, 5*time.Second)
	fe.log.waitEnd(t, "client idle timeout")
}

func TestParkedSessionsAreDrained(t *testing.T) {
	tm := testTimeouts()
	tm.Drain = 100 * time.Millisecond
	fe, c := coldSession(t, tm)
	waitParked(t, fe, 2)
	fe.stop(t) // fails if Run does not return: a parked session was stranded
	c.expectClosed(t, time.Second)
	fe.log.waitEnd(t, "drained")
}
