package config

// Raw structs mirror the YAML file. Pointers mark optional values so that
// defaults apply only where a key is absent; strings hold durations and
// addresses so parse errors can name the field.

type rawConfig struct {
	Log       *rawLog       `yaml:"log"`
	Timeouts  *rawTimeouts  `yaml:"timeouts"`
	MaxConn   *int          `yaml:"maxconn"`
	Frontends []rawFrontend `yaml:"frontends"`
	Backends  []rawBackend  `yaml:"backends"`
	Cluster   *rawCluster   `yaml:"cluster"`
	VIPs      []rawVIP      `yaml:"vips"`
	Admin     *rawAdmin     `yaml:"admin"`
	Stats     *rawStats     `yaml:"stats"`
	BGP       *rawBGP       `yaml:"bgp"`
	Hooks     []rawHook     `yaml:"hooks"`
}

type rawStats struct {
	Bind         string        `yaml:"bind"`
	Users        []rawStatUser `yaml:"users"`
	PasswordFile string        `yaml:"password_file"`
	Allow        []string      `yaml:"allow"`
	Refresh      string        `yaml:"refresh"`
	MetricsBind  string        `yaml:"metrics_bind"`
	TLS          *rawStatsTLS  `yaml:"tls"`
}

type rawStatsTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type rawStatUser struct {
	Name         string `yaml:"name"`
	PasswordHash string `yaml:"password_hash"`
}

type rawLog struct {
	Format      string `yaml:"format"`
	Level       string `yaml:"level"`
	Connections *bool  `yaml:"connections"`
}

type rawTimeouts struct {
	Connect    string `yaml:"connect"`
	ClientIdle string `yaml:"client_idle"`
	ServerIdle string `yaml:"server_idle"`
	Drain      string `yaml:"drain"`
	KeepAlive  string `yaml:"tcp_keepalive"`
}

type rawFrontend struct {
	Name    string `yaml:"name"`
	Bind    string `yaml:"bind"`
	Backend string `yaml:"backend"`
	MaxConn *int   `yaml:"maxconn"`
}

type rawBackend struct {
	Name        string      `yaml:"name"`
	Balance     string      `yaml:"balance"`
	Retries     *int        `yaml:"retries"`
	CloseOnDown *bool       `yaml:"close_on_down"`
	Panic       *bool       `yaml:"panic_routing"`
	PassiveFall *int        `yaml:"passive_fall"`
	Health      *rawHealth  `yaml:"health"`
	Servers     []rawServer `yaml:"servers"`
}

type rawServer struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
	Weight  *int   `yaml:"weight"`
	Backup  bool   `yaml:"backup"`
}

type rawHealth struct {
	Type         string   `yaml:"type"`
	Path         string   `yaml:"path"`
	ExpectStatus []int    `yaml:"expect_status"`
	Interval     string   `yaml:"interval"`
	Timeout      string   `yaml:"timeout"`
	Fall         *int     `yaml:"fall"`
	Rise         *int     `yaml:"rise"`
	Jitter       *float64 `yaml:"jitter"`
	TLS          *rawTLS  `yaml:"tls"`
}

type rawTLS struct {
	ServerName string `yaml:"server_name"`
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	Verify     bool   `yaml:"verify"`
	// Talos and Kubernetes credential files; see TLSOptions.
	Talosconfig string `yaml:"talosconfig"`
	Kubeconfig  string `yaml:"kubeconfig"`
	Context     string `yaml:"context"`
}

type rawCluster struct {
	Nodes          []rawNode `yaml:"nodes"`
	Port           *int      `yaml:"port"`
	KeyFile        string    `yaml:"key_file"`
	KeyringFile    string    `yaml:"keyring_file"`
	InsecureGossip bool      `yaml:"insecure_gossip"`
	Profile        string    `yaml:"profile"`
	Policy         string    `yaml:"policy"`
	PreemptDelay   string    `yaml:"preempt_delay"`
	Quorum         bool      `yaml:"quorum"`
	Witness        string    `yaml:"witness"`
	JoinTimeout    string    `yaml:"join_timeout"`
	Eligibility    string    `yaml:"eligibility"`
}

type rawNode struct {
	Name      string `yaml:"name"`
	Address   string `yaml:"address"`
	Priority  *int   `yaml:"priority"`
	Interface string `yaml:"interface"`
}

type rawVIP struct {
	Address      string `yaml:"address"`
	Interface    string `yaml:"interface"`
	GARPCount    *int   `yaml:"garp_count"`
	GARPInterval string `yaml:"garp_interval"`
	GARPRefresh  string `yaml:"garp_refresh"`
	Lifetime     string `yaml:"lifetime"`
	// BGP announcement, see bgp.go.
	Announce    string   `yaml:"announce"`
	Communities []string `yaml:"communities"`
	LocalPref   *int64   `yaml:"local_pref"`
	MED         *int64   `yaml:"med"`
	Prefer      string   `yaml:"prefer"`
	// Tickle ACKs on takeover, see tickle.go.
	Tickle       *bool  `yaml:"tickle"`
	TickleRate   *int   `yaml:"tickle_rate"`
	TickleSpread string `yaml:"tickle_spread"`
	// Flow hand-off on planned moves, see tickle.go and docs/handoff.md.
	Handoff *bool `yaml:"handoff"`
}

type rawAdmin struct {
	Socket    string `yaml:"socket"`
	Group     string `yaml:"group"`
	StateFile string `yaml:"state_file"`
}
