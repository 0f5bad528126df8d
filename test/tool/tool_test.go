package tool

import (
	"bytes"
	"errors"
	"testing"

	"github.com/spf13/cobra"
)

func TestMainExitStatus(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		code    int
		wantErr string
	}{
		{"success", nil, 0, ""},
		{"failure", errors.New("lab up: no root"), 1, "halb-x: lab up: no root\n"},
		{"own status", ExitError{Code: 3}, 3, ""},
		{"wrapped status", errors.Join(errors.New("x"), ExitError{Code: 2}), 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := &cobra.Command{Use: "halb-x"}
			root.AddCommand(&cobra.Command{Use: "go", RunE: func(*cobra.Command, []string) error { return tt.err }})
			var out, errOut bytes.Buffer
			if code := Main(root, []string{"go"}, &out, &errOut); code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if errOut.String() != tt.wantErr {
				t.Errorf("stderr %q, want %q", errOut.String(), tt.wantErr)
			}
		})
	}
	root := &cobra.Command{Use: "halb-x"}
	root.AddCommand(&cobra.Command{Use: "go", Run: func(*cobra.Command, []string) {}})
	var out, errOut bytes.Buffer
	if code := Main(root, []string{"nope"}, &out, &errOut); code != 1 || !bytes.Contains(errOut.Bytes(), []byte(`unknown command "nope"`)) {
		t.Errorf("unknown subcommand: exit %d, stderr %q", code, errOut.String())
	}
}
