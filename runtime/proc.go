package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"
)

// ErrNotAlive is returned by Stop and Kill when the process they were given
// is not running any more: it has exited, is a zombie, or its PID now belongs
// to another process (the start time differs). Nothing was signalled.
var ErrNotAlive = errors.New("process is not alive")

// ErrLivenessUnknown is matched by the errors of Stop, Kill and Wait that
// come from not being able to find out about the process (what Check
// reports as Unknown): /proc or the pidfd could not be read. Such an error
// never means that the process exited, and nothing was signalled unless
// the process's identity had been confirmed.
var ErrLivenessUnknown = errors.New("process liveness unknown")

// Proc identifies one process robustly against PID reuse: a PID is only ever
// trusted together with the start time the kernel recorded for it.
type Proc struct {
	// PID is the process id.
	PID int `json:"pid"`
	// StartTime is field 22 of /proc/PID/stat: the time the process started,
	// in clock ticks since boot. Two processes that share a PID at different
	// times never share a start time.
	StartTime uint64 `json:"start_time"`
}

// String returns "PID@STARTTIME".
func (p Proc) String() string { return fmt.Sprintf("%d@%d", p.PID, p.StartTime) }

// procStat holds the fields of /proc/PID/stat this package needs.
type procStat struct {
	State     byte   // field 3: R, S, D, Z, T, t, X, ...
	PPID      int    // field 4
	PGRP      int    // field 5
	Session   int    // field 6
	StartTime uint64 // field 22
}

// readStat reads and parses /proc/PID/stat. A missing process yields an
// error that matches fs.ErrNotExist.
func readStat(pid int) (procStat, error) {
	if pid <= 0 {
		return procStat{}, fmt.Errorf("invalid pid %d", pid)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	st, err := parseStat(b)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

// parseStat parses the content of /proc/PID/stat. The second field (comm)
// is in parentheses and may itself contain spaces and parentheses, so the
// remaining fields are found after the last ')' of the line.
func parseStat(b []byte) (procStat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, errors.New("malformed stat line: no (comm)")
	}
	// Fields 3.. follow ") ".
	f := bytes.Fields(b[end+1:])
	// f[0] is field 3, so field N is f[N-3]; field 22 is f[19].
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("malformed stat line: %d fields after comm", len(f))
	}
	if len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("malformed stat line: state %q", f[0])
	}
	var st procStat
	st.State = f[0][0]
	var err error
	if st.PPID, err = strconv.Atoi(string(f[1])); err != nil {
		return procStat{}, fmt.Errorf("malformed ppid: %w", err)
	}
	if st.PGRP, err = strconv.Atoi(string(f[2])); err != nil {
		return procStat{}, fmt.Errorf("malformed pgrp: %w", err)
	}
	if st.Session, err = strconv.Atoi(string(f[3])); err != nil {
		return procStat{}, fmt.Errorf("malformed session: %w", err)
	}
	if st.StartTime, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return procStat{}, fmt.Errorf("malformed starttime: %w", err)
	}
	return st, nil
}

// zombie reports whether the state letter is that of a process that has
// exited but not been reaped (Z) or is being torn down (X, x).
func (st procStat) zombie() bool { return st.State == 'Z' || st.State == 'X' || st.State == 'x' }

// Inspect returns the current identity of pid. It succeeds for zombies too
// (their identity still exists until they are reaped); use Check to ask
// whether the process is running. A PID that does not exist yields an error
// matching fs.ErrNotExist.
func Inspect(pid int) (Proc, error) {
	st, err := readStat(pid)
	if err != nil {
		return Proc{}, err
	}
	return Proc{PID: pid, StartTime: st.StartTime}, nil
}

// Liveness is what Check knows about a process.
type Liveness int

const (
	// Unknown: /proc could not be read (too many open files, permissions,
	// an I/O error), so the process may or may not run. It is the zero
	// value: nothing is ever taken for dead by default.
	Unknown Liveness = iota
	// Alive: the PID exists, carries the process's start time and is not a
	// zombie.
	Alive
	// Dead: the kernel says the process is gone: no process has its PID,
	// the PID carries another start time (it was reused), or it is a
	// zombie.
	Dead
)

func (l Liveness) String() string {
	switch l {
	case Alive:
		return "alive"
	case Dead:
		return "dead"
	}
	return "unknown"
}

// Check says whether p runs. It is Dead only when the kernel says so (see
// Dead; when /proc cannot be read, kill(2) finding no process with the PID
// is enough); any other failure to find out (EMFILE, ENFILE, EACCES, an I/O
// error, a /proc that hides the PID while kill(2) finds it, a PID <= 0) is
// Unknown, returned with the error. Callers that record exits, restart processes or count
// crashes must use Check and treat Unknown as "look again later".
func (p Proc) Check() (Liveness, error) {
	st, exists, err := p.lookup()
	switch {
	case err != nil:
		return Unknown, fmt.Errorf("check %v: %w", p, err)
	case !exists || st.zombie():
		return Dead, nil
	}
	return Alive, nil
}

// Alive reports whether p is known to run: Check says Alive. It is false
// both when p is dead and when that could not be found out (Unknown), so
// it suits a display or a best-effort decision; a caller that would count
// a false result as an exit, or act on it, must use Check instead.
func (p Proc) Alive() bool {
	l, _ := p.Check()
	return l == Alive
}

// lookup reads p's /proc/PID/stat. exists is true when p's identity still
// exists (p runs, or is a zombie), false when the kernel says it does not;
// err is set, and exists meaningless, when that could not be found out.
func (p Proc) lookup() (st procStat, exists bool, err error) {
	if p.PID <= 0 {
		return procStat{}, false, fmt.Errorf("invalid pid %d", p.PID)
	}
	st, err = readStat(p.PID)
	switch {
	case err == nil:
		return st, st.StartTime == p.StartTime, nil
	case errors.Is(err, syscall.ESRCH):
		// The task went away while its stat was read.
		return procStat{}, false, nil
	case errors.Is(err, fs.ErrNotExist):
		// /proc has no such PID. Ask the kernel directly as well, which
		// costs no descriptor: a /proc mounted with hidepid, or not the
		// one of this PID namespace, hides processes that do exist.
		if kerr := syscall.Kill(p.PID, 0); errors.Is(kerr, syscall.ESRCH) {
			return procStat{}, false, nil
		}
		return procStat{}, false, fmt.Errorf("%w, yet kill(2) finds pid %d", err, p.PID)
	}
	// /proc could not be read. kill(2) needs no descriptor and still tells
	// whether any process has the PID.
	if kerr := syscall.Kill(p.PID, 0); errors.Is(kerr, syscall.ESRCH) {
		return procStat{}, false, nil
	}
	return procStat{}, false, err
}
