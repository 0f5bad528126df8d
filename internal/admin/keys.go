package admin

import (
	"context"
	"errors"
	"net/http"

	"halb/internal/keyring"
)

// KeyInfo is one installed gossip key. The key itself never leaves the
// node through the API: it is named by its ID.
type KeyInfo struct {
	ID      string `json:"id"`
	Primary bool   `json:"primary"` // encrypts this node's gossip
}

// Keyring is a node's gossip keys and the file that keeps them.
type Keyring struct {
	Keys []KeyInfo `json:"keys"`
	File string    `json:"file"` // where halb keeps them across restarts
}

// KeyRequest selects a gossip key: by its base64 text (Key, which install
// needs) or by its ID (use and remove).
type KeyRequest struct {
	Key string `json:"key,omitempty"`
	ID  string `json:"id,omitempty"`
}

// KeyRef is a decoded KeyRequest: exactly one of Key and ID is set.
type KeyRef struct {
	Key []byte
	ID  string
}

// KeyManager is implemented by a daemon whose gossip keys can be rotated.
// Each change is kept (written to its keyring file) before it returns.
type KeyManager interface {
	Keys() (Keyring, error)
	InstallKey(key []byte) (Keyring, error)
	UseKey(ref KeyRef) (Keyring, error)
	RemoveKey(ref KeyRef) (Keyring, error)
}

// ErrConflict is wrapped by a KeyManager for a change the node's state
// forbids (removing the primary key, no keyring file); it answers 409.
var ErrConflict = errors.New("conflict")

// keyOps are the key changes, by the last element of their path.
var keyOps = map[string]func(KeyManager, KeyRef) (Keyring, error){
	"install": func(m KeyManager, r KeyRef) (Keyring, error) { return m.InstallKey(r.Key) },
	"use":     KeyManager.UseKey,
	"remove":  KeyManager.RemoveKey,
}

func (s *Server) keyRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/keys", s.keysList)
	mux.HandleFunc("POST /v1/keys/{op}", s.keysChange)
}

func (s *Server) keyManager(w http.ResponseWriter) (KeyManager, bool) {
	m, ok := s.ctl.(KeyManager)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this halb cannot change gossip keys")
	}
	return m, ok
}

func (s *Server) keysList(w http.ResponseWriter, _ *http.Request) {
	m, ok := s.keyManager(w)
	if !ok {
		return
	}
	kr, err := m.Keys()
	if err != nil {
		writeError(w, keyStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, kr)
}

func (s *Server) keysChange(w http.ResponseWriter, r *http.Request) {
	op := r.PathValue("op")
	change, known := keyOps[op]
	if !known {
		writeError(w, http.StatusNotFound, "no such key operation "+quote(op)+": want install, use or remove")
		return
	}
	m, ok := s.keyManager(w)
	if !ok {
		return
	}
	var req KeyRequest
	if !decode(w, r, &req) {
		return
	}
	ref, err := keyRef(op, req)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Who asked, for the audit trail: the kernel's word, not the client's.
	by := -1
	if p, ok := r.Context().Value(peerKey{}).(peer); ok && p.err == nil {
		by = p.uid
	}
	kr, err := change(m, ref)
	if err != nil {
		s.log.Warn("gossip key change refused", "op", op, "uid", by, "err", err)
		writeError(w, keyStatus(err), err.Error())
		return
	}
	s.log.Info("gossip keys changed by operator", "op", op, "uid", by, "primary", primaryID(kr), "keys", len(kr.Keys))
	writeJSON(w, http.StatusOK, kr)
}

// keyRef checks that req selects a key the way op needs and decodes it.
// No error repeats the key text.
func keyRef(op string, req KeyRequest) (KeyRef, error) {
	switch {
	case req.Key != "" && req.ID != "":
		return KeyRef{}, errors.New(`give "key" or "id", not both`)
	case op == "install" && req.Key == "":
		return KeyRef{}, errors.New(`install needs the key itself in "key" (base64, as halb keygen writes it)`)
	case req.Key == "" && req.ID == "":
		return KeyRef{}, errors.New(`body needs "key" (base64) or "id" (from halb keys list)`)
	case req.ID != "":
		return KeyRef{ID: req.ID}, nil
	}
	key, err := keyring.Decode(req.Key)
	if err != nil {
		return KeyRef{}, err
	}
	return KeyRef{Key: key}, nil
}

func keyStatus(err error) int {
	if errors.Is(err, ErrConflict) {
		return http.StatusConflict
	}
	return actionStatus(err)
}

func primaryID(kr Keyring) string {
	for _, k := range kr.Keys {
		if k.Primary {
			return k.ID
		}
	}
	return ""
}

// quote shows an operator's word in an error, cut short.
func quote(s string) string {
	if len(s) > 32 {
		s = s[:32] + "…"
	}
	return `"` + s + `"`
}

// Keys lists the node's gossip keys.
func (c *Client) Keys(ctx context.Context) (Keyring, error) {
	var kr Keyring
	err := c.do(ctx, http.MethodGet, "/v1/keys", nil, &kr)
	return kr, err
}

// ChangeKey runs op ("install", "use" or "remove") on the node's keyring
// and returns the keyring after it.
func (c *Client) ChangeKey(ctx context.Context, op string, req KeyRequest) (Keyring, error) {
	var kr Keyring
	err := c.do(ctx, http.MethodPost, "/v1/keys/"+op, req, &kr)
	return kr, err
}
