package pool

import (
	"slices"
	"sync"
	"testing"

	"halb/internal/config"
)

func TestObserverSeesEachTransitionOnce(t *testing.T) {
	p := New(backend(config.RoundRobin, 1), discard())
	var mu sync.Mutex
	var got []Transition
	p.SetObserver(func(tr Transition) { mu.Lock(); got = append(got, tr); mu.Unlock() })
	s := p.Servers()[0]
	s.ReportCheck(ok) // first result: up at once
	s.ReportCheck(ok) // no change
	s.MarkDown("connect: connection refused")
	s.ReportCheck(bad) // already down
	s.ReportCheck(ok)
	s.ReportCheck(ok) // rise 2: up again
	want := []Transition{
		{Backend: "api", Server: "s0", Address: "127.0.0.10:6443", Up: true, Reason: "200 OK"},
		{Backend: "api", Server: "s0", Address: "127.0.0.10:6443", Up: false, Reason: "connect: connection refused"},
		{Backend: "api", Server: "s0", Address: "127.0.0.10:6443", Up: true, Reason: "200 OK"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("transitions = %+v\nwant %+v", got, want)
	}
	p.SetObserver(nil)
	s.MarkDown("gone")
	if len(got) != 3 {
		t.Fatalf("a removed observer still got %+v", got[3:])
	}
}
