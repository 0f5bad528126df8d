package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeSystemd is the receiving end of NOTIFY_SOCKET.
type fakeSystemd struct {
	t    *testing.T
	conn *net.UnixConn
	addr string
}

func listen(t *testing.T, addr string) *fakeSystemd {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &fakeSystemd{t: t, conn: c, addr: addr}
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	return listen(t, filepath.Join(t.TempDir(), "notify"))
}

// recv returns the next datagram, failing the test if none comes within d.
func (f *fakeSystemd) recv(d time.Duration) string {
	f.t.Helper()
	msg, err := f.tryRecv(d)
	if err != nil {
		f.t.Fatalf("fake systemd: no message within %v: %v", d, err)
	}
	return msg
}

func (f *fakeSystemd) tryRecv(d time.Duration) (string, error) {
	if err := f.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	n, err := f.conn.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// expectNothingQueued fails if a datagram is waiting. A datagram already
// written sits in the socket's queue, so the short wait only bounds the read.
func (f *fakeSystemd) expectNothingQueued() {
	f.t.Helper()
	if msg, err := f.tryRecv(50 * time.Millisecond); err == nil {
		f.t.Fatalf("fake systemd got %q, want nothing", msg)
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestMessages(t *testing.T) {
	sd := newFakeSystemd(t)
	n := fromEnv(env(map[string]string{"NOTIFY_SOCKET": sd.addr}), 1)
	tests := []struct {
		name string
		send func() error
		want string
	}{
		{"ready", n.Ready, "READY=1"},
		{"stopping", n.Stopping, "STOPPING=1"},
		{"watchdog", n.Watchdog, "WATCHDOG=1"},
		{"status", func() error { return n.Status("serving 2 frontends, holding 192.0.2.1") }, "STATUS=serving 2 frontends, holding 192.0.2.1"},
		{"status one line", func() error { return n.Status("a\nb\r\nc") }, "STATUS=a b c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.send(); err != nil {
				t.Fatalf("send: %v", err)
			}
			if got := sd.recv(5 * time.Second); got != tt.want {
				t.Fatalf("systemd got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReloadingThenReady(t *testing.T) {
	sd := newFakeSystemd(t)
	n := fromEnv(env(map[string]string{"NOTIFY_SOCKET": sd.addr}), 1)
	var before, after unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &before)
	if err := n.Reloading(); err != nil {
		t.Fatalf("Reloading: %v", err)
	}
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &after)
	msg := sd.recv(5 * time.Second)
	first, rest, _ := strings.Cut(msg, "\n")
	usecText, ok := strings.CutPrefix(rest, "MONOTONIC_USEC=")
	if first != "RELOADING=1" || !ok {
		t.Fatalf("systemd got %q, want RELOADING=1 and MONOTONIC_USEC= on two lines", msg)
	}
	usec, err := strconv.ParseUint(usecText, 10, 64)
	if err != nil {
		t.Fatalf("MONOTONIC_USEC %q: %v", usecText, err)
	}
	lo, hi := uint64(before.Nano()/1e3), uint64(after.Nano()/1e3)
	if usec < lo || usec > hi {
		t.Fatalf("MONOTONIC_USEC=%d, want the monotonic clock at the call, within [%d, %d]", usec, lo, hi)
	}
	// systemd leaves the reloading state on the next READY=1.
	if err := n.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if got := sd.recv(5 * time.Second); got != "READY=1" {
		t.Fatalf("after the reload systemd got %q, want READY=1", got)
	}
}

func TestReloadingMessage(t *testing.T) {
	got := reloadingMessage(unix.Timespec{Sec: 12, Nsec: 345678999})
	if want := "RELOADING=1\nMONOTONIC_USEC=12345678"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestNewReadsEnvironment(t *testing.T) {
	sd := newFakeSystemd(t)
	t.Setenv("NOTIFY_SOCKET", sd.addr)
	t.Setenv("WATCHDOG_USEC", "10000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := New()
	if got := n.WatchdogInterval(); got != 10*time.Second {
		t.Fatalf("WatchdogInterval = %v, want 10s", got)
	}
	if err := n.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if got := sd.recv(5 * time.Second); got != "READY=1" {
		t.Fatalf("systemd got %q, want READY=1", got)
	}
}

func TestAbstractSocket(t *testing.T) {
	// Abstract names live in the test's network namespace and vanish with
	// the socket; the pid and clock keep concurrent runs apart.
	addr := fmt.Sprintf("@halb-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	sd := listen(t, addr)
	n := fromEnv(env(map[string]string{"NOTIFY_SOCKET": addr}), 1)
	if err := n.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if got := sd.recv(5 * time.Second); got != "READY=1" {
		t.Fatalf("systemd got %q, want READY=1", got)
	}
}

func TestWithoutSystemdEverythingIsANoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000")
	for _, n := range []*Notifier{New(), {}, nil} {
		for name, send := range map[string]func() error{
			"Ready": n.Ready, "Stopping": n.Stopping, "Watchdog": n.Watchdog, "Reloading": n.Reloading,
			"Status": func() error { return n.Status("x") },
		} {
			if err := send(); err != nil {
				t.Errorf("%s: %v, want nil", name, err)
			}
		}
		if got := n.WatchdogInterval(); got != 0 {
			t.Errorf("WatchdogInterval = %v, want 0", got)
		}
		// Returns at once: the test would hang (and time out) otherwise.
		if err := n.RunWatchdog(context.Background(), func() bool { return true }); err != nil {
			t.Errorf("RunWatchdog: %v, want nil", err)
		}
	}
}

func TestSendErrors(t *testing.T) {
	t.Run("no listener", func(t *testing.T) {
		n := fromEnv(env(map[string]string{"NOTIFY_SOCKET": filepath.Join(t.TempDir(), "gone")}), 1)
		if err := n.Ready(); err == nil {
			t.Fatal("Ready to a missing socket: nil error")
		}
	})
	t.Run("unsupported address", func(t *testing.T) {
		n := fromEnv(env(map[string]string{"NOTIFY_SOCKET": "vsock:2:1234"}), 1)
		if err := n.Ready(); err == nil {
			t.Fatal("Ready to a vsock address: nil error")
		}
	})
}

func TestWatchdogInterval(t *testing.T) {
	const pid = 4242
	tests := []struct {
		name string
		env  map[string]string
		want time.Duration
	}{
		{"enabled", map[string]string{"WATCHDOG_USEC": "10000000"}, 10 * time.Second},
		{"for this pid", map[string]string{"WATCHDOG_USEC": "2500", "WATCHDOG_PID": "4242"}, 2500 * time.Microsecond},
		{"for another pid", map[string]string{"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, 0},
		{"bad pid", map[string]string{"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "self"}, 0},
		{"unset", map[string]string{}, 0},
		{"zero", map[string]string{"WATCHDOG_USEC": "0"}, 0},
		{"negative", map[string]string{"WATCHDOG_USEC": "-5"}, 0},
		{"not a number", map[string]string{"WATCHDOG_USEC": "10s"}, 0},
		{"overflows a duration", map[string]string{"WATCHDOG_USEC": "9223372036854776"}, 0},
		{"no notify socket", map[string]string{"NOTIFY_SOCKET": "", "WATCHDOG_USEC": "10000000"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify"}
			for k, v := range tt.env {
				e[k] = v
			}
			if got := fromEnv(env(e), pid).WatchdogInterval(); got != tt.want {
				t.Fatalf("WatchdogInterval = %v, want %v", got, tt.want)
			}
		})
	}
}

// runWatchdog starts RunWatchdog and returns a channel with its result.
func runWatchdog(ctx context.Context, n *Notifier, healthy func() bool) <-chan error {
	done := make(chan error, 1)
	go func() { done <- n.RunWatchdog(ctx, healthy) }()
	return done
}

func waitDone(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunWatchdog after cancel: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
}

func TestRunWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	sd := newFakeSystemd(t)
	n := fromEnv(env(map[string]string{"NOTIFY_SOCKET": sd.addr, "WATCHDOG_USEC": "2000"}), 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Each answer is handed over only when RunWatchdog asks, so the test
	// knows exactly which check a datagram belongs to.
	answers := make(chan bool)
	healthy := func() bool {
		select {
		case a := <-answers:
			return a
		case <-ctx.Done():
			return false
		}
	}
	done := runWatchdog(ctx, n, healthy)
	answer := func(a bool) {
		t.Helper()
		select {
		case answers <- a:
		case <-time.After(5 * time.Second):
			t.Fatal("RunWatchdog stopped asking whether halb is healthy")
		}
	}

	answer(true)
	if got := sd.recv(5 * time.Second); got != "WATCHDOG=1" {
		t.Fatalf("systemd got %q, want WATCHDOG=1", got)
	}
	answer(false)
	// The second answer is taken only after the first unhealthy round is
	// over, so any ping it sent would already be queued.
	answer(false)
	sd.expectNothingQueued()
	answer(true)
	if got := sd.recv(5 * time.Second); got != "WATCHDOG=1" {
		t.Fatalf("after recovery systemd got %q, want WATCHDOG=1", got)
	}
	waitDone(t, cancel, done)
}

func TestRunWatchdogPingsAtHalfTheInterval(t *testing.T) {
	sd := newFakeSystemd(t)
	const interval = 400 * time.Millisecond
	n := fromEnv(env(map[string]string{
		"NOTIFY_SOCKET": sd.addr,
		"WATCHDOG_USEC": strconv.FormatInt(interval.Microseconds(), 10),
	}), 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runWatchdog(ctx, n, func() bool { return true })

	sd.recv(5 * time.Second) // the first ping goes out at once
	start := time.Now()
	for range 4 {
		if got := sd.recv(5 * time.Second); got != "WATCHDOG=1" {
			t.Fatalf("systemd got %q, want WATCHDOG=1", got)
		}
	}
	// Four periods of interval/2 take 2×interval; pinging once per interval
	// would take 4×interval and let systemd kill halb on one late ping.
	elapsed := time.Since(start)
	if elapsed < 2*interval-50*time.Millisecond || elapsed > 3*interval+interval/2 {
		t.Fatalf("4 pings took %v, want about %v", elapsed, 2*interval)
	}
	waitDone(t, cancel, done)
}

func TestRunWatchdogReportsSendFailure(t *testing.T) {
	n := fromEnv(env(map[string]string{
		"NOTIFY_SOCKET": filepath.Join(t.TempDir(), "gone"),
		"WATCHDOG_USEC": "2000",
	}), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := n.RunWatchdog(ctx, func() bool { return true })
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RunWatchdog with no systemd listening: %v, want a send error", err)
	}
}
