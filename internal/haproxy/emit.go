package haproxy

import (
	"bytes"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The out* structs mirror halb's config file; their yaml tags match
// internal/config's raw structs, so config.Parse reads what they write.
// Unexported fields carry comments and are not marshalled.

type outConfig struct {
	Timeouts  *outTimeouts  `yaml:"timeouts,omitempty"`
	MaxConn   *int          `yaml:"maxconn,omitempty"`
	Frontends []outFrontend `yaml:"frontends"`
	Backends  []outBackend  `yaml:"backends"`
	Cluster   *outCluster   `yaml:"cluster,omitempty"`
	VIPs      []outVIP      `yaml:"vips,omitempty"`
	Hooks     []outHook     `yaml:"hooks,omitempty"`
	Stats     *outStats     `yaml:"stats,omitempty"`

	noCluster bool
}

type outHook struct {
	On      []string `yaml:"on,flow"`
	Command []string `yaml:"command,flow"`

	line int
}

type outStats struct {
	Bind         string       `yaml:"bind"`
	Allow        []string     `yaml:"allow,omitempty,flow"`
	Refresh      string       `yaml:"refresh,omitempty"`
	PasswordFile string       `yaml:"password_file"`
	TLS          *outStatsTLS `yaml:"tls,omitempty"`
}

type outStatsTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type outTimeouts struct {
	Connect    string `yaml:"connect,omitempty"`
	ClientIdle string `yaml:"client_idle,omitempty"`
	ServerIdle string `yaml:"server_idle,omitempty"`
}

type outFrontend struct {
	Name    string `yaml:"name"`
	Bind    string `yaml:"bind"`
	Backend string `yaml:"backend"`
	MaxConn *int   `yaml:"maxconn,omitempty"`

	line int
}

type outBackend struct {
	Name    string      `yaml:"name"`
	Balance string      `yaml:"balance,omitempty"`
	Retries *int        `yaml:"retries,omitempty"`
	Health  *outHealth  `yaml:"health,omitempty"`
	Servers []outServer `yaml:"servers"`

	line       int
	typeNote   string
	healthNote string // a comment above health: why the check looks as it does
	credNote   string // a comment beside the credential file: how to make it
}

type outServer struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
	Weight  *int   `yaml:"weight,omitempty"`
	Backup  bool   `yaml:"backup,omitempty"`
}

type outHealth struct {
	Type         string  `yaml:"type"`
	Path         string  `yaml:"path,omitempty"`
	ExpectStatus []int   `yaml:"expect_status,omitempty,flow"`
	Interval     string  `yaml:"interval,omitempty"`
	Timeout      string  `yaml:"timeout,omitempty"`
	Fall         *int    `yaml:"fall,omitempty"`
	Rise         *int    `yaml:"rise,omitempty"`
	TLS          *outTLS `yaml:"tls,omitempty"`
}

type outTLS struct {
	ServerName  string `yaml:"server_name,omitempty"`
	CAFile      string `yaml:"ca_file,omitempty"`
	Verify      bool   `yaml:"verify,omitempty"`
	Kubeconfig  string `yaml:"kubeconfig,omitempty"`
	Talosconfig string `yaml:"talosconfig,omitempty"`
}

type outCluster struct {
	KeyFile      string    `yaml:"key_file"`
	KeyringFile  string    `yaml:"keyring_file"`
	Policy       string    `yaml:"policy,omitempty"`
	PreemptDelay string    `yaml:"preempt_delay,omitempty"`
	Nodes        []outNode `yaml:"nodes"`

	nodesNote string // a comment above nodes: how priorities were chosen
}

type outNode struct {
	Name     string `yaml:"name"`
	Address  string `yaml:"address"`
	Priority *int   `yaml:"priority,omitempty"`
}

type outVIP struct {
	Address   string `yaml:"address"`
	Interface string `yaml:"interface"`

	addrNote  string // beside address: an assumed prefix length
	ifaceNote string // beside interface: where it came from
}

// render writes the config as commented YAML in the shape of
// deploy/examples.
func (imp *importer) render(out *outConfig) ([]byte, error) {
	var root yaml.Node
	if err := root.Encode(out); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		imp.comment(root.Content[i], root.Content[i+1], out)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}

	var b strings.Builder
	imp.writeHeader(&b, out)
	b.WriteString("\n")
	b.WriteString(spaceTopLevel(buf.String()))
	if out.noCluster {
		b.WriteString("\n# No cluster and no vips: this host proxies but does not hold a VIP.\n")
		b.WriteString("# Import again with --node NAME=ADDRESS for every LB host to add them.\n")
	}
	return []byte(b.String()), nil
}

// comment adds the comments of one top-level key: where each item came
// from and what the operator should know about it.
func (imp *importer) comment(key, val *yaml.Node, out *outConfig) {
	src := commentSafe(imp.opts.Source)
	switch key.Value {
	case "frontends":
		for j, item := range val.Content {
			if j < len(out.Frontends) {
				nameValue(item).LineComment = fmt.Sprintf("%s:%d", src, out.Frontends[j].line)
			}
		}
	case "backends":
		for j, item := range val.Content {
			if j < len(out.Backends) {
				commentBackend(item, out.Backends[j], src)
			}
		}
	case "cluster":
		commentCluster(key, val, out.Cluster)
	case "vips":
		for j, item := range val.Content {
			if j < len(out.VIPs) {
				commentVIP(item, out.VIPs[j])
			}
		}
	case "hooks":
		key.HeadComment = "keepalived's notify scripts, run by halb on its events (argv, no shell)."
		for j, item := range val.Content {
			if v := mapValue(item, "on"); v != nil && j < len(out.Hooks) {
				v.LineComment = fmt.Sprintf("%s:%d", commentSafe(imp.opts.KeepalivedSource), out.Hooks[j].line)
			}
		}
	case "stats":
		key.HeadComment = fmt.Sprintf("HAProxy's stats page (%s:%d), now halb's dashboard, /status.json and /metrics.", src, imp.statsLine)
		if v := mapValue(val, "password_file"); v != nil {
			v.LineComment = fmt.Sprintf("halb passwd --user %s --line >> %s", commentSafe(imp.statsUser), statsUsersFile)
		}
	}
}

// commentCluster says how the cluster section is used and, when the
// priorities were assumed, where from.
func commentCluster(key, val *yaml.Node, c *outCluster) {
	key.HeadComment = "Gossip between the LB hosts. Each host runs: halb run --config FILE --node NAME"
	if k := mapKey(val, "keyring_file"); k != nil {
		k.HeadComment = "Where `halb keys` saves a rotated keyring (the unit's StateDirectory)."
	}
	if k := mapKey(val, "nodes"); k != nil && c.nodesNote != "" {
		k.HeadComment = c.nodesNote
	}
}

// commentBackend notes the backend's source line and, where the importer
// chose the check, why and how to make its credentials.
func commentBackend(item *yaml.Node, b outBackend, src string) {
	nameValue(item).LineComment = fmt.Sprintf("%s:%d", src, b.line)
	if b.typeNote != "" {
		if t := mapValue(mapValue(item, "health"), "type"); t != nil {
			t.LineComment = b.typeNote
		}
	}
	if b.healthNote != "" {
		if k := mapKey(item, "health"); k != nil {
			k.HeadComment = b.healthNote
		}
	}
	if b.credNote != "" {
		tls := mapValue(mapValue(item, "health"), "tls")
		for _, f := range []string{"kubeconfig", "talosconfig"} {
			if v := mapValue(tls, f); v != nil {
				v.LineComment = b.credNote
			}
		}
	}
}

// commentVIP marks what was assumed about a VIP.
func commentVIP(item *yaml.Node, v outVIP) {
	if n := mapValue(item, "address"); n != nil && v.addrNote != "" {
		n.LineComment = v.addrNote
	}
	if n := mapValue(item, "interface"); n != nil && v.ifaceNote != "" {
		n.LineComment = v.ifaceNote
	}
}

// writeHeader writes the comment above the config: where it came from
// and what to do before using it.
func (imp *importer) writeHeader(b *strings.Builder, out *outConfig) {
	fmt.Fprintf(b, "# halb config imported from %s by `halb import haproxy`.\n", commentSafe(imp.opts.Source))
	b.WriteString("# Read the warnings printed with it: HAProxy settings without a halb\n")
	b.WriteString("# equivalent were left out. Then:\n")
	if out.Cluster != nil {
		b.WriteString("#   halb keygen --out /etc/halb/gossip.key   # once, then copy to every LB host\n")
	}
	b.WriteString("#   halb check --config /etc/halb/halb.yaml\n")
	if len(imp.credentials) > 0 {
		b.WriteString("#   halb check --config /etc/halb/halb.yaml --probe   # on each LB host\n")
		b.WriteString("# The Talos control planes authenticate health checks: create on every LB\n")
		b.WriteString("# host, readable by the halb user only (0600), before cutting over:\n")
		for _, c := range imp.credentials {
			fmt.Fprintf(b, "#   %s\n", c)
		}
		b.WriteString("# Step by step: docs/getting-started-talos.md#check-credentials\n")
	}
	if out.Stats != nil {
		b.WriteString("# The stats page's logins (HAProxy's password is never carried over):\n")
		fmt.Fprintf(b, "#   halb passwd --user %s --line >> %s\n", commentSafe(imp.statsUser), statsUsersFile)
	}
	if len(imp.assumedUndefined) > 0 {
		fmt.Fprintf(b, "# .if conditions were evaluated with %s taken as undefined: the\n", commentSafe(strings.Join(imp.assumedUndefined, ", ")))
		b.WriteString("# importer cannot see the LB hosts' environment (see the warnings).\n")
	}
}

// nameValue returns the value node of a mapping's "name" key.
func nameValue(m *yaml.Node) *yaml.Node {
	if v := mapValue(m, "name"); v != nil {
		return v
	}
	return &yaml.Node{}
}

// mapKey returns the key node of a mapping's key, which carries the
// comment above it.
func mapKey(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i]
		}
	}
	return nil
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// spaceTopLevel puts a blank line before each top-level key after the
// first, as a person would write the file.
func spaceTopLevel(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var b strings.Builder
	for i, l := range lines {
		top := l != "" && l[0] != ' ' && l[0] != '-'
		prevComment := i > 0 && strings.HasPrefix(lines[i-1], "#")
		if i > 0 && top && !prevComment {
			b.WriteByte('\n')
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// commentSafe keeps text from the input or the command line from
// breaking out of a YAML comment, or the encoder: line breaks become
// spaces and invalid UTF-8 becomes U+FFFD.
func commentSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}
