package main

import "testing"

func TestNoticedReadsTheLastVerdict(t *testing.T) {
	for _, tc := range []struct{ name, log, want string }{
		{name: "no verdict", log: "level=INFO msg=\"added VIP\"\n", want: ""},
		{
			name: "the last of two verdicts",
			log: `level=WARN msg="peer stopped beating and its gossip port refuses connections: the process is gone: treating it as down" peer=lb1 silent=20ms noticed="its host answered a heartbeat with port unreachable"
level=WARN msg="peer stopped beating and its gossip port refuses connections: the process is gone: treating it as down" peer=lb1 silent=3ms noticed="its watch connection to this node closed"
level=INFO msg="added VIP"
`,
			want: "its watch connection to this node closed",
		},
		{
			name: "a verdict on the beats' silence",
			log:  `level=WARN msg="peer stopped beating and its host does not answer: treating it as down" peer=lb1 silent=150ms` + "\n",
			want: "its heartbeats stopped",
		},
	} {
		if got := noticed(tc.log); got != tc.want {
			t.Errorf("%s: noticed = %q, want %q", tc.name, got, tc.want)
		}
	}
}
