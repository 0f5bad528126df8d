package health

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestRealClockTimerFires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := RealClock()
		before := c.Now()
		tm := c.NewTimer(time.Second)
		at := <-tm.C()
		if got := at.Sub(before); got != time.Second {
			t.Fatalf("fired %s after it was made, want 1s", got)
		}
		if tm.Stop() {
			t.Fatal("Stop of a fired timer reported pending")
		}
		stopped := c.NewTimer(time.Second)
		if !stopped.Stop() {
			t.Fatal("Stop of a pending timer reported it had fired")
		}
		time.Sleep(2 * time.Second) // in the bubble: the stopped timer's deadline passes
		select {
		case <-stopped.C():
			t.Fatal("a stopped timer fired")
		default:
		}
	})
}
