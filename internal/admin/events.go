package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"halb/internal/events"
)

// EventSource is implemented by a daemon that publishes events; see
// events.Bus.Subscribe.
type EventSource interface {
	Subscribe(since time.Time) ([]events.Event, *events.Sub)
}

// lostEvent is the line a stream carries when the reader fell behind.
type lostEvent struct {
	Lost int `json:"lost"`
}

// events streams events as JSON lines: first the kept ones of the last
// ?since=DURATION, then each new one while ?follow is not "false". The
// stream ends when the client goes or the daemon stops.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	src, ok := s.src.(EventSource)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this halb does not publish events")
		return
	}
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("since %q: want a duration such as 10m", v))
			return
		}
		since = time.Now().Add(-d)
	}
	follow := r.URL.Query().Get("follow") != "false"
	past, sub := src.Subscribe(since)
	defer sub.Close()
	// A stream outlives the server's write timeout, meant for answers.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for _, e := range past {
		if enc.Encode(e) != nil {
			return
		}
	}
	if !follow {
		return
	}
	_ = rc.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case e := <-sub.C():
			if n := sub.Dropped(); n > 0 {
				_ = enc.Encode(lostEvent{Lost: n})
			}
			if enc.Encode(e) != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
