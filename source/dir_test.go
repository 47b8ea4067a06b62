package source

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"steward/spec"
)

// waitTimeout bounds every wait for a notification.
const waitTimeout = 10 * time.Second

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitNotify waits for a notification on ch or fails after waitTimeout.
func waitNotify(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("no notification within %s after %s", waitTimeout, what)
	}
}

// startWatch runs d.Watch until the test ends, returns once the tree is
// watched, and drains the notification of a start with changes.
func startWatch(t *testing.T, d *Dir) <-chan struct{} {
	t.Helper()
	ch := make(chan struct{}, 1)
	ready := make(chan struct{})
	d.watching = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Watch(ctx, ch) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Watch did not return after its context ended")
		}
	})
	select {
	case <-ready:
	case <-time.After(waitTimeout):
		t.Fatal("Watch did not start")
	}
	return ch
}

func load(t *testing.T, s Source) *Snapshot {
	t.Helper()
	snap, err := s.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return snap
}

// contents maps source names to contents.
func contents(s *Snapshot) map[string]string {
	m := map[string]string{}
	for _, src := range s.Sources {
		m[src.Name] = string(src.Bytes)
	}
	return m
}

// loadUntil loads until cond holds, waiting for notifications in between:
// a notification may announce an intermediate state.
func loadUntil(t *testing.T, s Source, ch <-chan struct{}, what string, cond func(*Snapshot) bool) *Snapshot {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("specs never showed %s; last load: %v", what, contents(load(t, s)))
		}
		if snap := load(t, s); cond(snap) {
			return snap
		}
	}
}

func TestDirLoad(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "b.hcl"), "b")
	writeFile(t, filepath.Join(root, "a", "east.hcl"), "east")
	writeFile(t, filepath.Join(root, "a", "notes.txt"), "not a spec")
	writeFile(t, filepath.Join(root, ".hidden", "x.hcl"), "hidden dir")
	writeFile(t, filepath.Join(root, ".y.hcl"), "hidden file")

	snap := load(t, NewDir(root, DirOptions{}))
	var names []string
	for _, s := range snap.Sources {
		names = append(names, s.Name)
	}
	want, err := spec.SpecFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != strings.Join(want, ",") || len(names) != 2 {
		t.Fatalf("names = %v, want %v (as spec.SpecFiles)", names, want)
	}
	if snap.Sources[0].Dir != filepath.Join(root, "a") || string(snap.Sources[0].Bytes) != "east" {
		t.Errorf("first source = %+v", snap.Sources[0])
	}
	if got := spec.ContentRevision(snap.Sources); snap.Revision != got {
		t.Errorf("revision %q, want spec.ContentRevision %q", snap.Revision, got)
	}
	if snap.Commit != nil {
		t.Errorf("a directory snapshot has commit info %+v", snap.Commit)
	}

	if _, err := NewDir(t.TempDir(), DirOptions{}).Load(context.Background()); err == nil || !strings.Contains(err.Error(), "no *.hcl") {
		t.Errorf("empty dir: err = %v, want no spec files", err)
	}
	if _, err := NewDir(filepath.Join(root, "missing"), DirOptions{}).Load(context.Background()); err == nil {
		t.Error("missing dir: no error")
	}
}

func TestDirRevisionFollowsContentNotMtime(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "m.hcl")
	writeFile(t, p, "one")
	d := NewDir(root, DirOptions{})
	r1 := load(t, d).Revision

	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "README.md"), "not a spec")
	if r := load(t, d).Revision; r != r1 {
		t.Errorf("revision changed with mtime alone: %s -> %s", r1, r)
	}
	writeFile(t, p, "two")
	if r := load(t, d).Revision; r == r1 {
		t.Errorf("revision did not change with content: %s", r)
	}
}

func TestDirWatchCreateModifyDelete(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "a.hcl"), "a1")
	d := NewDir(root, DirOptions{Debounce: 20 * time.Millisecond, Rescan: -1})
	load(t, d)
	ch := startWatch(t, d)

	b := filepath.Join(root, "b.hcl")
	writeFile(t, b, "b1")
	loadUntil(t, d, ch, "b.hcl created", func(s *Snapshot) bool { return contents(s)[b] == "b1" })

	writeFile(t, b, "b2")
	loadUntil(t, d, ch, "b.hcl modified", func(s *Snapshot) bool { return contents(s)[b] == "b2" })

	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	loadUntil(t, d, ch, "b.hcl deleted", func(s *Snapshot) bool { _, ok := contents(s)[b]; return !ok })
}

func TestDirWatchAtomicRename(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "m.hcl")
	writeFile(t, p, "old")
	d := NewDir(root, DirOptions{Debounce: 20 * time.Millisecond, Rescan: -1})
	load(t, d)
	ch := startWatch(t, d)

	// What editors and deploy tools do: write a temporary file, rename it
	// over the old one.
	tmp := filepath.Join(root, ".m.hcl.tmp")
	writeFile(t, tmp, "new")
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	loadUntil(t, d, ch, "the renamed file", func(s *Snapshot) bool { return contents(s)[p] == "new" })
}

func TestDirWatchNewSubdirectory(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "a.hcl"), "a")
	d := NewDir(root, DirOptions{Debounce: 20 * time.Millisecond, Rescan: -1})
	load(t, d)
	ch := startWatch(t, d)

	// The file is written right after the directories, likely before the
	// watch on them exists: the check after the directory event reads it.
	p := filepath.Join(root, "west", "eu", "m.hcl")
	writeFile(t, p, "m1")
	loadUntil(t, d, ch, "a spec in a new subdirectory", func(s *Snapshot) bool { return contents(s)[p] == "m1" })

	// The new directories are watched now.
	writeFile(t, p, "m2")
	loadUntil(t, d, ch, "a change in the new subdirectory", func(s *Snapshot) bool { return contents(s)[p] == "m2" })

	if err := os.RemoveAll(filepath.Join(root, "west")); err != nil {
		t.Fatal(err)
	}
	loadUntil(t, d, ch, "the subdirectory removed", func(s *Snapshot) bool { return len(s.Sources) == 1 })
}

func TestDirWatchBurstCoalesces(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "m.hcl")
	writeFile(t, p, "start")
	const debounce = 100 * time.Millisecond
	d := NewDir(root, DirOptions{Debounce: debounce, Rescan: -1})
	load(t, d)
	// The loop below receives at once, so the channel's coalescing hides
	// no notification: each one the watcher sends is counted.
	ch := startWatch(t, d)

	const writes = 100
	for i := range writes {
		writeFile(t, p, strings.Repeat("x", i+1))
	}
	final := strings.Repeat("x", writes)

	count := 0
	quiet := 10 * debounce
	deadline := time.After(waitTimeout)
	for done := false; !done; {
		select {
		case <-ch:
			count++
		case <-time.After(quiet):
			done = true // no notification for ten debounce periods: the burst is over
		case <-deadline:
			t.Fatal("notifications did not stop")
		}
	}
	t.Logf("%d writes gave %d notifications", writes, count)
	if count < 1 || count > 3 {
		t.Errorf("%d writes gave %d notifications, want 1 to 3", writes, count)
	}
	if got := contents(load(t, d))[p]; got != final {
		t.Errorf("after the burst Load has %d bytes, want %d", len(got), len(final))
	}
}

func TestDirRescanBackstop(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "m.hcl")
	writeFile(t, p, "one")
	// No fsnotify at all: only the rescan can see the change.
	d := NewDir(root, DirOptions{PollOnly: true, Rescan: 10 * time.Millisecond})
	load(t, d)
	ch := startWatch(t, d)

	writeFile(t, p, "two")
	loadUntil(t, d, ch, "the rescan", func(s *Snapshot) bool { return contents(s)[p] == "two" })
}

func TestDirWatchNotifiesChangeBeforeStart(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "m.hcl")
	writeFile(t, p, "one")
	d := NewDir(root, DirOptions{Rescan: -1})
	load(t, d)
	writeFile(t, p, "two") // between Load and Watch
	ch := startWatch(t, d)
	waitNotify(t, ch, "a change made before Watch started")
}

// notRegular makes the files a spec directory must refuse to read: a FIFO,
// which blocks a plain open until a writer comes, and a link to /dev/zero,
// which never ends.
var notRegular = []struct {
	name string
	kind string // as the error says it
	make func(t *testing.T, p string)
}{
	{"fifo", "a named pipe (FIFO)", func(t *testing.T, p string) {
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}},
	{"dev-zero", "a character device", func(t *testing.T, p string) {
		if err := os.Symlink("/dev/zero", p); err != nil {
			t.Fatal(err)
		}
	}},
}

// loadWithin runs Load bounded by a context and fails the test when it
// has not returned within a second.
func loadWithin(t *testing.T, s Source) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.Load(ctx)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Second):
		t.Fatal("Load still running after a second")
	}
	return nil
}

func TestDirRefusesFilesThatAreNotFiles(t *testing.T) {
	for _, tc := range notRegular {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, filepath.Join(root, "a.hcl"), "a")
			bad := filepath.Join(root, "sub", "bad.hcl")
			if err := os.MkdirAll(filepath.Dir(bad), 0o755); err != nil {
				t.Fatal(err)
			}
			tc.make(t, bad)
			d := NewDir(root, DirOptions{})
			err := loadWithin(t, d)
			if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), tc.kind) {
				t.Fatalf("Load: %v, want an error naming %s as %s", err, bad, tc.kind)
			}
		})
	}
}

// Watch reads the specs too (to compare revisions): a FIFO or /dev/zero
// appearing under a watched directory is reported through a notification
// and the following Load's error, within a second, and Watch still ends
// with its context.
func TestDirWatchRefusesFilesThatAreNotFiles(t *testing.T) {
	for _, tc := range notRegular {
		for _, when := range []string{"before", "during"} {
			t.Run(tc.name+"/"+when, func(t *testing.T) {
				root := t.TempDir()
				writeFile(t, filepath.Join(root, "a.hcl"), "a")
				bad := filepath.Join(root, "bad.hcl")
				d := NewDir(root, DirOptions{Debounce: 10 * time.Millisecond, Rescan: -1})
				load(t, d)
				if when == "before" {
					tc.make(t, bad)
				}
				ch := startWatch(t, d) // its cleanup fails the test if Watch does not end
				if when == "during" {
					tc.make(t, bad)
				}
				select {
				case <-ch:
				case <-time.After(time.Second):
					t.Fatal("no notification within a second")
				}
				err := loadWithin(t, d)
				if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), tc.kind) {
					t.Fatalf("Load: %v, want an error naming %s as %s", err, bad, tc.kind)
				}
			})
		}
	}
}

func TestDirRefusesLargeFiles(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "big.hcl")
	writeFile(t, p, strings.Repeat("#\n", 600))
	_, err := NewDir(root, DirOptions{MaxFileSize: 1000}).Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), p+" is 1200 bytes, over the limit of 1000 bytes") {
		t.Fatalf("Load: %v, want the file and the limit named", err)
	}
	if _, err := NewDir(root, DirOptions{MaxFileSize: 1200}).Load(context.Background()); err != nil {
		t.Fatalf("a file at the limit: %v", err)
	}
}

func TestDirTotalSizeLimit(t *testing.T) {
	root := t.TempDir()
	for _, n := range []string{"a.hcl", "b.hcl"} {
		if err := os.WriteFile(filepath.Join(root, n), []byte(strings.Repeat("#\n", 5000)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := NewDir(root, DirOptions{MaxTotalSize: 15000}).Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), "spec_total_size") {
		t.Errorf("Load over the total: %v", err)
	}
	if _, err := NewDir(root, DirOptions{MaxTotalSize: 20000}).Load(context.Background()); err != nil {
		t.Errorf("Load within the total: %v", err)
	}
}
