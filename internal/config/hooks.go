package config

import (
	"fmt"
	"path/filepath"
	"time"

	"halb/internal/events"
)

// DefaultHookTimeout bounds a hook that sets no timeout; it is killed after.
const DefaultHookTimeout = 10 * time.Second

// DefaultStateFile keeps the operator's admin states (drain, disabled,
// maintenance) across restarts; /var/lib/halb is the unit's StateDirectory.
const DefaultStateFile = "/var/lib/halb/state.json"

// Hook runs Command (an argv, no shell) on each event of the kinds in On,
// with the event's facts in HALB_* environment variables.
type Hook struct {
	On      []events.Kind
	Command []string
	Timeout time.Duration
}

type rawHook struct {
	On      []string `yaml:"on"`
	Command []string `yaml:"command"`
	Timeout string   `yaml:"timeout"`
}

// hooks validates the hooks: list.
func (v *validator) hooks(raws []rawHook) []Hook {
	var out []Hook
	for i, r := range raws {
		p := fmt.Sprintf("hooks[%d]", i)
		h := Hook{Timeout: v.duration(p+".timeout", r.Timeout, DefaultHookTimeout, 10*time.Millisecond)}
		if len(r.On) == 0 {
			v.fail(p+".on", "at least one event is required: one of %v", events.Kinds())
		}
		for j, s := range r.On {
			k, err := events.ParseKind(s)
			if err != nil {
				v.fail(fmt.Sprintf("%s.on[%d]", p, j), "%v", err)
				continue
			}
			h.On = append(h.On, k)
		}
		switch {
		case len(r.Command) == 0 || r.Command[0] == "":
			v.fail(p+".command", "a command is required: a list, program first, e.g. [/usr/local/bin/notify, master] (no shell)")
		case !filepath.IsAbs(r.Command[0]):
			v.fail(p+".command[0]", "%q: use an absolute path; hooks run without a shell or PATH lookup", r.Command[0])
		default:
			h.Command = r.Command
		}
		out = append(out, h)
	}
	return out
}
