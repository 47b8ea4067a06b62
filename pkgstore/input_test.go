package pkgstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// installWithin runs Install bounded by a context and fails the test when
// it has not returned within a second: a regression blocks on a FIFO or
// reads /dev/zero forever, and must fail the test rather than hang it.
func installWithin(t *testing.T, s *Store, source string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.Install(ctx, source, "app", "1.0.0")
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Second):
		t.Fatal("Install still running after a second")
	}
	return nil
}

func mkfifo(t *testing.T, p string) {
	t.Helper()
	os.Remove(p)
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
}

func linkDevZero(t *testing.T, p string) {
	t.Helper()
	os.Remove(p)
	if err := os.Symlink("/dev/zero", p); err != nil {
		t.Fatal(err)
	}
}

// Only regular files are read from a package directory: a FIFO or a link
// to /dev/zero in the place of a tarball or of a digest file is refused
// within a second, as a bad package, with the file named, and nothing is
// installed.
func TestInstallRefusesFilesThatAreNotFiles(t *testing.T) {
	const tarName = "app-1.0.0.tar.gz"
	tests := []struct {
		name string
		file string // the file replaced
		kind string
		make func(t *testing.T, p string)
	}{
		{"tarball fifo", tarName, "a named pipe (FIFO)", mkfifo},
		{"tarball dev-zero", tarName, "a character device", linkDevZero},
		{"sha256 fifo", tarName + ".sha256", "a named pipe (FIFO)", mkfifo},
		{"sha256 dev-zero", tarName + ".sha256", "a character device", linkDevZero},
		{"SHA256SUMS fifo", SumsFile, "a named pipe (FIFO)", mkfifo},
		{"SHA256SUMS dev-zero", SumsFile, "a character device", linkDevZero},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := t.TempDir()
			writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
			if tt.file == SumsFile {
				os.Remove(filepath.Join(src, tarName+".sha256"))
			}
			p := filepath.Join(src, tt.file)
			tt.make(t, p)
			s := openStore(t)
			err := installWithin(t, s, src)
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tt.kind) {
				t.Fatalf("Install: %v, want an error naming %s as %s", err, p, tt.kind)
			}
			if !errors.Is(err, ErrBadPackage) {
				t.Errorf("errors.Is(err, ErrBadPackage) = false for %v", err)
			}
			if vs, _ := s.Installed("app"); len(vs) != 0 {
				t.Errorf("installed %v", vs)
			}
		})
	}
}

// A digest file larger than any digest list is refused without reading it
// whole.
func TestInstallRefusesHugeDigestFile(t *testing.T) {
	src := t.TempDir()
	writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
	p := filepath.Join(src, "app-1.0.0.tar.gz.sha256")
	if err := os.Truncate(p, maxSumsBytes+1); err != nil {
		t.Fatal(err)
	}
	err := installWithin(t, openStore(t), src)
	if err == nil || !strings.Contains(err.Error(), "over the limit of") || !errors.Is(err, ErrBadPackage) {
		t.Fatalf("Install: %v, want a bad package over the limit", err)
	}
}
