package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Source gives the current state of the node. Snapshot must be safe to
// call from any goroutine and should return quickly.
type Source interface {
	Snapshot() Snapshot
}

// Controller carries out operator actions. Errors wrapping ErrNotFound or
// ErrInvalid reach the client as 404 and 400; any other error as 500. The
// error text is shown to the operator as is.
type Controller interface {
	SetMaintenance(on bool) error
	// SetServerAdmin sets a server's administrative state: ActionEnable,
	// ActionDisable or ActionDrain.
	SetServerAdmin(backend, server, state string) error
}

// Errors a Controller wraps to choose the HTTP status of a failed action.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid request")
)

// maxBody bounds request bodies; every valid one is a few bytes.
const maxBody = 64 << 10

// Server is the admin API listening on a unix socket.
type Server struct {
	socket string
	group  string
	src    Source
	ctl    Controller
	log    *slog.Logger
}

// NewServer returns an admin API for socket whose file will belong to
// group ("" keeps the process's group). It does no I/O until Run.
func NewServer(socket, group string, src Source, ctl Controller, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{socket: socket, group: group, src: src, ctl: ctl, log: log.With("component", "admin")}
}

// Handler returns the API's HTTP handler, for serving it elsewhere.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, NewStatus(s.snapshot()))
	})
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.snapshot().Node)
	})
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.snapshot().Members)
	})
	mux.HandleFunc("GET /v1/vips", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.snapshot().VIPs)
	})
	mux.HandleFunc("GET /v1/frontends", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.snapshot().Frontends)
	})
	mux.HandleFunc("GET /v1/backends", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.snapshot().Backends)
	})
	mux.HandleFunc("POST /v1/maintenance", s.maintenance)
	mux.HandleFunc("POST /v1/servers/{backend}/{server}", s.serverAdmin)
	mux.HandleFunc("POST /v1/reload", s.reload)
	mux.HandleFunc("POST /v1/drill", s.drillStart)
	mux.HandleFunc("DELETE /v1/drill", s.drillEnd)
	mux.HandleFunc("GET /v1/events", s.events)
	mux.HandleFunc("POST /v1/cluster/servers/{match}", s.clusterServerAdmin)
	s.keyRoutes(mux)
	mux.HandleFunc("/", notFound(mux))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux answers a target that is not a path ("*", as in
		// OPTIONS *) with a plain-text 400 of its own; every answer of
		// this API is JSON.
		if !strings.HasPrefix(r.URL.Path, "/") {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s %q: not a path of this API", r.Method, r.URL.Path))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// snapshot fills what a Source may leave out, so clients always get
// arrays rather than nulls and a time to measure durations against.
func (s *Server) snapshot() Snapshot {
	snap := s.src.Snapshot()
	if snap.Time.IsZero() {
		snap.Time = time.Now()
	}
	if snap.Node.Roles == nil {
		snap.Node.Roles = []VIPRole{}
	}
	if snap.Members == nil {
		snap.Members = []Member{}
	}
	if snap.VIPs == nil {
		snap.VIPs = []VIP{}
	}
	if snap.Frontends == nil {
		snap.Frontends = []Frontend{}
	}
	if snap.Backends == nil {
		snap.Backends = []Backend{}
	}
	return snap
}

type maintenanceRequest struct {
	On *bool `json:"on"`
}

func (s *Server) maintenance(w http.ResponseWriter, r *http.Request) {
	var req maintenanceRequest
	if !decode(w, r, &req) {
		return
	}
	if req.On == nil {
		writeError(w, http.StatusBadRequest, `body needs "on": true or false`)
		return
	}
	if err := s.ctl.SetMaintenance(*req.On); err != nil {
		s.log.Warn("set maintenance", "on", *req.On, "err", err)
		writeError(w, actionStatus(err), err.Error())
		return
	}
	s.log.Info("maintenance set by operator", "on", *req.On)
	writeJSON(w, http.StatusOK, map[string]bool{"on": *req.On})
}

type serverRequest struct {
	State string `json:"state"`
}

func (s *Server) serverAdmin(w http.ResponseWriter, r *http.Request) {
	var req serverRequest
	if !decode(w, r, &req) {
		return
	}
	if !validAction(w, req.State) {
		return
	}
	backend, server := r.PathValue("backend"), r.PathValue("server")
	if err := s.ctl.SetServerAdmin(backend, server, req.State); err != nil {
		s.log.Warn("set server state", "backend", backend, "server", server, "state", req.State, "err", err)
		writeError(w, actionStatus(err), err.Error())
		return
	}
	s.log.Info("server state set by operator", "backend", backend, "server", server, "state", req.State)
	writeJSON(w, http.StatusOK, map[string]string{"backend": backend, "server": server, "state": req.State})
}

// validAction reports whether state is a server admin action, answering
// the request with 400 when it is not.
func validAction(w http.ResponseWriter, state string) bool {
	switch state {
	case ActionEnable, ActionDisable, ActionDrain:
		return true
	}
	writeError(w, http.StatusBadRequest, fmt.Sprintf("state %q: want enable, disable or drain", state))
	return false
}

func actionStatus(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// decode reads exactly one JSON object with only known fields into v, or
// answers the request with an error and returns false.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.Decode(new(json.RawMessage)) != io.EOF {
			err = errors.New("more than one JSON value")
		}
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", maxBody))
		return false
	}
	if errors.Is(err, io.EOF) {
		err = errors.New("empty body")
	}
	writeError(w, http.StatusBadRequest, "decode request: "+err.Error())
	return false
}

// notFound answers what no route matched: 405 with an Allow header when the
// path exists for other methods (found by asking mux itself, so the answer
// cannot drift from the routes), else 404.
func notFound(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			list := strings.Join(allow, ", ")
			w.Header().Set("Allow", list)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, list))
			return
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// Run listens on the socket and serves until ctx ends, then removes the
// socket. It returns nil when ctx is cancelled.
func (s *Server) Run(ctx context.Context) error {
	gid, group, err := s.groupID()
	if err != nil {
		return err
	}
	ln, err := s.listen(ctx)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(s.socket)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("stat admin socket %s: %w", s.socket, err)
	}
	defer s.remove(fi)

	hs := &http.Server{
		Handler:           s.guard(access{uid: os.Geteuid(), gid: gid, group: group, groupsOf: groupsOf}, s.Handler()),
		ConnContext:       withPeer,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		// Requests end with the server: an events stream would otherwise
		// hold the shutdown for its whole timeout.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("admin API listening", "socket", s.socket)

	select {
	case err := <-errc:
		return fmt.Errorf("serve admin API on %s: %w", s.socket, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Warn("admin API stopped", "err", err)
	}
	return nil
}

// remove deletes the socket file if it is still the one Run created: a
// later halb may already have replaced it.
func (s *Server) remove(created os.FileInfo) {
	fi, err := os.Lstat(s.socket)
	if err != nil || !os.SameFile(fi, created) {
		return
	}
	if err := os.Remove(s.socket); err != nil {
		s.log.Warn("remove admin socket", "socket", s.socket, "err", err)
	}
}

// listen prepares the socket: it creates the directory, clears a stale
// socket, and binds under a temporary name that is renamed into place
// only once mode and group are set, so no one else can connect in between.
func (s *Server) listen(ctx context.Context) (net.Listener, error) {
	gid := -1
	if s.group != "" {
		var err error
		if gid, _, err = s.groupID(); err != nil {
			return nil, err
		}
	}
	dir := filepath.Dir(s.socket)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create admin socket directory: %w", err)
	}
	if err := clearStale(ctx, s.socket); err != nil {
		return nil, err
	}

	tmp := fmt.Sprintf("%s.%d.tmp", s.socket, os.Getpid())
	_ = os.Remove(tmp) // left by a crashed run of a process with our pid
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on admin socket %s: %w", s.socket, err)
	}
	fail := func(err error) (net.Listener, error) {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, 0o660); err != nil {
		return fail(fmt.Errorf("chmod admin socket %s: %w", s.socket, err))
	}
	if gid >= 0 {
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(fmt.Errorf("give admin socket %s to group %q: %w", s.socket, s.group, err))
		}
	}
	if err := os.Rename(tmp, s.socket); err != nil {
		return fail(fmt.Errorf("move admin socket into place at %s: %w", s.socket, err))
	}
	// The listener would unlink the temporary name on close; we remove the
	// real one ourselves.
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	return ln, nil
}

// clearStale removes a socket file that nobody answers on, as a crashed
// halb leaves behind, and refuses to touch one that is in use or is not
// a socket.
func clearStale(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check admin socket %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("admin socket %s exists and is not a socket; remove it or choose another admin.socket", path)
	}
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("another halb is running on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("check admin socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale admin socket %s: %w", path, err)
	}
	return nil
}
