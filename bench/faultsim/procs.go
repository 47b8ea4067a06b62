package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proc is one process as /proc showed it.
type proc struct {
	pid, ppid int
	state     byte   // R, S, D, T, t, Z, ...
	start     uint64 // field 22 of /proc/PID/stat: start time in clock ticks since boot
	cwd       string // "" when unreadable (zombies, processes gone meanwhile)
	argv      []string
}

// parseStat reads the fields faultsim needs from the content of
// /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(data []byte) (state byte, ppid int, start uint64, err error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, 0, errors.New("malformed stat: no ')'")
	}
	rest := strings.Fields(string(data[i+1:]))
	// rest[0] is field 3 (state), so field N is rest[N-3].
	if len(rest) < 20 {
		return 0, 0, 0, fmt.Errorf("malformed stat: %d fields after the command", len(rest))
	}
	if len(rest[0]) != 1 {
		return 0, 0, 0, fmt.Errorf("malformed stat: state %q", rest[0])
	}
	ppid, err = strconv.Atoi(rest[1])
	if err != nil {
		return 0, 0, 0, fmt.Errorf("malformed stat: ppid: %w", err)
	}
	start, err = strconv.ParseUint(rest[19], 10, 64)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("malformed stat: start time: %w", err)
	}
	return rest[0][0], ppid, start, nil
}

// inspect reads one process; ok is false when it is gone.
func inspect(pid int) (proc, bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	data, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return proc{}, false
	}
	st, ppid, start, err := parseStat(data)
	if err != nil {
		return proc{}, false
	}
	p := proc{pid: pid, ppid: ppid, state: st, start: start}
	if st != 'Z' {
		p.cwd, _ = os.Readlink(dir + "/cwd")
	}
	if b, err := os.ReadFile(dir + "/cmdline"); err == nil && len(b) > 0 {
		p.argv = strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	}
	return p, true
}

// scanProcs reads every process of the machine.
func scanProcs() []proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]proc, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := inspect(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// procTable caches one scan of /proc for a short while, so that many
// watchers polling at once cost one scan.
type procTable struct {
	mu   sync.Mutex
	at   time.Time
	last []proc
}

func (t *procTable) get(maxAge time.Duration) []proc {
	t.mu.Lock()
	defer t.mu.Unlock()
	if time.Since(t.at) > maxAge {
		t.last = scanProcs()
		t.at = time.Now()
	}
	return t.last
}

// fleetLayout says how faultsim recognises the processes of its fleet.
type fleetLayout struct {
	runRoot string // runtime.root
	shimBin string // the steward-logshim executable
	steward string // the steward executable (also a log shim as "steward __logshim")
}

func (l fleetLayout) workDir(id string) string {
	return filepath.Join(l.runRoot, "merchants", id, "work")
}

func (l fleetLayout) logDir(id string) string {
	return filepath.Join(l.runRoot, "merchants", id, "logs")
}

// merchantOf returns the merchant whose work dir holds p's cwd, or "".
func (l fleetLayout) merchantOf(p proc) string {
	prefix := filepath.Join(l.runRoot, "merchants") + "/"
	if !strings.HasPrefix(p.cwd, prefix) {
		return ""
	}
	parts := strings.Split(strings.TrimPrefix(p.cwd, prefix), "/")
	if len(parts) < 2 || parts[1] != "work" {
		return ""
	}
	return parts[0]
}

// shimOf returns the merchant whose log shim p is, or "": a
// steward-logshim (or "steward __logshim") whose -dir is the merchant's
// log dir.
func (l fleetLayout) shimOf(p proc) string {
	if len(p.argv) < 3 {
		return ""
	}
	args := p.argv[1:]
	switch {
	case p.argv[0] == l.shimBin:
	case p.argv[0] == l.steward && args[0] == "__logshim":
		args = args[1:]
	default:
		return ""
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-dir" {
			prefix := filepath.Join(l.runRoot, "merchants") + "/"
			rest, ok := strings.CutPrefix(args[i+1], prefix)
			if !ok {
				return ""
			}
			id, tail, _ := strings.Cut(rest, "/")
			if tail != "logs" {
				return ""
			}
			return id
		}
	}
	return ""
}

// isServer says whether a merchant's process is the app serving (not a
// one-off command such as a migration, which runs in the same work dir).
func isServer(p proc) bool {
	return len(p.argv) >= 2 && strings.HasPrefix(p.argv[1], "--port=")
}

// fleetProcs is the fleet's processes by merchant, from one scan.
type fleetProcs struct {
	merchants map[string][]proc // every live (non-zombie) process in a merchant's work dir
	shims     map[string][]proc // live log shims by merchant
	all       []proc
}

func (l fleetLayout) classify(ps []proc) fleetProcs {
	out := fleetProcs{merchants: map[string][]proc{}, shims: map[string][]proc{}, all: ps}
	for _, p := range ps {
		if p.state == 'Z' {
			continue
		}
		if id := l.merchantOf(p); id != "" {
			out.merchants[id] = append(out.merchants[id], p)
		} else if id := l.shimOf(p); id != "" {
			out.shims[id] = append(out.shims[id], p)
		}
	}
	return out
}

// server returns the one serving process of merchant id, if exactly one.
func (f fleetProcs) server(id string) (proc, bool) {
	var found []proc
	for _, p := range f.merchants[id] {
		if isServer(p) {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		return proc{}, false
	}
	return found[0], true
}

// signalProc sends sig to p through a pidfd, after checking that the pid
// still carries p's start time: a pid reused by another process is never
// signalled.
func signalProc(p proc, sig syscall.Signal) error {
	fd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", p.pid, err)
	}
	defer unix.Close(fd)
	now, ok := inspect(p.pid)
	if !ok || now.start != p.start {
		return fmt.Errorf("pid %d: %w", p.pid, errGone)
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		return fmt.Errorf("signal %d: %w", p.pid, err)
	}
	return nil
}

var errGone = errors.New("the process is gone (or its pid carries another process)")

// alive says whether p (pid and start time) still runs (zombies do not).
func alive(p proc) bool {
	now, ok := inspect(p.pid)
	return ok && now.start == p.start && now.state != 'Z'
}

// clockTicks is USER_HZ, the unit of start times in /proc/PID/stat; 100 on
// every Linux configuration Go supports.
const clockTicks = 100

// bootTime is the machine's boot time (btime in /proc/stat).
func bootTime() (time.Time, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			return time.Unix(n, 0), nil
		}
	}
	return time.Time{}, errors.New("/proc/stat has no btime")
}

// children are the processes faultsim started through os/exec: os/exec
// waits for them, so the orphan reaper must leave them alone.
var children struct {
	// start is held for reading while a child is started and registered,
	// and for writing while the reaper looks for orphans, so that the
	// reaper never sees a child of faultsim's that is not registered yet.
	start sync.RWMutex
	mu    sync.Mutex
	pids  map[int]bool
}

// startChild starts cmd and registers it as faultsim's own.
func startChild(cmd *exec.Cmd) error {
	children.start.RLock()
	defer children.start.RUnlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	children.mu.Lock()
	if children.pids == nil {
		children.pids = map[int]bool{}
	}
	children.pids[cmd.Process.Pid] = true
	children.mu.Unlock()
	return nil
}

// waitChild waits for a child started by startChild.
func waitChild(cmd *exec.Cmd) error {
	err := cmd.Wait()
	children.mu.Lock()
	delete(children.pids, cmd.Process.Pid)
	children.mu.Unlock()
	return err
}

// runChild runs cmd to its end.
func runChild(cmd *exec.Cmd) error {
	if err := startChild(cmd); err != nil {
		return err
	}
	return waitChild(cmd)
}

// combinedOutput is cmd.CombinedOutput through runChild.
func combinedOutput(cmd *exec.Cmd) ([]byte, error) {
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := runChild(cmd)
	return b.Bytes(), err
}

var reaperOnce sync.Once

// startReaper makes this process a child subreaper (PR_SET_CHILD_SUBREAPER),
// so that merchants and log shims orphaned by a killed daemon end up here,
// as they would with systemd as pid 1, and reaps them from then on: every
// zombie whose parent is this process and that is not one of its own
// children (see startChild).
func startReaper() error {
	var err error
	reaperOnce.Do(func() {
		if err = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return
		}
		go func() {
			for range time.Tick(250 * time.Millisecond) {
				children.start.Lock()
				reapOrphans()
				children.start.Unlock()
			}
		}()
	})
	return err
}

func reapOrphans() {
	me := os.Getpid()
	for _, p := range scanProcs() {
		if p.ppid != me || p.state != 'Z' {
			continue
		}
		children.mu.Lock()
		own := children.pids[p.pid]
		children.mu.Unlock()
		if own {
			continue
		}
		var ws syscall.WaitStatus
		syscall.Wait4(p.pid, &ws, syscall.WNOHANG, nil)
	}
}
