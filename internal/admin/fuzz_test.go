package admin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// modelController is a Controller, Driller and Reloader that validates like
// the daemon and records every change it makes, so a fuzz run can tell
// whether a request changed anything.
type modelController struct {
	maintenance bool
	servers     map[string]string // "backend/server" -> admin state
	drill       *DrillRequest
	reloads     int
	changes     int
}

func newModelController() *modelController {
	return &modelController{servers: map[string]string{"kubernetes/cp1": ActionEnable, "kubernetes/cp2": ActionEnable}}
}

func (m *modelController) SetMaintenance(on bool) error {
	m.maintenance = on
	m.changes++
	return nil
}

func (m *modelController) SetServerAdmin(backend, server, state string) error {
	key := backend + "/" + server
	if _, ok := m.servers[key]; !ok {
		return fmt.Errorf("backend %q has no server %q: %w", backend, server, ErrNotFound)
	}
	switch state {
	case ActionEnable, ActionDisable, ActionDrain:
	default:
		return fmt.Errorf("state %q: %w", state, ErrInvalid)
	}
	m.servers[key] = state
	m.changes++
	return nil
}

func (m *modelController) StartDrill(req DrillRequest) (DrillStart, error) {
	switch {
	case req.VIP != "" && req.VIP != vip:
		return DrillStart{}, fmt.Errorf("no VIP %q: %w", req.VIP, ErrNotFound)
	case req.To != "" && req.To != "lb2":
		return DrillStart{}, fmt.Errorf("%q is not an eligible member: %w", req.To, ErrInvalid)
	case req.Hold > 5*time.Minute:
		return DrillStart{}, fmt.Errorf("hold %s is too long: %w", req.Hold, ErrInvalid)
	}
	m.drill = &req
	m.changes++
	return DrillStart{VIP: vip, From: "lb1", To: "lb2", Hard: req.Hard, Started: at()}, nil
}

func (m *modelController) EndDrill() error {
	if m.drill == nil {
		return fmt.Errorf("no drill is running: %w", ErrInvalid)
	}
	m.drill = nil
	m.changes++
	return nil
}

func (m *modelController) Reload() error {
	m.reloads++
	m.changes++
	return nil
}

// fuzzRequest builds the request the HTTP server would hand the handler for
// these bytes on the wire, or nil when the server itself would refuse them.
func fuzzRequest(method, target string, body []byte) *http.Request {
	var wire bytes.Buffer
	fmt.Fprintf(&wire, "%s %s HTTP/1.1\r\nHost: halb\r\nContent-Length: %d\r\n\r\n", method, target, len(body))
	wire.Write(body)
	req, err := http.ReadRequest(bufio.NewReader(&wire))
	if err != nil {
		return nil
	}
	return req
}

// FuzzAdminAPI drives the admin handler with arbitrary methods, paths and
// bodies. It must never panic; every answer is JSON; a refused request gets
// a 4xx with a message and changes nothing; an accepted action did exactly
// what its body asked.
func FuzzAdminAPI(f *testing.F) {
	seeds := []struct{ method, target, body string }{
		{"GET", "/v1/status", ""},
		{"GET", "/v1/members", ""},
		{"POST", "/v1/maintenance", `{"on":true}`},
		{"POST", "/v1/maintenance", `{"on":false}`},
		{"POST", "/v1/maintenance", `{"on":"yes"}`},
		{"POST", "/v1/maintenance", `{"on":true}{"on":false}`},
		{"POST", "/v1/maintenance", `{"on":null}`},
		{"POST", "/v1/servers/kubernetes/cp1", `{"state":"drain"}`},
		{"POST", "/v1/servers/kubernetes/cp9", `{"state":"disable"}`},
		{"POST", "/v1/servers/kubernetes/cp1", `{"state":"up"}`},
		{"POST", "/v1/servers/kubernetes/cp1/x", `{"state":"enable"}`},
		{"POST", "/v1/servers/%6Bubernetes/cp1", `{"state":"enable"}`},
		{"POST", "/v1/drill", `{"hold_ns":1000000000,"to":"lb2"}`},
		{"POST", "/v1/drill", `{"hold_ns":-1,"hard":true}`},
		{"POST", "/v1/drill", `{"vip":"10.0.0.1"}`},
		{"POST", "/v1/drill", `{"hold_ns":1e30}`},
		{"DELETE", "/v1/drill", ""},
		{"POST", "/v1/reload", "ignored"},
		{"GET", "/v1/maintenance", ""},
		{"PUT", "/v1/status", "{}"},
		{"GET", "/v1/../v1/status", ""},
		{"GET", "http://other/v1/status?x=1", ""},
		{"POST", "/v1/maintenance", `{"on":true,"pad":"` + strings.Repeat("x", maxBody) + `"}`},
	}
	for _, s := range seeds {
		f.Add(s.method, s.target, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		req := fuzzRequest(method, target, body)
		if req == nil {
			return
		}
		ctl := newModelController()
		srv := NewServer("", "", &fakeSource{snap: healthyPair()}, ctl, nil)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		checkAnswer(t, req, body, rec, ctl)
	})
}

// checkAnswer asserts the properties FuzzAdminAPI promises for one exchange.
func checkAnswer(t *testing.T, req *http.Request, body []byte, rec *httptest.ResponseRecorder, ctl *modelController) {
	t.Helper()
	code := rec.Code
	where := fmt.Sprintf("%s %q with body %q: %d %s", req.Method, req.URL.Path, body, code, rec.Body.Bytes())
	if code == http.StatusMovedPermanently || code == http.StatusTemporaryRedirect || code == http.StatusPermanentRedirect {
		// The mux sends unclean paths ("/v1/../v1/status") to their
		// clean form before any handler runs.
		if rec.Header().Get("Location") == "" || ctl.changes != 0 {
			t.Fatalf("%s: redirect without Location, or after a change", where)
		}
		return
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q", where, ct)
	}
	if !json.Valid(rec.Body.Bytes()) {
		t.Fatalf("%s: answer is not JSON", where)
	}
	switch {
	case code >= 200 && code < 300:
	case code >= 400 && code < 500:
		var eb errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || strings.TrimSpace(eb.Error) == "" {
			t.Fatalf("%s: a refusal without an error message", where)
		}
		if ctl.changes != 0 {
			t.Fatalf("%s: refused, yet the controller changed state %d times", where, ctl.changes)
		}
		if code == http.StatusMethodNotAllowed && rec.Header().Get("Allow") == "" {
			t.Fatalf("%s: 405 without an Allow header", where)
		}
		return
	default:
		// The model controller only fails with ErrNotFound or ErrInvalid,
		// so anything else is the API mishandling input.
		t.Fatalf("%s: want 2xx or 4xx", where)
	}
	if ctl.changes > 1 {
		t.Fatalf("%s: one request changed state %d times", where, ctl.changes)
	}
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		if ctl.changes != 0 {
			t.Fatalf("%s: a read changed state", where)
		}
		return
	}
	// An accepted action carried a body the strict decoder takes, and did
	// what that body says.
	switch {
	case req.URL.Path == "/v1/maintenance":
		var m struct{ On *bool }
		if err := json.Unmarshal(body, &m); err != nil || m.On == nil || *m.On != ctl.maintenance || ctl.changes != 1 {
			t.Fatalf("%s: maintenance is %v after an accepted request", where, ctl.maintenance)
		}
	case strings.HasPrefix(req.URL.Path, "/v1/servers/"):
		var s serverRequest
		if err := json.Unmarshal(body, &s); err != nil || !slices.Contains([]string{ActionEnable, ActionDisable, ActionDrain}, s.State) || ctl.changes != 1 {
			t.Fatalf("%s: accepted a server state that is not enable, disable or drain", where)
		}
	case req.URL.Path == "/v1/drill" && req.Method == http.MethodPost:
		if ctl.drill == nil || ctl.drill.Hold > 5*time.Minute {
			t.Fatalf("%s: accepted drill %+v", where, ctl.drill)
		}
	case req.URL.Path == "/v1/reload":
		if ctl.reloads != 1 {
			t.Fatalf("%s: accepted reload ran %d times", where, ctl.reloads)
		}
	default:
		t.Fatalf("%s: a %s succeeded on a path that takes no action", where, req.Method)
	}
}
