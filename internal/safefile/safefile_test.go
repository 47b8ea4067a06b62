package safefile

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testCtx bounds a test so that a regression that blocks fails it instead
// of hanging the run.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// within runs f and fails the test if it takes longer than a second.
func within(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("still blocked after a second")
	}
}

func TestRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.hcl")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.hcl")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir.hcl")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock.hcl")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	for _, tc := range []struct {
		path, kind string
	}{
		{fifo, "a named pipe (FIFO)"},
		{zero, "a character device"},
		{sub, "a directory"},
		{sock, "a socket"},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			var err error
			within(t, func() { _, err = ReadRegular(testCtx(t), tc.path, 1<<20) })
			var nr *NotRegularError
			if !errors.As(err, &nr) || !errors.Is(err, ErrNotRegular) {
				t.Fatalf("ReadRegular: %v, want a *NotRegularError", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.path) || !strings.Contains(msg, tc.kind) {
				t.Errorf("error %q does not name the path and %q", msg, tc.kind)
			}
			within(t, func() { _, _, err = OpenRegular(tc.path) })
			if !errors.Is(err, ErrNotRegular) {
				t.Errorf("OpenRegular: %v, want ErrNotRegular", err)
			}
		})
	}
}

func TestOpenRegular(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.hcl")
	if err := os.WriteFile(p, []byte("x = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, fi, err := OpenRegular(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi.Size() != 6 || !fi.Mode().IsRegular() {
		t.Errorf("info: size %d mode %v", fi.Size(), fi.Mode())
	}
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_NONBLOCK != 0 {
		t.Error("the file is left in non-blocking mode")
	}
	fdFlags, _ := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	if fdFlags&unix.FD_CLOEXEC == 0 {
		t.Error("the file is not close-on-exec")
	}

	if _, _, err := OpenRegular(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestReadRegular(t *testing.T) {
	dir := t.TempDir()
	content := strings.Repeat("0123456789", 20000) // 200 000 bytes: several chunks
	p := filepath.Join(dir, "big.hcl")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.hcl")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.hcl")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		path string
		max  int64
		want string
		err  string // in the error; "" for success
	}{
		{"whole file", p, 1 << 20, content, ""},
		{"exactly at the limit", p, int64(len(content)), content, ""},
		{"through a symlink", link, 1 << 20, content, ""},
		{"empty", empty, 0, "", ""},
		{"one over the limit", p, int64(len(content)) - 1, "", p + " is 200000 bytes, over the limit of 199999 bytes"},
		// /proc files say they are empty: the limit holds on what is read.
		{"grows past the limit", "/proc/self/maps", 10, "", "/proc/self/maps grew beyond the limit of 10 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadRegular(testCtx(t), tc.path, tc.max)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrTooLarge) {
					t.Fatalf("error %v, want ErrTooLarge containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("read %d bytes, want %d", len(got), len(tc.want))
			}
		})
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ReadRegular(ctx, p, 1<<20); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
	if _, err := ReadRegular(testCtx(t), p, -1); err == nil {
		t.Error("a negative limit is accepted")
	}
}

// A context that ends in the middle of a read ends it at the next chunk.
func TestReaderStopsAtContextEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &Reader{Ctx: ctx, R: f}
	buf := make([]byte, 4096)
	if _, err := r.Read(buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	if n, err := r.Read(buf); n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %d bytes, %v", n, err)
	}
}

func TestOpenRegularIn(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "log"), []byte("line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Symlink("/etc/passwd", filepath.Join(dir, "out"))
	os.Symlink("log", filepath.Join(dir, "in"))
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()

	for _, name := range []string{"log", "in"} {
		f, fi, err := OpenRegularIn(root, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		flags, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
		if fi.Size() != 5 || flags&unix.O_NONBLOCK != 0 {
			t.Errorf("%s: size %d, flags %#x", name, fi.Size(), flags)
		}
		f.Close()
	}
	var err2 error
	within(t, func() { _, _, err2 = OpenRegularIn(root, "fifo") })
	if !errors.Is(err2, ErrNotRegular) || !strings.Contains(err2.Error(), filepath.Join(dir, "fifo")) {
		t.Errorf("fifo: %v", err2)
	}
	if _, _, err := OpenRegularIn(root, "out"); err == nil {
		t.Error("a link out of the root was followed")
	}
	if _, _, err := OpenRegularIn(root, "../x"); err == nil {
		t.Error("a name out of the root was opened")
	}
}
