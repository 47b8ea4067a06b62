package pkgstore

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
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

// A tarball over Options.PackageSize is a bad package naming the limit,
// refused before it is read (local) or while it is downloaded (HTTP, see
// TestInstallHTTPErrors).
func TestInstallPackageSize(t *testing.T) {
	src := t.TempDir()
	writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
	p := filepath.Join(src, "app-1.0.0.tar.gz")
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	s := openStoreWith(t, Options{PackageSize: fi.Size() - 1})
	err = installWithin(t, s, src)
	want := p + " is " + strconv.FormatInt(fi.Size(), 10) + " bytes, over the package size limit of " + strconv.FormatInt(fi.Size()-1, 10) + " bytes"
	if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrBadPackage) {
		t.Fatalf("Install: %v, want a bad package containing %q", err, want)
	}
	if err := installWithin(t, openStoreWith(t, Options{PackageSize: fi.Size()}), src); err != nil {
		t.Fatalf("a tarball at the limit: %v", err)
	}
	if got := openStore(t).Options().PackageSize; got != 1<<30 {
		t.Errorf("default package size %d, want 1 GiB", got)
	}
}

// The unpack limits are the store's options.
func TestInstallUnpackLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"files", Options{MaxFiles: 2}, "more than 2 entries in the archive"},
		{"bytes", Options{MaxBytes: 10}, "unpacked size exceeds the limit of 10 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := t.TempDir()
			writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
			err := installWithin(t, openStoreWith(t, tc.opts), src)
			var ue *UnsafeEntryError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Install: %v, want an *UnsafeEntryError containing %q", err, tc.want)
			}
		})
	}
}

// A stage that outlasts Options.Timeout fails with the limit named; it is
// a deadline, not a bad package.
func TestInstallTimeout(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		src := t.TempDir()
		writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
		err := installWithin(t, openStoreWith(t, Options{Timeout: time.Nanosecond}), src)
		want := "checking " + filepath.Join(src, "app-1.0.0.tar.gz") + " took longer than the limit of 1ns"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Install: %v, want %q", err, want)
		}
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrBadPackage) {
			t.Errorf("errors.Is: deadline %v, bad package %v", errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrBadPackage))
		}
	})
	t.Run("http drip", func(t *testing.T) {
		const tarName = "app-1.0.0.tar.gz"
		dir := t.TempDir()
		writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
		ps := newPkgServer(t, dir, true)
		// A server that sends a byte now and then never trips the
		// client's header or request timeouts on its own.
		ps.handle(tarName, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100000")
			for {
				if _, err := w.Write([]byte{0}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
		s := openStoreWith(t, Options{Timeout: 200 * time.Millisecond})
		err := installWithin(t, s, ps.url())
		want := "installing " + tarName + " took longer than the limit of 200ms"
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Install: %v, want %q", err, want)
		}
		assertOnlyLock(t, s)
	})
}

// What follows the end of the archive in the gzip stream counts against
// the unpack limits: a tarball padded with a long run of zeros (a gzip
// bomb) is refused, not decompressed to its end.
func TestUnpackBoundsTheDecompressedStream(t *testing.T) {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	if err := tw.WriteHeader(&tar.Header{Name: "a", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("a"))
	tw.Close()
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(tarBuf.Bytes())
	zeros := make([]byte, 1<<20)
	for range 8 {
		zw.Write(zeros)
	}
	zw.Close()

	lim := limits{MaxFiles: 10, MaxBytes: 1 << 20} // about 2.1 MiB of stream
	err := unpack(context.Background(), bytes.NewReader(gz.Bytes()), t.TempDir(), lim)
	if err == nil || !strings.Contains(err.Error(), "decompresses to more than") || !errors.Is(err, ErrBadPackage) {
		t.Fatalf("unpack: %v, want a bad package beyond the stream limit", err)
	}
	// The same archive is fine when the limits allow that much.
	if err := unpack(context.Background(), bytes.NewReader(gz.Bytes()), t.TempDir(), limits{MaxFiles: 10, MaxBytes: 8 << 20}); err != nil {
		t.Fatalf("within the limits: %v", err)
	}
}

// Unpacking looks at its context between chunks of the decompressed
// stream, so one huge entry (which the compressed input delivers in a few
// reads) does not outlast it.
func TestUnpackCancelledWithinAnEntry(t *testing.T) {
	const size = 32 << 20
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for range size / len(zeros) {
		tw.Write(zeros)
	}
	tw.Close()
	zw.Close()

	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	// Cancel once the first MiB is written: the entry is far from done.
	r := &cancelAfter{r: bytes.NewReader(gz.Bytes()), dir: dir, cancel: cancel}
	err := unpack(ctx, r, dir, limits{MaxBytes: 1 << 30})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("unpack: %v, want context.Canceled", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	// The decompressed stream is read in chunks of 32 KiB; one compressed
	// read inflates to megabytes of zeros.
	if after := fi.Size() - r.at; r.at == 0 || after > 1<<20 {
		t.Errorf("%d of %d bytes written, %d of them after the context ended", fi.Size(), size, after)
	}
}

// cancelAfter calls cancel once the file dir/big holds a MiB, and records
// its size then in at.
type cancelAfter struct {
	r      io.Reader
	dir    string
	cancel func()
	at     int64
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if fi, err := os.Stat(filepath.Join(c.dir, "big")); err == nil && fi.Size() >= 1<<20 && c.at == 0 {
		c.at = fi.Size()
		c.cancel()
	}
	return c.r.Read(p)
}
