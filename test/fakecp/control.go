package fakecp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// The control API is plain HTTP on a unix socket:
//
//	GET  /state                 Status as JSON
//	POST /fail-health/on|off    health endpoints answer 500 / 200
//	POST /stop                  refuse connections
//	POST /blackhole             accept connections but never answer
//	POST /start                 serve normally again
//	POST /shutdown?delay=2s     stop gracefully: /readyz fails now, the listeners close after delay
//	POST /slow-accept?delay=5ms&backlog=8  pause after each accept, small accept queues (SetSlowAccept)
func (s *Server) serveControl() (*http.Server, error) {
	if err := os.Remove(s.opts.ControlSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale control socket: %w", err)
	}
	ln, err := net.Listen("unix", s.opts.ControlSocket)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Status())
	})
	mux.HandleFunc("POST /fail-health/{onoff}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("onoff") {
		case "on":
			s.SetFailHealth(true)
		case "off":
			s.SetFailHealth(false)
		default:
			http.Error(w, "want on or off", http.StatusBadRequest)
		}
	})
	for path, st := range map[string]State{"/stop": Stopped, "/blackhole": Blackhole, "/start": Serving} {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, _ *http.Request) {
			if err := s.SetState(st); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		})
	}
	mux.HandleFunc("POST /slow-accept", s.handleSlowAccept)
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) {
		delay, err := time.ParseDuration(r.URL.Query().Get("delay"))
		if err != nil || delay < 0 {
			http.Error(w, fmt.Sprintf("delay %q: want a duration like 2s", r.URL.Query().Get("delay")), http.StatusBadRequest)
			return
		}
		if err := s.Shutdown(delay); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
		}
	})
	cs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = cs.Serve(ln)
	}()
	return cs, nil
}

// Client drives a fake control plane through its control socket.
type Client struct {
	hc *http.Client
}

// NewClient returns a client for the control API at socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}
	return &Client{hc: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
}

// FailHealth makes the health endpoints fail (on) or pass again.
func (c *Client) FailHealth(ctx context.Context, on bool) error {
	arg := "off"
	if on {
		arg = "on"
	}
	return c.post(ctx, "/fail-health/"+arg)
}

// SetState switches the server to st.
func (c *Client) SetState(ctx context.Context, st State) error {
	switch st {
	case Serving:
		return c.post(ctx, "/start")
	case Stopped:
		return c.post(ctx, "/stop")
	case Blackhole:
		return c.post(ctx, "/blackhole")
	case Stopping:
		return errors.New("set state stopping: use Shutdown")
	}
	return fmt.Errorf("unknown state %q", st)
}

// Shutdown starts a graceful stop after delay (see Server.Shutdown).
func (c *Client) Shutdown(ctx context.Context, delay time.Duration) error {
	return c.post(ctx, "/shutdown?delay="+url.QueryEscape(delay.String()))
}

// Status fetches the server's state.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://fakecp/state", nil)
	if err != nil {
		return st, fmt.Errorf("get state: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return st, fmt.Errorf("get state: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("get state: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("decode state: %w", err)
	}
	return st, nil
}

func (c *Client) post(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://fakecp"+path, nil)
	if err != nil {
		return fmt.Errorf("post %s: %w", path, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("post %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}
