package freebind

import (
	"context"
	"net"
	"testing"
)

// Binding a documentation address no interface has works only with the
// option (or a permissive sysctl); nothing is sent anywhere.
func TestBindsAbsentAddress(t *testing.T) {
	lc := net.ListenConfig{Control: Control}
	for _, addr := range []string{"192.0.2.1:0", "[2001:db8::1]:0"} {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			t.Errorf("listen on absent %s with freebind: %v", addr, err)
			continue
		}
		_ = ln.Close()
	}
}
