package config

import (
	"os"
	"testing"
)

// FuzzParse: no input may crash the parser, and whatever it accepts is a
// usable config.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	for _, p := range []string{"../../deploy/examples/talos.yaml", "../../deploy/examples/loopback.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		if len(cfg.Frontends) == 0 || len(cfg.Backends) == 0 || cfg.Fingerprint == "" {
			t.Fatalf("accepted a config without frontends, backends or fingerprint: %+v", cfg)
		}
	})
}
