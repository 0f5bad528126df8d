package config

import (
	"strings"
	"testing"
)

func TestPassiveFall(t *testing.T) {
	doc := minimal + "    passive_fall: 5\n"
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Backends[0].PassiveFall; got != 5 {
		t.Fatalf("passive_fall %d, want 5", got)
	}
	_, err = Parse([]byte(minimal + "    passive_fall: 0\n"))
	if err == nil || !strings.Contains(err.Error(), "backends[0].passive_fall (line 11): 0: must be 1 or more") {
		t.Fatalf("passive_fall 0: error %v, want one naming backends[0].passive_fall and its line", err)
	}
}
