package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// ErrHolderHidden is returned by PortHolder when a socket listens on the
// port but no process visible to steward holds it (another user's process
// while steward is not root, or another PID namespace).
var ErrHolderHidden = errors.New("port is listened on by a process steward cannot see")

// tcpListen is the st column value of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

// PortHolder returns the process that listens on TCP port (IPv4 or IPv6, any
// local address), found through /proc/net/tcp{,6} and the socket inodes in
// /proc/*/fd. found is false when nobody listens. When several processes
// share the listening socket (a preforking server), the one highest in
// their process tree is returned. When someone listens but cannot be
// identified, found is true, pid is 0 and err is ErrHolderHidden.
func PortHolder(port int) (pid int, found bool, err error) {
	if port <= 0 || port > 65535 {
		return 0, false, fmt.Errorf("invalid port %d", port)
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := listeningInodes(f, port, inodes); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, false, err
		}
	}
	if len(inodes) == 0 {
		return 0, false, nil
	}
	holders := map[int]int{} // pid -> ppid
	d, err := os.Open("/proc")
	if err != nil {
		return 0, true, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return 0, true, err
	}
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid <= 0 {
			continue
		}
		holds, err := holdsSocket(pid, inodes)
		if err != nil {
			return 0, true, err
		}
		if holds {
			st, err := readStat(pid)
			if err != nil {
				continue
			}
			holders[pid] = st.PPID
		}
	}
	if len(holders) == 0 {
		return 0, true, ErrHolderHidden
	}
	var top []int
	for pid, ppid := range holders {
		if _, ok := holders[ppid]; !ok {
			top = append(top, pid)
		}
	}
	if len(top) == 0 { // a cycle cannot happen; be safe anyway
		for pid := range holders {
			top = append(top, pid)
		}
	}
	return slices.Min(top), true, nil
}

// listeningInodes adds the inodes of the sockets in a /proc/net/tcp-format
// file that listen on port.
func listeningInodes(file string, port int, inodes map[string]bool) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[3] != tcpListen || !strings.HasSuffix(fs[1], want) || fs[9] == "0" {
			continue
		}
		inodes[fs[9]] = true
	}
	return sc.Err()
}

// holdsSocket reports whether one of pid's descriptors is one of the
// socket inodes. A process that is gone or not ours to look at holds none;
// any other failure to look (out of descriptors) is an error.
func holdsSocket(pid int, inodes map[string]bool) (bool, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ESRCH) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, n := range names {
		l, err := os.Readlink(dir + "/" + n)
		if err != nil {
			continue
		}
		ino, ok := strings.CutPrefix(l, "socket:[")
		if ok && inodes[strings.TrimSuffix(ino, "]")] {
			return true, nil
		}
	}
	return false, nil
}

// PortFree reports whether TCP port can be bound on all addresses right
// now. It is a quick check, not a reservation: the port may be taken the
// moment after.
func PortFree(port int) bool {
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// PortOwner observes who holds TCP port, for adopting a process whose
// start was never recorded: found is false when the port can be bound (a
// bind test first, which costs a few syscalls; /proc is read only when
// the port is taken). Otherwise p is the holder (see PortHolder) and mine
// reports whether its working directory is workDir (symbolic links
// resolved on both sides), which is how a merchant's own process is
// recognised. When someone listens but cannot be identified (another
// user's process while steward is not root, another network namespace),
// found is true and p is zero. err is set, and nothing else meaningful,
// when /proc could not be read: the port's owner is then unknown, not
// absent.
func PortOwner(port int, workDir string) (p Proc, mine bool, found bool, err error) {
	if PortFree(port) {
		return Proc{}, false, false, nil
	}
	pid, found, err := PortHolder(port)
	switch {
	case errors.Is(err, ErrHolderHidden):
		return Proc{}, false, true, nil
	case err != nil:
		return Proc{}, false, false, fmt.Errorf("owner of port %d: %w", port, err)
	case !found:
		// The listener went away between the bind test and the scan, or
		// the port is bound without listening.
		return Proc{}, false, !PortFree(port), nil
	}
	p, err = Inspect(pid)
	if errors.Is(err, fs.ErrNotExist) {
		return Proc{}, false, !PortFree(port), nil // exited meanwhile
	}
	if err != nil {
		return Proc{}, false, false, fmt.Errorf("owner of port %d: %w", port, err)
	}
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		return p, false, true, nil // not ours to look at, or gone: not mine
	}
	return p, sameDir(cwd, workDir), true, nil
}

// sameDir reports whether the working directory cwd, as /proc shows it
// (absolute, links resolved), is dir.
func sameDir(cwd, dir string) bool {
	if dir == "" {
		return false
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if cwd == filepath.Clean(dir) {
		return true
	}
	real, err := filepath.EvalSymlinks(dir)
	return err == nil && cwd == real
}

// FreePort returns the lowest port of [low, high] that taken does not
// claim (taken may be nil) and that can be bound now, and false when there
// is none. It observes only: the caller decides assignments, and the port
// may be taken the moment after.
func FreePort(low, high int, taken func(int) bool) (int, bool) {
	for port := max(low, 1); port <= min(high, 65535); port++ {
		if (taken == nil || !taken(port)) && PortFree(port) {
			return port, true
		}
	}
	return 0, false
}

// RunsFrom reports whether process p runs an executable below dir (an
// unpacked release): its executable, or the script an interpreter runs
// (its first arguments), lies there. When /proc cannot tell (the process
// is gone, or not ours to look at) it reports true: nothing is done to a
// process on a guess.
func RunsFrom(p Proc, dir string) bool {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	dir = filepath.Clean(dir) + string(filepath.Separator)
	base := "/proc/" + strconv.Itoa(p.PID)
	exe, err := os.Readlink(base + "/exe")
	if err != nil {
		return true
	}
	if strings.HasPrefix(exe, dir) {
		return true
	}
	cmdline, err := os.ReadFile(base + "/cmdline")
	if err != nil {
		return true
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	for _, a := range args[:min(len(args), 3)] {
		if filepath.IsAbs(a) {
			if real, err := filepath.EvalSymlinks(a); err == nil {
				a = real
			}
			if strings.HasPrefix(filepath.Clean(a), dir) {
				return true
			}
		}
	}
	return false
}
