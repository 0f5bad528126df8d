package config

import (
	"strings"
	"testing"
	"time"
)

func TestTCPKeepAlive(t *testing.T) {
	tests := []struct {
		name    string
		value   string // "" leaves the key out
		want    time.Duration
		wantErr string
	}{
		{name: "off by default", want: 0},
		{name: "explicit zero", value: "0", want: 0},
		{name: "off", value: "off", want: 0},
		{name: "period", value: "30s", want: 30 * time.Second},
		{name: "too short", value: "500ms", wantErr: "timeouts.tcp_keepalive (line 12): 500ms is too short: at least 1s"},
		{name: "not a duration", value: "often", wantErr: `timeouts.tcp_keepalive (line 12): "often" is not a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := minimal
			if tt.value != "" {
				doc += "timeouts:\n  tcp_keepalive: " + tt.value + "\n"
			}
			cfg, err := Parse([]byte(doc))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Timeouts.KeepAlive != tt.want {
				t.Errorf("keep-alive = %s, want %s", cfg.Timeouts.KeepAlive, tt.want)
			}
		})
	}
}
