package haproxy

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"halb/internal/config"
	"halb/internal/events"
)

// importSeedWith imports the seed haproxy.cfg with keepalived.conf ka
// (named ka.conf) for nodes lb1 and lb2, and checks the output as halb would.
func importSeedWith(t *testing.T, ka string) (*Result, *config.Config) {
	t.Helper()
	k, err := ParseKeepalived([]byte(ka))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(seedPath)
	if err != nil {
		t.Fatal(err)
	}
	nodes := []Node{
		{Name: "lb1", Address: netip.MustParseAddr("192.168.66.151")},
		{Name: "lb2", Address: netip.MustParseAddr("192.168.66.152")},
	}
	res, err := Import(data, Options{Nodes: nodes, Keepalived: k, KeepalivedSource: "ka.conf"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(res.YAML)
	if err != nil {
		t.Fatalf("the imported config fails halb's checks: %v\n%s", err, res.YAML)
	}
	return res, c
}

func TestNotifyScriptsBecomeHooks(t *testing.T) {
	ka := strings.Replace(seedKeepalived, "    nopreempt\n", `    nopreempt
    notify_master "/etc/keepalived/master.sh --vip 192.168.66.160"
    notify_backup /etc/keepalived/backup.sh
    notify_fault /etc/keepalived/fault.sh
    notify_stop /etc/keepalived/stop.sh
    notify /usr/local/bin/keepalived-notify
    notify_master relative.sh
`, 1)
	res, c := importSeedWith(t, ka)
	type hook struct {
		on  events.Kind
		cmd string
	}
	var got []hook
	for _, h := range c.Hooks {
		for _, on := range h.On {
			got = append(got, hook{on, strings.Join(h.Command, " ")})
		}
	}
	want := []hook{
		{events.VIPClaimed, "/etc/keepalived/master.sh --vip 192.168.66.160"},
		{events.VIPReleased, "/etc/keepalived/backup.sh"},
		{events.VIPReleased, "/etc/keepalived/fault.sh"},
		{events.VIPClaimed, "/usr/local/bin/keepalived-notify INSTANCE VI_1 MASTER 150"},
		{events.VIPReleased, "/usr/local/bin/keepalived-notify INSTANCE VI_1 BACKUP 150"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("hooks = %q\nwant %q", got, want)
	}
	var all strings.Builder
	for _, w := range res.Warnings {
		all.WriteString(w.Format("") + "\n")
	}
	for _, w := range []string{
		"confirm: notify_master", "changes behaviour: notify_fault", "changes behaviour: notify_stop",
		`"relative.sh" is not an absolute path`, "INSTANCE VI_1 MASTER|BACKUP 150",
	} {
		if !strings.Contains(all.String(), w) {
			t.Errorf("warnings lack %q:\n%s", w, all.String())
		}
	}
	if strings.Contains(all.String(), "no equivalent") && strings.Contains(all.String(), "notify") {
		t.Errorf("a notify line is still reported as having no equivalent:\n%s", all.String())
	}
	if !strings.Contains(string(res.YAML), `"on": [vip_claimed] # ka.conf:`) {
		t.Errorf("hooks do not cite their keepalived line:\n%s", res.YAML)
	}
}
