package keyring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	k1 = bytes.Repeat([]byte{1}, 32)
	k2 = bytes.Repeat([]byte{2}, 16)
	k3 = bytes.Repeat([]byte{3}, 24)
)

func TestParse(t *testing.T) {
	text := "# comment\n\n" + Encode(k1) + "\n  " + Encode(k2) + "  \n" + Encode(k3)
	got, err := Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]byte{k1, k2, k3}, got); diff != "" {
		t.Fatalf("keys (-want +got):\n%s", diff)
	}
}

func TestParseRefusesBadFilesWithoutEchoingThem(t *testing.T) {
	secretish := "hunter2-not-a-key"
	short := Encode([]byte("0123456789"))
	for _, tt := range []struct {
		name, text string
		want       []string
	}{
		{"not base64", Encode(k1) + "\n" + secretish + "\n", []string{"line 2", "not base64"}},
		{"wrong length", short + "\n", []string{"line 1", "10 bytes, want 16, 24 or 32"}},
		{"duplicate", Encode(k1) + "\n" + Encode(k2) + "\n" + Encode(k1) + "\n", []string{"line 3", "key of line 1 again"}},
		{"empty", "# nothing\n\n", []string{"no key in the file"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.text))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			for _, secret := range []string{secretish, short, Encode(k1)} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q echoes the file's text", err)
				}
			}
		})
	}
}

func TestWriteReadRoundTripIsPrivateAndAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gossip.keyring")
	if err := os.WriteFile(path, []byte(Encode(k1)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, [][]byte{k2, k1}); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]byte{k2, k1}, got); diff != "" {
		t.Fatalf("read back (-want +got):\n%s", diff)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the keyring (no temporary file left)", len(entries))
	}
	// An empty ring is refused and the file stays as it was.
	if err := Write(path, nil); err == nil {
		t.Fatal("wrote an empty keyring")
	}
	if got, _ := Read(path); len(got) != 2 {
		t.Fatalf("a refused write changed the file: %d keys", len(got))
	}
}

func TestWriteIntoMissingDirectoryFails(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "no", "such", "keyring"), [][]byte{k1})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want a not-exist error", err)
	}
}

func TestEdits(t *testing.T) {
	ring := [][]byte{k1}
	ring, err := Install(ring, k2)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := Install(ring, k2); len(again) != 2 {
		t.Fatalf("installing twice gave %d keys", len(again))
	}
	if _, err := Install(ring, []byte("short")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("install of a 5-byte key: %v, want ErrMalformed", err)
	}
	if _, err := Remove(ring, k1); !errors.Is(err, ErrPrimary) {
		t.Fatalf("remove primary: %v, want ErrPrimary", err)
	}
	if _, err := Use(ring, k3); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("use of an absent key: %v, want ErrNotInstalled", err)
	}
	ring, err = Use(ring, k2)
	if err != nil {
		t.Fatal(err)
	}
	ring, err = Remove(ring, k1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]byte{k2}, ring); diff != "" {
		t.Fatalf("after rotation (-want +got):\n%s", diff)
	}
	if _, err := Remove(ring, k1); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("remove twice: %v, want ErrNotInstalled", err)
	}
	got, err := Find([][]byte{k1, k2}, strings.ToUpper(ID(k2)))
	if err != nil || !bytes.Equal(got, k2) {
		t.Fatalf("Find(ID(k2)) = %x, %v", got, err)
	}
	if _, err := Find(ring, "0000"); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("Find of an unknown id: %v", err)
	}
}

// A key file is a small regular file; anything else is refused before it
// is read (a FIFO would hang, /dev/zero would fill memory).
func TestReadBounded(t *testing.T) {
	if _, err := Read("/dev/zero"); err == nil || !strings.Contains(err.Error(), "/dev/zero") || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Read(/dev/zero) = %v, want a refusal naming the file", err)
	}
	big := filepath.Join(t.TempDir(), "big")
	text := strings.Repeat(Encode(k1)+"\n", MaxFileSize/40)
	if err := os.WriteFile(big, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(big); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("Read of %d bytes = %v, want too large", len(text), err)
	}
}

func TestCheckPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gossip.key")
	if err := CheckPrivate(path); err != nil {
		t.Fatalf("missing file: %v, want nil (reading reports it)", err)
	}
	if err := Write(path, [][]byte{k1}); err != nil {
		t.Fatal(err)
	}
	if err := CheckPrivate(path); err != nil {
		t.Fatalf("file as Write leaves it: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckPrivate(path); err == nil || !strings.Contains(err.Error(), "0644") || !strings.Contains(err.Error(), path) {
		t.Fatalf("world-readable key file: %v, want a warning naming file and mode", err)
	}
}
