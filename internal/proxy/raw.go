package proxy

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The copy loops' reads (and inqReader's recvmsg), writes, splices and
// half-closes go to the kernel without telling Go's scheduler
// (RawSyscall). The sockets and pipes are non-blocking, so none of these
// calls waits; but one may run for tens of microseconds (a write on a
// veth or loopback runs the receiver's whole packet path inline), and a
// call the scheduler knows about that lasts longer than sysmon's 20 µs
// tick loses its P: sysmon hands the P to another thread (a futex wake)
// and the caller has to get one back (or park) when the call returns,
// and sysmon itself, finding such calls, keeps waking every 20 µs. In a
// profile of request/response load sysmon and the hand-offs took about a
// sixth of halb's CPU; docs/performance.md has the measurements. The
// cost of going raw: a stop-the-world waits for a call in flight (tens
// of µs, a 1 MiB splice somewhat more).

// rawRead is read(2) on a non-blocking fd.
func rawRead(fd int, b []byte) (int, error) {
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// rawWrite is write(2) on a non-blocking fd.
func rawWrite(fd int, b []byte) (int, error) {
	n, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// rawSplice is splice(2) without offsets; flags must hold
// SPLICE_F_NONBLOCK and both ends be non-blocking or pipes.
func rawSplice(in, out, n, flags int) (int, error) {
	m, _, errno := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), uintptr(flags))
	if errno != 0 {
		return 0, errno
	}
	return int(m), nil
}

// rawShutdownWrite is shutdown(fd, SHUT_WR): it queues the FIN, and on
// veth or loopback runs the peer's receive of it inline.
func rawShutdownWrite(fd int) error {
	if _, _, errno := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0); errno != 0 {
		return errno
	}
	return nil
}
