package health

import (
	"errors"
	"syscall"
)

// LocalExhaustion reports errors that say this host ran out of something —
// open files, socket buffers, memory, ephemeral ports — rather than that
// the server failed. A probe or connect that fails with one says nothing
// about the server.
func LocalExhaustion(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
