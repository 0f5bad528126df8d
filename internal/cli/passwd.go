package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
)

// passwdCost is the bcrypt cost of stats passwords: about a quarter
// second per login check on a current CPU, slow enough for guessing.
const passwdCost = 12

// maxPasswordLen is bcrypt's limit; longer input would be cut silently.
const maxPasswordLen = 72

func newPasswdCmd() *cobra.Command { return passwdCmd(passwdCost) }

// passwdCmd hashes at cost; tests that need no cost 12 save time with less.
func passwdCmd(cost int) *cobra.Command {
	var name string
	var line bool
	cmd := &cobra.Command{
		Use:   "passwd [--user NAME]",
		Short: "Hash a stats-page password with bcrypt",
		Long: `Passwd reads a password from standard input and prints its bcrypt hash
(cost 12) with the snippet to paste under stats: in the config, and the
line to add to a stats.password_file instead. On a terminal the password
is not echoed and is asked twice; otherwise the first line of input is used.
The password itself is never printed.`,
		Example: `  halb passwd --user ops
  printf '%s\n' "$PASSWORD" | halb passwd --user ops --line >> /etc/halb/stats-users`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !validUserName(name) {
				return fmt.Errorf("user name %q: use letters, digits, '_', '.', '-' (at most 63, starting with a letter or digit)", name)
			}
			password, err := readPassword(cmd.InOrStdin(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			hash, err := bcrypt.GenerateFromPassword(password, cost)
			if err != nil {
				return fmt.Errorf("hash password: %w", err)
			}
			out := cmd.OutOrStdout()
			if line {
				_, err = fmt.Fprintf(out, "%s:%s\n", name, hash)
				return err
			}
			_, err = fmt.Fprintf(out, `# bcrypt hash for stats user %[1]s:
%[2]s

# in the config, under stats:
  users:
    - name: %[1]s
      password_hash: '%[2]s'

# or as a line of stats.password_file:
%[1]s:%[2]s
`, name, hash)
			return err
		},
	}
	cmd.Flags().StringVarP(&name, "user", "u", "admin", "user name the hash is for")
	cmd.Flags().BoolVar(&line, "line", false, "print only the name:hash line for stats.password_file")
	return cmd
}

// validUserName applies the config's rule for stats.users[].name, so
// the printed snippet loads.
func validUserName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, c := range s {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("_.-", c)) {
			return false
		}
	}
	return true
}

// readPassword reads the password from in: from a terminal twice without
// echo, prompting on prompt; from anything else, the first line.
func readPassword(in io.Reader, prompt io.Writer) ([]byte, error) {
	if f, ok := in.(*os.File); ok {
		if tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			return readTerminal(f, *tio, prompt)
		}
	}
	pw, err := readLine(bufio.NewReader(in))
	if err != nil {
		return nil, err
	}
	return pw, checkPassword(pw)
}

func readTerminal(f *os.File, tio unix.Termios, prompt io.Writer) ([]byte, error) {
	fd := int(f.Fd())
	quiet := tio
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, fmt.Errorf("turn off echo: %w", err)
	}
	defer func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, &tio) }() // best effort: nothing else to do
	r := bufio.NewReader(f)
	ask := func(text string) ([]byte, error) {
		_, _ = fmt.Fprint(prompt, text) // a lost prompt does not stop reading
		pw, err := readLine(r)
		_, _ = fmt.Fprintln(prompt) // the user's Enter was not echoed
		return pw, err
	}
	pw, err := ask("Password: ")
	if err != nil {
		return nil, err
	}
	if err := checkPassword(pw); err != nil {
		return nil, err
	}
	again, err := ask("Again: ")
	if err != nil {
		return nil, err
	}
	if string(again) != string(pw) {
		return nil, errors.New("the passwords differ")
	}
	return pw, nil
}

// readLine reads up to a newline, which it drops with any \r; input that
// ends without a newline counts as a line.
func readLine(r *bufio.Reader) ([]byte, error) {
	s, err := r.ReadString('\n')
	switch {
	case errors.Is(err, io.EOF) && s == "":
		return nil, errors.New("read password: no input")
	case err != nil && !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("read password: %w", err)
	}
	return []byte(strings.TrimRight(s, "\r\n")), nil
}

func checkPassword(pw []byte) error {
	switch {
	case len(pw) == 0:
		return errors.New("empty password")
	case len(pw) > maxPasswordLen:
		return fmt.Errorf("password is %d bytes; bcrypt uses at most %d", len(pw), maxPasswordLen)
	}
	return nil
}
