package smallfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadRegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	want := []byte("exactly ten")[:10]
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path, 10)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Read at the limit = %q, %v; want %q", got, err, want)
	}
	_, err = Read(path, 9)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Read over the limit: %v, want ErrTooLarge naming %s", err, path)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing"), 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of a missing file: %v, want fs.ErrNotExist", err)
	}
}

// A device or FIFO is refused by its type, at once: /dev/zero would fill
// memory and a FIFO without a writer would block forever.
func TestReadRefusesNonRegular(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, kind string }{
		{"/dev/zero", "character device"},
		{fifo, "named pipe"},
		{t.TempDir(), "directory"},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := Read(tt.path, 1<<20)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.kind) {
				t.Errorf("Read(%s) = %v, want ErrNotRegular naming the file and %q", tt.path, err, tt.kind)
			}
		case <-time.After(10 * time.Second):
			// Not a sleep for synchronisation: a bound on a hang that is the bug.
			t.Fatalf("Read(%s) blocked", tt.path)
		}
	}
}

func TestCheckPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckPrivate(path); err != nil {
		t.Fatalf("0600 file: %v", err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o620, 0o604, 0o602} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		err := CheckPrivate(path)
		if !errors.Is(err, ErrExposed) || !strings.Contains(err.Error(), path) {
			t.Errorf("mode %04o: %v, want ErrExposed naming the file", mode, err)
		}
	}
	if err := CheckPrivate(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}
