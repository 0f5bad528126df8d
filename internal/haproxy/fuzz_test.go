package haproxy

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"testing"

	"halb/internal/config"
)

func FuzzImport(f *testing.F) {
	seed, err := os.ReadFile(seedPath)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(tcpPair("option httpchk GET /healthz", "option ssl-hello-chk", "server s1 10.1.1.1:50000 check inter 2s fall 3 rise 2")))
	f.Add([]byte("listen l\n  bind :6443,[::1]:6444\n  timeout tunnel 1h\n  server a 10.0.0.1:6443 check weight 0 backup\n"))
	f.Add([]byte("defaults\n  mode http\n  default-server inter 1 fall 0\nfrontend \"a b\"\n  bind 'x\n"))
	nodes := []Node{{Name: "lb1", Address: netip.MustParseAddr("10.1.1.2")}}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Import(data, Options{Nodes: nodes})
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not a non-empty Errors: %v", err)
			}
			lines := bytes.Count(data, []byte("\n")) + 1
			for _, e := range es {
				if e.Line < 0 || e.Line > lines {
					t.Fatalf("error line %d outside the input's %d lines", e.Line, lines)
				}
			}
			return
		}
		if _, err := config.Parse(res.YAML); err != nil {
			t.Fatalf("imported YAML does not validate: %v\n%s", err, res.YAML)
		}
	})
}
