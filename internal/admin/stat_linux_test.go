package admin

import (
	"os"
	"syscall"
	"testing"
)

func statGID(t *testing.T, fi os.FileInfo) int {
	t.Helper()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no unix stat")
	}
	return int(st.Gid)
}
