package keepalivedlab

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

const statHeader = "# pxname,svname,qcur,status,weight\n"

// serveStats answers one `show stat` on a unix socket with text.
func serveStats(t *testing.T, text string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "stats.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = c.Close() }()
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		if strings.TrimSpace(string(buf[:n])) == "show stat" {
			_, _ = c.Write([]byte(text))
		}
	}()
	return sock
}

func TestBackendsUp(t *testing.T) {
	tests := []struct {
		name, stats string
		wantErr     string
	}{
		{"all up", statHeader +
			"k8s_apiserver,FRONTEND,0,OPEN,\nk8s_controlplane,cp1,0,UP,1\nk8s_controlplane,BACKEND,0,UP,1\n" +
			"talos_controlplane,cp1,0,DOWN 1/2,1\ntalos_controlplane,BACKEND,0,UP,1\n", ""},
		{"one backend down", statHeader +
			"k8s_controlplane,cp1,0,DOWN,1\nk8s_controlplane,BACKEND,0,DOWN,1\ntalos_controlplane,BACKEND,0,UP,1\n",
			"k8s_controlplane DOWN"},
		{"backend missing", statHeader + "k8s_controlplane,BACKEND,0,UP,1\n", "talos_controlplane missing"},
		{"not stats", "Unknown command\n", "no pxname/svname/status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := BackendsUp(context.Background(), serveStats(t, tt.stats), Backends())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("want nil, got %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("want an error with %q, got %v", tt.wantErr, err)
			}
		})
	}
}

func TestBackendsUpNoHAProxy(t *testing.T) {
	err := BackendsUp(context.Background(), filepath.Join(t.TempDir(), "none.sock"), Backends())
	if err == nil || !strings.Contains(err.Error(), "ask haproxy") {
		t.Fatalf("want an error saying haproxy does not answer, got %v", err)
	}
}
