package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// withTLS is minimal with a check of type typ and the given health.tls
// lines (each indented under tls:).
func withTLS(typ string, lines ...string) string {
	doc := minimal + "    health:\n      type: " + typ + "\n"
	if len(lines) > 0 {
		doc += "      tls:\n"
		for _, l := range lines {
			doc += "        " + l + "\n"
		}
	}
	return doc
}

func TestHealthTLSCredentials(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string // "" for valid
	}{
		{"talosconfig", withTLS("tls", "talosconfig: /etc/halb/talosconfig"), ""},
		{"talosconfig with context", withTLS("tls", "talosconfig: /etc/halb/talosconfig", "context: prod"), ""},
		{"kubeconfig", withTLS("https", "kubeconfig: /etc/halb/kubeconfig", "context: admin@prod"), ""},
		{"ca_file with a talosconfig", withTLS("tls", "talosconfig: /t", "ca_file: /ca.pem"), ""},
		{"both files", withTLS("https", "talosconfig: /t", "kubeconfig: /k"),
			"backends[0].health.tls (line 13): talosconfig and kubeconfig are mutually exclusive"},
		{"kubeconfig and cert_file", withTLS("https", "kubeconfig: /k", "cert_file: /c.pem", "key_file: /k.pem"),
			"backends[0].health.tls (line 13): kubeconfig and cert_file are mutually exclusive"},
		{"all three", withTLS("tls", "talosconfig: /t", "kubeconfig: /k", "cert_file: /c.pem", "key_file: /k.pem"),
			"talosconfig and kubeconfig and cert_file are mutually exclusive"},
		{"context alone", withTLS("tls", "context: prod"),
			`backends[0].health.tls.context (line 14): "prod" names a context of a talosconfig or kubeconfig: set health.tls.talosconfig or health.tls.kubeconfig`},
		{"credentials on a tcp check", withTLS("tcp", "talosconfig: /t"),
			"backends[0].health.tls (line 13): only tls and https checks use TLS options (type is tcp)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.doc))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want an error mentioning %q", cfg.Backends[0].Health.TLS, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error does not mention %q:\n%v", tt.want, err)
			}
		})
	}
}

func TestHealthTLSCredentialFieldsCarried(t *testing.T) {
	cfg, err := Parse([]byte(withTLS("tls", "talosconfig: /etc/halb/talosconfig", "context: prod", "server_name: cp.example")))
	if err != nil {
		t.Fatal(err)
	}
	want := TLSOptions{Talosconfig: "/etc/halb/talosconfig", Context: "prod", ServerName: "cp.example"}
	if diff := cmp.Diff(want, cfg.Backends[0].Health.TLS); diff != "" {
		t.Errorf("tls options (-want +got):\n%s", diff)
	}
}
