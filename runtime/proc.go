package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// ErrNotAlive is returned by Stop and Kill when the process they were given
// is not running any more: it has exited, is a zombie, or its PID now belongs
// to another process (the start time differs). Nothing was signalled.
var ErrNotAlive = errors.New("process is not alive")

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
// (their identity still exists until they are reaped); use Alive to ask
// whether the process is running. A PID that does not exist yields an error
// matching fs.ErrNotExist.
func Inspect(pid int) (Proc, error) {
	st, err := readStat(pid)
	if err != nil {
		return Proc{}, err
	}
	return Proc{PID: pid, StartTime: st.StartTime}, nil
}

// Alive reports whether p still runs: its PID exists, is not a zombie, and
// carries p's start time. A reused PID is therefore never reported alive.
func (p Proc) Alive() bool {
	st, err := readStat(p.PID)
	return err == nil && st.StartTime == p.StartTime && !st.zombie()
}

// exists reports whether p's identity still exists, zombie or not.
func (p Proc) exists() (procStat, bool) {
	st, err := readStat(p.PID)
	if err != nil || st.StartTime != p.StartTime {
		return procStat{}, false
	}
	return st, true
}
