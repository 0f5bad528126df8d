package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"halb/internal/admin"
	"halb/internal/cluster"
	"halb/internal/config"
	"halb/internal/keyring"
)

// loadKeys returns the gossip keys this node starts with, primary first,
// and the file they came from: cluster.keyring_file once `halb keys` has
// written it, else cluster.key_file.
func loadKeys(c *config.Cluster) ([][]byte, string, error) {
	if c.KeyringFile != "" {
		keys, err := keyring.Read(c.KeyringFile)
		if err == nil {
			return keys, c.KeyringFile, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, "", fmt.Errorf("cluster.keyring_file: %w", err)
		}
	}
	keys, err := keyring.Read(c.KeyFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("cluster.key_file: %w; create one with `halb keygen --out %s`", err, c.KeyFile)
	}
	if err != nil {
		return nil, "", fmt.Errorf("cluster.key_file: %w", err)
	}
	return keys, c.KeyFile, nil
}

// keyManager changes the gossip keyring on the operator's request.
type keyManager struct {
	log     *slog.Logger
	srv     *serving // for the config in force
	cluster *cluster.Cluster
	mu      sync.Mutex // one change at a time
}

// Keys lists the running keys.
func (k *keyManager) Keys() (admin.Keyring, error) {
	keys, err := k.gossipKeys()
	if err != nil {
		return admin.Keyring{}, err
	}
	return k.keyring(keys), nil
}

// InstallKey adds key: it decrypts from now on; this
// node goes on encrypting with its primary key.
func (k *keyManager) InstallKey(key []byte) (admin.Keyring, error) {
	return k.changeKeys("install", admin.KeyRef{Key: key}, keyring.Install)
}

// UseKey makes this node encrypt with the key.
func (k *keyManager) UseKey(ref admin.KeyRef) (admin.Keyring, error) {
	return k.changeKeys("use", ref, keyring.Use)
}

// RemoveKey removes a key; the primary key is refused.
func (k *keyManager) RemoveKey(ref admin.KeyRef) (admin.Keyring, error) {
	return k.changeKeys("remove", ref, keyring.Remove)
}

// changeKeys computes the next keyring, writes it to cluster.keyring_file
// and then gives it to gossip, so that what runs is never ahead of what a
// restart would load. If gossip refuses it, the file is put back.
func (k *keyManager) changeKeys(op string, ref admin.KeyRef, edit func([][]byte, []byte) ([][]byte, error)) (admin.Keyring, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cfg, _ := k.srv.current()
	file := cfg.Cluster.KeyringFile
	if file == "" {
		return admin.Keyring{}, fmt.Errorf("%s key: cluster.keyring_file is not set, so the change would be lost at the next restart: set it to a file halb may write (e.g. /var/lib/halb/gossip.keyring) and restart halb: %w", op, admin.ErrConflict)
	}
	before, err := k.gossipKeys()
	if err != nil {
		return admin.Keyring{}, fmt.Errorf("%s key: %w", op, err)
	}
	key := ref.Key
	if ref.ID != "" {
		if key, err = keyring.Find(before, ref.ID); err != nil {
			return admin.Keyring{}, fmt.Errorf("%s key: %w", op, keyError(err))
		}
	}
	next, err := edit(before, key)
	if err != nil {
		return admin.Keyring{}, fmt.Errorf("%s key: %w", op, keyError(err))
	}
	if err := keyring.Write(file, next); err != nil {
		return admin.Keyring{}, fmt.Errorf("%s key: nothing changed: %w", op, err)
	}
	if err := k.cluster.SetKeys(next); err != nil {
		if werr := keyring.Write(file, before); werr != nil {
			k.log.Error("gossip keyring file no longer matches the running keys", "file", file, "err", werr)
		}
		return admin.Keyring{}, fmt.Errorf("%s key: %w", op, err)
	}
	k.log.Info("gossip keyring saved", "op", op, "key", keyring.ID(key), "file", file)
	return k.keyring(next), nil
}

// gossipKeys are the running keys; a node without encrypted gossip has none.
func (k *keyManager) gossipKeys() ([][]byte, error) {
	if k.cluster == nil {
		return nil, fmt.Errorf("this node has no cluster section: there is no gossip: %w", admin.ErrConflict)
	}
	keys, err := k.cluster.Keys()
	if errors.Is(err, cluster.ErrInsecure) {
		return nil, fmt.Errorf("%w: %w", err, admin.ErrConflict)
	}
	return keys, err
}

func (k *keyManager) keyring(keys [][]byte) admin.Keyring {
	cfg, _ := k.srv.current()
	kr := admin.Keyring{Keys: make([]admin.KeyInfo, len(keys)), File: cfg.Cluster.KeyringFile}
	for i, k := range keys {
		kr.Keys[i] = admin.KeyInfo{ID: keyring.ID(k), Primary: i == 0}
	}
	return kr
}

// keyError maps the keyring's refusals to the admin API's answers.
func keyError(err error) error {
	switch {
	case errors.Is(err, keyring.ErrNotInstalled):
		return fmt.Errorf("%w: %w", err, admin.ErrNotFound)
	case errors.Is(err, keyring.ErrPrimary):
		return fmt.Errorf("%w: %w", err, admin.ErrConflict)
	case errors.Is(err, keyring.ErrMalformed):
		return fmt.Errorf("%w: %w", err, admin.ErrInvalid)
	}
	return err
}

// first and rest split a keyring into its primary key and the others.
func first(keys [][]byte) []byte {
	if len(keys) == 0 {
		return nil
	}
	return keys[0]
}

func rest(keys [][]byte) [][]byte {
	if len(keys) < 2 {
		return nil
	}
	return keys[1:]
}
