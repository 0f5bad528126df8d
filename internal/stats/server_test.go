package stats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"

	"halb/internal/admin"
	"halb/internal/config"
	"halb/internal/freebind"
	"halb/internal/metrics"
	"halb/test/support"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// request sends one request to h as if from client (ip:port), with basic
// auth when user is not empty.
func request(h http.Handler, client, path, user, password string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = client
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func newServer(t *testing.T, cfg config.Stats, src admin.Source) *Server {
	t.Helper()
	if src == nil {
		src = &fakeSource{snap: healthyPair(time.Now())}
	}
	s, err := New(cfg, src, metrics.New(src).Handler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAllowList(t *testing.T) {
	cfg := statsConfig(t)
	cfg.Allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("fe80::/10")}
	h := newServer(t, cfg, nil).Handler()
	tests := []struct {
		client string
		want   int
	}{
		{"127.0.0.1:40000", http.StatusForbidden},
		{"192.168.66.1:40000", http.StatusForbidden},
		{"10.1.2.3:40000", http.StatusOK},
		{"[::ffff:10.1.2.3]:40000", http.StatusOK}, // IPv4 on a dual-stack socket
		{"[fd00::7]:40000", http.StatusOK},
		{"[2001:db8::7]:40000", http.StatusForbidden},
		{"[fe80::7%eth0]:40000", http.StatusOK}, // link-local, with its zone
	}
	for _, tt := range tests {
		// Right credentials do not get an outsider in: the allow-list comes first.
		rec := request(h, tt.client, "/", "admin", "s3cret")
		if rec.Code != tt.want {
			t.Errorf("%s: status %d, want %d", tt.client, rec.Code, tt.want)
		}
	}
	// The client address comes from the connection, never from headers.
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "127.0.0.1:40000"
	req.Header.Set("X-Forwarded-For", "10.1.2.3")
	req.Header.Set("X-Real-IP", "10.1.2.3")
	req.SetBasicAuth("admin", "s3cret")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("forwarded-for header let 127.0.0.1 in: status %d", rec.Code)
	}
}

// TestAllowListOverLoopback checks the rule on a real connection: an
// allow-list without loopback refuses a loopback client.
func TestAllowListOverLoopback(t *testing.T) {
	cfg := statsConfig(t)
	cfg.Allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	srv := httptest.NewServer(newServer(t, cfg, nil).Handler())
	defer srv.Close()
	code, _ := get(t, srv.URL+"/status.json", "admin", "s3cret")
	if code != http.StatusForbidden {
		t.Fatalf("status %d, want 403", code)
	}
}

func TestBasicAuth(t *testing.T) {
	h := newServer(t, statsConfig(t), nil).Handler()
	const client = "127.0.0.1:40000"
	for _, path := range []string{"/", "/panel", "/status.json", "/metrics"} {
		rec := request(h, client, path, "", "")
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("%s without credentials: status %d, want 401", path, rec.Code)
		}
		if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="halb"`) {
			t.Errorf("%s: WWW-Authenticate %q", path, got)
		}
		if rec := request(h, client, path, "admin", "s3cret"); rec.Code != http.StatusOK {
			t.Errorf("%s with credentials: status %d, want 200", path, rec.Code)
		}
	}
	for _, c := range []struct{ user, password string }{
		{"admin", "wrong"}, {"admin", ""}, {"nobody", "s3cret"}, {"Admin", "s3cret"}, {"admin ", "s3cret"},
	} {
		// A fresh source each time, so the failed-login limit stays out of it.
		rec := request(h, fmt.Sprintf("127.0.0.%d:1", 10+len(c.user)+len(c.password)), "/", c.user, c.password)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("user %q password %q: status %d, want 401", c.user, c.password, rec.Code)
		}
	}
}

func TestFailedLoginLimit(t *testing.T) {
	s := newServer(t, statsConfig(t), nil)
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	s.login = newLogins(s.login.users, s.login.decoy, clock.now, 2)
	h := s.Handler()
	const attacker, other = "127.0.0.2:1000", "127.0.0.3:1000"

	for i := range failBurst {
		if rec := request(h, attacker, "/", "admin", "guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d, want 401", i+1, rec.Code)
		}
	}
	// Out of attempts: refused before the password is even checked, so
	// the right one does not help.
	rec := request(h, attacker, "/", "admin", "s3cret")
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("after %d failures: status %d, want 429", failBurst, rec.Code)
	}
	if rec.Header().Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", rec.Header().Get("Retry-After"))
	}
	if rec := request(h, other, "/", "admin", "s3cret"); rec.Code != http.StatusOK {
		t.Fatalf("another source: status %d, want 200", rec.Code)
	}
	// One attempt per second after the burst.
	clock.advance(failEvery)
	if rec := request(h, attacker, "/", "admin", "guess"); rec.Code != http.StatusUnauthorized {
		t.Fatalf("a second later: status %d, want 401", rec.Code)
	}
	if rec := request(h, attacker, "/", "admin", "guess"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("second attempt within the second: status %d, want 429", rec.Code)
	}
	clock.advance(failEvery)
	if rec := request(h, attacker, "/", "admin", "s3cret"); rec.Code != http.StatusOK {
		t.Fatalf("right password a second later: status %d, want 200", rec.Code)
	}
	// Fully refilled after failBurst seconds.
	clock.advance(failBurst * failEvery)
	for i := range failBurst {
		if rec := request(h, attacker, "/", "admin", "guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("after refill, failure %d: status %d, want 401", i+1, rec.Code)
		}
	}
}

func TestLimiterIPv6SharesPrefix(t *testing.T) {
	l := newLimiter(time.Now)
	for i := range failBurst {
		l.reserve(netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+1)))
	}
	if ok, _ := l.allow(netip.MustParseAddr("2001:db8:1:2::ffff")); ok {
		t.Fatal("a new address in the same /64 is not limited")
	}
	if ok, _ := l.allow(netip.MustParseAddr("2001:db8:1:3::1")); !ok {
		t.Fatal("another /64 is limited")
	}
}

func TestLimiterMemoryBounded(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newLimiter(clock.now)
	first := netip.MustParseAddr("10.255.255.255")
	l.reserve(first)
	for i := range maxSources + 500 {
		clock.advance(time.Microsecond) // nobody refills meanwhile
		l.reserve(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if n := l.size(); n != maxSources {
		t.Fatalf("limiter remembers %d sources, want the cap %d", n, maxSources)
	}
	// The oldest failure is the one forgotten.
	if _, ok := l.buckets[sourceKey(first)]; ok {
		t.Fatal("the oldest source was kept while newer ones were added")
	}
	// Sources that refilled carry no state and go first when room is needed.
	clock.advance(failEvery + time.Millisecond)
	l.reserve(first)
	if n := l.size(); n != 1 {
		t.Fatalf("after every bucket refilled, %d sources remembered, want 1", n)
	}
}

func TestFailedLoginLogged(t *testing.T) {
	var logs bytes.Buffer
	src := &fakeSource{snap: healthyPair(time.Now())}
	s, err := New(statsConfig(t), src, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	const password = "hunter2-not-it"
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "127.0.0.9:555"
	req.SetBasicAuth("alice", password)
	auth := req.Header.Get("Authorization")
	s.Handler().ServeHTTP(httptest.NewRecorder(), req)
	out := logs.String()
	for _, want := range []string{"level=WARN", "user=alice", "client=127.0.0.9", "component=stats"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{password, auth, strings.TrimPrefix(auth, "Basic ")} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret %q:\n%s", secret, out)
		}
	}
}

// An unknown user must cost a bcrypt comparison like a known one, or the
// response time tells which user names exist.
func TestUnknownUserTakesAsLong(t *testing.T) {
	const cost = 5 // 2^5 rounds: milliseconds per comparison, well above a missing decoy's microseconds
	h, err := bcrypt.GenerateFromPassword([]byte("s3cret"), cost)
	if err != nil {
		t.Fatal(err)
	}
	users := []user{{name: []byte("admin"), hash: h}}
	decoy := decoyHash(users)
	timeIt := func(name string) time.Duration {
		start := time.Now()
		if authenticate(users, decoy, name, "wrong") {
			t.Fatal("wrong password accepted")
		}
		return time.Since(start)
	}
	// The machine's load changes while the test runs, so a known and an
	// unknown attempt are timed back to back, in alternating order, and
	// the median of the pairs' ratios is compared: a burst of load lands
	// in a few pairs, not in all of one side. Without the decoy an
	// unknown name costs microseconds, a ratio near zero.
	const pairs = 9
	ratios := make([]float64, 0, pairs)
	for i := range pairs {
		var known, unknown time.Duration
		if i%2 == 0 {
			known, unknown = timeIt("admin"), timeIt("mallory")
		} else {
			unknown, known = timeIt("mallory"), timeIt("admin")
		}
		ratios = append(ratios, float64(unknown)/float64(known))
	}
	slices.Sort(ratios)
	if median := ratios[pairs/2]; median < 0.5 {
		t.Fatalf("unknown user took %.2f× as long as a known one (median of %d pairs; all: %.2f)", median, pairs, ratios)
	}
	if !authenticate(users, decoy, "admin", "s3cret") || authenticate(users, decoy, "mallory", "s3cret") {
		t.Fatal("authenticate is wrong about who may log in")
	}
}

func TestDecoyIsCostliestHash(t *testing.T) {
	cheap, err := bcrypt.GenerateFromPassword([]byte("a"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dear, err := bcrypt.GenerateFromPassword([]byte("b"), bcrypt.MinCost+2)
	if err != nil {
		t.Fatal(err)
	}
	got := decoyHash([]user{{name: []byte("x"), hash: cheap}, {name: []byte("y"), hash: dear}})
	if !bytes.Equal(got, dear) {
		t.Fatal("decoy is not the costliest hash")
	}
}

func TestPasswordFile(t *testing.T) {
	good, other := hashOf(t, "one"), hashOf(t, "two")
	tests := []struct {
		name     string
		file     string
		users    []config.StatUser
		wantErr  []string // substrings of the error; nil: no error
		wantUser []string
	}{
		{name: "users, comments and blank lines",
			file:     "# stats users\n\nops:" + good + "\n  dev : " + other + "  \n",
			wantUser: []string{"ops", "dev"}},
		{name: "merged with config users",
			file:     "ops:" + good + "\n",
			users:    []config.StatUser{{Name: "admin", PasswordHash: other}},
			wantUser: []string{"admin", "ops"}},
		{name: "no colon",
			file:    "ops:" + good + "\n" + other + "\n",
			wantErr: []string{"line 2", "want name:bcrypt-hash"}},
		{name: "not a hash",
			file:    "# x\nops:plaintext-password\n",
			wantErr: []string{"line 2", `user "ops"`, "not a valid bcrypt hash"}},
		{name: "empty name",
			file:    ":" + good + "\n",
			wantErr: []string{"line 1", "empty user name"}},
		{name: "duplicate across config and file",
			file:    "admin:" + good + "\n",
			users:   []config.StatUser{{Name: "admin", PasswordHash: other}},
			wantErr: []string{"line 1", `user "admin" is already defined at stats.users[0]`}},
		{name: "every error at once",
			file:    "a:nope\nb:nope\n",
			wantErr: []string{"line 1", "line 2"}},
		{name: "empty file, no users",
			file:    "# nobody yet\n",
			wantErr: []string{"no users"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			users, err := loadUsers(config.Stats{Users: tt.users, PasswordFile: path})
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, u := range users {
					names = append(names, string(u.name))
				}
				if strings.Join(names, ",") != strings.Join(tt.wantUser, ",") {
					t.Fatalf("users %v, want %v", names, tt.wantUser)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, want := range tt.wantErr {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if tt.name != "empty file, no users" && !strings.Contains(msg, path) {
				t.Errorf("error %q does not name the file", msg)
			}
			// Never a hash or a would-be password in the message.
			for _, secret := range []string{good, other, "plaintext-password", "nope"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q reveals %q", msg, secret)
				}
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "absent")
		_, err := New(config.Stats{PasswordFile: path}, &fakeSource{}, nil, nil)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
			t.Fatalf("error %v, want a not-exist error naming %s", err, path)
		}
	})
	t.Run("bad config hash", func(t *testing.T) {
		_, err := New(config.Stats{Users: []config.StatUser{{Name: "admin", PasswordHash: "$2a$12$short"}}}, &fakeSource{}, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "stats.users[0]") || strings.Contains(err.Error(), "short") {
			t.Fatalf("error %v, want one naming stats.users[0] without the hash", err)
		}
	})
}

func TestDashboardSelfContained(t *testing.T) {
	h := newServer(t, statsConfig(t), nil).Handler()
	for _, path := range []string{"/", "/panel"} {
		rec := request(h, "127.0.0.1:1", path, "admin", "s3cret")
		body := rec.Body.String()
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: status %d", path, rec.Code)
		}
		if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]`).FindString(body); m != "" {
			t.Errorf("%s refers to %q", path, m)
		}
		if m := regexp.MustCompile(`(?i)<(link|img|iframe|object|embed)\b|\bsrc=|@import|url\(`).FindString(body); m != "" {
			t.Errorf("%s loads a resource: %q", path, m)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", path, ct)
		}
	}
	// The policy admits exactly the inline style and script by hash.
	rec := request(h, "127.0.0.1:1", "/", "admin", "s3cret")
	body := rec.Body.String()
	csp := rec.Header().Get("Content-Security-Policy")
	for _, tag := range []string{"style", "script"} {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no inline <%s>", tag)
		}
		if want := tag + "-src '" + cspHash([]byte(m[1])) + "'"; !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q: the browser would block the inline %s", csp, want, tag)
		}
	}
	if !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q does not default to none", csp)
	}
	if !strings.Contains(body, `http-equiv="refresh" content="5"`) {
		t.Error("no meta refresh for browsers without script")
	}
}

func TestDashboardShowsState(t *testing.T) {
	now := time.Now()
	src := &fakeSource{snap: healthyPair(now)}
	h := newServer(t, statsConfig(t), src).Handler()
	body := request(h, "127.0.0.1:1", "/", "admin", "s3cret").Body.String()
	for _, want := range []string{
		`<title>halb · lb1</title>`, "version 0.9.0",
		// cp03 down and cp02 draining is not "all good": redundancy is lost.
		`<section class="verdict warn" id="verdict" data-verdict="degraded">`,
		"<strong>DEGRADED:</strong> clients are served, but redundancy is lost",
		"<li>backend k8s-api: server talos-lon-cp03 (192.168.66.163:6443) is down: connect: connection refused</li>",
		"<li>backend talos-api: server talos-lon-cp02 (192.168.66.162:50000) is drained by an operator</li>",
		`<div class="vip agreed" data-vip="192.168.66.160">`,
		`data-holder="lb1">lb1</span> <span class="pill ok">here</span>`,
		"✔ all members agree",
		`<tr data-server="talos-lon-cp03" data-state="down">`,
		`<span class="state bad">down</span>`,
		`<span class="state ok">up</span>`,
		`<span class="state warn">drain</span>`,
		`<td class="wrap bad">connect: connection refused</td>`,
		"1.8 ms", "14 / 2000", "96.3 MiB", "3.2/s",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}

	src.set(allUp(now))
	body = request(h, "127.0.0.1:1", "/panel", "admin", "s3cret").Body.String()
	if !strings.Contains(body, `<section class="verdict ok" id="verdict" data-verdict="ok">`) {
		t.Errorf("every server up, both members agree, yet the verdict is not OK:\n%s", body)
	}

	// lb2 elects itself: the VIP turns red and says why, lb2's row is flagged.
	bad := allUp(now)
	bad.Members[1].HolderView = map[string]string{"192.168.66.160": "lb2"}
	bad.Members[1].Holds = []string{"192.168.66.160"}
	src.set(bad)
	body = request(h, "127.0.0.1:1", "/panel", "admin", "s3cret").Body.String()
	for _, want := range []string{
		`<section class="verdict bad" id="verdict" data-verdict="fail">`,
		`<li class="fail"><strong>FAIL</strong> VIP 192.168.66.160: held by 2 members at once: lb1, lb2</li>`,
		`<li>VIP 192.168.66.160: members disagree on the holder: lb1 says lb1, lb2 says lb2</li>`,
		`<div class="vip disagreed" data-vip="192.168.66.160">`,
		"✘ held by 2 members at once: lb1, lb2; members disagree on the holder: lb1 says lb1, lb2 says lb2",
		`<tr data-member="lb2" class="flag">`,
		`<span class="pill bad">disagrees</span>`,
		"held by 2 members at once: lb1, lb2",
		`<td class="mono bad">192.168.66.160</td>`, // both holders' rows
	} {
		if !strings.Contains(body, want) {
			t.Errorf("disagreeing dashboard lacks %q", want)
		}
	}
	if strings.Contains(body, "<html") {
		t.Error("/panel is a whole page, not the part the script swaps in")
	}
}

func TestDashboardEscapes(t *testing.T) {
	snap := healthyPair(time.Now())
	snap.Backends[0].Servers[2].LastCheck = `<script>alert(1)</script>`
	h := newServer(t, statsConfig(t), &fakeSource{snap: snap}).Handler()
	body := request(h, "127.0.0.1:1", "/", "admin", "s3cret").Body.String()
	if strings.Contains(body, "<script>alert") {
		t.Fatal("server text reaches the page unescaped")
	}
}

func TestStatusJSON(t *testing.T) {
	now := time.Now()
	src := &fakeSource{snap: healthyPair(now)}
	h := newServer(t, statsConfig(t), src).Handler()
	decode := func() map[string]json.RawMessage {
		t.Helper()
		rec := request(h, "127.0.0.1:1", "/status.json", "admin", "s3cret")
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, Content-Type %q", rec.Code, rec.Header().Get("Content-Type"))
		}
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		return doc
	}
	src.set(allUp(now))
	doc := decode()
	for _, key := range []string{"node", "members", "vips", "frontends", "backends", "time", "verdict", "exit_code", "problems"} {
		if _, ok := doc[key]; !ok {
			t.Errorf("status.json lacks %q", key)
		}
	}
	if string(doc["verdict"]) != `"ok"` || string(doc["exit_code"]) != "0" || string(doc["problems"]) != "[]" {
		t.Errorf("all up: verdict %s exit_code %s problems %s, want ok 0 []", doc["verdict"], doc["exit_code"], doc["problems"])
	}
	var snap admin.Snapshot
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &snap); err != nil {
		t.Fatal(err)
	}
	if snap.VIPs[0].Holder != "lb1" || snap.Backends[0].Servers[2].State != admin.StateUp {
		t.Errorf("snapshot did not round-trip: %+v", snap.VIPs)
	}

	down := healthyPair(now)
	for i := range down.Backends[0].Servers {
		down.Backends[0].Servers[i].State = admin.StateDown
	}
	down.Backends[0].Healthy = false
	src.set(down)
	doc = decode()
	var problems []admin.Problem
	if err := json.Unmarshal(doc["problems"], &problems); err != nil {
		t.Fatal(err)
	}
	if string(doc["verdict"]) != `"fail"` || string(doc["exit_code"]) != "2" || len(problems) < 1 ||
		problems[0].Level != admin.LevelFail || !strings.Contains(problems[0].Text, "backend k8s-api has no healthy server") {
		t.Errorf("dead backend: verdict %s exit_code %s problems %+v", doc["verdict"], doc["exit_code"], problems)
	}

	// A source that knows nothing yet still gives arrays, not nulls.
	src.set(admin.Snapshot{})
	doc = decode()
	for _, key := range []string{"members", "vips", "frontends", "backends", "problems"} {
		if string(doc[key]) != "[]" {
			t.Errorf("empty snapshot: %s is %s, want []", key, doc[key])
		}
	}
}

func TestMetricsBehindAuth(t *testing.T) {
	h := newServer(t, statsConfig(t), nil).Handler()
	if rec := request(h, "127.0.0.1:1", "/metrics", "", ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("/metrics without credentials: status %d, want 401", rec.Code)
	}
	rec := request(h, "127.0.0.1:1", "/metrics", "admin", "s3cret")
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: status %d", rec.Code)
	}
	body := rec.Body.String()
	for _, want := range []string{`halb_server_up{backend="k8s-api",server="talos-lon-cp03"} 0`, `halb_vip_held{vip="192.168.66.160"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

func get(t *testing.T, url, user, password string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	c.CloseIdleConnections()
	return resp.StatusCode, string(body)
}

// start runs s until the test ends and returns once it listens.
func start(t *testing.T, s *Server) {
	t.Helper()
	support.Go(t, s.Run).AwaitReady(t, s.Ready(), 5*time.Second)
}

func TestRunSeparateMetricsListener(t *testing.T) {
	cfg := statsConfig(t)
	cfg.Bind = netip.MustParseAddrPort("127.0.0.21:0")
	cfg.MetricsBind = netip.MustParseAddrPort("127.0.0.22:0")
	s := newServer(t, cfg, nil)
	start(t, s)
	main, met := "http://"+s.Addr().String(), "http://"+s.MetricsAddr().String()
	if s.Addr().Addr() != cfg.Bind.Addr() || s.MetricsAddr().Addr() != cfg.MetricsBind.Addr() {
		t.Fatalf("listening on %s and %s", s.Addr(), s.MetricsAddr())
	}

	// The metrics listener: /metrics without auth, nothing else.
	if code, body := get(t, met+"/metrics", "", ""); code != http.StatusOK || !strings.Contains(body, "halb_build_info") {
		t.Fatalf("separate /metrics: status %d", code)
	}
	for _, path := range []string{"/", "/status.json", "/panel"} {
		if code, _ := get(t, met+path, "admin", "s3cret"); code != http.StatusNotFound {
			t.Errorf("metrics listener serves %s: status %d, want 404", path, code)
		}
	}
	// The main listener: auth as ever, and no /metrics of its own.
	if code, _ := get(t, main+"/", "", ""); code != http.StatusUnauthorized {
		t.Errorf("dashboard without credentials: status %d, want 401", code)
	}
	if code, body := get(t, main+"/", "admin", "s3cret"); code != http.StatusOK || strings.Contains(body, `href="metrics"`) {
		t.Errorf("dashboard: status %d, links to /metrics it does not serve: %v", code, strings.Contains(body, `href="metrics"`))
	}
	if code, _ := get(t, main+"/metrics", "admin", "s3cret"); code != http.StatusNotFound {
		t.Errorf("main listener /metrics with a separate metrics bind: status %d, want 404", code)
	}
}

func TestRunBindBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.23:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	cfg := statsConfig(t)
	cfg.Bind = netip.MustParseAddrPort(ln.Addr().String())
	s := newServer(t, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = s.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "listen for stats on "+cfg.Bind.String()) {
		t.Fatalf("Run on a busy port: %v", err)
	}
}

func TestFreebind(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.24:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		lc := net.ListenConfig{Control: freebind.Control}
		ln, err := lc.Listen(context.Background(), network, addr)
		if err != nil {
			if network == "tcp6" {
				t.Logf("no IPv6 loopback: %v", err)
				continue
			}
			t.Fatal(err)
		}
		rc, err := ln.(*net.TCPListener).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var gerr error
		err = rc.Control(func(fd uintptr) {
			if network == "tcp6" {
				v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND)
				if gerr == nil && v == 1 {
					return
				}
			}
			v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND)
		})
		_ = ln.Close()
		if err != nil || gerr != nil {
			t.Fatal(err, gerr)
		}
		if v != 1 {
			t.Errorf("%s: freebind not set", network)
		}
	}
}

func TestRunCancelledBeforeStart(t *testing.T) {
	cfg := statsConfig(t)
	cfg.Bind = netip.MustParseAddrPort("127.0.0.25:0")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := newServer(t, cfg, nil).Run(ctx); err != nil {
		t.Fatalf("Run with an ended context: %v, want nil", err)
	}
}
