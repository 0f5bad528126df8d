package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

// startServer serves echo and sink on loopback until the test ends.
func startServer(t *testing.T) (echo, sink string) {
	t.Helper()
	e, err := net.Listen("tcp4", "127.0.0.31:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := net.Listen("tcp4", "127.0.0.31:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Serve(ctx, e, s)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return e.Addr().String(), s.Addr().String()
}

func TestLoadAgainstLoopbackServer(t *testing.T) {
	echo, sink := startServer(t)
	ctx := context.Background()
	b, err := Bulk(ctx, []string{sink}, 2, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("bulk: %v", err)
	}
	if b.Bytes <= 0 || b.BitsPerSec <= 0 || b.Streams != 2 {
		t.Fatalf("bulk moved nothing: %+v", b)
	}
	c, err := Churn(ctx, []string{echo}, 2, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("churn: %v", err)
	}
	if c.Conns == 0 || c.Errors != 0 || c.ConnectP99 <= 0 || c.TxP99 < c.ConnectP50 {
		t.Fatalf("churn: %+v", c)
	}
	r, err := RR(ctx, []string{echo}, 3, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("rr: %v", err)
	}
	if r.Requests == 0 || r.P50 <= 0 || r.P99 < r.P50 {
		t.Fatalf("rr: %+v", r)
	}
	h, err := OpenIdle(ctx, []string{echo}, 50, 4)
	if err != nil {
		t.Fatalf("idle: %v", err)
	}
	if h.Opened() != 50 {
		t.Fatalf("opened %d idle connections, want 50", h.Opened())
	}
	h.Close()
}

func TestOpenIdleCountsWhatOpened(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.31:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens: every connect is refused
	h, err := OpenIdle(context.Background(), []string{addr}, 100, 4)
	if err == nil || h.Opened() != 0 {
		t.Fatalf("opened %d against a closed port (err %v), want 0 and an error", h.Opened(), err)
	}
}

func TestAgentAnswersEveryLine(t *testing.T) {
	echo, sink := startServer(t)
	reqs := []Request{
		{Op: "wait", Addrs: []string{echo}, Sinks: []string{sink}, N: 2, Seconds: 5},
		{Op: "hold", Addrs: []string{echo}, N: 5},
		{Op: "hold", Addrs: []string{echo}, N: 5},
		{Op: "release"},
		{Op: "rr", Addrs: []string{echo}, N: 1, Seconds: 0.1},
		{Op: "fly"},
	}
	var in bytes.Buffer
	for _, r := range reqs {
		b, _ := json.Marshal(r)
		in.Write(append(b, '\n'))
	}
	in.WriteString("not json\n")
	var out bytes.Buffer
	if err := Agent(context.Background(), &in, &out); err != nil {
		t.Fatal(err)
	}
	var reps []Reply
	dec := json.NewDecoder(&out)
	for dec.More() {
		var r Reply
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		reps = append(reps, r)
	}
	if len(reps) != len(reqs)+1 {
		t.Fatalf("%d replies to %d requests", len(reps), len(reqs)+1)
	}
	checks := []func(Reply) bool{
		func(r Reply) bool { return r.Error == "" },
		func(r Reply) bool { return r.Opened == 5 },
		func(r Reply) bool { return strings.Contains(r.Error, "already held") },
		func(r Reply) bool { return r.Error == "" },
		func(r Reply) bool { return r.RR != nil && r.RR.Requests > 0 },
		func(r Reply) bool { return strings.Contains(r.Error, `unknown op "fly"`) },
		func(r Reply) bool { return strings.Contains(r.Error, "bad request") },
	}
	for i, ok := range checks {
		if !ok(reps[i]) {
			t.Errorf("reply %d: %+v", i, reps[i])
		}
	}
}
