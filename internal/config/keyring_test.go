package config

import (
	"strings"
	"testing"
)

func TestKeyringFile(t *testing.T) {
	cluster := func(lines string) string {
		return minimal + "cluster:\n" + lines + "  nodes:\n    - {name: a, address: 127.0.0.1}\n"
	}
	cfg, err := Parse([]byte(cluster("  key_file: /etc/halb/gossip.key\n  keyring_file: /var/lib/halb/gossip.keyring\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Cluster.KeyringFile; got != "/var/lib/halb/gossip.keyring" {
		t.Fatalf("KeyringFile = %q", got)
	}
	for _, tt := range []struct{ name, lines, want string }{
		{"with insecure gossip", "  insecure_gossip: true\n  keyring_file: /k\n", "cluster.keyring_file (line 13): gossip is insecure"},
		{"same as key_file", "  key_file: /k\n  keyring_file: /k\n", "cluster.keyring_file (line 13): is key_file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(cluster(tt.lines)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to say %q", err, tt.want)
			}
		})
	}
}
