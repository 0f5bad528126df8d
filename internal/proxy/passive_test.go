package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"halb/internal/pool"
)

func TestConnectFailureKinds(t *testing.T) {
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	tests := []struct {
		name string
		err  error
		want pool.ConnectFailure
	}{
		{"refused", op(os.NewSyscallError("connect", syscall.ECONNREFUSED)), pool.ConnectRefused},
		{"dial deadline", op(context.DeadlineExceeded), pool.ConnectTimeout},
		{"kernel gave up on SYNs", op(os.NewSyscallError("connect", syscall.ETIMEDOUT)), pool.ConnectTimeout},
		{"no route", op(os.NewSyscallError("connect", syscall.EHOSTUNREACH)), pool.ConnectError},
		{"out of files", op(os.NewSyscallError("socket", syscall.EMFILE)), pool.ConnectLocal},
		{"out of ports", op(os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)), pool.ConnectLocal},
		{"other", errors.New("something else"), pool.ConnectError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := connectFailure(tt.err); got != tt.want {
				t.Fatalf("connectFailure(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
