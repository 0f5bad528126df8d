package proxy

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// The raw calls keep the errno contract the copy loops rely on: EAGAIN
// when a non-blocking socket has nothing, 0 at EOF, the count otherwise.
func TestRawCallsKeepTheErrnoContract(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := fds[0], fds[1]
	defer func() { _ = unix.Close(a) }()
	buf := make([]byte, 16)
	if _, err := rawRead(a, buf); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("read of an empty socket: %v, want EAGAIN", err)
	}
	if n, err := rawWrite(b, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("write = %d, %v; want 5, nil", n, err)
	}
	p, err := newPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	if n, err := rawSplice(a, p.w, 16, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK); n != 5 || err != nil {
		t.Fatalf("splice socket to pipe = %d, %v; want 5, nil", n, err)
	}
	if n, err := rawSplice(p.r, b, 5, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK); n != 5 || err != nil {
		t.Fatalf("splice pipe to socket = %d, %v; want 5, nil", n, err)
	}
	_ = unix.Close(b)
	if n, err := rawRead(a, buf); n != 5 || err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read = %d %q, %v; want the 5 bytes back", n, buf[:n], err)
	}
	if n, err := rawRead(a, buf); n != 0 || err != nil {
		t.Fatalf("read at EOF = %d, %v; want 0, nil", n, err)
	}
	if _, err := rawWrite(a, []byte("x")); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("write to a closed peer: %v, want EPIPE", err)
	}
}
