package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"steward/internal/safefile"
	"steward/runtime/logshim"
)

// logDir is a log directory read through an os.Root: every name is
// resolved by the root, so no file outside it is ever opened, not even
// through a symbolic link, and only regular files are read.
type logDir struct {
	root *os.Root
	rel  string // the log directory below root
	path string // the log directory's path, for inotify
}

// openLogDir opens dir through a root on its parent, so that dir may
// appear later.
func openLogDir(dir string) (logDir, error) {
	dir = filepath.Clean(dir)
	r, err := os.OpenRoot(filepath.Dir(dir))
	if err != nil {
		return logDir{}, err
	}
	return logDir{root: r, rel: filepath.Base(dir), path: dir}, nil
}

func (d logDir) close() { d.root.Close() }

// name is file's name below the root.
func (d logDir) name(file string) string { return filepath.Join(d.rel, file) }

// open opens a log file of the directory if it is a regular file.
func (d logDir) open(file string) (*os.File, error) {
	f, _, err := safefile.OpenRegularIn(d.root, d.name(file))
	return f, err
}

func (d logDir) stat(file string) (os.FileInfo, error) { return d.root.Stat(d.name(file)) }

// lockRotation takes the directory's rotation lock like
// logshim.LockRotation, through the root.
func (d logDir) lockRotation() (unlock func()) {
	f, err := d.open(logshim.RotateLockFile)
	if err != nil {
		return func() {}
	}
	for unix.Flock(int(f.Fd()), unix.LOCK_SH) == unix.EINTR {
	}
	return sync.OnceFunc(func() { f.Close() })
}

// files returns the names of the directory's log files, oldest first:
// current.log.N, ..., current.log.1, current.log (those that exist).
func (d logDir) files() ([]string, error) {
	dir, err := d.root.Open(d.rel)
	if err != nil {
		return nil, err
	}
	ents, err := dir.ReadDir(-1)
	dir.Close()
	if err != nil {
		return nil, err
	}
	var nums []int
	cur := false
	for _, e := range ents {
		name := e.Name()
		if name == LogFile {
			cur = true
			continue
		}
		if s, ok := strings.CutPrefix(name, LogFile+"."); ok {
			if n, err := strconv.Atoi(s); err == nil && n > 0 {
				nums = append(nums, n)
			}
		}
	}
	slices.Sort(nums)
	var names []string
	for _, n := range slices.Backward(nums) {
		names = append(names, LogFile+"."+strconv.Itoa(n))
	}
	if cur {
		names = append(names, LogFile)
	}
	return names, nil
}

// TailLines returns the last n lines matching re (all lines when re is
// nil; all matching lines when n <= 0) of the log in dir, across
// current.log and its rotated files, oldest first. Lines carry no newline.
// Files are opened through an os.Root on dir's parent, regular files only.
// For a merchant's log, use TailMerchant.
func TailLines(dir string, n int, f LineFilter) ([]string, error) {
	d, err := openLogDir(dir)
	if err != nil {
		return nil, err
	}
	defer d.close()
	return d.tailLines(n, f)
}

func (d logDir) tailLines(n int, f LineFilter) ([]string, error) {
	// List and open while holding off rotation (released before reading).
	unlock := d.lockRotation()
	defer unlock()
	names, err := d.files()
	if err != nil {
		return nil, err
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	// Open newest first: should a rotation come between two opens anyway
	// (no lock file), it shows up as the same file under two names rather
	// than as a missing file.
	var readers []io.Reader
	var seen []os.FileInfo
	for _, name := range slices.Backward(names) {
		f, err := d.open(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		files = append(files, f)
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(seen, func(o os.FileInfo) bool { return os.SameFile(o, fi) }) {
			continue
		}
		seen = append(seen, fi)
		readers = append(readers, f)
	}
	unlock()
	return tail(readers, n, f)
}

// tail returns the last n matching lines of readers, given newest first.
func tail(readers []io.Reader, n int, f LineFilter) ([]string, error) {
	var out []string
	for _, r := range readers {
		need := 0
		if n > 0 {
			need = n - len(out)
			if need <= 0 {
				break
			}
		}
		lines, err := lastLines(r, need, f)
		if err != nil {
			return nil, err
		}
		out = append(lines, out...)
	}
	return out, nil
}

// lastLines returns the last n (all when n <= 0) lines of r that f shows,
// as f shows them. A line longer than maxLine is cut there (see cutLine).
func lastLines(r io.Reader, n int, f LineFilter) ([]string, error) {
	var ring []string
	next := 0
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	cut := false
	for {
		chunk, err := br.ReadSlice('\n')
		end := err == nil || err == io.EOF
		if !cut {
			line = append(line, chunk...)
			if len(line) > maxLine {
				line, cut = line[:maxLine], true
			}
		}
		if end && (len(line) > 0 || cut) {
			if l, ok := f.show(string(bytes.TrimSuffix(line, []byte("\n"))), cut); ok {
				switch {
				case n <= 0 || len(ring) < n:
					ring = append(ring, l)
				default:
					ring[next] = l
					next = (next + 1) % n
				}
			}
			line, cut = line[:0], false
		}
		if err == io.EOF {
			break
		}
		if err != nil && err != bufio.ErrBufferFull {
			return nil, err
		}
	}
	return append(ring[next:], ring[:next]...), nil
}

// Follow writes to w every line matching re (every line when re is nil)
// that is appended to the log in dir from now on, like tail -F: it keeps
// following current.log across rotations and waits for it to appear when
// it does not exist yet. It wakes up on file system events (inotify), with
// a poll once a second as a backstop. It returns ctx.Err() when ctx ends,
// or the first error writing to w.
func Follow(ctx context.Context, dir string, f LineFilter, w io.Writer) error {
	return followDir(ctx, dir, 0, f, w)
}

// TailFollow writes the last n matching lines (all of them when n < 0) and
// then follows like Follow, with no line lost or repeated between the two.
func TailFollow(ctx context.Context, dir string, n int, f LineFilter, w io.Writer) error {
	return followDir(ctx, dir, n, f, w)
}

func followDir(ctx context.Context, dir string, n int, f LineFilter, w io.Writer) error {
	d, err := openLogDir(dir)
	if err != nil {
		return err
	}
	defer d.close()
	return d.follow(ctx, n, f, w)
}

// followBackstop is how often follow looks at the files without an event;
// followPoll is the interval when inotify is unavailable.
const (
	followBackstop = time.Second
	followPoll     = 250 * time.Millisecond
	maxLine        = 1 << 20
)

// follow follows d's log. With tailN == 0 it starts at the current end of
// current.log; otherwise it first writes the last tailN matching lines
// (all when tailN < 0) from the files as they are when it starts.
func (d logDir) follow(ctx context.Context, tailN int, f LineFilter, w io.Writer) error {
	lf, err := newLineFollower(d, tailN, f, w)
	if err != nil {
		return err
	}
	defer lf.close()
	return lf.run(ctx)
}

// newLineFollower positions a follower at the end of current.log, after
// writing the backlog of tailN lines (none when 0, all when negative).
func newLineFollower(d logDir, tailN int, f LineFilter, w io.Writer) (*lineFollower, error) {
	lf := &lineFollower{filter: f, w: w, dir: d}
	// Take stock of the files under the rotation lock, so that they are
	// consistent with each other: current.log is where following starts,
	// the rest are known (old) and only read for the backlog.
	unlock := d.lockRotation()
	defer unlock()
	names, err := d.files()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var readers []io.Reader // newest first
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, name := range slices.Backward(names) {
		f, err := d.open(name)
		if err != nil {
			continue
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			continue
		}
		lf.known = append(lf.known, fi)
		if name == LogFile {
			lf.f, lf.pos = f, fi.Size()
			readers = append(readers, io.NewSectionReader(f, 0, lf.pos))
			continue
		}
		files = append(files, f)
		readers = append(readers, f)
	}
	unlock()
	if tailN != 0 {
		lines, err := tail(readers, max(tailN, 0), lf.filter)
		if err == nil {
			for _, l := range lines {
				if _, err = io.WriteString(lf.w, l+"\n"); err != nil {
					break
				}
			}
		}
		if err != nil {
			lf.close()
			return nil, err
		}
	}
	if lf.f != nil {
		if _, err := lf.f.Seek(lf.pos, io.SeekStart); err != nil {
			lf.close()
			return nil, err
		}
	}
	return lf, nil
}

// run follows until ctx ends or writing fails. It watches the directory
// with inotify (retrying while the directory does not exist yet) and looks
// at the files at least every followBackstop, or every followPoll while
// there is no watch.
func (lf *lineFollower) run(ctx context.Context) error {
	dir := lf.dir.path
	wt, err := fsnotify.NewWatcher()
	if err != nil {
		wt = nil
	} else {
		defer wt.Close()
	}
	watching := false
	var events chan fsnotify.Event
	var errs chan error
	for {
		if !watching && wt != nil && wt.Add(dir) == nil {
			watching, events, errs = true, wt.Events, wt.Errors
		}
		if err := lf.step(); err != nil {
			return err
		}
		interval := followPoll
		if watching {
			interval = followBackstop
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case ev := <-events:
			if ev.Name == dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				watching = false // the directory itself went away
			}
		case <-errs:
		case <-t.C:
		}
		t.Stop()
	}
}

// lineFollower reads lines appended to one path across rotations.
type lineFollower struct {
	filter  LineFilter
	w       io.Writer
	dir     logDir
	f       *os.File
	pos     int64
	partial []byte
	// cut is set while the rest of a line longer than maxLine is dropped.
	cut bool
	buf []byte
	// known are the log files that existed when following started and
	// those read to their end since: when the follower has no file open
	// (none existed yet), it opens the oldest file not among them.
	known []os.FileInfo
}

func (lf *lineFollower) close() {
	if lf.f != nil {
		lf.f.Close()
	}
}

// step reads whatever is new, switching to a new current.log after a
// rotation once the old one is drained. Errors are those of w only; file
// trouble is retried on the next step.
func (lf *lineFollower) step() error {
	for {
		if lf.f == nil && !lf.openFirstNew() {
			return nil // nothing new yet
		}
		if err := lf.drain(); err != nil {
			return err
		}
		mine, err1 := lf.f.Stat()
		cur, err2 := lf.dir.stat(LogFile)
		if err1 == nil && err2 == nil && os.SameFile(mine, cur) {
			if mine.Size() < lf.pos { // truncated in place
				lf.f.Seek(0, io.SeekStart)
				lf.pos, lf.partial = 0, lf.partial[:0]
			}
			return nil
		}
		// Rotated or removed: the writer closed the old file before
		// renaming it, so one more drain reads its last bytes. Then go on
		// with the file that came after it, which need not be current.log
		// yet when several rotations happened since the last step.
		if err := lf.drain(); err != nil {
			return err
		}
		if len(lf.partial) > 0 || lf.cut {
			if err := lf.emit(lf.partial, lf.cut); err != nil {
				return err
			}
			lf.partial, lf.cut = lf.partial[:0], false
		}
		lf.f.Close()
		lf.f = nil
		if err1 == nil {
			lf.known = append(lf.known, mine)
		}
		// Find and open the successor while no rotation shifts the names.
		unlock := lf.dir.lockRotation()
		next := LogFile
		if err1 == nil {
			next = lf.successor(mine)
		}
		f, err := lf.dir.open(next)
		unlock()
		if err != nil {
			return nil // current.log not there (yet); the next step retries
		}
		lf.f, lf.pos = f, 0
	}
}

// openFirstNew opens the oldest log file not known to the follower.
func (lf *lineFollower) openFirstNew() bool {
	defer lf.dir.lockRotation()()
	names, err := lf.dir.files()
	if err != nil {
		return false
	}
	var known []os.FileInfo // those still there; the rest are forgotten
	for _, name := range names {
		fi, err := lf.dir.stat(name)
		if err != nil {
			continue
		}
		if slices.ContainsFunc(lf.known, func(k os.FileInfo) bool { return os.SameFile(k, fi) }) {
			known = append(known, fi)
			continue
		}
		if lf.f != nil {
			continue
		}
		if f, err := lf.dir.open(name); err == nil {
			lf.f, lf.pos = f, 0
		}
	}
	lf.known = known
	return lf.f != nil
}

// successor returns the name of the log file written after the (rotated)
// file mine: current.log.(k-1) when mine is now current.log.k, current.log
// when it is current.log.1. When mine is not among the rotated files any
// more (it was rotated out while this follower lagged behind), every file
// left is newer, and the oldest one is returned.
func (lf *lineFollower) successor(mine os.FileInfo) string {
	name := func(k int) string {
		if k == 0 {
			return LogFile
		}
		return LogFile + "." + strconv.Itoa(k)
	}
	k := 1
	for ; ; k++ {
		fi, err := lf.dir.stat(name(k))
		if err != nil {
			break
		}
		if os.SameFile(fi, mine) {
			return name(k - 1)
		}
	}
	return name(k - 1)
}

// drain reads lf.f to its end and writes the complete lines.
func (lf *lineFollower) drain() error {
	if lf.buf == nil {
		lf.buf = make([]byte, 64<<10)
	}
	for {
		n, err := lf.f.Read(lf.buf)
		lf.pos += int64(n)
		b := lf.buf[:n]
		for len(b) > 0 {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				if !lf.cut {
					lf.partial = append(lf.partial, b...)
					if len(lf.partial) > maxLine {
						// The rest of this line is dropped (cutLine); the
						// part kept is shown when the line ends.
						lf.partial, lf.cut = lf.partial[:maxLine], true
					}
				}
				break
			}
			line := b[:i]
			if lf.cut {
				line = lf.partial
			} else if len(lf.partial) > 0 {
				line = append(lf.partial, line...)
				if len(line) > maxLine {
					line, lf.cut = line[:maxLine], true
				}
			}
			if err := lf.emit(line, lf.cut); err != nil {
				return err
			}
			lf.partial, lf.cut = lf.partial[:0], false
			b = b[i+1:]
		}
		if err != nil || n == 0 {
			return nil // io.EOF, or a read error retried next step
		}
	}
}

func (lf *lineFollower) emit(line []byte, cut bool) error {
	l, ok := lf.filter.show(string(line), cut)
	if !ok {
		return nil
	}
	_, err := io.WriteString(lf.w, l+"\n")
	return err
}

// A LineFilter decides which log lines are shown, and how: it returns the
// line to show and whether to show it. cut says that the line was longer
// than 1 MiB and is its first MiB only (what followed is dropped, and a
// value the line held across the cut is only partly there). A nil
// LineFilter shows every line as it is, a cut one marked as cut.
type LineFilter func(line string, cut bool) (string, bool)

func (f LineFilter) show(line string, cut bool) (string, bool) {
	if f != nil {
		return f(line, cut)
	}
	if cut {
		line += CutMark
	}
	return line, true
}

// CutMark ends a line that was cut (LineFilter).
const CutMark = " [line cut: longer than 1 MiB]"

// Grep is the LineFilter that shows the lines re matches (every line when
// re is nil), as they are.
func Grep(re *regexp.Regexp) LineFilter {
	if re == nil {
		return nil
	}
	return func(line string, cut bool) (string, bool) {
		if cut {
			line += CutMark
		}
		return line, re.MatchString(line)
	}
}
