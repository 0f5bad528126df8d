package proxy

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// inqReader reads a socket with recvmsg and TCP_INQ, which makes the
// kernel say, with the bytes, whether anything is left behind them —
// more bytes, or a FIN (it reports 1 then, so that the reader goes on).
// A read that leaves nothing lets the copy loop wait right away instead
// of reading once more to find the socket empty.
type inqReader struct {
	msg unix.Msghdr
	iov unix.Iovec
	oob [32]byte // one cmsg with an int: 24 bytes on 64-bit Linux
}

// enableINQ asks the kernel for the hint on fd; false if it cannot give
// it (kernels before 4.18).
func enableINQ(fd int) bool {
	return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_INQ, 1) == nil
}

// read reads into b from fd and reports whether the socket holds more
// (bytes or a FIN) behind what was read. Without the hint it says more.
func (r *inqReader) read(fd int, b []byte) (n int, more bool, err error) {
	r.iov.Base = &b[0]
	r.iov.SetLen(len(b))
	r.msg.Iov = &r.iov
	r.msg.SetIovlen(1)
	r.msg.Control = &r.oob[0]
	r.msg.SetControllen(len(r.oob))
	m, _, errno := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.msg)), 0)
	r.iov.Base = nil // the buffer goes back to its pool
	if errno != 0 {
		return 0, false, errno
	}
	n, more = int(m), true
	if r.msg.Controllen < unix.SizeofCmsghdr+4 {
		return n, more, nil
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&r.oob[0]))
	if h.Level == unix.SOL_TCP && h.Type == unix.TCP_CM_INQ {
		more = *(*int32)(unsafe.Pointer(&r.oob[unix.CmsgLen(0)])) != 0
	}
	return n, more, nil
}
