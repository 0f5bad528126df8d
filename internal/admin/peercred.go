package admin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// The socket file's mode (0660, admin.group) is the first barrier; the
// peer check below is the second, and holds even if the file's mode or
// its directory's is loosened, or the socket is handed to another process.

// peer is the client process at the other end of a connection, as the
// kernel reports it (SO_PEERCRED): it cannot be forged by the client.
type peer struct {
	pid, uid, gid int
	err           error // why the credentials could not be read
}

type peerKey struct{}

// withPeer records the connection's peer credentials in its context; it
// is the http.Server's ConnContext.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, peerOf(c))
}

func peerOf(c net.Conn) peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{err: fmt.Errorf("connection is %T, not a unix socket", c)}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{err: fmt.Errorf("peer credentials: %w", err)}
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{err: fmt.Errorf("peer credentials: %w", err)}
	}
	if credErr != nil {
		return peer{err: fmt.Errorf("peer credentials: %w", credErr)}
	}
	return peer{pid: int(cred.Pid), uid: int(cred.Uid), gid: int(cred.Gid)}
}

// access says who may use the API: root, the daemon's own user, and the
// members of the admin group (by their primary group or the group
// database).
type access struct {
	uid   int    // the daemon's user
	gid   int    // the admin group
	group string // its name, for messages
	// groupsOf lists the groups uid belongs to in the group database.
	groupsOf func(uid int) ([]int, error)
}

// allows returns "" when p may use the API, else why not.
func (a access) allows(p peer) string {
	switch {
	case p.err != nil:
		return "could not identify the client: " + p.err.Error()
	case p.uid == 0, p.uid == a.uid, p.gid == a.gid:
		return ""
	}
	groups, err := a.groupsOf(p.uid)
	if err == nil && slices.Contains(groups, a.gid) {
		return ""
	}
	return fmt.Sprintf("uid %d is not root, halb's user (uid %d) or a member of the admin group %s (gid %d)", p.uid, a.uid, a.group, a.gid)
}

// groupsOf looks uid's groups up in the system's group database.
func groupsOf(uid int) ([]int, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nil, err
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, id := range ids {
		if n, err := strconv.Atoi(id); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// groupID resolves the admin group: admin.group, or the daemon's own
// group, which the socket file then keeps.
func (s *Server) groupID() (gid int, name string, err error) {
	if s.group == "" {
		gid = os.Getegid()
		name = strconv.Itoa(gid)
		if g, err := user.LookupGroupId(name); err == nil {
			name = g.Name
		}
		return gid, name, nil
	}
	g, err := user.LookupGroup(s.group)
	if err != nil {
		return 0, "", fmt.Errorf("admin socket group %q: %w", s.group, err)
	}
	if gid, err = strconv.Atoi(g.Gid); err != nil {
		return 0, "", fmt.Errorf("admin socket group %q: gid %q: %w", s.group, g.Gid, err)
	}
	return gid, s.group, nil
}

// guard answers 403 to a client that a allows not, and logs it. Requests
// that did not come through Run's listener (no credentials in their
// context) pass: Handler is also served by tests and embedders.
func (s *Server) guard(a access, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(peerKey{}).(peer)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		if why := a.allows(p); why != "" {
			s.log.Warn("admin API refused a local client", "uid", p.uid, "gid", p.gid, "pid", p.pid,
				"method", r.Method, "path", r.URL.Path, "why", why)
			writeError(w, http.StatusForbidden, "forbidden: "+why)
			return
		}
		next.ServeHTTP(w, r)
	})
}
