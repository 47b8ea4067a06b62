package pkgstore

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// installAll installs versions of app from a fresh local source.
func installAll(t *testing.T, s *Store, versions ...string) {
	t.Helper()
	src := t.TempDir()
	for _, v := range versions {
		writePackage(t, src, "app", v, appEntries(goodManifest))
		if _, err := s.Install(testContext(t), src, "app", v); err != nil {
			t.Fatal(err)
		}
	}
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestGC(t *testing.T) {
	ctx := testContext(t)
	s := openStore(t)
	installAll(t, s, "1.0.0", "1.1.0", "1.2.0", "2.0.0", "2.0.0-rc1")
	nameDir := filepath.Join(s.Dir(), "app")
	// Leftovers of crashes: an unpack and a download of kept versions, a
	// digest record being written, a record of a version not installed.
	leftovers := []string{".tmp-1.2.0-999", ".tmp-3.0.0-download", ".2.0.0.sha256.tmp", ".3.0.0.sha256"}
	for _, p := range leftovers {
		if err := os.WriteFile(filepath.Join(nameDir, p), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(nameDir, ".tmp-1.2.0-998", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(nameDir, ".tmp-1.2.0-998", "bin"), 0o555); err != nil {
		t.Fatal(err)
	}
	leftovers = append(leftovers, ".tmp-1.2.0-998")

	var asked []string
	keep := func(v string) bool {
		asked = append(asked, v)
		return v == "1.2.0" || v == "2.0.0"
	}
	removed, err := s.GC(ctx, "app", keep)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"1.0.0", "1.1.0", "2.0.0-rc1"}; !slices.Equal(removed, want) {
		t.Errorf("GC removed %q, want %q", removed, want)
	}
	if want := []string{"1.0.0", "1.1.0", "1.2.0", "2.0.0-rc1", "2.0.0"}; !slices.Equal(asked, want) {
		t.Errorf("keep asked about %q, want %q", asked, want)
	}
	if vs, err := s.Installed("app"); err != nil || !slices.Equal(vs, []string{"1.2.0", "2.0.0"}) {
		t.Errorf("Installed after GC = %q, %v", vs, err)
	}
	for _, v := range []string{"1.2.0", "2.0.0"} {
		if r, err := s.Get("app", v); err != nil || r.SHA256 == "" {
			t.Errorf("kept %s: %+v, %v", v, r, err)
		}
	}
	for _, p := range leftovers {
		if exists(t, filepath.Join(nameDir, p)) {
			t.Errorf("leftover %s still there", p)
		}
	}
	for _, v := range []string{"1.0.0", "1.1.0", "2.0.0-rc1"} {
		if exists(t, s.digestRecord("app", v)) {
			t.Errorf("digest record of removed %s still there", v)
		}
		if !exists(t, s.lockPath("app", v)) {
			t.Errorf("lock file of %s removed; lock files must stay", v)
		}
	}

	// Nothing more to do; an unknown package is not an error.
	if removed, err := s.GC(ctx, "app", keep); err != nil || len(removed) != 0 {
		t.Errorf("second GC = %q, %v", removed, err)
	}
	if removed, err := s.GC(ctx, "other", func(string) bool { return false }); err != nil || len(removed) != 0 {
		t.Errorf("GC of a package never installed = %q, %v", removed, err)
	}
	if _, err := s.GC(ctx, "../app", keep); err == nil {
		t.Error("GC of an invalid name succeeded")
	}
	if _, err := s.GC(ctx, "app", nil); err == nil {
		t.Error("GC without keep succeeded")
	}
}

// GC never removes a release whose lock an Install holds: it waits, until
// its context ends, and removes the release once the lock is free. A
// leftover of a version being installed is left alone.
func TestGCWaitsForInstallLock(t *testing.T) {
	s := openStore(t)
	installAll(t, s, "1.0.0", "2.0.0")
	nameDir := filepath.Join(s.Dir(), "app")
	unlock, err := lockFile(testContext(t), s.lockPath("app", "1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if unlock != nil {
			unlock()
		}
	}()
	// An Install of 3.0.0 in progress, as far as GC can tell.
	unlock3, err := lockFile(testContext(t), s.lockPath("app", "3.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock3()
	download := filepath.Join(nameDir, ".tmp-3.0.0-download")
	if err := os.WriteFile(download, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	keepNone := func(string) bool { return false }

	// With a short deadline GC gives up and 1.0.0 stays.
	ctx, cancel := context.WithTimeout(testContext(t), 100*time.Millisecond)
	removed, err := s.GC(ctx, "app", keepNone)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || len(removed) != 0 {
		t.Errorf("GC while 1.0.0 is locked = %q, %v; want nothing removed and the deadline", removed, err)
	}
	if _, err := s.Get("app", "1.0.0"); err != nil {
		t.Errorf("1.0.0 after the GC gave up: %v", err)
	}

	// Without one it waits for the lock, then removes.
	waiting := make(chan string, 1)
	lockWaitHook = func(p string) {
		select {
		case waiting <- p:
		default:
		}
	}
	t.Cleanup(func() { lockWaitHook = nil })
	type result struct {
		removed []string
		err     error
	}
	done := make(chan result, 1)
	go func() {
		removed, err := s.GC(testContext(t), "app", keepNone)
		done <- result{removed, err}
	}()
	select {
	case p := <-waiting:
		if p != s.lockPath("app", "1.0.0") {
			t.Errorf("GC waits for %s, want 1.0.0's lock", p)
		}
	case r := <-done:
		t.Fatalf("GC returned %q, %v while 1.0.0 was locked", r.removed, r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("GC neither waited for the lock nor returned")
	}
	if _, err := s.Get("app", "1.0.0"); err != nil {
		t.Errorf("1.0.0 while GC waits: %v", err)
	}
	unlock()
	unlock = nil
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("GC did not finish after the lock was released")
	}
	if r.err != nil || !slices.Equal(r.removed, []string{"1.0.0", "2.0.0"}) {
		t.Errorf("GC = %q, %v; want 1.0.0 and 2.0.0 removed", r.removed, r.err)
	}
	if !exists(t, download) {
		t.Error("GC removed the download of an Install holding its lock")
	}
}
