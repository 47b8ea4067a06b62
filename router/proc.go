package router

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// proc identifies a process robustly against PID reuse: a PID is only
// trusted together with the start time the kernel recorded for it.
type proc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start_time"` // field 22 of /proc/PID/stat
}

// pstat is what this package reads from /proc/PID/stat.
type pstat struct {
	state   byte
	ppid    int
	session int
	start   uint64
}

func readStat(pid int) (pstat, error) {
	if pid <= 0 {
		return pstat{}, fmt.Errorf("invalid pid %d", pid)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return pstat{}, err
	}
	return parseStat(b)
}

// parseStat parses /proc/PID/stat. The command (field 2) is in parentheses
// and may contain anything, so the other fields are read after its last ')'.
func parseStat(b []byte) (pstat, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return pstat{}, errors.New("malformed /proc stat line")
	}
	f := bytes.Fields(b[end+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return pstat{}, errors.New("malformed /proc stat line")
	}
	var st pstat
	var err1, err2, err3 error
	st.state = f[0][0]
	st.ppid, err1 = strconv.Atoi(string(f[1]))
	st.session, err2 = strconv.Atoi(string(f[3]))
	st.start, err3 = strconv.ParseUint(string(f[19]), 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return pstat{}, fmt.Errorf("malformed /proc stat line: %w", err)
	}
	return st, nil
}

func (st pstat) zombie() bool { return st.state == 'Z' || st.state == 'X' || st.state == 'x' }

// inspect returns pid's identity; ok is false when it does not exist or is
// a zombie.
func inspect(pid int) (proc, pstat, bool) {
	st, err := readStat(pid)
	if err != nil || st.zombie() {
		return proc{}, pstat{}, false
	}
	return proc{PID: pid, Start: st.start}, st, true
}

// alive reports whether p still runs: its PID exists, is no zombie and has
// p's start time.
func (p proc) alive() bool {
	if p.PID <= 0 {
		return false
	}
	q, _, ok := inspect(p.PID)
	return ok && q.Start == p.Start
}

// signal sends sig to p if p is still alive.
func (p proc) signal(sig syscall.Signal) error {
	if !p.alive() {
		return errProcGone
	}
	return syscall.Kill(p.PID, sig)
}

var errProcGone = errors.New("process is gone")

// exe returns the executable of pid, without the " (deleted)" the kernel
// appends when the file was replaced (a package upgrade) after the start.
func exe(pid int) (string, error) {
	s, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return strings.TrimSuffix(s, " (deleted)"), err
}

// cmdline returns pid's command line, arguments joined by spaces. nginx
// rewrites it to its process title ("nginx: worker process").
func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
}

// procs calls fn for every running (non-zombie) process.
func procs(fn func(p proc, st pstat)) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, st, ok := inspect(pid); ok {
			fn(p, st)
		}
	}
}

// workers returns the nginx processes of master's session other than the
// master itself: its workers, including those of earlier configurations
// that are shutting down, and those left behind when the master was
// killed. A process only counts when its title is nginx's, it started
// after the master and it runs bin (when bin is set and its executable can
// be read), so a reused session id is never taken for nginx.
func workers(master proc, bin string) []proc {
	var out []proc
	procs(func(p proc, st pstat) {
		if st.session != master.PID || p.PID == master.PID || p.Start < master.Start {
			return
		}
		if bin != "" {
			if e, err := exe(p.PID); err == nil && e != bin {
				return
			}
		}
		if strings.HasPrefix(cmdline(p.PID), "nginx: ") {
			out = append(out, p)
		}
	})
	return out
}

// shuttingDown reports whether worker p runs a replaced configuration:
// nginx retitles a worker "worker process is shutting down" right before
// it closes its listening sockets, so such a worker takes no new
// connection. A process that is gone counts too.
func shuttingDown(p proc) bool {
	return !p.alive() || strings.HasSuffix(cmdline(p.PID), "is shutting down")
}
