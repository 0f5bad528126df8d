package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"halb/internal/events"
)

// ServerRef names one server of one backend.
type ServerRef struct {
	Backend string `json:"backend"`
	Server  string `json:"server"`
	Address string `json:"address"`
}

// ServerSpread is the outcome of a cluster-wide server admin change.
type ServerSpread struct {
	Match string      `json:"match"`
	State string      `json:"state"`
	Local []ServerRef `json:"local"` // the servers changed on this node
	Peers []string    `json:"peers"` // the members told to do the same
	// PeerErrors maps a member that could not be told to why.
	PeerErrors map[string]string `json:"peer_errors,omitempty"`
}

// ClusterServerAdmin is implemented by a daemon that can change a
// server's admin state in every backend holding it, on every node.
type ClusterServerAdmin interface {
	// SetServerEverywhere applies state (ActionEnable, ActionDisable or
	// ActionDrain) to every server whose name or address is match, here
	// and on every alive member. Errors wrap ErrNotFound or ErrInvalid.
	SetServerEverywhere(match, state string) (ServerSpread, error)
}

func (s *Server) clusterServerAdmin(w http.ResponseWriter, r *http.Request) {
	c, ok := s.ctl.(ClusterServerAdmin)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this halb cannot change servers cluster-wide")
		return
	}
	var req serverRequest
	if !decode(w, r, &req) {
		return
	}
	if !validAction(w, req.State) {
		return
	}
	match := r.PathValue("match")
	out, err := c.SetServerEverywhere(match, req.State)
	if err != nil {
		s.log.Warn("set server state cluster-wide", "match", match, "state", req.State, "err", err)
		writeError(w, actionStatus(err), err.Error())
		return
	}
	s.log.Info("server state set cluster-wide by operator", "match", match, "state", req.State,
		"servers", len(out.Local), "peers", len(out.Peers), "peer_errors", len(out.PeerErrors))
	writeJSON(w, http.StatusOK, out)
}

// SetServerEverywhere enables, disables or drains every server called (or
// at address) match, in every backend, on every node.
func (c *Client) SetServerEverywhere(ctx context.Context, match, state string) (ServerSpread, error) {
	var out ServerSpread
	err := c.do(ctx, http.MethodPost, "/v1/cluster/servers/"+url.PathEscape(match), serverRequest{State: state}, &out)
	return out, err
}

// Events calls fn with each event of the last since (none for 0), then,
// when follow is set, with each new one until ctx ends or fn fails. A
// reader that fell behind gets an Event with Kind "lost" and the count in
// Reason.
func (c *Client) Events(ctx context.Context, since time.Duration, follow bool, fn func(events.Event) error) error {
	q := url.Values{}
	if since > 0 {
		q.Set("since", since.String())
	}
	if !follow {
		q.Set("follow", "false")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://halb/v1/events?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("build events request: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var de *dialError
		if errors.As(err, &de) {
			return de
		}
		return fmt.Errorf("GET /v1/events on %s: %w", c.socket, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = "GET /v1/events: " + resp.Status
		}
		return &APIError{Status: resp.StatusCode, Message: eb.Error}
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			events.Event
			Lost int `json:"lost"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		e := line.Event
		if line.Lost > 0 {
			e = events.Event{Kind: "lost", Reason: fmt.Sprintf("%d events lost: this reader fell behind", line.Lost)}
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("read events: %w", err)
	}
	return nil
}
