package config

import (
	"strings"
	"testing"
	"time"
)

func TestTickleSettings(t *testing.T) {
	tests := []struct {
		name     string
		vip      string
		wantOn   bool
		wantRate int
		wantErr  string
		spread   time.Duration
	}{
		{"on by default", "{address: 10.0.0.5, interface: eth0}", true, DefaultTickleRate, "", 0},
		{"turned off", "{address: 10.0.0.5, interface: eth0, tickle: false}", false, DefaultTickleRate, "", 0},
		{"own rate", "{address: 10.0.0.5, interface: eth0, tickle_rate: 1000}", true, 1000, "", 0},
		{"zero rate", "{address: 10.0.0.5, interface: eth0, tickle_rate: 0}", false, 0, "vips[0].tickle_rate", 0},
		{"too fast", "{address: 10.0.0.5, interface: eth0, tickle_rate: 2000000}", false, 0, "vips[0].tickle_rate", 0},
		{"spread", "{address: 10.0.0.5, interface: eth0, tickle_spread: 2s}", true, DefaultTickleRate, "", 2 * time.Second},
		{"spread too long", "{address: 10.0.0.5, interface: eth0, tickle_spread: 1m}", false, 0, "vips[0].tickle_spread", 0},
		{"spread negative", "{address: 10.0.0.5, interface: eth0, tickle_spread: -1s}", false, 0, "vips[0].tickle_spread", 0},
		{"spread not a duration", "{address: 10.0.0.5, interface: eth0, tickle_spread: 2}", false, 0, "vips[0].tickle_spread", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(minimal + cluster1 + "vips:\n  - " + tt.vip + "\n"))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v := cfg.VIPs[0]; v.Tickle != tt.wantOn || v.TickleRate != tt.wantRate || v.TickleSpread != tt.spread {
				t.Fatalf("tickle = %v at %d/s over %s, want %v at %d/s over %s", v.Tickle, v.TickleRate, v.TickleSpread, tt.wantOn, tt.wantRate, tt.spread)
			}
		})
	}
}
