//go:build unix

package state

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
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
