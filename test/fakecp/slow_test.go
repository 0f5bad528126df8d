package fakecp

import (
	"context"
	"net"
	"testing"
	"time"
)

// A slow server drops connects beyond its small accept queue while it
// pauses between accepts, and takes them at once again when fast.
func TestSlowAcceptDropsConnectsBeyondTheQueue(t *testing.T) {
	f := start(t, "127.0.0.41", false)
	ctx := context.Background()
	if err := f.c.SlowAccept(ctx, 500*time.Millisecond, 1); err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	timedOut := 0
	for range 6 {
		c, err := net.DialTimeout("tcp4", f.api.String(), 100*time.Millisecond)
		if err != nil {
			timedOut++
			continue
		}
		conns = append(conns, c)
	}
	if timedOut == 0 {
		t.Fatal("6 connects within one accept pause to a queue of 1 all completed, want some dropped")
	}
	if err := f.c.SlowAccept(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	// The pause under way ends first; then the queue is long again.
	c, err := net.DialTimeout("tcp4", f.api.String(), 3*time.Second)
	if err != nil {
		t.Fatalf("connect once fast again: %v", err)
	}
	conns = append(conns, c)
	for range 20 {
		c, err := net.DialTimeout("tcp4", f.api.String(), time.Second)
		if err != nil {
			t.Fatalf("connect with the default queue: %v", err)
		}
		conns = append(conns, c)
	}
}

func TestSlowAcceptRejectsBadValues(t *testing.T) {
	f := start(t, "127.0.0.42", false)
	if err := f.c.SlowAccept(context.Background(), -time.Second, 1); err == nil {
		t.Fatal("a negative delay was accepted")
	}
}
