package pool

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"halb/internal/config"
)

func TestPassiveVerdict(t *testing.T) {
	type want struct {
		Run           int
		Counted, Down bool
	}
	tests := []struct {
		name       string
		f          failedConnect
		run, limit int
		want       want
	}{
		{"refused is down at once", failedConnect{kind: ConnectRefused}, 0, 3, want{1, true, true}},
		{"refused is down at once even while busy", failedConnect{kind: ConnectRefused, busy: true, answeredSince: true}, 0, 3, want{1, true, true}},
		{"first timeout counts", failedConnect{kind: ConnectTimeout}, 0, 3, want{1, true, false}},
		{"timeout reaching the limit is down", failedConnect{kind: ConnectTimeout}, 2, 3, want{3, true, true}},
		{"limit 1 is down at the first timeout", failedConnect{kind: ConnectTimeout}, 0, 1, want{1, true, true}},
		{"limit 0 acts as 1", failedConnect{kind: ConnectTimeout}, 0, 0, want{1, true, true}},
		{"timeout while busy does not count", failedConnect{kind: ConnectTimeout, busy: true}, 2, 3, want{2, false, false}},
		{"timeout after another connect succeeded does not count", failedConnect{kind: ConnectTimeout, answeredSince: true}, 2, 3, want{2, false, false}},
		{"other error counts", failedConnect{kind: ConnectError}, 2, 3, want{3, true, true}},
		{"other error counts while busy", failedConnect{kind: ConnectError, busy: true}, 0, 3, want{1, true, false}},
		{"other error after a success does not count", failedConnect{kind: ConnectError, answeredSince: true}, 2, 3, want{2, false, false}},
		{"local failure never counts", failedConnect{kind: ConnectLocal}, 2, 1, want{2, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got want
			got.Run, got.Counted, got.Down = passiveVerdict(tt.f, tt.run, tt.limit)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("verdict (-want +got):\n%s", diff)
			}
		})
	}
}

// passivePool is a backend of two servers that are up, with passive_fall n.
func passivePool(n int) *Pool {
	b := backend(config.RoundRobin, 1, 1)
	b.PassiveFall = n
	p := New(b, discard())
	allUp(p)
	return p
}

// fail runs one connect to s that fails with kind.
func fail(s *Server, kind ConnectFailure) {
	c := s.StartConnect()
	c.Failed(kind, "connect: "+kind.String())
}

func succeed(s *Server) {
	c := s.StartConnect()
	c.Succeeded()
}

func TestRefusedConnectMarksDownAtOnce(t *testing.T) {
	p := passivePool(3)
	s := p.Servers()[0]
	fail(s, ConnectRefused)
	if s.Up() {
		t.Fatal("a refused connect left the server up")
	}
	if got := s.Stats().ConnectFailures; got != 1 {
		t.Fatalf("connect failures %d, want 1", got)
	}
}

func TestTimeoutsMarkDownAfterPassiveFallInARow(t *testing.T) {
	p := passivePool(3)
	s := p.Servers()[0]
	for i := range 2 {
		fail(s, ConnectTimeout)
		if !s.Up() {
			t.Fatalf("down after %d timeouts, passive_fall is 3", i+1)
		}
	}
	fail(s, ConnectTimeout)
	if s.Up() {
		t.Fatal("still up after 3 timeouts in a row, passive_fall is 3")
	}
	if p.Servers()[1].Up() != true {
		t.Fatal("the other server went down")
	}
}

func TestSuccessfulConnectResetsTheCount(t *testing.T) {
	p := passivePool(3)
	s := p.Servers()[0]
	for range 10 {
		fail(s, ConnectTimeout)
		fail(s, ConnectError)
		succeed(s)
	}
	if !s.Up() {
		t.Fatal("down although a successful connect followed every two failures")
	}
}

func TestFailureThatLostARaceDoesNotCount(t *testing.T) {
	p := passivePool(1)
	s := p.Servers()[0]
	// Connects begun together; one gets through while the other waits for
	// its timeout: the server lives, the queue was full for a moment.
	slow := s.StartConnect()
	succeed(s)
	slow.Failed(ConnectTimeout, "connect: timeout")
	if !s.Up() {
		t.Fatal("a timeout of a connect begun before another one succeeded marked the server down")
	}
	// A connect begun after the success still counts.
	fail(s, ConnectTimeout)
	if s.Up() {
		t.Fatal("a timeout with no success since it began did not count (passive_fall 1)")
	}
}

func TestTimeoutsDuringABurstToOtherServersDoNotCount(t *testing.T) {
	p := passivePool(1)
	s0, s1 := p.Servers()[0], p.Servers()[1]
	// A storm: BusyConnects connects to s1 in flight, and a connect to s0
	// that times out.
	var storm []Connect
	for range BusyConnects {
		storm = append(storm, s1.StartConnect())
	}
	late := s0.StartConnect()
	late.Failed(ConnectTimeout, "connect: timeout")
	if !s0.Up() {
		t.Fatalf("a timeout begun with %d connects to other servers in flight marked the server down", BusyConnects)
	}
	// A server's own pile of connects does not excuse it: only one
	// connect to another server is in flight for this one.
	own := s1.StartConnect()
	own.Failed(ConnectTimeout, "connect: timeout")
	if s1.Up() {
		t.Fatal("a timeout with only the server's own connects in flight did not count (passive_fall 1)")
	}
	// A refused connect is an answer from the server, busy or not.
	refused := s0.StartConnect()
	refused.Failed(ConnectRefused, "connect: refused")
	if s0.Up() {
		t.Fatal("a refused connect during a burst left the server up")
	}
	for i := range storm {
		storm[i].Failed(ConnectLocal, "drained")
	}
	if n := p.connecting.Load(); n != 0 {
		t.Fatalf("%d connects in flight after all ended", n)
	}
}

func TestTimeoutWhenABurstBeganMeanwhileDoesNotCount(t *testing.T) {
	p := passivePool(1)
	s0, s1 := p.Servers()[0], p.Servers()[1]
	first := s0.StartConnect() // begun before the storm
	var storm []Connect
	for range BusyConnects {
		storm = append(storm, s1.StartConnect())
	}
	first.Failed(ConnectTimeout, "connect: timeout")
	if !s0.Up() {
		t.Fatal("a timeout that ended amid a burst to other servers marked the server down")
	}
	for i := range storm {
		storm[i].Succeeded()
	}
	// Once the burst is over, a timeout counts again.
	fail(s0, ConnectTimeout)
	if s0.Up() {
		t.Fatal("a timeout after the burst ended did not count: connects in flight not released")
	}
}

func TestLocalFailureNeverCounts(t *testing.T) {
	p := passivePool(1)
	s := p.Servers()[0]
	for range 5 {
		fail(s, ConnectLocal)
	}
	if !s.Up() || s.Stats().ConnectFailures != 0 {
		t.Fatalf("local failures: up=%v connect failures=%d, want up and none counted", s.Up(), s.Stats().ConnectFailures)
	}
}

func TestConnectEndsOnce(t *testing.T) {
	p := passivePool(2)
	s := p.Servers()[0]
	c := s.StartConnect()
	c.Failed(ConnectTimeout, "connect: timeout")
	c.Failed(ConnectTimeout, "connect: timeout")
	c.Succeeded()
	if !s.Up() || s.Stats().ConnectFailures != 1 {
		t.Fatalf("one attempt reported thrice: up=%v connect failures=%d, want up and 1", s.Up(), s.Stats().ConnectFailures)
	}
	if n := p.connecting.Load(); n != 0 {
		t.Fatalf("%d connects in flight after the only one ended", n)
	}
}

func TestPassiveFallFollowsReloadAndRestartsAfterRise(t *testing.T) {
	p := passivePool(5)
	s := p.Servers()[0]
	fail(s, ConnectTimeout)
	b := p.Config()
	b.PassiveFall = 2
	p.Update(b)
	fail(s, ConnectTimeout)
	if s.Up() {
		t.Fatal("still up after 2 timeouts in a row once a reload set passive_fall 2")
	}
	// Back by checks, the server starts a fresh count.
	s.ReportCheck(ok)
	s.ReportCheck(ok)
	if !s.Up() {
		t.Fatal("rise checks did not bring the server back")
	}
	fail(s, ConnectTimeout)
	if !s.Up() {
		t.Fatal("one timeout after coming back marked the server down: the count did not restart")
	}
}

func TestUnsetPassiveFallIsTheDefault(t *testing.T) {
	p := passivePool(0)
	s := p.Servers()[0]
	for range config.DefaultPassiveFall - 1 {
		fail(s, ConnectTimeout)
	}
	if !s.Up() {
		t.Fatalf("down before %d timeouts with passive_fall unset", config.DefaultPassiveFall)
	}
	fail(s, ConnectTimeout)
	if s.Up() {
		t.Fatalf("up after %d timeouts with passive_fall unset", config.DefaultPassiveFall)
	}
}
