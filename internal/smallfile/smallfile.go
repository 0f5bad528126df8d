package smallfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Errors Read wraps in an *fs.PathError naming the file.
var (
	// ErrNotRegular: the path is a directory, FIFO, socket or device.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge: the file holds more than the limit.
	ErrTooLarge = errors.New("file too large")
)

// Read returns the contents of the regular file at path, refusing one
// larger than limit bytes. The file is opened non-blocking so that a FIFO
// cannot hang the caller before its type is seen, and the read is bounded
// so that /dev/zero or a file that grows meanwhile cannot exhaust memory.
// A missing file still satisfies errors.Is(err, fs.ErrNotExist).
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read-only: a close error loses nothing
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w (%s)", ErrNotRegular, kind(fi.Mode()))}
	}
	// One byte past the limit tells a file of exactly limit bytes from a
	// longer one without reading the longer one whole.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	if int64(len(data)) > limit {
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: more than %s", ErrTooLarge, size(limit))}
	}
	return data, nil
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "type " + m.Type().String()
}

func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// ErrExposed: a secret file others can read or change.
var ErrExposed = errors.New("file is open to other users")

// CheckPrivate reports, wrapping ErrExposed, when users other than the
// file's owner could read or change the file at path: permission bits for
// group or others, or an owner that is neither this process's user nor
// root (that user could rewrite it). It follows symlinks, as a read does.
func CheckPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return &fs.PathError{Op: "check", Path: path, Err: fmt.Errorf("%w: mode %04o lets group or others in; chmod 600 %s", ErrExposed, perm, path)}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return &fs.PathError{Op: "check", Path: path, Err: fmt.Errorf("%w: owned by uid %d, neither root nor this user (uid %d)", ErrExposed, st.Uid, os.Geteuid())}
	}
	return nil
}
