package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ExitStatus is how a process ended.
type ExitStatus struct {
	// Known is false when the status could not be collected: the process was
	// not a child of this process (an adopted merchant), or someone else
	// reaped it. Code and Signal are then meaningless.
	Known bool `json:"known"`
	// Code is the exit code, or -1 when a signal ended the process.
	Code int `json:"code"`
	// Signal is the signal that ended the process, or 0.
	Signal syscall.Signal `json:"signal,omitempty"`
	// Time is when the exit was observed.
	Time time.Time `json:"time"`
}

// String renders the status the way a person reads it.
func (es ExitStatus) String() string {
	switch {
	case !es.Known:
		return "exited (status unknown)"
	case es.Signal != 0:
		if name := unix.SignalName(es.Signal); name != "" {
			return "killed by " + name
		}
		return "killed by signal " + strconv.Itoa(int(es.Signal))
	default:
		return "exit status " + strconv.Itoa(es.Code)
	}
}

// Wait blocks until p exits or ctx ends (then it returns ctx.Err()).
// It returns an ExitStatus only for an exit it has seen or the kernel
// confirms (see Check's Dead); when p cannot be watched (/proc or the
// pidfd cannot be read, as when steward is out of descriptors) it returns
// an error matching ErrLivenessUnknown instead, and p may well still run.
//
// It waits on a pidfd in the runtime's poller (no busy loop, no blocked
// thread); without pidfd support it looks at /proc every 100ms. If p is a
// child of this process it is reaped, so no zombie stays behind, and its
// exit status is reported; several concurrent Waits (and a Stop) on one
// child all report the same status. For a process that is not a child the
// status is unknown (Known false). A p that no longer exists yields an
// unknown status at once, unless this package reaped it within the hour.
func Wait(ctx context.Context, p Proc) (ExitStatus, error) {
	h, err := openHandle(p)
	if errors.Is(err, errGone) {
		reaped.Lock()
		es, ok := reaped.m[p]
		reaped.Unlock()
		if ok {
			return es, nil
		}
		return ExitStatus{Time: time.Now()}, nil
	}
	if err != nil {
		return ExitStatus{}, err
	}
	defer h.close()
	if err := h.waitExited(ctx); err != nil {
		return ExitStatus{}, err
	}
	return h.reap(), nil
}

// Kill sends SIGKILL at once to p and to the process group p leads, for a
// process that hangs or is stopped (SIGSTOP). It does not wait; use Wait.
// Kill returns ErrNotAlive, signalling nothing, when p's PID no longer
// carries p's start time. For a zombie p only the rest of its group is
// killed.
func Kill(p Proc) error {
	h, err := openHandle(p)
	if errors.Is(err, errGone) {
		return fmt.Errorf("kill %v: %w", p, ErrNotAlive)
	}
	if err != nil {
		return fmt.Errorf("kill %v: %w", p, err)
	}
	defer h.close()
	if !h.st.zombie() {
		if err := h.signal(syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %v: %w", p, err)
		}
	}
	if err := h.signalGroup(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill group of %v: %w", p, err)
	}
	return nil
}

// Stop ends p gracefully: SIGTERM (followed by SIGCONT, so that a stopped
// process can act on it) to p and to the process group it leads, then up to
// grace for p and the rest of its group to exit, then SIGKILL to whatever is
// left. It returns once p has exited (and, if p is a child, has been reaped;
// its status is then available to Wait) and its group is empty, or when ctx
// ends.
//
// Stop verifies p's identity through a pidfd before signalling; when p's PID
// no longer carries p's start time it returns ErrNotAlive and signals
// nothing. When the identity cannot be confirmed (Check would say Unknown:
// /proc cannot be read) it signals nothing either and returns an error
// matching ErrLivenessUnknown; so it does when it can no longer watch p
// after signalling it. Group signals go to -PID only while p leads its
// group.
func Stop(ctx context.Context, p Proc, grace time.Duration) error {
	h, err := openHandle(p)
	if errors.Is(err, errGone) {
		return fmt.Errorf("stop %v: %w", p, ErrNotAlive)
	}
	if err != nil {
		return fmt.Errorf("stop %v: %w", p, err)
	}
	defer h.close()
	deadline := time.Now().Add(grace)

	if !h.st.zombie() {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGCONT} {
			if err := h.signal(sig); err != nil {
				return fmt.Errorf("stop %v: %w", p, err)
			}
			if err := h.signalGroup(sig); err != nil {
				return fmt.Errorf("stop group of %v: %w", p, err)
			}
		}
		gctx, cancel := context.WithDeadline(ctx, deadline)
		err := h.waitExited(gctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("stop %v: %w", p, ctx.Err())
			}
			if errors.Is(err, ErrLivenessUnknown) {
				return fmt.Errorf("stop %v: sent SIGTERM, then: %w", p, err)
			}
			h.signal(syscall.SIGKILL)
			h.signalGroup(syscall.SIGKILL)
			if err := h.waitExited(ctx); err != nil {
				return fmt.Errorf("stop %v: %w", p, err)
			}
		}
	}
	// p has exited. While p is our unreaped child its zombie keeps its PID,
	// and so the group id, from being reused: clean up the group first.
	if h.leadsGroup() {
		if err := drainGroup(ctx, p.PID, deadline); err != nil {
			return fmt.Errorf("stop group of %v: %w", p, err)
		}
	}
	h.reap()
	return nil
}

// groupPoll is how often Stop looks for leftover members of a process group
// after its leader exited (the kernel offers no event for that).
const groupPoll = 20 * time.Millisecond

// drainGroup waits until no live process is in group pgid, sending SIGKILL
// to the group once deadline has passed. When /proc cannot be read it
// keeps looking until the group has been sent SIGKILL, then returns an
// error matching ErrLivenessUnknown.
func drainGroup(ctx context.Context, pgid int, deadline time.Time) error {
	t := time.NewTicker(groupPoll)
	defer t.Stop()
	killed := false
	for {
		members, err := groupMembers(pgid)
		if err == nil && len(members) == 0 {
			return nil
		}
		if err != nil && killed {
			return fmt.Errorf("%w: cannot list process group %d: %w", ErrLivenessUnknown, pgid, err)
		}
		if !killed && !time.Now().Before(deadline) {
			if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return err
			}
			killed = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// groupMembers lists the live (non-zombie) processes of process group pgid.
// Processes that vanish while it looks are left out; an error means /proc
// could not be listed or read.
func groupMembers(pgid int) ([]int, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, n := range names {
		if n == "" || n[0] < '0' || n[0] > '9' || strings.ContainsFunc(n, notDigit) {
			continue
		}
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		switch {
		case err == nil:
			if st.PGRP == pgid && !st.zombie() {
				pids = append(pids, pid)
			}
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH):
			// gone meanwhile
		default:
			return nil, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
	}
	return pids, nil
}

func notDigit(r rune) bool { return r < '0' || r > '9' }
