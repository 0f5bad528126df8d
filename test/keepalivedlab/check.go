package keepalivedlab

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"
)

// BackendsUp asks the HAProxy behind statsSocket for its stats and returns
// nil only when every one of backends is UP (HAProxy marks a backend DOWN
// when none of its servers is up). It is what keepalived's chk_haproxy runs.
func BackendsUp(ctx context.Context, statsSocket string, backends []string) error {
	ctx, cancel := context.WithTimeout(ctx, 800*time.Millisecond)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", statsSocket)
	if err != nil {
		return fmt.Errorf("ask haproxy for its stats: %w", err)
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, "show stat\n"); err != nil {
		return fmt.Errorf("ask haproxy for its stats: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(conn, 1<<20))
	if err != nil {
		return fmt.Errorf("read haproxy stats: %w", err)
	}
	status, err := backendStatus(string(b))
	if err != nil {
		return err
	}
	var down []string
	for _, be := range backends {
		s, ok := status[be]
		if !ok {
			s = "missing"
		}
		if s != "UP" {
			down = append(down, be+" "+s)
		}
	}
	if len(down) > 0 {
		return fmt.Errorf("haproxy backends not up: %s", strings.Join(down, ", "))
	}
	return nil
}

// backendStatus parses `show stat` CSV into the status of each BACKEND row.
func backendStatus(text string) (map[string]string, error) {
	text = strings.TrimPrefix(strings.TrimSpace(text), "# ")
	r := csv.NewReader(strings.NewReader(text))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("parse haproxy stats: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("parse haproxy stats: empty answer")
	}
	col := func(name string) int { return slices.Index(rows[0], name) }
	px, sv, st := col("pxname"), col("svname"), col("status")
	if px < 0 || sv < 0 || st < 0 {
		return nil, fmt.Errorf("parse haproxy stats: no pxname/svname/status columns in %q", strings.Join(rows[0], ","))
	}
	out := map[string]string{}
	for _, row := range rows[1:] {
		if len(row) > max(px, sv, st) && row[sv] == "BACKEND" {
			out[row[px]] = row[st]
		}
	}
	return out, nil
}
