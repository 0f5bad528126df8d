package config

import (
	"strings"
	"testing"
	"time"

	"halb/internal/events"
)

func TestHooks(t *testing.T) {
	doc := minimal + "hooks:\n  - on: [vip_claimed, vip_released]\n    command: [/usr/local/bin/notify, x]\n  - on: [server_down]\n    command: [/bin/true]\n    timeout: 2s\nadmin:\n  state_file: /tmp/s.json\n"
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Hooks) != 2 || cfg.Hooks[0].Timeout != DefaultHookTimeout || cfg.Hooks[1].Timeout != 2*time.Second ||
		cfg.Hooks[0].On[1] != events.VIPReleased || cfg.Hooks[0].Command[1] != "x" {
		t.Fatalf("hooks = %+v", cfg.Hooks)
	}
	if cfg.Admin.StateFile != "/tmp/s.json" {
		t.Fatalf("state file = %q", cfg.Admin.StateFile)
	}
	if d, _ := Parse([]byte(minimal)); d.Admin.StateFile != DefaultStateFile {
		t.Fatalf("default state file = %q", d.Admin.StateFile)
	}
}

func TestHookErrors(t *testing.T) {
	for doc, want := range map[string]string{
		"hooks:\n  - on: [vip_up]\n    command: [/bin/true]\n":              `hooks[0].on[0] (line 12): unknown event "vip_up"`,
		"hooks:\n  - on: [vip_claimed]\n    command: [notify]\n":            `hooks[0].command[0] (line 13): "notify": use an absolute path`,
		"hooks:\n  - command: [/bin/true]\n":                                `hooks[0].on (line 12): at least one event`,
		"hooks:\n  - on: [server_up]\n":                                     `hooks[0].command (line 12): a command is required`,
		"hooks:\n  - {on: [server_up], command: [/bin/true], timeout: x}\n": `hooks[0].timeout (line 12): "x" is not a duration`,
	} {
		_, err := Parse([]byte(minimal + doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", doc, err, want)
		}
	}
}
