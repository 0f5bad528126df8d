package cli

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"

	"halb/internal/config"
)

func runPasswd(t *testing.T, cmd *cobra.Command, stdin string, args ...string) (stdout string, err error) {
	t.Helper()
	cmd.SilenceUsage, cmd.SilenceErrors = true, true // as under the root command
	var out, errOut bytes.Buffer
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), err
}

// The printed snippet is pasted into a real config: it must load, and its
// hash must check the password at cost 12.
func TestPasswdSnippetLoads(t *testing.T) {
	const password = "correct horse battery staple"
	out, err := runPasswd(t, newPasswdCmd(), password+"\r\n", "--user", "ops")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, password) {
		t.Fatal("output contains the password")
	}
	_, rest, ok := strings.Cut(out, "# in the config, under stats:\n")
	snippet, _, ok2 := strings.Cut(rest, "# or as a line")
	if !ok || !ok2 {
		t.Fatalf("no config snippet in:\n%s", out)
	}
	base, err := os.ReadFile("../../deploy/examples/loopback.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(append(base, []byte("\nstats:\n  bind: 127.0.0.1:9600\n"+snippet)...))
	if err != nil {
		t.Fatalf("config with the snippet: %v\nsnippet:\n%s", err, snippet)
	}
	if cfg.Stats == nil || len(cfg.Stats.Users) != 1 || cfg.Stats.Users[0].Name != "ops" {
		t.Fatalf("stats users %+v", cfg.Stats)
	}
	hash := []byte(cfg.Stats.Users[0].PasswordHash)
	if err := bcrypt.CompareHashAndPassword(hash, []byte(password)); err != nil {
		t.Fatalf("hash does not check the password (trailing CR/LF kept?): %v", err)
	}
	if cost, err := bcrypt.Cost(hash); err != nil || cost != 12 {
		t.Fatalf("cost %d (%v), want 12", cost, err)
	}
	if !strings.Contains(out, "\nops:"+string(hash)+"\n") {
		t.Errorf("no password_file line in:\n%s", out)
	}
}

func TestPasswdLine(t *testing.T) {
	out, err := runPasswd(t, passwdCmd(bcrypt.MinCost), "pw-without-newline", "--line", "-u", "dev")
	if err != nil {
		t.Fatal(err)
	}
	name, hash, ok := strings.Cut(strings.TrimSuffix(out, "\n"), ":")
	if !ok || name != "dev" || strings.Count(out, "\n") != 1 {
		t.Fatalf("output %q, want one name:hash line", out)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("pw-without-newline")); err != nil {
		t.Fatal(err)
	}
}

func TestPasswdRefuses(t *testing.T) {
	tests := []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"no input", "", nil, "no input"},
		{"empty line", "\n", nil, "empty password"},
		{"longer than bcrypt takes", strings.Repeat("x", 73) + "\n", nil, "at most 72"},
		{"name with a colon", "pw\n", []string{"--user", "a:b"}, `user name "a:b"`},
		{"name starting with a dot", "pw\n", []string{"--user", ".a"}, `user name ".a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runPasswd(t, passwdCmd(bcrypt.MinCost), tt.stdin, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if out != "" {
				t.Errorf("printed %q on error", out)
			}
		})
	}
}

// openPTY returns both ends of a new pseudo-terminal.
func openPTY(t *testing.T) (controller, terminal *os.File) {
	t.Helper()
	controller, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { _ = controller.Close() })
	fd := int(controller.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	terminal, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = terminal.Close() })
	return controller, terminal
}

// prompts passes each prompt write on to the test, which types only once
// it is asked, as a person would: echo is off by then.
type prompts chan string

func (p prompts) Write(b []byte) (int, error) {
	p <- string(b)
	return len(b), nil
}

func TestPasswdTerminal(t *testing.T) {
	for _, tt := range []struct {
		name, first, second, want, wantErr string
	}{
		{"typed twice", "s3cret", "s3cret", "s3cret", ""},
		{"typed differently", "s3cret", "s3cre7", "", "the passwords differ"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			controller, terminal := openPTY(t)
			cfd := int(controller.Fd())
			asked := make(prompts, 16)
			type result struct {
				pw  []byte
				err error
			}
			done := make(chan result, 1)
			go func() {
				pw, err := readPassword(terminal, asked)
				done <- result{pw, err}
			}()
			waitPrompt := func(want string) {
				t.Helper()
				for {
					select {
					case got := <-asked:
						if strings.Contains(got, want) {
							return
						}
					case <-time.After(5 * time.Second):
						t.Fatalf("no %q prompt", want)
					}
				}
			}
			waitPrompt("Password: ")
			if _, err := unix.Write(cfd, []byte(tt.first+"\n")); err != nil {
				t.Fatal(err)
			}
			waitPrompt("Again: ")
			if _, err := unix.Write(cfd, []byte(tt.second+"\n")); err != nil {
				t.Fatal(err)
			}
			var res result
			select {
			case res = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("readPassword did not return")
			}
			if tt.wantErr != "" {
				if res.err == nil || !strings.Contains(res.err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", res.err, tt.wantErr)
				}
			} else if res.err != nil || string(res.pw) != tt.want {
				t.Fatalf("read %q, %v; want %q", res.pw, res.err, tt.want)
			}
			tio, err := unix.IoctlGetTermios(int(terminal.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if tio.Lflag&unix.ECHO == 0 {
				t.Error("echo left off after reading")
			}
			// What the terminal showed: the lines were read, so any echo of
			// them is already waiting on the controller side.
			if err := unix.SetNonblock(cfd, true); err != nil {
				t.Fatal(err)
			}
			var shown []byte
			buf := make([]byte, 512)
			for range 64 {
				n, err := unix.Read(cfd, buf)
				if n <= 0 || err != nil {
					break
				}
				shown = append(shown, buf[:n]...)
			}
			if strings.Contains(string(shown), "s3cre") {
				t.Errorf("terminal echoed the password: %q", shown)
			}
		})
	}
}
