package admin

import (
	"context"
	"net/http"
	"time"
)

// DrillRequest asks the cluster to move a VIP away from its holder.
type DrillRequest struct {
	VIP  string `json:"vip,omitempty"`  // "" = the node's first VIP
	To   string `json:"to,omitempty"`   // "" = the best other eligible node
	Hard bool   `json:"hard,omitempty"` // the holder goes silent on gossip, as if crashed
	// Hold bounds how long the holder stays out of the election; the drill
	// ends earlier with EndDrill.
	Hold time.Duration `json:"hold_ns,omitempty"`
	// Node is, for a VIP announced by BGP, the node that withdraws it; ""
	// is the node that answers. A BGP VIP has no holder to move.
	Node string `json:"node,omitempty"`
}

// DrillStart is what the cluster was asked to do.
type DrillStart struct {
	VIP     string    `json:"vip"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	Hard    bool      `json:"hard"`
	Started time.Time `json:"started"`
	// Mode is "bgp" for a withdrawal drill of a BGP VIP: From withdraws
	// its route and To lists the nodes still announcing it. "" for a
	// move of an ARP VIP.
	Mode string `json:"mode,omitempty"`
}

// Driller is implemented by a daemon that can run failover drills.
type Driller interface {
	StartDrill(DrillRequest) (DrillStart, error)
	EndDrill() error
}

func (s *Server) drillStart(w http.ResponseWriter, r *http.Request) {
	d, ok := s.ctl.(Driller)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this halb cannot run drills")
		return
	}
	var req DrillRequest
	if !decode(w, r, &req) {
		return
	}
	start, err := d.StartDrill(req)
	if err != nil {
		s.log.Warn("drill refused", "err", err)
		writeError(w, actionStatus(err), err.Error())
		return
	}
	s.log.Info("drill started by operator", "vip", start.VIP, "from", start.From, "to", start.To, "hard", start.Hard)
	writeJSON(w, http.StatusOK, start)
}

func (s *Server) drillEnd(w http.ResponseWriter, _ *http.Request) {
	d, ok := s.ctl.(Driller)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this halb cannot run drills")
		return
	}
	if err := d.EndDrill(); err != nil {
		writeError(w, actionStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ended": true})
}

// StartDrill asks the node to start a drill.
func (c *Client) StartDrill(ctx context.Context, req DrillRequest) (DrillStart, error) {
	var out DrillStart
	err := c.do(ctx, http.MethodPost, "/v1/drill", req, &out)
	return out, err
}

// EndDrill ends the node's drill: the holder it moved away from rejoins
// the election.
func (c *Client) EndDrill(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/v1/drill", nil, nil)
}
