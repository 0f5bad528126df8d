package stats

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// heldHashes stands in for the bcrypt check: it counts calls and holds
// each one until release, so a test sees how many comparisons run at
// once without timing anything. After release, calls pass straight
// through to the real check.
type heldHashes struct {
	mu      sync.Mutex
	calls   int
	entered chan struct{}
	gate    chan struct{}
	release func()
}

func holdHashes(t *testing.T, l *logins) *heldHashes {
	t.Helper()
	hh := &heldHashes{entered: make(chan struct{}, 1000), gate: make(chan struct{})}
	hh.release = sync.OnceFunc(func() { close(hh.gate) })
	t.Cleanup(hh.release)
	real := l.verify
	l.verify = func(name, password string) bool {
		hh.mu.Lock()
		hh.calls++
		hh.mu.Unlock()
		hh.entered <- struct{}{}
		<-hh.gate
		return real(name, password)
	}
	return hh
}

func (hh *heldHashes) count() int {
	hh.mu.Lock()
	defer hh.mu.Unlock()
	return hh.calls
}

// burst sends n requests at once and waits until each one is either
// answered or held inside the hash. It returns the answers so far and
// how many are held; finish releases those and returns their answers.
func burst(t *testing.T, hh *heldHashes, n int, send func(i int) *httptest.ResponseRecorder) (answered []*httptest.ResponseRecorder, held int, finish func() []*httptest.ResponseRecorder) {
	t.Helper()
	out := make(chan *httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out <- send(i) })
	}
	t.Cleanup(func() { hh.release(); wg.Wait() })
	timeout := time.After(10 * time.Second)
	for len(answered)+held < n {
		select {
		case rec := <-out:
			answered = append(answered, rec)
		case <-hh.entered:
			held++
		case <-timeout:
			t.Fatalf("after 10s, %d of %d requests answered and %d hashing", len(answered), n, held)
		}
	}
	finish = func() []*httptest.ResponseRecorder {
		hh.release()
		wg.Wait()
		close(out)
		var rest []*httptest.ResponseRecorder
		for rec := range out {
			rest = append(rest, rec)
		}
		return rest
	}
	return answered, held, finish
}

// stoppedClock keeps the limiter from refilling while a test runs.
func withStoppedClock(t *testing.T, s *Server, slots int) *fakeClock {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s.login = newLogins(s.login.users, s.login.decoy, clock.now, slots)
	return clock
}

func want429(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code != http.StatusTooManyRequests {
		t.Errorf("%s: status %d, want 429", what, rec.Code)
		return
	}
	if rec.Header().Get("Retry-After") == "" {
		t.Errorf("%s: 429 without Retry-After", what)
	}
}

// D2: 60 simultaneous guesses from one source were all checked, because
// a failure was counted only after bcrypt.
func TestGuessBurstFromOneSource(t *testing.T) {
	s := newServer(t, statsConfig(t), nil)
	withStoppedClock(t, s, 2)
	hh := holdHashes(t, s.login)
	h := s.Handler()
	const attacker = "127.0.0.2:1000"

	answered, held, finish := burst(t, hh, 60, func(int) *httptest.ResponseRecorder {
		return request(h, attacker, "/", "admin", "guess")
	})
	if held > cap(s.login.slots) {
		t.Errorf("%d guesses hashing at once, want at most %d", held, cap(s.login.slots))
	}
	for _, rec := range answered {
		want429(t, "a guess beyond the hashing slots", rec)
	}
	for _, rec := range finish() {
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("a checked wrong guess: status %d, want 401", rec.Code)
		}
	}
	// Guess on until refused: each checked guess used up an attempt.
	for range failBurst {
		if rec := request(h, attacker, "/", "admin", "guess"); rec.Code == http.StatusTooManyRequests {
			break
		} else if rec.Code != http.StatusUnauthorized {
			t.Fatalf("a later wrong guess: status %d", rec.Code)
		}
	}
	checked := hh.count()
	if checked > failBurst {
		t.Errorf("%d guesses checked, want at most the limit %d", checked, failBurst)
	}
	// Locked out: the right password is refused and not even checked.
	want429(t, "right password from a locked-out source", request(h, attacker, "/", "admin", "s3cret"))
	if hh.count() != checked {
		t.Error("a locked-out source's password was checked")
	}
}

// Guesses from many sources, each with attempts left, still hash in a
// few slots at most; the rest are refused at once, uncounted.
func TestHashingBounded(t *testing.T) {
	s := newServer(t, statsConfig(t), nil)
	withStoppedClock(t, s, 2)
	hh := holdHashes(t, s.login)
	h := s.Handler()
	const n = 60
	from := func(i int) string { return fmt.Sprintf("127.0.1.%d:1000", i+1) }

	answered, held, finish := burst(t, hh, n, func(i int) *httptest.ResponseRecorder {
		return request(h, from(i), "/", "admin", "guess")
	})
	if held < 1 || held > 2 {
		t.Errorf("%d comparisons at once, want 1 or 2 (the slots)", held)
	}
	for _, rec := range answered {
		want429(t, "a guess while every slot is busy", rec)
		if got := rec.Header().Get("Retry-After"); got != "1" {
			t.Errorf("busy: Retry-After %q, want 1", got)
		}
	}
	finish()
	if len(answered) == 0 {
		t.Fatal("no guess was refused")
	}
	// A guess refused as busy was never checked, so it cost its source
	// no attempt: that source may still fail failBurst times.
	refused := -1 // a source refused as busy: one the limiter holds nothing for
	for i := range n {
		if _, ok := s.login.limit.buckets[sourceKey(netip.MustParseAddrPort(from(i)).Addr())]; !ok {
			refused = i
			break
		}
	}
	if refused < 0 {
		t.Fatal("every source kept a used attempt, also those refused as busy")
	}
	for i := range failBurst {
		if rec := request(h, from(refused), "/", "admin", "guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("source refused as busy, failure %d: status %d, want 401", i+1, rec.Code)
		}
	}
}

// The last attempt a source has left lets one guess through, not two
// that arrive together.
func TestLastAttemptReservedBeforeHashing(t *testing.T) {
	s := newServer(t, statsConfig(t), nil)
	withStoppedClock(t, s, 2)
	h := s.Handler()
	const attacker = "127.0.0.3:1000"
	for i := range failBurst - 1 {
		if rec := request(h, attacker, "/", "admin", "guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d", i+1, rec.Code)
		}
	}
	hh := holdHashes(t, s.login)
	answered, held, finish := burst(t, hh, 2, func(int) *httptest.ResponseRecorder {
		return request(h, attacker, "/", "admin", "guess")
	})
	if held != 1 {
		t.Errorf("%d guesses checked on the last attempt, want 1", held)
	}
	for _, rec := range answered {
		want429(t, "a second guess on the last attempt", rec)
	}
	finish()
	want429(t, "right password after the last attempt failed", request(h, attacker, "/", "admin", "s3cret"))
}

func TestHashSlotsFor(t *testing.T) {
	for _, tt := range []struct{ procs, want int }{{1, 1}, {2, 1}, {3, 2}, {4, 2}, {64, 2}} {
		if got := hashSlotsFor(tt.procs); got != tt.want {
			t.Errorf("hashSlotsFor(%d) = %d, want %d", tt.procs, got, tt.want)
		}
	}
	s := newServer(t, statsConfig(t), nil)
	if got, want := cap(s.login.slots), hashSlotsFor(runtime.GOMAXPROCS(0)); got != want {
		t.Errorf("New made %d hashing slots, want %d", got, want)
	}
}

// An authenticated dashboard or scraper paid a bcrypt comparison (~240 ms
// of CPU at cost 12) on every request.
func TestVerifiedLoginSkipsBcrypt(t *testing.T) {
	s := newServer(t, statsConfig(t), nil)
	clock := withStoppedClock(t, s, 2)
	hh := holdHashes(t, s.login)
	hh.release() // count only
	h := s.Handler()

	step := func(what, client, password string, code, calls int) {
		t.Helper()
		if rec := request(h, client, "/status.json", "admin", password); rec.Code != code {
			t.Errorf("%s: status %d, want %d", what, rec.Code, code)
		}
		if got := hh.count(); got != calls {
			t.Errorf("%s: %d bcrypt comparisons so far, want %d", what, got, calls)
		}
	}
	step("first login", "127.0.0.4:1", "s3cret", http.StatusOK, 1)
	step("second request", "127.0.0.4:1", "s3cret", http.StatusOK, 1)
	step("same login from a scraper elsewhere", "127.0.0.5:1", "s3cret", http.StatusOK, 1)
	step("another password for the same user", "127.0.0.4:1", "s3cret2", http.StatusUnauthorized, 2)
	clock.advance(verifiedFor - time.Second)
	step("shortly before expiry", "127.0.0.4:1", "s3cret", http.StatusOK, 2)
	clock.advance(time.Second)
	step("after expiry", "127.0.0.4:1", "s3cret", http.StatusOK, 3)
}

// A changed hash for a user (a new password, a new user file) must not
// match what was verified against the old one.
func TestVerifiedKeyedByUserTable(t *testing.T) {
	now := time.Now
	a := newVerified([]user{{name: []byte("admin"), hash: []byte(hashOf(t, "s3cret"))}}, now)
	b := newVerified([]user{{name: []byte("admin"), hash: []byte(hashOf(t, "s3cret"))}}, now)
	a.add(a.key("admin", "s3cret"))
	if b.has(b.key("admin", "s3cret")) || a.key("admin", "s3cret") == b.key("admin", "s3cret") {
		t.Fatal("a login verified against one hash matches another table")
	}
	if a.key("ad", "mins3cret") == a.key("admin", "s3cret") {
		t.Fatal("name and password run together in the key")
	}
	for i := range maxVerified + 10 {
		a.add(a.key("admin", fmt.Sprint(i)))
	}
	if n := len(a.until); n > maxVerified {
		t.Fatalf("%d verified logins remembered, want at most %d", n, maxVerified)
	}
}

func TestLimiterRefund(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newLimiter(clock.now)
	a := netip.MustParseAddr("10.0.0.1")
	for i := range 3 * failBurst {
		if ok, _, _ := l.reserve(a); !ok {
			t.Fatalf("attempt %d refused although every earlier one was refunded", i+1)
		}
		l.refund(a)
	}
	if l.size() != 0 {
		t.Errorf("a source with a full bucket is remembered")
	}
	l.refund(netip.MustParseAddr("10.0.0.2")) // never reserved: no effect
	for range failBurst {
		l.reserve(a)
	}
	if ok, wait, limited := l.reserve(a); ok || !limited || wait <= 0 {
		t.Errorf("after %d kept attempts: ok %v limited %v wait %v", failBurst, ok, limited, wait)
	}
}

// W11: refusals carried none of the dashboard's security headers.
func TestRefusalsCarryHeaders(t *testing.T) {
	cfg := statsConfig(t)
	cfg.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	s := newServer(t, cfg, nil)
	withStoppedClock(t, s, 2)
	h := s.Handler()
	const locked = "127.0.0.6:1"
	for range failBurst {
		request(h, locked, "/", "admin", "guess")
	}
	for _, tt := range []struct {
		what, client, user, password, path string
		code                               int
	}{
		{"outside allow", "10.0.0.1:1", "admin", "s3cret", "/", http.StatusForbidden},
		{"no credentials", "127.0.0.7:1", "", "", "/status.json", http.StatusUnauthorized},
		{"wrong password", "127.0.0.8:1", "admin", "guess", "/metrics", http.StatusUnauthorized},
		{"locked out", locked, "admin", "s3cret", "/", http.StatusTooManyRequests},
		{"no such page", "127.0.0.7:1", "admin", "s3cret", "/nope", http.StatusNotFound},
		{"status", "127.0.0.7:1", "admin", "s3cret", "/status.json", http.StatusOK},
	} {
		rec := request(h, tt.client, tt.path, tt.user, tt.password)
		if rec.Code != tt.code {
			t.Errorf("%s: status %d, want %d", tt.what, rec.Code, tt.code)
		}
		hdr := rec.Header()
		for name, want := range map[string]string{
			"X-Content-Type-Options": "nosniff",
			"X-Frame-Options":        "DENY",
			"Cache-Control":          "no-store",
			"Referrer-Policy":        "no-referrer",
		} {
			if got := hdr.Get(name); got != want {
				t.Errorf("%s: %s %q, want %q", tt.what, name, got, want)
			}
		}
		if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", tt.what, csp)
		}
	}
}

// readsEOF reports whether c is closed by the server without sending a
// byte. The deadline only bounds a failing test: a refused connection
// sees EOF at once, and the server's own header timeout is longer.
func readsEOF(t *testing.T, c net.Conn) bool {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(make([]byte, 1))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read %d bytes, err %v; want EOF", n, err)
	}
	return true
}

func dial(t *testing.T, ap netip.AddrPort) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ap.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// D3: a source outside stats.allow held its connection for the whole
// header timeout before being refused; 700 of them exhausted the
// process's descriptors.
func TestOutsiderClosedAtAccept(t *testing.T) {
	cfg := statsConfig(t)
	cfg.Bind = netip.MustParseAddrPort("127.0.0.26:0")
	cfg.Allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	s := newServer(t, cfg, nil)
	start(t, s)
	c := dial(t, s.Addr())
	if !readsEOF(t, c) {
		t.Fatal("a connection from outside stats.allow is held open, waiting for a request")
	}
}

// D3: the stats listener's connections were uncapped.
func TestConnectionCapAtAccept(t *testing.T) {
	cfg := statsConfig(t)
	cfg.Bind = netip.MustParseAddrPort("127.0.0.27:0")
	s := newServer(t, cfg, nil)
	s.maxConns = 2
	start(t, s)
	// Accepted in order, one at a time: the first two are held before
	// the third is looked at.
	held := []net.Conn{dial(t, s.Addr()), dial(t, s.Addr())}
	if !readsEOF(t, dial(t, s.Addr())) {
		t.Fatal("a connection beyond the cap is held open")
	}
	// The held ones are served.
	req := "GET /status.json HTTP/1.1\r\nHost: stats\r\nAuthorization: Basic YWRtaW46czNjcmV0\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(held[0], req); err != nil {
		t.Fatal(err)
	}
	if err := held[0].SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(held[0]), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a connection within the cap: status %d", resp.StatusCode)
	}
}

// A closed connection gives its slot back, once.
func TestGatedListenerReleasesSlot(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.28:0")
	if err != nil {
		t.Fatal(err)
	}
	gl := newGatedListener(ln, nil, 2, slog.New(slog.DiscardHandler))
	accepted := make(chan net.Conn, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := gl.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		_ = gl.Close()
		<-done
		close(accepted)
		for c := range accepted {
			_ = c.Close()
		}
	}()
	next := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("connection not accepted")
			return nil
		}
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	dial(t, addr)
	first := next()
	dial(t, addr)
	second := next()
	if !readsEOF(t, dial(t, addr)) {
		t.Fatal("a third connection was held with a cap of two")
	}
	_ = first.Close()
	_ = first.Close() // a second close must not free a second slot
	dial(t, addr)
	third := next()
	if !readsEOF(t, dial(t, addr)) {
		t.Fatal("closing one connection twice freed two slots")
	}
	_ = second.Close()
	_ = third.Close()
}
