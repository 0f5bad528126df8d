package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"halb/internal/keyring"
)

// ErrInsecure is returned by key operations when gossip is not encrypted.
var ErrInsecure = errors.New("gossip is not encrypted (cluster.insecure_gossip): there are no keys")

// keyErrors checks the configured keys.
func keyErrors(cfg Config) []error {
	var errs []error
	if cfg.Insecure && len(cfg.SecondaryKeys) > 0 {
		errs = append(errs, errors.New("secondary gossip keys were given but gossip is insecure"))
	}
	for i, k := range cfg.SecondaryKeys {
		if err := keyring.Validate(k); err != nil {
			errs = append(errs, fmt.Errorf("secondary gossip key %d: %w", i+1, err))
		}
	}
	return errs
}

// newKeyring builds memberlist's keyring from the config, primary first;
// nil when gossip is insecure. It does no I/O.
func newKeyring(cfg Config) (*memberlist.Keyring, error) {
	if cfg.Insecure {
		return nil, nil
	}
	kr, err := memberlist.NewKeyring(cloneKeys(cfg.SecondaryKeys), slices.Clone(cfg.Key))
	if err != nil {
		return nil, fmt.Errorf("load gossip keys: %w", err)
	}
	return kr, nil
}

// Keys returns the installed gossip keys, the primary (encrypting) one
// first. Every installed key decrypts.
func (c *Cluster) Keys() ([][]byte, error) {
	if c.keyring == nil {
		return nil, ErrInsecure
	}
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	return cloneKeys(c.keyring.GetKeys()), nil
}

// SetKeys makes keys the installed gossip keys, keys[0] the primary. It
// takes effect at once, also while Run runs: new keys are added before
// the primary changes and old ones removed last, so at no moment does
// this node lack a key its peers use.
func (c *Cluster) SetKeys(keys [][]byte) error {
	if c.keyring == nil {
		return ErrInsecure
	}
	if len(keys) == 0 {
		return errors.New("set gossip keys: an empty keyring would cut this node off")
	}
	for i, k := range keys {
		if err := keyring.Validate(k); err != nil {
			return fmt.Errorf("set gossip keys: key %d: %w", i+1, err)
		}
	}
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	for _, k := range keys {
		if err := c.keyring.AddKey(slices.Clone(k)); err != nil {
			return fmt.Errorf("install gossip key %s: %w", keyring.ID(k), err)
		}
	}
	for _, old := range cloneKeys(c.keyring.GetKeys()) {
		if slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, old) }) {
			continue
		}
		// UseKey gives the ring a fresh slice first: memberlist's RemoveKey
		// shifts keys within its slice, which readers that fetched it for
		// a decryption would otherwise see move under them.
		if err := c.keyring.UseKey(keys[0]); err != nil {
			return fmt.Errorf("use gossip key %s: %w", keyring.ID(keys[0]), err)
		}
		if err := c.keyring.RemoveKey(old); err != nil {
			return fmt.Errorf("remove gossip key %s: %w", keyring.ID(old), err)
		}
	}
	if err := c.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("use gossip key %s: %w", keyring.ID(keys[0]), err)
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = keyring.ID(k)
	}
	c.log.Info("gossip keys changed", "primary", ids[0], "installed", strings.Join(ids, ","))
	return nil
}

func cloneKeys(keys [][]byte) [][]byte {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = slices.Clone(k)
	}
	return out
}

// refusalEvery is how often the refusal of one sender is logged above
// Debug: a node with a stale key retries every second.
const refusalEvery = time.Minute

// keyRefusal matches memberlist's log lines about gossip this node could
// not decrypt or that came unencrypted, and the sender's address.
var (
	keyRefusal = regexp.MustCompile(`(?i)(no installed keys could decrypt|decrypt packet failed|remote state is not encrypted|encryption version)`)
	fromAddr   = regexp.MustCompile(`from=(\S+)`)
)

// refusalLog stands between memberlist's logger and the log bridge: it
// turns the low-level error about an undecryptable message into one line
// that says a peer with another key was refused and which one, once per
// sender per refusalEvery, and passes everything else on.
type refusalLog struct {
	next io.Writer
	log  *slog.Logger

	mu   sync.Mutex
	last map[netip.Addr]time.Time
	now  func() time.Time
}

func (c *Cluster) memberlistLogger() *log.Logger {
	return log.New(&refusalLog{
		next: logBridge{log: c.log},
		log:  c.log,
		last: map[netip.Addr]time.Time{},
		now:  time.Now,
	}, "", 0)
}

func (r *refusalLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\r\n"))
	m := fromAddr.FindStringSubmatch(line)
	// Only what arrived from someone: this node's own failed joins are
	// logged by joinLoop, naming the peer.
	if m == nil || !keyRefusal.MatchString(line) {
		return r.next.Write(p)
	}
	var from netip.Addr
	if ap, err := netip.ParseAddrPort(m[1]); err == nil {
		from = ap.Addr().Unmap()
	}
	reason := strings.TrimSpace(fromAddr.ReplaceAllString(line, ""))
	if i := strings.Index(reason, "memberlist: "); i >= 0 {
		reason = reason[i+len("memberlist: "):]
	}
	now := r.now()
	r.mu.Lock()
	loud := now.Sub(r.last[from]) >= refusalEvery
	if loud {
		if len(r.last) >= 1024 { // bound the memory a flood of sources can take
			clear(r.last)
		}
		r.last[from] = now
	}
	r.mu.Unlock()
	level := slog.LevelDebug
	if loud {
		level = slog.LevelWarn
	}
	peer := m[1]
	if from.IsValid() {
		peer = from.String()
	}
	r.log.Log(context.Background(), level, "refused gossip from a node with another gossip key (wrong, old or removed key, or none): compare `halb keys list` on both nodes",
		"peer", peer, "err", reason)
	return len(p), nil
}
