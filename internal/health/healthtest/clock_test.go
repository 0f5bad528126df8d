package healthtest

import (
	"context"
	"testing"
	"time"
)

func TestClockFiresOnlyWhenDue(t *testing.T) {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(start)
	late := c.NewTimer(3 * time.Second)
	early := c.NewTimer(time.Second)
	if got := c.Waiters(); got != 2 {
		t.Fatalf("waiters %d, want 2", got)
	}
	if next, ok := c.NextDeadline(); !ok || !next.Equal(start.Add(time.Second)) {
		t.Fatalf("next deadline %v %v, want %v", next, ok, start.Add(time.Second))
	}

	c.Advance(time.Second - time.Nanosecond)
	select {
	case <-early.C():
		t.Fatal("timer fired before its deadline")
	default:
	}
	c.Advance(time.Nanosecond)
	select {
	case at := <-early.C():
		if !at.Equal(start.Add(time.Second)) {
			t.Fatalf("fired with %v, want %v", at, start.Add(time.Second))
		}
	default:
		t.Fatal("timer did not fire at its deadline")
	}
	if early.Stop() {
		t.Fatal("Stop of a fired timer reported pending")
	}
	if !late.Stop() {
		t.Fatal("Stop of a pending timer reported not pending")
	}
	c.Advance(time.Hour)
	select {
	case <-late.C():
		t.Fatal("stopped timer fired")
	default:
	}
	if got := c.Waiters(); got != 0 {
		t.Fatalf("waiters %d, want 0", got)
	}
	if got := c.Now(); !got.Equal(start.Add(time.Hour + time.Second)) {
		t.Fatalf("now %v, want %v", got, start.Add(time.Hour+time.Second))
	}
}

func TestClockZeroDurationFiresAtOnce(t *testing.T) {
	c := NewClock(time.Unix(0, 0))
	tm := c.NewTimer(0)
	select {
	case <-tm.C():
	default:
		t.Fatal("zero-duration timer did not fire at once")
	}
}

func TestClockBlockUntil(t *testing.T) {
	c := NewClock(time.Unix(0, 0))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.NewTimer(time.Second)
	}()
	if err := c.BlockUntil(ctx, 1); err != nil {
		t.Fatalf("BlockUntil: %v", err)
	}
	<-done

	short, cancelShort := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancelShort()
	if err := c.BlockUntil(short, 2); err == nil {
		t.Fatal("BlockUntil(2) returned with only one timer pending")
	}
}
