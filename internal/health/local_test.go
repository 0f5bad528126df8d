package health

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
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
