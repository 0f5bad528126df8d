package admin

import (
	"context"
	"net/http"
)

// Reloader is implemented by a daemon that can re-read its config.
type Reloader interface {
	// Reload applies the config file again; on error nothing changed.
	Reload() error
}

func (s *Server) reload(w http.ResponseWriter, _ *http.Request) {
	r, ok := s.ctl.(Reloader)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this halb cannot reload")
		return
	}
	if err := r.Reload(); err != nil {
		// 422: the request was fine, the file on disk is not.
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"reloaded": true})
}

// Reload asks the node to re-read its config file. An *APIError carries
// every reason when the file was refused; the node then runs as before.
func (c *Client) Reload(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/reload", nil, nil)
}
