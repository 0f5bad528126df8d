package config

import (
	"strings"
	"testing"
)

func TestTickleSettings(t *testing.T) {
	tests := []struct {
		name     string
		vip      string
		wantOn   bool
		wantRate int
		wantErr  string
	}{
		{"on by default", "{address: 10.0.0.5, interface: eth0}", true, DefaultTickleRate, ""},
		{"turned off", "{address: 10.0.0.5, interface: eth0, tickle: false}", false, DefaultTickleRate, ""},
		{"own rate", "{address: 10.0.0.5, interface: eth0, tickle_rate: 1000}", true, 1000, ""},
		{"zero rate", "{address: 10.0.0.5, interface: eth0, tickle_rate: 0}", false, 0, "vips[0].tickle_rate"},
		{"too fast", "{address: 10.0.0.5, interface: eth0, tickle_rate: 2000000}", false, 0, "vips[0].tickle_rate"},
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
			if v := cfg.VIPs[0]; v.Tickle != tt.wantOn || v.TickleRate != tt.wantRate {
				t.Fatalf("tickle = %v at %d/s, want %v at %d/s", v.Tickle, v.TickleRate, tt.wantOn, tt.wantRate)
			}
		})
	}
}
