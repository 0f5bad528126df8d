package keyring

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"halb/internal/smallfile"
)

// Errors the edits wrap, so callers can choose how to answer.
var (
	// ErrMalformed: the text is not a base64 key of 16, 24 or 32 bytes.
	ErrMalformed = errors.New("malformed gossip key")
	// ErrNotInstalled: the key is not on the ring.
	ErrNotInstalled = errors.New("key is not installed")
	// ErrPrimary: the primary key cannot be removed.
	ErrPrimary = errors.New("key is the primary key")
)

// Decode parses one key as `halb keygen` writes it. Its error never
// contains the text: a key that fails to parse is still a secret.
func Decode(text string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil {
		return nil, fmt.Errorf("%w: not base64 (write one with `halb keygen`)", ErrMalformed)
	}
	if err := Validate(key); err != nil {
		return nil, err
	}
	return key, nil
}

// Validate checks that key fits AES-128, -192 or -256.
func Validate(key []byte) error {
	switch len(key) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("%w: %d bytes, want 16, 24 or 32 (AES-128/192/256)", ErrMalformed, len(key))
}

// Encode is the text form of key, as Decode reads it.
func Encode(key []byte) string { return base64.StdEncoding.EncodeToString(key) }

// ID names a key without revealing it: the first 8 bytes of its SHA-256,
// in hex. Operators compare and select keys by it.
func ID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// Parse reads a key file: one base64 key per line, the first one primary;
// blank lines and lines starting with # are skipped. Errors name the line,
// never its text.
func Parse(data []byte) ([][]byte, error) {
	var keys [][]byte
	var errs []error
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, err := Decode(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		if first, dup := seen[string(key)]; dup {
			errs = append(errs, fmt.Errorf("line %d: the key of line %d again", n, first))
			continue
		}
		seen[string(key)] = n
		keys = append(keys, key)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key in the file (write one with `halb keygen`)", ErrMalformed)
	}
	return keys, nil
}

// MaxFileSize bounds a key file: a key is a 45-byte line, so this holds
// dozens with comments, and a wrong path (/dev/zero, a log) is refused
// instead of read whole.
const MaxFileSize = 4 << 10

// Read parses the key file at path, which must be a regular file of at
// most MaxFileSize bytes.
func Read(path string) ([][]byte, error) {
	data, err := smallfile.Read(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("read gossip keys: %w", err)
	}
	keys, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("gossip key file %s: %w", path, err)
	}
	return keys, nil
}

// CheckPrivate reports, wrapping smallfile.ErrExposed, a key file that
// users other than its owner could read or change: whoever reads it can
// join the cluster and read its gossip, whoever writes it can cut this
// node off. A missing file is nil; reading it reports that.
func CheckPrivate(path string) error {
	err := smallfile.CheckPrivate(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gossip keys must stay secret: %w", err)
	}
	return nil
}

// Format renders keys as a key file, primary first.
func Format(keys [][]byte) []byte {
	var b bytes.Buffer
	b.WriteString("# halb gossip keyring: the first key is primary. Written by halb; edit with `halb keys`.\n")
	for _, k := range keys {
		b.WriteString(Encode(k))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Write replaces the key file at path with keys, atomically: a crash
// leaves either the old file or the new one, never a torn one. The file
// is readable by its owner only.
func Write(path string, keys [][]byte) error {
	for _, k := range keys {
		if err := Validate(k); err != nil {
			return fmt.Errorf("write gossip keys to %s: %w", path, err)
		}
	}
	if len(keys) == 0 {
		return fmt.Errorf("write gossip keys to %s: an empty keyring would cut this node off", path)
	}
	if err := smallfile.WriteAtomic(path, Format(keys)); err != nil {
		return fmt.Errorf("write gossip keys to %s: %w", path, err)
	}
	return nil
}

// Install returns keys with key added last (a secondary key: it decrypts
// but does not yet encrypt). Installing a key twice changes nothing.
func Install(keys [][]byte, key []byte) ([][]byte, error) {
	if err := Validate(key); err != nil {
		return nil, err
	}
	if index(keys, key) >= 0 {
		return clone(keys), nil
	}
	return append(clone(keys), slices.Clone(key)), nil
}

// Use returns keys with key moved first: the key this node encrypts with.
func Use(keys [][]byte, key []byte) ([][]byte, error) {
	i := index(keys, key)
	if i < 0 {
		return nil, fmt.Errorf("%w: key %s (install it first)", ErrNotInstalled, ID(key))
	}
	out := [][]byte{slices.Clone(key)}
	for j, k := range keys {
		if j != i {
			out = append(out, slices.Clone(k))
		}
	}
	return out, nil
}

// Remove returns keys without key. The primary key cannot be removed:
// the node would have nothing to encrypt with.
func Remove(keys [][]byte, key []byte) ([][]byte, error) {
	i := index(keys, key)
	switch {
	case i < 0:
		return nil, fmt.Errorf("%w: key %s", ErrNotInstalled, ID(key))
	case i == 0:
		return nil, fmt.Errorf("%w: key %s encrypts this node's gossip; make another key primary first (`halb keys use`)", ErrPrimary, ID(key))
	}
	out := clone(keys)
	return slices.Delete(out, i, i+1), nil
}

// Find returns the key on keys whose ID is id.
func Find(keys [][]byte, id string) ([]byte, error) {
	id = strings.ToLower(strings.TrimSpace(id))
	for _, k := range keys {
		if ID(k) == id {
			return slices.Clone(k), nil
		}
	}
	// Not echoing id: an operator may have pasted a key instead.
	return nil, fmt.Errorf("%w: no installed key has that id (see `halb keys list`)", ErrNotInstalled)
}

func index(keys [][]byte, key []byte) int {
	return slices.IndexFunc(keys, func(k []byte) bool { return bytes.Equal(k, key) })
}

func clone(keys [][]byte) [][]byte {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = slices.Clone(k)
	}
	return out
}
