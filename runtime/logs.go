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
	"time"

	"github.com/fsnotify/fsnotify"
)

// logFiles returns the paths of dir's log files, oldest first:
// current.log.N, ..., current.log.1, current.log (those that exist).
func logFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
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
	var paths []string
	for _, n := range slices.Backward(nums) {
		paths = append(paths, filepath.Join(dir, LogFile+"."+strconv.Itoa(n)))
	}
	if cur {
		paths = append(paths, filepath.Join(dir, LogFile))
	}
	return paths, nil
}

// TailLines returns the last n lines matching re (all lines when re is
// nil; all matching lines when n <= 0) of the log in dir, across
// current.log and its rotated files, oldest first. Lines carry no newline.
func TailLines(dir string, n int, re *regexp.Regexp) ([]string, error) {
	paths, err := logFiles(dir)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	// Open newest first, so that a rotation between two opens shows up as
	// the same file under two names rather than as a missing file.
	var readers []io.Reader
	var seen []os.FileInfo
	for _, p := range slices.Backward(paths) {
		f, err := os.Open(p)
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
	return tail(readers, n, re)
}

// tail returns the last n matching lines of readers, given newest first.
func tail(readers []io.Reader, n int, re *regexp.Regexp) ([]string, error) {
	var out []string
	for _, r := range readers {
		need := 0
		if n > 0 {
			need = n - len(out)
			if need <= 0 {
				break
			}
		}
		lines, err := lastLines(r, need, re)
		if err != nil {
			return nil, err
		}
		out = append(lines, out...)
	}
	return out, nil
}

// lastLines returns the last n (all when n <= 0) lines of r matching re.
func lastLines(r io.Reader, n int, re *regexp.Regexp) ([]string, error) {
	var ring []string
	next := 0
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte("\n"))
			if re == nil || re.Match(line) {
				switch {
				case n <= 0 || len(ring) < n:
					ring = append(ring, string(line))
				default:
					ring[next] = string(line)
					next = (next + 1) % n
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
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
func Follow(ctx context.Context, dir string, re *regexp.Regexp, w io.Writer) error {
	return followFrom(ctx, dir, 0, re, w)
}

// TailFollow writes the last n matching lines (all of them when n < 0) and
// then follows like Follow, with no line lost or repeated between the two.
func TailFollow(ctx context.Context, dir string, n int, re *regexp.Regexp, w io.Writer) error {
	return followFrom(ctx, dir, n, re, w)
}

// followBackstop is how often follow looks at the files without an event;
// followPoll is the interval when inotify is unavailable.
const (
	followBackstop = time.Second
	followPoll     = 250 * time.Millisecond
	maxLine        = 1 << 20
)

// followFrom follows dir's log. With tailN == 0 it starts at the current
// end of current.log; otherwise it first writes the last tailN matching
// lines (all when tailN < 0) from the files as they are when it starts.
func followFrom(ctx context.Context, dir string, tailN int, re *regexp.Regexp, w io.Writer) error {
	lf := &lineFollower{re: re, w: w, path: filepath.Join(dir, LogFile)}
	defer lf.close()
	if f, err := os.Open(lf.path); err == nil {
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		lf.f, lf.pos = f, fi.Size()
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if tailN != 0 {
		if err := lf.backlog(dir, tailN); err != nil {
			return err
		}
	}
	if lf.f != nil {
		if _, err := lf.f.Seek(lf.pos, io.SeekStart); err != nil {
			return err
		}
	}

	var events chan fsnotify.Event
	var errs chan error
	interval := followPoll
	if wt, err := fsnotify.NewWatcher(); err == nil {
		defer wt.Close()
		if err := wt.Add(dir); err == nil {
			events, errs, interval = wt.Events, wt.Errors, followBackstop
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := lf.step(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-events:
		case <-errs:
		case <-t.C:
		}
	}
}

// lineFollower reads lines appended to one path across rotations.
type lineFollower struct {
	re      *regexp.Regexp
	w       io.Writer
	path    string
	f       *os.File
	pos     int64
	partial []byte
	buf     []byte
}

func (lf *lineFollower) close() {
	if lf.f != nil {
		lf.f.Close()
	}
}

// backlog writes the last n matching lines (all when n < 0) of the rotated
// files and of the first lf.pos bytes of lf.f.
func (lf *lineFollower) backlog(dir string, n int) error {
	paths, err := logFiles(dir)
	if err != nil {
		return err
	}
	var readers []io.Reader
	var seen []os.FileInfo
	if lf.f != nil {
		fi, err := lf.f.Stat()
		if err != nil {
			return err
		}
		seen = append(seen, fi)
		readers = append(readers, io.NewSectionReader(lf.f, 0, lf.pos))
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, p := range slices.Backward(paths) {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		files = append(files, f)
		fi, err := f.Stat()
		if err != nil || slices.ContainsFunc(seen, func(o os.FileInfo) bool { return os.SameFile(o, fi) }) {
			continue // current.log itself, or rotated since it was opened
		}
		seen = append(seen, fi)
		readers = append(readers, f)
	}
	lines, err := tail(readers, max(n, 0), lf.re)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if _, err := io.WriteString(lf.w, l+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// step reads whatever is new, switching to a new current.log after a
// rotation once the old one is drained. Errors are those of w only; file
// trouble is retried on the next step.
func (lf *lineFollower) step() error {
	for {
		if lf.f == nil {
			f, err := os.Open(lf.path)
			if err != nil {
				return nil // not there yet
			}
			lf.f, lf.pos = f, 0
		}
		if err := lf.drain(); err != nil {
			return err
		}
		mine, err1 := lf.f.Stat()
		cur, err2 := os.Stat(lf.path)
		if err1 == nil && err2 == nil && os.SameFile(mine, cur) {
			if mine.Size() < lf.pos { // truncated in place
				lf.f.Seek(0, io.SeekStart)
				lf.pos, lf.partial = 0, lf.partial[:0]
			}
			return nil
		}
		// Rotated or removed: the writer closed the old file before
		// renaming it, so one more drain reads its last bytes.
		if err := lf.drain(); err != nil {
			return err
		}
		if len(lf.partial) > 0 {
			if err := lf.emit(lf.partial); err != nil {
				return err
			}
			lf.partial = lf.partial[:0]
		}
		lf.f.Close()
		lf.f = nil
		if err2 != nil {
			return nil
		}
	}
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
				lf.partial = append(lf.partial, b...)
				if len(lf.partial) >= maxLine {
					if err := lf.emit(lf.partial); err != nil {
						return err
					}
					lf.partial = lf.partial[:0]
				}
				break
			}
			line := b[:i]
			if len(lf.partial) > 0 {
				line = append(lf.partial, line...)
				lf.partial = lf.partial[:0]
			}
			if err := lf.emit(line); err != nil {
				return err
			}
			b = b[i+1:]
		}
		if err != nil || n == 0 {
			return nil // io.EOF, or a read error retried next step
		}
	}
}

func (lf *lineFollower) emit(line []byte) error {
	if lf.re != nil && !lf.re.Match(line) {
		return nil
	}
	out := make([]byte, 0, len(line)+1)
	out = append(append(out, line...), '\n')
	_, err := lf.w.Write(out)
	return err
}
