package fakecp

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The credential files must have the shapes kubectl and talosctl read, so
// a loader tested against them works on a real cluster's files.
func TestPKIFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	nodes := []netip.Addr{netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("192.0.2.12")}
	if err := WritePKI(dir, netip.MustParseAddr("192.0.2.10"), nodes); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}

	type kubeconfig struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Clusters   []struct {
			Name    string `yaml:"name"`
			Cluster struct {
				Server string `yaml:"server"`
				CAData string `yaml:"certificate-authority-data"`
			} `yaml:"cluster"`
		} `yaml:"clusters"`
		Users []struct {
			Name string `yaml:"name"`
			User struct {
				CertData string `yaml:"client-certificate-data"`
				KeyData  string `yaml:"client-key-data"`
				Token    string `yaml:"token"`
			} `yaml:"user"`
		} `yaml:"users"`
		Contexts []struct {
			Name    string `yaml:"name"`
			Context struct {
				Cluster string `yaml:"cluster"`
				User    string `yaml:"user"`
			} `yaml:"context"`
		} `yaml:"contexts"`
		CurrentContext string `yaml:"current-context"`
	}
	for file, wantCN := range map[string]string{Kubeconfig: "admin", HealthKubeconfig: HealthUser, TokenKubeconfig: ""} {
		var kc kubeconfig
		readYAML(t, filepath.Join(dir, file), &kc)
		if kc.APIVersion != "v1" || kc.Kind != "Config" || len(kc.Clusters) != 1 || len(kc.Users) != 1 || len(kc.Contexts) != 1 ||
			kc.Contexts[0].Name != kc.CurrentContext || kc.Contexts[0].Context.User != kc.Users[0].Name ||
			kc.Contexts[0].Context.Cluster != kc.Clusters[0].Name || kc.Clusters[0].Cluster.Server != "https://192.0.2.10:6443" {
			t.Errorf("%s: shape %+v", file, kc)
			continue
		}
		ca := decodeCert(t, file, kc.Clusters[0].Cluster.CAData)
		u := kc.Users[0].User
		if wantCN == "" {
			if tok, _ := os.ReadFile(filepath.Join(dir, TokenFile)); u.Token == "" || u.Token+"\n" != string(tok) {
				t.Errorf("%s: token %q, want the token file's", file, u.Token)
			}
			continue
		}
		leaf := decodeCert(t, file, u.CertData)
		if leaf.Subject.CommonName != wantCN || leaf.CheckSignatureFrom(ca) != nil {
			t.Errorf("%s: client certificate %s not for %s from the cluster CA", file, leaf.Subject, wantCN)
		}
		if _, err := decodePEM(t, file, u.KeyData, "EC PRIVATE KEY"); err != nil {
			t.Errorf("%s: key: %v", file, err)
		}
	}

	for file, wantO := range map[string]string{Talosconfig: "os:admin", HealthTalosconfig: "os:reader"} {
		var tc struct {
			Context  string `yaml:"context"`
			Contexts map[string]struct {
				Endpoints []string `yaml:"endpoints"`
				Nodes     []string `yaml:"nodes"`
				CA        string   `yaml:"ca"`
				Crt       string   `yaml:"crt"`
				Key       string   `yaml:"key"`
			} `yaml:"contexts"`
		}
		readYAML(t, filepath.Join(dir, file), &tc)
		c, ok := tc.Contexts[tc.Context]
		if !ok || len(c.Endpoints) != 1 || c.Endpoints[0] != "192.0.2.10" || len(c.Nodes) != 2 || c.Nodes[1] != "192.0.2.12" {
			t.Errorf("%s: shape %+v", file, tc)
			continue
		}
		ca, leaf := decodeCert(t, file, c.CA), decodeCert(t, file, c.Crt)
		if _, ok := ca.PublicKey.(ed25519.PublicKey); !ok || leaf.CheckSignatureFrom(ca) != nil ||
			len(leaf.Subject.Organization) != 1 || leaf.Subject.Organization[0] != wantO {
			t.Errorf("%s: client certificate %s, want O=%s from an Ed25519 CA", file, leaf.Subject, wantO)
		}
		if _, err := decodePEM(t, file, c.Key, "ED25519 PRIVATE KEY"); err != nil {
			t.Errorf("%s: key: %v", file, err)
		}
	}
	for _, id := range []Identity{KubeAdmin, KubeHealth, TalosAdmin, TalosReader} {
		if _, err := ClientTLS(dir, id); err != nil {
			t.Errorf("ClientTLS(%s): %v", id, err)
		}
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func decodePEM(t *testing.T, file, b64, typ string) (*pem.Block, error) {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(raw)
	if blk == nil || blk.Type != typ {
		t.Errorf("%s: want a PEM %s block, got %v", file, typ, blk)
		return nil, os.ErrInvalid
	}
	return blk, nil
}

func decodeCert(t *testing.T, file, b64 string) *x509.Certificate {
	t.Helper()
	blk, err := decodePEM(t, file, b64, "CERTIFICATE")
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return c
}
