package daemon

import (
	"errors"
	"fmt"
	"os"

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

// Keys implements admin.KeyManager.
func (d *Daemon) Keys() (admin.Keyring, error) {
	keys, err := d.gossipKeys()
	if err != nil {
		return admin.Keyring{}, err
	}
	return d.keyring(keys), nil
}

// InstallKey implements admin.KeyManager: key decrypts from now on; this
// node goes on encrypting with its primary key.
func (d *Daemon) InstallKey(key []byte) (admin.Keyring, error) {
	return d.changeKeys("install", admin.KeyRef{Key: key}, keyring.Install)
}

// UseKey implements admin.KeyManager: this node encrypts with the key.
func (d *Daemon) UseKey(ref admin.KeyRef) (admin.Keyring, error) {
	return d.changeKeys("use", ref, keyring.Use)
}

// RemoveKey implements admin.KeyManager; the primary key is refused.
func (d *Daemon) RemoveKey(ref admin.KeyRef) (admin.Keyring, error) {
	return d.changeKeys("remove", ref, keyring.Remove)
}

// changeKeys computes the next keyring, writes it to cluster.keyring_file
// and then gives it to gossip, so that what runs is never ahead of what a
// restart would load. If gossip refuses it, the file is put back.
func (d *Daemon) changeKeys(op string, ref admin.KeyRef, edit func([][]byte, []byte) ([][]byte, error)) (admin.Keyring, error) {
	d.keysMu.Lock()
	defer d.keysMu.Unlock()
	cfg, _ := d.current()
	file := cfg.Cluster.KeyringFile
	if file == "" {
		return admin.Keyring{}, fmt.Errorf("%s key: cluster.keyring_file is not set, so the change would be lost at the next restart: set it to a file halb may write (e.g. /var/lib/halb/gossip.keyring) and restart halb: %w", op, admin.ErrConflict)
	}
	before, err := d.gossipKeys()
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
	if err := d.cluster.SetKeys(next); err != nil {
		if werr := keyring.Write(file, before); werr != nil {
			d.log.Error("gossip keyring file no longer matches the running keys", "file", file, "err", werr)
		}
		return admin.Keyring{}, fmt.Errorf("%s key: %w", op, err)
	}
	d.log.Info("gossip keyring saved", "op", op, "key", keyring.ID(key), "file", file)
	return d.keyring(next), nil
}

// gossipKeys are the running keys; a node without encrypted gossip has none.
func (d *Daemon) gossipKeys() ([][]byte, error) {
	if d.cluster == nil {
		return nil, fmt.Errorf("this node has no cluster section: there is no gossip: %w", admin.ErrConflict)
	}
	keys, err := d.cluster.Keys()
	if errors.Is(err, cluster.ErrInsecure) {
		return nil, fmt.Errorf("%w: %w", err, admin.ErrConflict)
	}
	return keys, err
}

func (d *Daemon) keyring(keys [][]byte) admin.Keyring {
	cfg, _ := d.current()
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
