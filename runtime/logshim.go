package runtime

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// RunLogShim is the log shim's main; it returns the exit code. args are the
// arguments after Runtime.ShimArgv (see ShimArgs): -dir DIR -max BYTES
// -keep N. It copies stdin to DIR/current.log, rotating by size, until EOF,
// that is until the merchant process and every child that inherited its
// stdout or stderr have exited. It ignores SIGTERM, SIGINT, SIGHUP and
// SIGPIPE so that nothing but the end of its input ends it.
//
// Rotation happens only at line boundaries (a line longer than the limit
// goes whole into one file): current.log is closed, current.log.(N-1) is
// renamed to current.log.N and so on, current.log becomes current.log.1, and
// a new current.log is opened. The merchant keeps writing into the pipe the
// whole time, so no line is lost. A write error (disk full) drops the chunk
// at hand and the shim carries on: it never stops reading, which would
// block or kill the merchant.
func RunLogShim(args []string, stdin io.Reader) int {
	fs := flag.NewFlagSet("logshim", flag.ContinueOnError)
	dir := fs.String("dir", "", "log directory")
	maxBytes := fs.Int64("max", DefaultLogMaxBytes, "rotate current.log at this size")
	keep := fs.Int("keep", DefaultLogKeep, "rotated files to keep")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() != 0 {
		fmt.Fprintln(fs.Output(), "logshim: -dir is required and no arguments are accepted")
		return 2
	}
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	w := newRotator(*dir, *maxBytes, *keep)
	defer w.close()
	buf := make([]byte, 64<<10)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			w.write(buf[:n])
		}
		if err == io.EOF {
			return 0
		}
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return 1
		}
	}
}

// rotator appends to dir/current.log and rotates it by size at line
// boundaries.
type rotator struct {
	dir    string
	max    int64
	keep   int
	f      *os.File
	size   int64
	atLine bool // the last byte written ended a line (or nothing was written)
}

func newRotator(dir string, maxBytes int64, keep int) *rotator {
	if maxBytes <= 0 {
		maxBytes = DefaultLogMaxBytes
	}
	return &rotator{dir: dir, max: maxBytes, keep: max(keep, 0), atLine: true}
}

func (r *rotator) path() string { return filepath.Join(r.dir, LogFile) }

// open opens current.log for appending, creating it if needed.
func (r *rotator) open() error {
	if r.f != nil {
		return nil
	}
	f, err := os.OpenFile(r.path(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size = f, fi.Size()
	return nil
}

func (r *rotator) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// write appends b, rotating first whenever the file is full and the next
// byte starts a line.
func (r *rotator) write(b []byte) {
	for len(b) > 0 {
		n := len(b)
		if !r.atLine {
			// Finish the line in progress in the current file.
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				n = i + 1
			}
		} else {
			if r.f == nil {
				r.open() // learn the size of an existing current.log
			}
			if r.size >= r.max {
				r.rotate()
			}
			if room := r.max - r.size; int64(n) > room {
				if i := bytes.LastIndexByte(b[:max(room, 0)], '\n'); i >= 0 {
					n = i + 1 // the whole lines that fit
				} else if r.size > 0 {
					r.rotate() // the next line does not fit: start a new file
					continue
				} else if i := bytes.IndexByte(b, '\n'); i >= 0 {
					n = i + 1 // one line longer than max: it goes whole
				}
			}
		}
		r.put(b[:n])
		b = b[n:]
	}
}

// put writes b to current.log; on failure the bytes are dropped.
func (r *rotator) put(b []byte) {
	r.atLine = b[len(b)-1] == '\n'
	if err := r.open(); err != nil {
		return
	}
	n, err := r.f.Write(b)
	r.size += int64(n)
	if err != nil {
		// Reopen next time: the file may have been removed or the disk
		// may have room again.
		r.close()
	}
}

// rotateLock is the file in a log directory whose flock(2) serialises
// rotation (exclusive) against readers finding their way through the
// rotated files (shared).
const rotateLock = ".rotate.lock"

// lockRotation takes the directory's rotation lock and returns its
// release (idempotent). Without a lock file (a reader that may not create it) it does
// nothing.
func lockRotation(dir string, how int) (unlock func()) {
	flags := os.O_RDONLY
	if how == unix.LOCK_EX {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(filepath.Join(dir, rotateLock), flags, 0o640)
	if err != nil {
		return func() {}
	}
	for unix.Flock(int(f.Fd()), how) == unix.EINTR {
	}
	return sync.OnceFunc(func() { f.Close() })
}

// rotate shifts the rotated files and starts a new current.log. It holds
// the directory's rotation lock exclusively, so that readers never see the
// names half shifted, and so that two shims appending to
// one directory (an old process's leftovers still draining while its
// successor runs) do not rotate twice: whoever comes second finds that
// current.log is no longer its file and only reopens.
func (r *rotator) rotate() {
	defer lockRotation(r.dir, unix.LOCK_EX)()
	if r.f != nil {
		mine, err1 := r.f.Stat()
		cur, err2 := os.Stat(r.path())
		r.close()
		r.size = 0 // until open succeeds and reads the real size
		if err1 == nil && err2 == nil && !os.SameFile(mine, cur) {
			r.open()
			return
		}
	}
	r.size = 0
	base := r.path()
	if r.keep == 0 {
		os.Remove(base)
	} else {
		os.Remove(base + "." + strconv.Itoa(r.keep))
		for i := r.keep - 1; i >= 1; i-- {
			os.Rename(base+"."+strconv.Itoa(i), base+"."+strconv.Itoa(i+1))
		}
		os.Rename(base, base+".1")
	}
	r.open()
}
