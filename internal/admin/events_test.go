package admin

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"halb/internal/events"
	"halb/test/support"
)

type eventSource struct {
	fakeSource
	bus *events.Bus
}

func (e *eventSource) Subscribe(since time.Time) ([]events.Event, *events.Sub) {
	return e.bus.Subscribe(since)
}

type spreadController struct {
	fakeController
	match, state string
}

func (s *spreadController) SetServerEverywhere(match, state string) (ServerSpread, error) {
	if match != "cp1" {
		return ServerSpread{}, ErrNotFound
	}
	s.match, s.state = match, state
	return ServerSpread{Match: match, State: state, Local: []ServerRef{{Backend: "k8s", Server: "cp1", Address: "10.0.0.1:6443"}},
		Peers: []string{"lb2"}}, nil
}

// serve runs a server with src and ctl on a fresh socket until the test ends.
func serve(t *testing.T, src Source, ctl Controller) (sock string, stop func() error) {
	t.Helper()
	sock = filepath.Join(shortDir(t), "s")
	srv := NewServer(sock, "", src, ctl, nil)
	k := support.Go(t, srv.Run)
	support.WaitUntil(t, 5*time.Second, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, "the admin socket to answer")
	return sock, func() error { return k.Stop(t) }
}

func TestEventsStreamPastThenLive(t *testing.T) {
	bus := events.New(10)
	bus.Publish(events.Event{Kind: events.ServerDown, Backend: "k8s", Server: "cp1", Time: time.Now().Add(-time.Hour)})
	bus.Publish(events.Event{Kind: events.VIPClaimed, VIP: "10.0.0.10"})
	sock, stop := serve(t, &eventSource{bus: bus}, &fakeController{})
	c := Dial(sock)

	var got []events.Event
	err := c.Events(t.Context(), 10*time.Minute, false, func(e events.Event) error { got = append(got, e); return nil })
	if err != nil || len(got) != 1 || got[0].Kind != events.VIPClaimed {
		t.Fatalf("since 10m without follow = %+v, %v; want only the recent claim", got, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	live := make(chan events.Event, 4)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Events(ctx, 0, true, func(e events.Event) error { live <- e; return nil })
	}()
	// Publish until the subscription is in place and the event arrives.
	var e events.Event
	for i := 0; ; i++ {
		bus.Publish(events.Event{Kind: events.MemberFailed, Node: "lb2"})
		select {
		case e = <-live:
		case <-time.After(50 * time.Millisecond):
			if i > 100 {
				t.Fatal("no live event within 5s")
			}
			continue
		}
		break
	}
	if e.Kind != events.MemberFailed || e.Node != "lb2" {
		t.Fatalf("live event = %+v", e)
	}
	// Stopping the daemon ends an open stream at once, not after a timeout.
	t0 := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("shutdown took %s with a stream open", d)
	}
	if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
		t.Logf("stream ended with %v", err)
	}
}

func TestEventsBadSince(t *testing.T) {
	sock, _ := serve(t, &eventSource{bus: events.New(1)}, &fakeController{})
	code, body := raw(t, sock, "GET", "/v1/events?since=yesterday", "")
	if code != 400 {
		t.Fatalf("status %d (%s), want 400", code, body)
	}
}

func TestClusterServerAdmin(t *testing.T) {
	ctl := &spreadController{}
	sock, _ := serve(t, &fakeSource{}, ctl)
	c := Dial(sock)
	out, err := c.SetServerEverywhere(t.Context(), "cp1", ActionDrain)
	if err != nil || ctl.state != ActionDrain || len(out.Local) != 1 || out.Peers[0] != "lb2" {
		t.Fatalf("spread = %+v, %v (controller saw %q %q)", out, err, ctl.match, ctl.state)
	}
	_, err = c.SetServerEverywhere(t.Context(), "cp9", ActionDrain)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("unknown server: %v, want 404", err)
	}
	if _, err := c.SetServerEverywhere(t.Context(), "cp1", "pause"); err == nil {
		t.Fatal("a bad state was accepted")
	}
}
