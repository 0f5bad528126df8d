package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
)

// Client talks to a halb admin API over its unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// Dial returns a client for the API on socket. It connects lazily, per
// request, so it never fails itself.
func Dial(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", socket)
			if err != nil {
				return nil, &dialError{socket: socket, err: err}
			}
			return c, nil
		},
		DisableCompression: true,
		// One connection per request: the CLI makes few, and no idle
		// connection outlives a command.
		DisableKeepAlives: true,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// dialError explains the usual reasons a local socket does not answer.
type dialError struct {
	socket string
	err    error
}

func (e *dialError) Error() string {
	switch {
	case errors.Is(e.err, os.ErrPermission):
		return fmt.Sprintf("connect to halb: permission denied on %s: run as root or as a member of admin.group", e.socket)
	case errors.Is(e.err, os.ErrNotExist), errors.Is(e.err, syscall.ECONNREFUSED):
		return fmt.Sprintf("connect to halb: is halb running? (socket %s: %v)", e.socket, errors.Unwrap(e.err))
	}
	return fmt.Sprintf("connect to halb: is halb running? (socket %s): %v", e.socket, e.err)
}

func (e *dialError) Unwrap() error { return e.err }

// APIError is an error answer from the admin API.
type APIError struct {
	Status  int    // HTTP status code
	Message string // the server's explanation
}

func (e *APIError) Error() string { return e.Message }

// Status fetches the node's whole snapshot.
func (c *Client) Status(ctx context.Context) (Snapshot, error) {
	var s Snapshot
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// SetMaintenance puts the node into maintenance (on) or takes it out.
func (c *Client) SetMaintenance(ctx context.Context, on bool) error {
	return c.do(ctx, http.MethodPost, "/v1/maintenance", maintenanceRequest{On: &on}, nil)
}

// SetServerAdmin enables, disables or drains a server: state is
// ActionEnable, ActionDisable or ActionDrain.
func (c *Client) SetServerAdmin(ctx context.Context, backend, server, state string) error {
	p := "/v1/servers/" + url.PathEscape(backend) + "/" + url.PathEscape(server)
	return c.do(ctx, http.MethodPost, p, serverRequest{State: state}, nil)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	// The host is ignored: every request goes to the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://halb"+path, body)
	if err != nil {
		return fmt.Errorf("build request %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var de *dialError
		if errors.As(err, &de) {
			return de
		}
		return fmt.Errorf("%s %s on %s: %w", method, path, c.socket, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
		}
		return &APIError{Status: resp.StatusCode, Message: eb.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
	}
	return nil
}
