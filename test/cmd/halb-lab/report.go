package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"

	"github.com/spf13/cobra"

	"halb/test/lab"
	"halb/test/tool"
)

// writeReport writes v as indented JSON to the file out, or to the
// command's standard output for "".
func writeReport(cmd *cobra.Command, out string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	b = append(b, '\n')
	if out == "" {
		_, err = cmd.OutOrStdout().Write(b)
		return err
	}
	return os.WriteFile(out, b, 0o644)
}

// runDemo is what every demo shares: it finds halb, checks for root,
// builds a lab from opts in a throwaway workdir, runs body on it, tears
// the lab down by PID also on failure, keeps the workdir when asked or
// when something failed, and exits 1 unless every step behaved.
func runDemo(cmd *cobra.Command, halbBin, makeTarget string, keep bool, opts lab.Options, body func(context.Context, *demo) error) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find halb-lab binary: %w", err)
	}
	if halbBin == "" {
		halbBin = findHalb(self)
	}
	if halbBin == "" {
		return errors.New("no halb binary: pass --halb PATH")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the demo builds network namespaces and needs root: sudo make %s", makeTarget)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the demo needs the ip command: apt-get install -y iproute2")
	}
	dir, err := os.MkdirTemp("", "halb-"+makeTarget+"-")
	if err != nil {
		return fmt.Errorf("make demo workdir: %w", err)
	}
	// Only the lab's warnings: the demo narrates the rest.
	quiet := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.LabBin, opts.HalbBin, opts.WorkDir, opts.StartHalb = self, halbBin, dir, true
	l := lab.New(opts, quiet)
	d := &demo{l: l, out: cmd.OutOrStdout(), halb: halbBin}
	runErr := body(cmd.Context(), d)
	if err := l.Close(); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("tear down: %w", err))
	}
	if keep || runErr != nil || d.failed > 0 {
		d.say("\nlogs and configs kept in %s", dir)
	} else {
		_ = os.RemoveAll(dir)
	}
	if runErr != nil {
		return runErr
	}
	if d.failed > 0 {
		d.say("\n%d step(s) did not behave as expected", d.failed)
		return tool.ExitError{Code: 1}
	}
	d.say("\nevery step behaved as expected; the lab is gone")
	return nil
}
