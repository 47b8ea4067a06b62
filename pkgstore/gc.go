package pkgstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// GC removes every installed release of name for which keep returns false
// and returns their versions, oldest first. keep is called once per
// installed version, before its lock is taken; the caller decides what
// stays (versions any merchant runs, the last good ones, the desired
// ones), and must not GC a version it is installing or about to start.
//
// Each release is removed under its version's lock, as Remove does: while
// an Install of that version holds the lock, GC waits for it, or returns
// when ctx is done. GC also cleans up what crashed Installs and Removes of
// any version of name left behind (temporary directories, partial
// downloads, digest records without a release), skipping versions whose
// lock is held at that moment. Lock files are kept.
//
// An error removing one release does not stop the others; the errors are
// joined. When ctx is done GC stops and returns what it removed so far.
func (s *Store) GC(ctx context.Context, name string, keep func(version string) bool) (removed []string, err error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if keep == nil {
		return nil, errors.New("pkgstore: GC needs a keep function")
	}
	installed, err := s.Installed(name)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, v := range installed {
		if keep(v) {
			continue
		}
		if err := s.Remove(ctx, name, v); err != nil {
			if ctx.Err() != nil {
				return removed, err
			}
			errs = append(errs, fmt.Errorf("removing %s %s: %w", name, v, err))
			continue
		}
		removed = append(removed, v)
	}
	if err := s.cleanLeftovers(name); err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// cleanLeftovers removes the temporary entries of every version of name
// whose lock is free, and digest records of versions not installed.
func (s *Store) cleanLeftovers(name string) error {
	nameDir := filepath.Join(s.dir, name)
	entries, err := os.ReadDir(nameDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var versions []string
	for _, e := range entries {
		v, ok := staleVersion(e.Name())
		if !ok {
			r, isRecord := strings.CutPrefix(e.Name(), ".")
			v, isRecord = strings.CutSuffix(r, ".sha256")
			if !isRecord || CheckVersion(v) != nil {
				continue
			}
		}
		if !slices.Contains(versions, v) {
			versions = append(versions, v)
		}
	}
	var errs []error
	for _, v := range versions {
		if err := s.cleanVersion(nameDir, name, v); err != nil {
			errs = append(errs, fmt.Errorf("cleaning up after %s %s: %w", name, v, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Store) cleanVersion(nameDir, name, version string) error {
	unlock, ok, err := tryLockFile(s.lockPath(name, version))
	if err != nil || !ok {
		return err // busy: what is there belongs to a running Install
	}
	defer unlock()
	if err := removeStale(nameDir, version); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(nameDir, version)); errors.Is(err, fs.ErrNotExist) {
		if err := os.Remove(s.digestRecord(name, version)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
