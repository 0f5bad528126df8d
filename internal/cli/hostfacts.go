package cli

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// procNetLimit bounds how many lines of one /proc/net table are read: a
// busy proxy host may have hundreds of thousands of connections, and the
// listeners come first (the kernel walks the listening hash first).
const procNetLimit = 1 << 20

// procFDLimit bounds how many descriptor links are read in all when naming
// the processes that hold a socket.
const procFDLimit = 1 << 21

// gatherHostFacts reads what judgeHost needs from this host: the
// interfaces and their addresses, the sockets bound on the ports of ls and
// who holds them, the account userName and the files. proc is where procfs
// is mounted (/proc). It only reads: nothing is bound or sent. What cannot
// be read is an error; a process this user may not look into is not.
func gatherHostFacts(proc string, ls []hostListener, files []hostFile, userName string) (hostFacts, error) {
	f := hostFacts{links: map[string]linkFact{}, files: map[string]fileFact{}}
	var errs []error
	ifs, err := net.Interfaces()
	if err != nil {
		errs = append(errs, fmt.Errorf("list interfaces: %w", err))
	}
	for _, ifc := range ifs {
		f.links[ifc.Name] = linkFact{up: ifc.Flags&net.FlagUp != 0, running: ifc.Flags&net.FlagRunning != 0}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		errs = append(errs, fmt.Errorf("list local addresses: %w", err))
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			f.addrs = append(f.addrs, p)
		}
	}
	f.seesAll = os.Geteuid() == 0
	names := newNameCache()
	if f.sockets, err = boundSockets(proc, ls, names); err != nil {
		errs = append(errs, err)
	}
	if f.account, err = lookupAccount(userName); err != nil {
		errs = append(errs, err)
	}
	for _, hf := range files {
		f.files[hf.path] = examineFile(hf.path, names)
	}
	return f, errors.Join(errs...)
}

// boundSockets lists the listening TCP and bound UDP sockets on the ports
// of ls, with the processes holding them.
func boundSockets(proc string, ls []hostListener, names *nameCache) ([]socketFact, error) {
	ports := map[string]map[uint16]bool{"tcp": {}, "udp": {}}
	for _, l := range ls {
		ports[l.proto][l.at.Port()] = true
	}
	var out []socketFact
	inodes := map[uint64][]int{} // inode → indexes into out
	for _, t := range []struct{ file, proto string }{
		{"tcp", "tcp"}, {"tcp6", "tcp"}, {"udp", "udp"}, {"udp6", "udp"},
	} {
		if len(ports[t.proto]) == 0 {
			continue
		}
		entries, err := readProcNet(filepath.Join(proc, "net", t.file), t.proto)
		if errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(t.file, "6") {
			continue // IPv6 disabled on this host
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !ports[t.proto][e.sock.local.Port()] {
				continue
			}
			e.sock.user = names.user(e.sock.uid)
			inodes[e.inode] = append(inodes[e.inode], len(out))
			out = append(out, e.sock)
		}
	}
	if len(inodes) == 0 {
		return out, nil
	}
	holders := socketHolders(proc, inodes)
	for inode, idx := range inodes {
		for _, i := range idx {
			out[i].procs = holders[inode]
		}
	}
	return out, nil
}

type procNetEntry struct {
	sock  socketFact
	inode uint64
}

// tcpListen is the TCP_LISTEN state in /proc/net/tcp{,6}.
const tcpListen = "0A"

// readProcNet parses a /proc/net/{tcp,udp}{,6} table: every listening TCP
// socket, or every UDP socket, as any of them keeps the port from being
// bound again.
func readProcNet(path, proto string) ([]procNetEntry, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read sockets: %w", err)
	}
	defer func() { _ = file.Close() }()
	var out []procNetEntry
	sc := bufio.NewScanner(file)
	for n := 0; sc.Scan() && n < procNetLimit; n++ {
		fields := strings.Fields(sc.Text())
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
		if n == 0 || len(fields) < 10 {
			continue // the header
		}
		if proto == "tcp" && fields[3] != tcpListen {
			continue
		}
		local, err := parseProcAddr(fields[1])
		if err != nil {
			return nil, fmt.Errorf("read sockets: %s line %d: %w", path, n+1, err)
		}
		uid, err1 := strconv.Atoi(fields[7])
		inode, err2 := strconv.ParseUint(fields[9], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("read sockets: %s line %d: %w", path, n+1, err)
		}
		out = append(out, procNetEntry{sock: socketFact{proto: proto, local: local, uid: uid}, inode: inode})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read sockets: %s: %w", path, err)
	}
	return out, nil
}

// parseProcAddr parses ADDR:PORT as /proc/net prints it: the address as
// 32-bit words in hex, each in host byte order, the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("address %q: no port", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: port: %w", s, err)
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q: not 8 or 32 hex digits", s)
	}
	// Each word was printed as a number: undo the host byte order.
	for w := 0; w < len(raw); w += 4 {
		binary.NativeEndian.PutUint32(raw[w:], binary.BigEndian.Uint32(raw[w:]))
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}

// socketHolders finds the processes that hold the socket inodes, through
// the /proc/PID/fd links ("socket:[INODE]"). Processes this user may not
// look into are skipped: their sockets stay unnamed.
func socketHolders(proc string, inodes map[uint64][]int) map[uint64][]procFact {
	out := map[uint64][]procFact{}
	pids, err := os.ReadDir(proc)
	if err != nil {
		return out
	}
	budget := procFDLimit
	for _, p := range pids {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || budget <= 0 {
			continue
		}
		fdDir := filepath.Join(proc, p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or another user's
		}
		var command string
		for _, fd := range fds {
			if budget--; budget < 0 {
				break
			}
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
			if err != nil {
				continue
			}
			if _, ok := inodes[inode]; !ok {
				continue
			}
			if command == "" {
				command = readComm(proc, p.Name())
			}
			if ps := out[inode]; len(ps) == 0 || ps[len(ps)-1].pid != pid {
				out[inode] = append(ps, procFact{pid: pid, command: command})
			}
		}
	}
	return out
}

// readComm returns a process's command name, "?" when it is gone.
func readComm(proc, pid string) string {
	b, err := os.ReadFile(filepath.Join(proc, pid, "comm"))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// lookupAccount finds the user halb runs as and its groups; nil, nil when
// there is no such user here.
func lookupAccount(name string) (*account, error) {
	u, err := user.Lookup(name)
	if errors.As(err, new(user.UnknownUserError)) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up user %s: %w", name, err)
	}
	a := &account{name: u.Username}
	if a.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("look up user %s: uid %q: %w", name, u.Uid, err)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("look up the groups of user %s: %w", name, err)
	}
	for _, g := range append(gids, u.Gid) {
		if id, err := strconv.Atoi(g); err == nil {
			a.groups = append(a.groups, id)
		}
	}
	if g, err := user.LookupGroupId(u.Gid); err == nil {
		a.group = g.Name
	}
	return a, nil
}

// examineFile stats path, with symbolic links followed, and every
// directory halb passes through to reach it: those of the path as written
// and those of the file it resolves to.
func examineFile(path string, names *nameCache) fileFact {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fileFact{err: err}
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if _, statErr := os.Stat(abs); statErr != nil {
			err = statErr // say "does not exist" or "permission denied" as stat does
		}
		return fileFact{err: err}
	}
	var ff fileFact
	if ff.file, err = statInode(real, names); err != nil {
		return fileFact{err: err}
	}
	seen := map[string]bool{}
	for _, p := range []string{abs, real} {
		for _, d := range parents(p) {
			if seen[d] {
				continue
			}
			seen[d] = true
			// A directory of the written path may be a link: what counts
			// is the directory it leads to, which Stat describes.
			i, err := statInode(d, names)
			if err != nil {
				return fileFact{err: err}
			}
			ff.dirs = append(ff.dirs, i)
		}
	}
	return ff
}

// parents lists the directories above an absolute path, / first.
func parents(path string) []string {
	var ds []string
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		ds = append([]string{d}, ds...)
		if d == filepath.Dir(d) {
			return ds
		}
	}
}

func statInode(path string, names *nameCache) (inodeFact, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return inodeFact{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return inodeFact{}, fmt.Errorf("stat %s: no owner information", path)
	}
	i := inodeFact{path: path, mode: fi.Mode(), uid: int(st.Uid), gid: int(st.Gid)}
	i.owner, i.grp = names.user(i.uid), names.group(i.gid)
	return i, nil
}

// nameCache looks up user and group names once each.
type nameCache struct{ users, groups map[int]string }

func newNameCache() *nameCache {
	return &nameCache{users: map[int]string{}, groups: map[int]string{}}
}

func (c *nameCache) user(uid int) string {
	return cachedName(c.users, uid, func(id string) (string, error) {
		u, err := user.LookupId(id)
		if err != nil {
			return "", err
		}
		return u.Username, nil
	})
}

func (c *nameCache) group(gid int) string {
	return cachedName(c.groups, gid, func(id string) (string, error) {
		g, err := user.LookupGroupId(id)
		if err != nil {
			return "", err
		}
		return g.Name, nil
	})
}

// cachedName looks id up in m, else with lookup; "" when it has no name.
func cachedName(m map[int]string, id int, lookup func(string) (string, error)) string {
	if n, ok := m[id]; ok {
		return n
	}
	n, err := lookup(strconv.Itoa(id))
	if err != nil {
		n = ""
	}
	m[id] = n
	return n
}
