//go:build unix

package state

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Polling bounds for flock waits. flock(2) cannot be interrupted by a
// context, so waits are LOCK_NB attempts separated by a growing interval.
const (
	pollMin = 2 * time.Millisecond
	pollMax = 100 * time.Millisecond
)

// shortLockWait bounds waits for the locks held only around a single write
// (state.json.lock and events.jsonl). A holder that keeps one longer is stuck.
const shortLockWait = 30 * time.Second

// tryFlock takes an exclusive flock on f without blocking. It reports false
// (and no error) when another open file description holds it.
func tryFlock(f *os.File) (bool, error) {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		default:
			return false, &os.PathError{Op: "flock", Path: f.Name(), Err: err}
		}
	}
}

func unflock(f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		return &os.PathError{Op: "flock", Path: f.Name(), Err: err}
	}
	return nil
}

// flockWait takes an exclusive flock on f, trying once and then polling until
// wait has passed or ctx is done. It reports false when the lock was not had
// in time; a done ctx is returned as an error.
func flockWait(ctx context.Context, f *os.File, wait time.Duration) (bool, error) {
	deadline := time.Now().Add(wait)
	interval := pollMin
	for {
		ok, err := tryFlock(f)
		if ok || err != nil {
			return ok, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		t := time.NewTimer(min(interval, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
		interval = min(2*interval, pollMax)
	}
}

// flockShort takes a short-lived lock, bounded by shortLockWait and ctx.
func flockShort(ctx context.Context, f *os.File) error {
	ok, err := flockWait(ctx, f, shortLockWait)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("timed out after " + shortLockWait.String() + " waiting for the lock on " + f.Name())
	}
	return nil
}

// lockRange takes an exclusive open-file-description lock on length bytes
// of records.lock at off (length 0: to the end of the file), waiting up to
// shortLockWait. OFD locks exclude other processes and other open file
// descriptions, not goroutines sharing this one: callers also hold a
// mutex.
func (st *FileStore) lockRange(ctx context.Context, off, length int64) (func(), error) {
	st.recMu.Lock()
	if st.recLock == nil {
		f, err := os.OpenFile(st.path(recordsLock), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			st.recMu.Unlock()
			return nil, fmt.Errorf("state: %w", err)
		}
		st.recLock = f
	}
	f := st.recLock
	st.recMu.Unlock()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: off, Len: length}
	deadline := time.Now().Add(shortLockWait)
	interval := pollMin
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("state: locking %s: %w", f.Name(), err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("state: timed out after %s waiting for the lock on %s", shortLockWait, f.Name())
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		interval = min(2*interval, pollMax)
	}
	return func() {
		un := lk
		un.Type = unix.F_UNLCK
		unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &un)
	}, nil
}
