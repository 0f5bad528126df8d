package proxy

import (
	"strconv"
	"testing"
)

func TestFilesNeeded(t *testing.T) {
	tests := []struct {
		maxconn int
		want    uint64
	}{
		{maxconn: 0, want: 0},  // unlimited: nothing fits, nothing to check
		{maxconn: -1, want: 0}, // never valid config, but no wrap-around
		{maxconn: 1, want: 6 + 256},
		// The default maxconn fits the packaged unit's LimitNOFILE=65536.
		{maxconn: 10000, want: 60256},
		// Every session bursting both ways: 2 sockets + 2 pipes of 2 fds.
		{maxconn: 3000, want: 3000*(2+2*2) + 256},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.maxconn), func(t *testing.T) {
			if got := FilesNeeded(tt.maxconn); got != tt.want {
				t.Fatalf("FilesNeeded(%d) = %d, want %d", tt.maxconn, got, tt.want)
			}
		})
	}
	if FilesNeeded(10880) > 65536 || FilesNeeded(10881) <= 65536 {
		t.Fatalf("LimitNOFILE=65536 should fit maxconn up to 10880 exactly (docs/resource-limits.md)")
	}
}
