package support

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recTB is a testing.TB that records failures and cleanups instead of
// acting on them, so the helpers' failure paths can be tested. Fatal
// ends the calling goroutine like the real one; call helpers through run.
type recTB struct {
	testing.TB
	mu       sync.Mutex
	failures []string
	skipped  string
	cleanups []func()
}

func (r *recTB) Helper() {}
func (r *recTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}
func (r *recTB) Fatalf(format string, args ...any) { r.Errorf(format, args...); runtime.Goexit() }
func (r *recTB) Skipf(format string, args ...any) {
	r.mu.Lock()
	r.skipped = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}
func (r *recTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

// run calls fn on its own goroutine, as a test body, then the cleanups.
func (r *recTB) run(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func (r *recTB) failed() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.failures, "\n")
}

func TestWaitUntil(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		WaitUntil(t, time.Second, func() bool { return time.Since(start) >= 300*time.Millisecond }, "300 ms passed")
		if took := time.Since(start); took > 320*time.Millisecond {
			t.Errorf("saw the condition after %s, want within 20 ms of it holding", took)
		}
	})
}

func TestWaitUntilFailsNamingWhat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recTB{TB: t}
		start := time.Now()
		r.run(func() { WaitUntil(r, 2*time.Second, func() bool { return false }, "the moon is blue") })
		if got := r.failed(); !strings.Contains(got, "the moon is blue: not within 2s") {
			t.Errorf("failure %q, want it to name what and the deadline", got)
		}
		if took := time.Since(start); took != 2*time.Second {
			t.Errorf("gave up after %s, want 2s", took)
		}
	})
}

func TestReceive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ch := make(chan int, 1)
		ch <- 7
		if got := Receive(t, ch, time.Second, "seven"); got != 7 {
			t.Errorf("got %d, want 7", got)
		}
		r := &recTB{TB: t}
		r.run(func() { Receive(r, ch, time.Second, "an eight") })
		if got := r.failed(); !strings.Contains(got, "an eight: nothing within 1s") {
			t.Errorf("failure %q", got)
		}
	})
}

func TestGoCancelsAndWaitsAtCleanup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var stopped bool
		r := &recTB{TB: t}
		r.run(func() {
			Go(r, func(ctx context.Context) error {
				<-ctx.Done()
				time.Sleep(time.Second) // a slow shutdown must still be waited for
				stopped = true
				return nil
			})
		})
		if !stopped {
			t.Error("cleanup returned before the background function did")
		}
		if got := r.failed(); got != "" {
			t.Errorf("unexpected failure %q", got)
		}
	})
}

func TestGoReportsAnUnobservedError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recTB{TB: t}
		r.run(func() {
			Go(r, func(context.Context) error { return errors.New("bind failed") })
		})
		if got := r.failed(); !strings.Contains(got, "bind failed") {
			t.Errorf("failure %q, want the function's error", got)
		}
	})
}

func TestGoStopReturnsTheError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recTB{TB: t}
		var err error
		r.run(func() {
			k := Go(r, func(ctx context.Context) error { <-ctx.Done(); return errors.New("dirty stop") })
			err = k.Stop(r)
		})
		if err == nil || err.Error() != "dirty stop" {
			t.Errorf("Stop returned %v, want the function's error", err)
		}
		if got := r.failed(); got != "" {
			t.Errorf("an error the test saw was reported again: %q", got)
		}
	})
}

func TestGoFailsWhenTheFunctionIgnoresCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		r := &recTB{TB: t}
		r.run(func() {
			Go(r, func(context.Context) error { <-release; return nil })
		})
		close(release)
		if got := r.failed(); !strings.Contains(got, "did not return within") {
			t.Errorf("failure %q, want a stuck function reported", got)
		}
	})
}

func TestRequireRoot(t *testing.T) {
	t.Setenv(RequireNetnsEnv, "1")
	r := &recTB{TB: t}
	r.run(func() { RequireRoot(r, "create network namespaces") })
	got := r.failed()
	if os.Geteuid() == 0 {
		if got != "" || r.skipped != "" {
			t.Errorf("as root: failure %q, skip %q; want neither", got, r.skipped)
		}
		return
	}
	if !strings.Contains(got, "create network namespaces") {
		t.Errorf("with %s=1 and not root: failure %q, want one naming why", RequireNetnsEnv, got)
	}
	t.Setenv(RequireNetnsEnv, "")
	r = &recTB{TB: t}
	r.run(func() { RequireRoot(r, "create network namespaces") })
	if r.skipped == "" || r.failed() != "" {
		t.Errorf("not root: skip %q, failure %q; want a skip", r.skipped, r.failed())
	}
}

func TestListen(t *testing.T) {
	ln := Listen(t, "127.0.0.1:0")
	ap := AddrPort(t, ln.Addr())
	if ap.Port() == 0 || ap.Addr().String() != "127.0.0.1" {
		t.Fatalf("bound %s, want 127.0.0.1 and a port", ap)
	}
	refused := RefusedAddr(t, "127.0.0.1")
	if _, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", refused.String()); err == nil {
		t.Errorf("dial %s succeeded, want refused", refused)
	}
}

func TestLogWaitFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLog()
		log := l.Logger().With("component", "test")
		go func() {
			time.Sleep(time.Second)
			log.Warn("peer refused", "peer", "lb2")
		}()
		log.Debug("starting")
		line := l.WaitFor(t, 2*time.Second, `msg="peer refused".*peer=lb2`)
		if !strings.Contains(line, "level=WARN") || strings.Contains(line, "time=") {
			t.Errorf("line %q: want the level and no time", line)
		}
		if n := l.Count(slog.LevelWarn, "peer=lb2"); n != 1 {
			t.Errorf("%d warnings for lb2, want 1", n)
		}
		if rs := l.Records(); len(rs) != 2 || rs[1].Level != slog.LevelWarn {
			t.Errorf("records %v, want the debug and the warning", rs)
		}
		if n := l.Count(slog.LevelDebug); n != 2 {
			t.Errorf("%d lines at debug and up, want 2", n)
		}
		r := &recTB{TB: t}
		r.run(func() { l.WaitFor(r, time.Second, "never logged") })
		if got := r.failed(); !strings.Contains(got, "peer refused") {
			t.Errorf("failure %q, want it to show what was logged", got)
		}
	})
}

func TestLogWriterKeepsPartialLines(t *testing.T) {
	var l Log
	_, _ = l.Write([]byte("one\ntw"))
	_, _ = l.Write([]byte("o\n"))
	if got := l.Lines(); len(got) != 2 || got[1] != "two" {
		t.Errorf("lines %q, want [one two]", got)
	}
}

func TestCAIssuesVerifiableCertificates(t *testing.T) {
	ca := NewCA(t, "test CA")
	server := ca.Server(t, "api.test")
	client := ca.Issue(t, Leaf{CommonName: "admin", Orgs: []string{"os:admin"}, Usage: x509.ExtKeyUsageClientAuth})
	ln := Listen(t, "127.0.0.1:0")
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer func() { _ = c.Close() }()
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{server}, ClientCAs: ca.Pool(),
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
		err = tc.HandshakeContext(t.Context())
		if err == nil && tc.ConnectionState().PeerCertificates[0].Subject.Organization[0] != "os:admin" {
			err = errors.New("client organization lost")
		}
		srvErr <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{client.TLS}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("handshake as client: %v", err)
	}
	if err := c.VerifyHostname("api.test"); err != nil {
		t.Errorf("DNS name: %v", err)
	}
	_ = c.Close()
	if err := Receive(t, srvErr, 5*time.Second, "server handshake"); err != nil {
		t.Fatalf("handshake as server: %v", err)
	}
	if _, err := tls.X509KeyPair(client.CertPEM, client.KeyPEM); err != nil {
		t.Errorf("PEM pair: %v", err)
	}
}

func TestConsistently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		Consistently(t, time.Second, func() bool { return true }, "always")
		if took := time.Since(start); took != time.Second {
			t.Errorf("watched for %s, want 1s", took)
		}
		r := &recTB{TB: t}
		start = time.Now()
		r.run(func() {
			Consistently(r, time.Second, func() bool { return time.Since(start) < 300*time.Millisecond }, "the calm")
		})
		if got := r.failed(); !strings.Contains(got, "the calm: stopped holding after 300ms") {
			t.Errorf("failure %q, want it to name what and when", got)
		}
	})
}

func TestAwaitReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ready := make(chan struct{})
		k := Go(t, func(ctx context.Context) error {
			time.Sleep(time.Second)
			close(ready)
			<-ctx.Done()
			return nil
		})
		k.AwaitReady(t, ready, 2*time.Second)

		r := &recTB{TB: t}
		r.run(func() {
			k := Go(r, func(context.Context) error { return errors.New("address in use") })
			k.AwaitReady(r, make(chan struct{}), time.Second)
		})
		if got := r.failed(); !strings.Contains(got, "address in use") || strings.Count(got, "address in use") != 1 {
			t.Errorf("failure %q, want the function's error once", got)
		}
	})
}
