package daemon

import (
	"cmp"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"halb/internal/admin"
	"halb/internal/adminstate"
	"halb/internal/cluster"
	"halb/internal/pool"
)

var _ admin.ClusterServerAdmin = (*operatorAPI)(nil)

// adminStore keeps the operator's admin states in the state file and
// carries cluster-wide server changes to and from peers.
type adminStore struct {
	path   string // "" keeps nothing (tests)
	log    *slog.Logger
	mu     sync.Mutex // orders writes of the file
	replay replayGuard
	// peers lists the alive members but this node and send delivers to
	// one; the cluster's in the daemon, fakes in tests. Nil: no cluster.
	peers func() []string
	send  func(node string, msg []byte) error
}

// clusterPeers returns the alive members of cl but this node.
func clusterPeers(cl *cluster.Cluster) func() []string {
	return func() []string {
		var out []string
		for _, m := range cl.Members() {
			if !m.Local && m.Alive {
				out = append(out, m.Name)
			}
		}
		return out
	}
}

// serverAdminKind marks a peer message as a server admin change; drill
// messages carry no kind.
const serverAdminKind = "server_admin"

// serverAdminMsg asks a peer to apply a server admin change.
type serverAdminMsg struct {
	Kind  string    `json:"kind"`
	Match string    `json:"match"`
	State string    `json:"state"`
	ID    string    `json:"id"`
	Sent  time.Time `json:"sent"`
}

// matches reports whether s is the server an operator named with m: its
// name, its address, or its address without the port (one control plane
// serves several backends on several ports).
func matches(s *pool.Server, m string) bool {
	a := s.Address()
	return s.Name() == m || a.String() == m || a.Addr().String() == m
}

// actionState maps an admin API action to a pool admin state.
func actionState(action string) (pool.AdminState, error) {
	switch action {
	case admin.ActionEnable:
		return pool.Enabled, nil
	case admin.ActionDisable:
		return pool.Disabled, nil
	case admin.ActionDrain:
		return pool.Drain, nil
	}
	return 0, fmt.Errorf("state %q: want enable, disable or drain: %w", action, admin.ErrInvalid)
}

// applyMatch sets st on every server m names, in every backend, and
// returns them.
func (o *operatorAPI) applyMatch(m string, st pool.AdminState) []admin.ServerRef {
	pools, _ := o.srv.parts()
	var refs []admin.ServerRef
	for name, p := range pools {
		for _, s := range p.Servers() {
			if matches(s, m) {
				s.SetAdmin(st)
				refs = append(refs, admin.ServerRef{Backend: name, Server: s.Name(), Address: s.Address().String()})
			}
		}
	}
	slices.SortFunc(refs, func(a, b admin.ServerRef) int {
		return cmp.Or(cmp.Compare(a.Backend, b.Backend), cmp.Compare(a.Server, b.Server))
	})
	return refs
}

// SetServerEverywhere implements admin.ClusterServerAdmin: the change is
// applied here, then sent to every alive member over gossip's reliable
// channel; each member applies it to its own backends and persists it.
func (o *operatorAPI) SetServerEverywhere(match, action string) (admin.ServerSpread, error) {
	st, err := actionState(action)
	if err != nil {
		return admin.ServerSpread{}, err
	}
	refs := o.applyMatch(match, st)
	if len(refs) == 0 {
		return admin.ServerSpread{}, fmt.Errorf("no server is called or has the address %q in any backend: %w", match, admin.ErrNotFound)
	}
	o.persist()
	out := admin.ServerSpread{Match: match, State: action, Local: refs}
	if o.state == nil || o.state.peers == nil {
		return out, nil
	}
	for _, peer := range o.state.peers() {
		b, err := json.Marshal(serverAdminMsg{Kind: serverAdminKind, Match: match, State: action, ID: newRequestID(), Sent: time.Now()})
		if err == nil {
			err = o.state.send(peer, b)
		}
		if err != nil {
			if out.PeerErrors == nil {
				out.PeerErrors = map[string]string{}
			}
			out.PeerErrors[peer] = err.Error()
			continue
		}
		out.Peers = append(out.Peers, peer)
	}
	return out, nil
}

// dispatch hands a peer's message to its handler: a server admin change
// here, anything else to the drills.
func (o *operatorAPI) dispatch(b []byte) {
	var head struct {
		Kind string `json:"kind"`
	}
	if json.Unmarshal(b, &head) == nil && head.Kind == serverAdminKind {
		o.peerServerAdmin(b)
		return
	}
	o.drills.handle(b)
}

// peerServerAdmin applies a server admin change a peer sent; bad input is
// logged and dropped.
func (o *operatorAPI) peerServerAdmin(b []byte) {
	var m serverAdminMsg
	if err := json.Unmarshal(b, &m); err != nil {
		o.state.log.Warn("ignored an unreadable server admin request from a peer", "err", err)
		return
	}
	if why := o.state.replay.check(m.ID, m.Sent, time.Now()); why != "" {
		o.state.log.Warn("refused a server admin request from a peer", "match", m.Match, "why", why)
		return
	}
	st, err := actionState(m.State)
	if err != nil {
		o.state.log.Warn("ignored a server admin request from a peer", "err", err)
		return
	}
	refs := o.applyMatch(m.Match, st)
	o.state.log.Info("server state changed cluster-wide by a peer", "match", m.Match, "state", st.String(), "servers", len(refs))
	o.persist()
}

// persist writes the current admin states to the state file. A failure is
// logged, not returned: the change is in force, only its survival of a
// restart is lost, and the operator must hear about it.
func (o *operatorAPI) persist() {
	s := o.state
	if s == nil || s.path == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, _ := o.ctl.snapshot()
	st := adminstate.State{Maintenance: f.maintained}
	pools, _ := o.srv.parts()
	for name, p := range pools {
		for _, sv := range p.Servers() {
			if a := sv.Admin(); a != pool.Enabled {
				st.Servers = append(st.Servers, adminstate.Server{Backend: name, Server: sv.Name(), Address: sv.Address().String(), State: a.String()})
			}
		}
	}
	if err := adminstate.Save(s.path, st); err != nil {
		s.log.Warn("admin states will not survive a restart", "err", err)
	}
}

// restore applies the state file's admin states at start. A corrupt or
// unreadable file is a warning: the daemon starts with every server
// enabled rather than not at all.
func (o *operatorAPI) restore() {
	s := o.state
	if s == nil || s.path == "" {
		return
	}
	st, err := adminstate.Load(s.path)
	if err != nil {
		s.log.Warn("starting with every server enabled and no maintenance", "err", err)
		return
	}
	if st.Maintenance && o.ctl.cluster != nil {
		o.ctl.update(func(f *facts) { f.maintained = true })
		s.log.Info("maintenance restored from the state file", "file", s.path)
	}
	pools, _ := o.srv.parts()
	for _, sv := range st.Servers {
		var srv *pool.Server
		if p, ok := pools[sv.Backend]; ok {
			srv, _ = p.Server(sv.Server)
		}
		a, err := pool.ParseAdminState(sv.State)
		if srv == nil || err != nil {
			s.log.Warn("admin state not restored: no such server in the config", "backend", sv.Backend, "server", sv.Server, "state", sv.State)
			continue
		}
		srv.SetAdmin(a)
		s.log.Info("server admin state restored from the state file", "backend", sv.Backend, "server", sv.Server, "state", a.String())
	}
}
