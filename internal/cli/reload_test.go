package cli

import "testing"

func TestReloadFailureSaysWhatHappened(t *testing.T) {
	tests := []struct{ msg, want string }{
		{
			"reload refused, nothing changed: frontend api: listen on 127.0.0.1:6443: bind: address already in use",
			"reload refused, nothing changed, halb runs as before:\nfrontend api: listen on 127.0.0.1:6443: bind: address already in use",
		},
		{
			"log changed: that needs a restart",
			"reload refused, nothing changed, halb runs as before:\nlog changed: that needs a restart",
		},
		{
			"config applied, but: frontend api: listen on 127.0.0.1:6443: bind: address already in use",
			"reload applied, but a frontend has no listener (see halb status):\nfrontend api: listen on 127.0.0.1:6443: bind: address already in use",
		},
	}
	for _, tt := range tests {
		if got := reloadFailure(tt.msg); got != tt.want {
			t.Errorf("reloadFailure(%q) =\n%s\nwant\n%s", tt.msg, got, tt.want)
		}
	}
}
