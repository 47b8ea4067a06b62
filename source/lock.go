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
	if err := privateDirs(g.root); err != nil {
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

// privateDirs makes root and the cache directory above it (the state's
// "git") private to steward's user: their checkouts hold the specs,
// secrets included, and merchants run as other users. The directory above
// the cache (the state directory) is made private too when this creates
// it; its own parents are ordinary directories, as the state store makes
// them. Directories an older steward made readable are closed.
func privateDirs(root string) error {
	cache := filepath.Dir(root)
	stateDir := filepath.Dir(cache)
	if err := os.MkdirAll(filepath.Dir(stateDir), 0o755); err != nil {
		return err
	}
	for _, d := range []string{stateDir, cache, root} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	for _, d := range []string{cache, root} {
		if err := os.Chmod(d, 0o700); err != nil {
			return err
		}
	}
	return nil
}
