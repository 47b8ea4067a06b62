// Package logshim writes a merchant's output to its log files, rotating them
// by size at line boundaries. It is the body of the log shim program
// (cmd/steward-logshim, or steward itself as "steward __logshim") that
// runs beside each merchant, reading the merchant's stdout and stderr from
// a pipe.
//
// It depends on nothing that needs cgo or the network (no net, no
// os/user), so the program built from it is small, statically linked and
// cheap to start: it is started once per merchant start.
//
// The files: DIR/current.log (LogFile) is written; rotated files are
// current.log.1 (newest) to current.log.N (oldest). Rotation holds an
// exclusive flock(2) on DIR/.rotate.lock (LockRotation); readers take it
// shared while they find their way through the names.
package logshim

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

// Defaults for Args and Run.
const (
	DefaultMaxBytes = 10 << 20
	DefaultKeep     = 5
)

// LogFile is the name of the live log file in a log directory; rotated
// files are LogFile.1 (newest) to LogFile.N (oldest).
const LogFile = "current.log"

// Args returns the command-line arguments Run parses: -dir DIR -max BYTES
// -keep N.
func Args(dir string, maxBytes int64, keep int) []string {
	return []string{"-dir", dir, "-max", strconv.FormatInt(maxBytes, 10), "-keep", strconv.Itoa(keep)}
}

// Run is the log shim's main; it returns the exit code. args are as Args
// makes them. It copies stdin to DIR/current.log, rotating by size, until EOF,
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
func Run(args []string, stdin io.Reader) int {
	fs := flag.NewFlagSet("logshim", flag.ContinueOnError)
	dir := fs.String("dir", "", "log directory")
	maxBytes := fs.Int64("max", DefaultMaxBytes, "rotate current.log at this size")
	keep := fs.Int("keep", DefaultKeep, "rotated files to keep")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() != 0 {
		fmt.Fprintln(fs.Output(), "logshim: -dir is required and no arguments are accepted")
		return 2
	}
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	w := NewWriter(*dir, *maxBytes, *keep)
	defer w.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
		}
		if err == io.EOF {
			return 0
		}
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return 1
		}
	}
}

// Writer appends to DIR/current.log and rotates it by size at line
// boundaries. It is not safe for concurrent use.
type Writer struct {
	dir    string
	max    int64
	keep   int
	f      *os.File
	size   int64
	atLine bool // the last byte written ended a line (or nothing was written)
}

// NewWriter returns a Writer for dir that rotates current.log once it holds
// maxBytes (DefaultMaxBytes when not positive) and keeps keep rotated files
// (none when not positive). It opens nothing until the first Write.
func NewWriter(dir string, maxBytes int64, keep int) *Writer {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return &Writer{dir: dir, max: maxBytes, keep: max(keep, 0), atLine: true}
}

func (r *Writer) path() string { return filepath.Join(r.dir, LogFile) }

// open opens current.log for appending, creating it if needed.
func (r *Writer) open() error {
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

// Close closes current.log. A later Write opens it again.
func (r *Writer) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// Write appends b, rotating first whenever the file is full and the next
// byte starts a line. It never fails: what cannot be written (a full disk)
// is dropped, and the file is opened again on the next Write, so that the
// shim never stops reading, which would block or kill the merchant.
func (r *Writer) Write(b []byte) (int, error) {
	n := len(b)
	r.write(b)
	return n, nil
}

func (r *Writer) write(b []byte) {
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
func (r *Writer) put(b []byte) {
	r.atLine = b[len(b)-1] == '\n'
	if err := r.open(); err != nil {
		return
	}
	n, err := r.f.Write(b)
	r.size += int64(n)
	if err != nil {
		// Reopen next time: the file may have been removed or the disk
		// may have room again.
		r.Close()
	}
}

// RotateLockFile is the file in a log directory whose flock(2) serialises
// rotation (exclusive) against readers finding their way through the
// rotated files (shared).
const RotateLockFile = ".rotate.lock"

const rotateLock = RotateLockFile

// LockRotation takes dir's rotation lock (how is unix.LOCK_SH for readers,
// unix.LOCK_EX for rotation) and returns its release (idempotent). Without
// a lock file (a reader that may not create it) it does nothing.
func LockRotation(dir string, how int) (unlock func()) {
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

// Rotate rotates now (at the next line boundary's state as it is: callers
// normally let Write decide). See rotate.
func (r *Writer) Rotate() { r.rotate() }

// rotate shifts the rotated files and starts a new current.log. It holds
// the directory's rotation lock exclusively, so that readers never see the
// names half shifted, and so that two shims appending to
// one directory (an old process's leftovers still draining while its
// successor runs) do not rotate twice: whoever comes second finds that
// current.log is no longer its file and only reopens.
func (r *Writer) rotate() {
	defer LockRotation(r.dir, unix.LOCK_EX)()
	if r.f != nil {
		mine, err1 := r.f.Stat()
		cur, err2 := os.Stat(r.path())
		r.Close()
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
