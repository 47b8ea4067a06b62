package runtime

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errGone means the identity a handle was asked for does not exist any more.
var errGone = errors.New("process identity gone")

// fallbackPoll is how often the /proc fallback looks at a process when no
// pidfd is available (kernels before 5.3, or a seccomp filter refusing it).
const fallbackPoll = 100 * time.Millisecond

// handle is a reference to one verified process. With a pidfd it cannot be
// confused with a later process that reuses the PID; without one, every use
// re-checks the start time first.
type handle struct {
	p  Proc
	st procStat // as read when the handle was opened
	f  *os.File // the pidfd (non-blocking, in the runtime poller) or nil
}

// openHandle opens a pidfd for p.PID and then checks that the PID still
// carries p's start time, so that the pidfd refers to p itself. It returns
// errGone when the kernel says p does not exist (a zombie of p still
// exists), and another error when that could not be found out (/proc could
// not be read): the caller must then neither signal nor count an exit.
func openHandle(p Proc) (*handle, error) {
	h := &handle{p: p}
	fd, err := unix.PidfdOpen(p.PID, unix.PIDFD_NONBLOCK)
	switch {
	case err == nil:
		h.f = os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(p.PID))
	case errors.Is(err, unix.ESRCH):
		return nil, errGone
	default:
		// ENOSYS, EPERM (seccomp), EINVAL: use the /proc fallback.
	}
	st, exists, err := p.lookup()
	if err != nil {
		h.close()
		return nil, fmt.Errorf("%w: cannot confirm the identity of %v: %w", ErrLivenessUnknown, p, err)
	}
	if !exists {
		h.close()
		return nil, errGone
	}
	h.st = st
	return h, nil
}

func (h *handle) close() {
	if h.f != nil {
		h.f.Close()
	}
}

// exited reports, without blocking and without reaping, whether the process
// has exited (it may be a zombie or already reaped): through the pidfd
// when there is one, through /proc otherwise or when polling the pidfd
// fails. An error means it could not be found out.
func (h *handle) exited() (bool, error) {
	var perr error
	if h.f != nil {
		done, err := h.pidfdExited()
		if err == nil {
			return done, nil
		}
		perr = err
	}
	st, exists, err := h.p.lookup()
	if err != nil {
		return false, errors.Join(perr, err)
	}
	return !exists || st.zombie(), nil
}

// pidfdExited polls the pidfd once, without blocking: it is readable once
// the process has exited.
func (h *handle) pidfdExited() (bool, error) {
	rc, err := h.f.SyscallConn()
	if err != nil {
		return false, err
	}
	var done bool
	var perr error
	if err := rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		var n int
		for {
			n, perr = unix.Poll(pfd, 0)
			if perr != unix.EINTR {
				break
			}
		}
		done = perr == nil && n > 0
	}); err != nil {
		return false, err
	}
	return done, perr
}

// waitExited blocks until the process has exited (without reaping it) or
// ctx ends. With a pidfd it waits in the runtime's poller: no thread is
// blocked and nothing polls. It returns nil only once the exit is known;
// when the process cannot be watched (neither the pidfd nor /proc can be
// read) it returns an error wrapping ErrLivenessUnknown.
func (h *handle) waitExited(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var pidfdErr error
	if h.f != nil {
		pidfdErr = h.waitPidfd(ctx)
		if pidfdErr == nil || ctx.Err() != nil {
			return pidfdErr
		}
		// The pidfd could not be polled: fall back to /proc.
	}
	t := time.NewTicker(fallbackPoll)
	defer t.Stop()
	for {
		done, err := h.exited()
		if err != nil {
			return fmt.Errorf("%w: cannot watch %v: %w", ErrLivenessUnknown, h.p, errors.Join(pidfdErr, err))
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (h *handle) waitPidfd(ctx context.Context) error {
	rc, err := h.f.SyscallConn()
	if err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		h.f.SetReadDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { h.f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err = rc.Read(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		return err == nil && n > 0
	})
	h.f.SetReadDeadline(time.Time{})
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// signal sends sig to the process itself (not its group).
func (h *handle) signal(sig syscall.Signal) error {
	if h.f != nil {
		rc, err := h.f.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.PidfdSendSignal(int(fd), sig, nil, 0)
		}); err != nil {
			return err
		}
		if errors.Is(serr, unix.ESRCH) {
			return nil // exited meanwhile
		}
		return serr
	}
	// Without a pidfd, signal by PID only right after confirming the
	// identity, and never when it cannot be confirmed.
	_, exists, err := h.p.lookup()
	if err != nil {
		return fmt.Errorf("%w: not signalled: cannot confirm the identity of %v: %w", ErrLivenessUnknown, h.p, err)
	}
	if !exists {
		return nil
	}
	if err := syscall.Kill(h.p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// leadsGroup reports whether the process led its own process group when the
// handle was opened (true for every process Start creates: Setsid).
func (h *handle) leadsGroup() bool { return h.st.PGRP == h.p.PID }

// signalGroup sends sig to the process group the process leads. It does
// nothing for a process that does not lead its group: signalling another
// group would hit processes that are not ours.
func (h *handle) signalGroup(sig syscall.Signal) error {
	if !h.leadsGroup() {
		return nil
	}
	if err := syscall.Kill(-h.p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// reaped remembers the exit status of children this package has reaped, so
// that a Wait that loses the race against another Wait or a Stop still
// reports the status. Entries expire after reapedTTL.
var reaped = struct {
	sync.Mutex
	m map[Proc]ExitStatus
}{m: map[Proc]ExitStatus{}}

const reapedTTL = time.Hour

// reap collects the exit status of the (exited) process if it is a child
// of this process; otherwise the status is unknown. It must only be called
// once the process has exited.
func (h *handle) reap() ExitStatus {
	reaped.Lock()
	defer reaped.Unlock()
	if es, ok := reaped.m[h.p]; ok {
		return es
	}
	es, ok := h.waitid()
	if !ok {
		return ExitStatus{Time: time.Now()}
	}
	now := es.Time
	for p, old := range reaped.m {
		if now.Sub(old.Time) > reapedTTL {
			delete(reaped.m, p)
		}
	}
	reaped.m[h.p] = es
	return es
}

// waitid reaps the process if it is an exited child of this process.
func (h *handle) waitid() (ExitStatus, bool) {
	if h.f == nil {
		// Without a pidfd, reap by PID only while the PID provably still
		// names our zombie child: a zombie keeps its PID from being reused.
		st, exists, err := h.p.lookup()
		if err != nil || !exists || !st.zombie() || st.PPID != os.Getpid() {
			return ExitStatus{}, false
		}
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(h.p.PID, &ws, syscall.WNOHANG, nil)
		if err != nil || pid != h.p.PID {
			return ExitStatus{}, false
		}
		es := ExitStatus{Known: true, Time: time.Now(), Code: ws.ExitStatus()}
		if ws.Signaled() {
			es.Code, es.Signal = -1, ws.Signal()
		}
		return es, true
	}
	rc, err := h.f.SyscallConn()
	if err != nil {
		return ExitStatus{}, false
	}
	var es ExitStatus
	var ok bool
	rc.Control(func(fd uintptr) { es, ok = waitidPidfd(int(fd)) })
	return es, ok
}

// si_code values of SIGCHLD (include/uapi/asm-generic/siginfo.h).
const (
	cldExited = 1
	cldKilled = 2
	cldDumped = 3
)

// siginfo is large enough for the kernel's siginfo_t (128 bytes).
type siginfo [128]byte

// waitidPidfd calls waitid(P_PIDFD, fd, WEXITED|WNOHANG) and decodes the
// child's exit from the siginfo. unix.Siginfo hides the fields SIGCHLD uses,
// hence the manual decoding: si_signo, si_errno, si_code (int32 each), then
// the union, aligned to the word size, starting with si_pid, si_uid and
// si_status.
func waitidPidfd(fd int) (ExitStatus, bool) {
	var info siginfo
	for {
		_, _, e := unix.Syscall6(unix.SYS_WAITID, unix.P_PIDFD, uintptr(fd),
			uintptr(unsafe.Pointer(&info)), unix.WEXITED|unix.WNOHANG, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return ExitStatus{}, false // ECHILD: not our child, or reaped already
		}
		break
	}
	ne := binary.NativeEndian
	union := 12
	if unsafe.Sizeof(uintptr(0)) == 8 {
		union = 16
	}
	code := int32(ne.Uint32(info[8:]))
	pid := int32(ne.Uint32(info[union:]))
	status := int32(ne.Uint32(info[union+8:]))
	if pid == 0 {
		return ExitStatus{}, false // not exited yet
	}
	es := ExitStatus{Known: true, Time: time.Now()}
	switch code {
	case cldExited:
		es.Code = int(status)
	case cldKilled, cldDumped:
		es.Code, es.Signal = -1, syscall.Signal(status)
	default:
		return ExitStatus{}, false
	}
	return es, true
}
