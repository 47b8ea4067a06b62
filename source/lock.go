package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lock takes the cache's lock file, shared by every process using the cache
// (a daemon and a CLI run fetching at once would corrupt refs), waiting at
// most the operation timeout.
func (g *Git) lock(ctx context.Context) (unlock func(), err error) {
	if err := os.MkdirAll(g.root, 0o755); err != nil {
		return nil, fmt.Errorf("git cache: %w", err)
	}
	p := filepath.Join(g.root, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("git cache: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("git cache lock %s: %w", p, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("git cache lock %s: held by another process: %w", p, ctx.Err())
		case <-tick.C:
		}
	}
}
