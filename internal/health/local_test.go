package health

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"halb/internal/config"
)

func TestLocalExhaustionMakesProbeInconclusive(t *testing.T) {
	tests := []struct {
		err          error
		inconclusive bool
	}{
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}, true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.ENFILE)}, true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}, true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, false},
		{context.DeadlineExceeded, false},
		{errors.New("tls: bad certificate"), false},
	}
	for _, tt := range tests {
		res := begin(context.Background()).fail(tt.err, nil)
		if res.OK || res.Inconclusive != tt.inconclusive || res.Reason == "" {
			t.Errorf("%v: %+v, want a failure with inconclusive %v and a reason", tt.err, res, tt.inconclusive)
		}
	}
}

// A probe that could not run for lack of descriptors is not reported: the
// server keeps the state it had, and the next conclusive probe counts.
func TestRunnerDropsInconclusiveResults(t *testing.T) {
	clock := NewFakeClock(time.Unix(0, 0))
	got := make(results, 4)
	hc := config.HealthCheck{Interval: time.Second, Timeout: 100 * time.Millisecond}
	calls := 0
	chk := CheckerFunc(func(context.Context, netip.AddrPort) Result {
		calls++
		if calls == 1 {
			return Result{Reason: "socket: too many open files", Inconclusive: true}
		}
		return Result{OK: true, Reason: "fake ok"}
	})
	startRunner(t, NewRunner(chk, netip.MustParseAddrPort(testAddrText), hc, got, clock, nil))
	blockUntil(t, clock, 1)
	got.none(t)
	clock.Advance(hc.Interval)
	if res := got.next(t); !res.OK {
		t.Fatalf("second probe reported %+v, want the successful one", res)
	}
}
