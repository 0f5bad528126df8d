package fakecp

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// healthChecks are the checks kube-apiserver lists under ?verbose for
// endpoint, in its order. A failing health (SetFailHealth) fails the etcd
// ones; a graceful shutdown fails shutdown, which only /readyz has.
func healthChecks(endpoint string) []string {
	hooks := []string{"poststarthook/start-apiserver-admission-initializer",
		"poststarthook/generic-apiserver-start-informers", "poststarthook/rbac/bootstrap-roles"}
	if endpoint == "readyz" {
		return append(append([]string{"ping", "log", "etcd", "etcd-readiness", "informer-sync"}, hooks...), "shutdown")
	}
	return append([]string{"ping", "log", "etcd"}, hooks...)
}

// apiHandler answers like kube-apiserver with --anonymous-auth=false.
func (s *Server) apiHandler(g *generation) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(NameHeader, s.opts.Name)
		// Behind a proxy the client's address is the proxy's: a client of
		// several LB nodes learns which one carried its connection.
		w.Header().Set(PeerHeader, remoteAddr(r).(*net.TCPAddr).IP.String())
		u, ok := s.authenticate(r)
		if !ok {
			s.note(apiListener, evUnauthorized, remoteAddr(r))
			writeStatus(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
			return
		}
		s.note(apiListener, evAuthenticated, remoteAddr(r))
		switch r.URL.Path {
		case "/healthz", "/livez", "/readyz":
			// Any authenticated user may read them (system:public-info-viewer).
			s.health(w, r)
			return
		}
		if !u.master() {
			s.note(apiListener, evForbidden, remoteAddr(r))
			writeStatus(w, http.StatusForbidden, "Forbidden",
				fmt.Sprintf("forbidden: User %q cannot %s path %q", u.name, strings.ToLower(r.Method), r.URL.Path))
			return
		}
		if q := r.URL.Query().Get("watch"); q == "true" || q == "1" {
			s.watch(w, r, g)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = fmt.Fprintf(w, "ok %s\n", s.opts.Name)
	})
}

func (s *Server) authenticate(r *http.Request) (user, bool) {
	if s.auth == nil {
		// No PKI: the old fake that answers anyone as an administrator.
		return user{name: "anonymous", groups: []string{MastersGroup}}, true
	}
	return s.auth.kubeUserOf(r.TLS, r.Header.Get("Authorization"))
}

// health answers /healthz, /livez and /readyz as kube-apiserver's healthz
// handler does: "ok", or with ?verbose one line per check; a failure is
// always verbose and 500.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	failEtcd, stopping := s.failHealth, s.state == Stopping
	s.mu.Unlock()
	name := strings.TrimPrefix(r.URL.Path, "/")
	checks := healthChecks(name)
	var b strings.Builder
	failed := false
	for _, c := range checks {
		if (failEtcd && strings.HasPrefix(c, "etcd")) || (stopping && c == "shutdown") {
			failed = true
			fmt.Fprintf(&b, "[-]%s failed: reason withheld\n", c)
		} else {
			fmt.Fprintf(&b, "[+]%s ok\n", c)
		}
	}
	if failed {
		http.Error(w, b.String()+name+" check failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if _, verbose := r.URL.Query()["verbose"]; verbose {
		_, _ = fmt.Fprintf(w, "%s%s check passed\n", b.String(), name)
		return
	}
	_, _ = fmt.Fprint(w, "ok")
}

// watch streams one JSON event per tick naming the server until the client
// goes or the server stops; then the handler returns, so the chunked body
// ends properly.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, g *generation) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(tick)
	defer t.Stop()
	for n := 0; ; n++ {
		typ := "MODIFIED"
		if n == 0 {
			typ = "ADDED"
		}
		if _, err := fmt.Fprintf(w, "{\"type\":%q,\"object\":{\"name\":%q,\"n\":%d}}\n", typ, s.opts.Name, n); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-g.quit:
			return
		case <-t.C:
		}
	}
}

// apiStatus is the metav1.Status body kube-apiserver sends with errors.
type apiStatus struct {
	Kind       string    `json:"kind"`
	APIVersion string    `json:"apiVersion"`
	Metadata   struct{}  `json:"metadata"`
	Status     string    `json:"status"`
	Message    string    `json:"message"`
	Reason     string    `json:"reason"`
	Details    *struct{} `json:"details,omitempty"`
	Code       int       `json:"code"`
}

func writeStatus(w http.ResponseWriter, code int, reason, message string) {
	st := apiStatus{Kind: "Status", APIVersion: "v1", Status: "Failure", Message: message, Reason: reason, Code: code}
	if code == http.StatusForbidden {
		st.Details = &struct{}{}
	}
	b, _ := json.Marshal(st)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
