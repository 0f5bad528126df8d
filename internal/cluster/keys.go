package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

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
