package runtime

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// DefaultRunTimeout bounds RunOnce when it is given no timeout.
	DefaultRunTimeout = 5 * time.Minute
	// RunOutputMax is how much of a command's output RunOnce returns: the
	// end of it, after a line saying how much was left out. The merchant's
	// log gets all of it.
	RunOutputMax = 64 << 10
	// runWaitDelay bounds the wait for the output pipe once the command
	// was killed, should a process outside its group hold the pipe open.
	runWaitDelay = 2 * time.Second
)

// RunOnce runs a one-off command (a migration, a schema version query) the
// way s's merchant runs: s.Argv (resolved as Start resolves it) as
// s.Credential, in s.WorkDir, with exactly s.Env; WorkDir and LogDir are
// created as Start creates them, after Preflight accepted s (its errors
// match ErrPreflight, and nothing is run).
//
// The command leads its own process group; when timeout (DefaultRunTimeout
// when <= 0) passes or ctx ends, the whole group is killed with SIGKILL and
// the error says so ("timed out after 5m0s"). Its stdout and stderr are
// captured together: output is their last RunOutputMax bytes, preceded by
// a line saying how many bytes were left out, if any. Unless quiet, they
// are also appended in full to the merchant's log (LogDir/current.log)
// between a line "steward: running ARGV" and, when it fails, a line
// "steward: PROGRAM failed: ERROR". The log file is never opened through a
// symbolic link or when it is not a regular file with a single link (the
// merchant's user owns the directory and could plant one); the output is
// then only returned. A failed command returns its output and an error
// (*exec.ExitError for an exit status).
func RunOnce(ctx context.Context, s Spec, timeout time.Duration, quiet bool) (output string, err error) {
	if err := Preflight(s); err != nil {
		return "", err
	}
	path, err := s.resolve()
	if err != nil {
		return "", fmt.Errorf("run %s: %w", s.Merchant, err)
	}
	workDir, err := MakeDir(s.WorkDir, s.Credential)
	if err != nil {
		return "", fmt.Errorf("run %s: work dir: %w", s.Merchant, err)
	}
	logDir, err := MakeDir(s.LogDir, s.Credential)
	if err != nil {
		return "", fmt.Errorf("run %s: log dir: %w", s.Merchant, err)
	}
	if timeout <= 0 {
		timeout = DefaultRunTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	out := &tailBuffer{max: RunOutputMax}
	var sink io.Writer = out
	var log *os.File
	if !quiet {
		log = openRunLog(filepath.Join(logDir, LogFile), s.Credential)
	}
	if log != nil {
		defer log.Close()
		fmt.Fprintf(log, "steward: running %s\n", strings.Join(s.Argv, " "))
		sink = io.MultiWriter(out, &logWriter{w: log})
	}
	env := s.Env
	if env == nil {
		env = []string{}
	}
	cmd := exec.CommandContext(ctx, path)
	cmd.Args, cmd.Env, cmd.Dir = s.Argv, env, workDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.Credential}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = runWaitDelay
	// One comparable writer for both: os/exec then gives the command a
	// single pipe as stdout and stderr, so the output keeps the order in
	// which it was written, as in a terminal with 2>&1.
	w := &lockedWriter{w: sink}
	cmd.Stdout, cmd.Stderr = w, w
	closeInheritedOnExec()
	err = cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s", timeout)
	} else if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	if log != nil {
		if out.n > 0 && !out.endsWithNewline() {
			io.WriteString(log, "\n")
		}
		if err != nil {
			fmt.Fprintf(log, "steward: %s failed: %v\n", filepath.Base(s.Argv[0]), err)
		}
	}
	return out.String(), err
}

// openRunLog opens the log file at p for appending, as root may do in a
// directory that another user owns: never through a symbolic link (the
// last component; the parents belong to steward), never anything but a
// regular file with one link, never blocking. It creates the file for
// cred's user. It returns nil when the file cannot be used so.
func openRunLog(p string, cred *syscall.Credential) *os.File {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0o640)
	if err != nil {
		return nil
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		unix.Close(fd)
		return nil
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil {
		unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_NONBLOCK)
	}
	if cred != nil && st.Uid != cred.Uid {
		if st.Uid == uint32(os.Geteuid()) && st.Size == 0 {
			unix.Fchown(fd, int(cred.Uid), int(cred.Gid)) // created just now
		}
	}
	return os.NewFile(uintptr(fd), p)
}

// tailBuffer keeps the last max bytes written to it and counts the rest.
type tailBuffer struct {
	max  int
	buf  []byte
	n    int64 // bytes written in all
	last byte
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.n += int64(len(b))
	if len(b) > 0 {
		t.last = b[len(b)-1]
	}
	if len(b) >= t.max {
		t.buf = append(t.buf[:0], b[len(b)-t.max:]...)
		return len(b), nil
	}
	if over := len(t.buf) + len(b) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, b...)
	return len(b), nil
}

func (t *tailBuffer) endsWithNewline() bool { return t.last == '\n' }

// String is the kept end, after a line saying how much was left out.
func (t *tailBuffer) String() string {
	if cut := t.n - int64(len(t.buf)); cut > 0 {
		return "[" + strconv.FormatInt(cut, 10) + " bytes of output left out]\n" + string(t.buf)
	}
	return string(t.buf)
}

// logWriter passes writes on until one fails, and never fails itself: a
// log that cannot be written must not fail the command.
type logWriter struct {
	w   io.Writer
	err error
}

func (l *logWriter) Write(b []byte) (int, error) {
	if l.err == nil {
		_, l.err = l.w.Write(b)
	}
	return len(b), nil
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
