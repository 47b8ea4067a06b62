package source

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"steward/internal/safefile"
	"steward/spec"
)

// Defaults of DirOptions.
const (
	DefaultDebounce = 200 * time.Millisecond
	DefaultRescan   = 30 * time.Second
)

// DefaultMaxFileSize is the size limit of one spec file when the options
// set none (DirOptions.MaxFileSize, GitOptions.MaxFileSize).
const DefaultMaxFileSize int64 = 4 << 20

// DirOptions tune a Dir.
type DirOptions struct {
	// Debounce is the quiet time after a file system event before the specs
	// are read again; events inside it restart it, up to maxDebounceWaits
	// times Debounce in all. Zero means DefaultDebounce, negative reads at
	// once on every event.
	Debounce time.Duration
	// Rescan is the period of the backstop rescan, which reads the specs
	// and notifies when their revision changed: fsnotify drops events when
	// its queue overflows, and misses changes made on other machines to a
	// network file system. Zero means DefaultRescan, negative disables it.
	Rescan time.Duration
	// PollOnly turns fsnotify off and relies on the rescan alone, for file
	// systems without change notification.
	PollOnly bool
	// MaxFileSize is the largest spec file read, in bytes; a larger one
	// fails Load with an error naming the file and the limit. Zero means
	// DefaultMaxFileSize.
	MaxFileSize int64
	// MaxTotalSize is the largest size of all spec files together; reading
	// stops with an error beyond it. Zero means no limit here (spec.Load
	// still applies its own).
	MaxTotalSize int64
	Logger       *slog.Logger
}

// maxDebounceWaits bounds how long a continuous stream of events can delay a
// notification, in multiples of Debounce.
const maxDebounceWaits = 10

// Dir is a local directory of spec files.
type Dir struct {
	root string
	opts DirOptions
	log  *slog.Logger

	mu   sync.Mutex
	last string // revision last loaded or announced

	// watching, when set (tests), is called once Watch watches the tree.
	watching func()
}

// NewDir returns the spec directory at path.
func NewDir(path string, opts DirOptions) *Dir {
	if opts.Debounce == 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.Rescan == 0 {
		opts.Rescan = DefaultRescan
	}
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	return &Dir{root: filepath.Clean(path), opts: opts, log: orDiscard(opts.Logger).With("source", path)}
}

// Path is the spec root.
func (d *Dir) Path() string { return d.root }

// Load reads every spec file below the root. A file deleted while it is read
// is left out; one written meanwhile may be read half-written, in which case
// the events of the write bring a notification with the final content.
// Only regular files (or links to them) are read, each up to
// DirOptions.MaxFileSize: a *.hcl name on a FIFO, a device, a socket or a
// directory, or a file over the limit, fails Load with an error naming it.
func (d *Dir) Load(ctx context.Context) (*Snapshot, error) {
	s, err := d.read(ctx)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.last = s.Revision
	d.mu.Unlock()
	return s, nil
}

func (d *Dir) read(ctx context.Context) (*Snapshot, error) {
	paths, err := spec.SpecFiles(d.root)
	if err != nil {
		return nil, fmt.Errorf("read specs: %w", err)
	}
	srcs := make([]spec.Source, 0, len(paths))
	var total int64
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b, err := readSpecFile(ctx, p, p, d.opts.MaxFileSize)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read specs: %w", err)
		}
		if total += int64(len(b)); d.opts.MaxTotalSize > 0 && total > d.opts.MaxTotalSize {
			return nil, fmt.Errorf("read specs: %w", spec.TotalSizeError(total, d.opts.MaxTotalSize))
		}
		srcs = append(srcs, spec.Source{Name: p, Dir: filepath.Dir(p), Bytes: b})
	}
	if len(srcs) == 0 {
		return nil, fmt.Errorf("no *.hcl spec files below %s", d.root)
	}
	return &Snapshot{Revision: spec.ContentRevision(srcs), Sources: srcs}, nil
}

// readSpecFile reads the spec file at path with safefile.ReadRegular,
// naming it shown in errors about the file itself.
func readSpecFile(ctx context.Context, path, shown string, max int64) ([]byte, error) {
	b, err := safefile.ReadRegular(ctx, path, max)
	var nr *safefile.NotRegularError
	var tl *safefile.TooLargeError
	var pe *fs.PathError
	switch {
	case errors.As(err, &nr):
		nr.Path = shown
	case errors.As(err, &tl):
		tl.Path = shown
		return nil, fmt.Errorf("%w, the limit of one spec file: split it into several files", tl)
	case errors.As(err, &pe):
		pe.Path = shown
	}
	return b, err
}

// check reads the specs and notifies when they differ from what was last
// loaded or announced. A read error notifies too: the receiver's Load
// reports it.
func (d *Dir) check(ctx context.Context, ch chan<- struct{}) {
	s, err := d.read(ctx)
	if ctx.Err() != nil {
		return
	}
	rev := ""
	if err != nil {
		d.log.Debug("spec rescan failed", "err", err)
	} else {
		rev = s.Revision
	}
	d.mu.Lock()
	changed := err != nil || rev != d.last
	if changed {
		d.last = rev
	}
	d.mu.Unlock()
	if changed {
		d.log.Debug("specs may have changed", "revision", rev)
		notify(ch)
	}
}

// Watch notifies ch when the specs may have changed until ctx ends. It
// checks once at the start, so a change between the last Load and Watch is
// not lost. When fsnotify cannot be used (inotify limits), it logs a warning
// and relies on the rescan.
func (d *Dir) Watch(ctx context.Context, ch chan<- struct{}) error {
	var events <-chan fsnotify.Event
	var errs <-chan error
	var tw *treeWatcher
	if !d.opts.PollOnly {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			d.log.Warn("cannot watch spec files; relying on the periodic rescan", "err", err, "rescan", d.opts.Rescan)
		} else {
			defer w.Close()
			tw = &treeWatcher{w: w, root: d.root, dirs: map[string]bool{}, log: d.log}
			tw.addTree(d.root)
			events, errs = w.Events, w.Errors
		}
	}
	var rescan <-chan time.Time
	if d.opts.Rescan > 0 {
		t := time.NewTicker(d.opts.Rescan)
		defer t.Stop()
		rescan = t.C
	}
	if d.watching != nil {
		d.watching()
	}
	d.check(ctx, ch)

	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	var pendingSince time.Time // zero when no check is pending
	trigger := func() {
		if d.opts.Debounce < 0 {
			d.check(ctx, ch)
			return
		}
		now := time.Now()
		if pendingSince.IsZero() {
			pendingSince = now
		}
		wait := min(d.opts.Debounce, pendingSince.Add(maxDebounceWaits*d.opts.Debounce).Sub(now))
		debounce.Reset(max(wait, 0))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if tw.handle(ev) {
				trigger()
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// An overflow means lost events; any error may hide a change.
			d.log.Warn("spec watcher error", "err", err)
			trigger()
		case <-debounce.C:
			pendingSince = time.Time{}
			d.check(ctx, ch)
		case <-rescan:
			if tw != nil {
				tw.addTree(d.root) // the root may be back, a subdirectory add may have failed
			}
			d.check(ctx, ch)
		}
	}
}

// treeWatcher keeps an fsnotify watch on every non-hidden directory below
// root.
type treeWatcher struct {
	w    *fsnotify.Watcher
	root string
	dirs map[string]bool
	log  *slog.Logger
}

// addTree watches dir and the directories below it that are not watched yet.
func (t *treeWatcher) addTree(dir string) {
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil // files, and entries gone meanwhile
		}
		if p != t.root && strings.HasPrefix(e.Name(), ".") {
			return filepath.SkipDir
		}
		if t.dirs[p] {
			return nil
		}
		if err := t.w.Add(p); err != nil {
			t.log.Warn("cannot watch spec directory; relying on the periodic rescan", "dir", p, "err", err)
			return nil
		}
		t.dirs[p] = true
		return nil
	})
}

// forget drops the watches of dir and the directories below it.
func (t *treeWatcher) forget(dir string) {
	for p := range t.dirs {
		if p == dir || strings.HasPrefix(p, dir+string(filepath.Separator)) {
			delete(t.dirs, p)
			_ = t.w.Remove(p) // the kernel drops watches of deleted directories itself
		}
	}
}

// handle updates the watches for ev and reports whether ev may change the
// specs: any event on a spec file or on a directory.
func (t *treeWatcher) handle(ev fsnotify.Event) bool {
	name := filepath.Base(ev.Name)
	if strings.HasPrefix(name, ".") && ev.Name != t.root {
		return false
	}
	if t.dirs[ev.Name] {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			t.forget(ev.Name)
		}
		return true
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
			// Files may have been created in it before the watch exists;
			// the check that follows reads them.
			t.addTree(ev.Name)
			return true
		}
	}
	return strings.HasSuffix(name, ".hcl")
}
