package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"steward/runtime/logshim"
)

// Defaults for Spec.LogMaxBytes and Spec.LogKeep.
const (
	DefaultLogMaxBytes = logshim.DefaultMaxBytes
	DefaultLogKeep     = logshim.DefaultKeep
)

// LogFile is the name of the live log file in a log directory; rotated
// files are LogFile.1 (newest) to LogFile.N (oldest).
const LogFile = logshim.LogFile

// Spec is everything needed to start one merchant process.
type Spec struct {
	// Merchant is the merchant id; it names the process in errors.
	Merchant string
	// Argv is the command. Argv[0] is absolute or relative to ReleaseDir; it
	// must name an executable regular file. Argv[0] is passed to the process
	// unchanged; the resolved path is what gets executed.
	Argv []string
	// ReleaseDir is the unpacked release the command belongs to.
	ReleaseDir string
	// WorkDir is the process's working directory, created (0750) if missing.
	WorkDir string
	// Env is the complete environment (KEY=VALUE). Nothing of steward's own
	// environment is inherited; a nil Env means an empty environment.
	Env []string
	// LogDir receives the process's stdout and stderr in LogDir/current.log;
	// it is created (0750) if missing.
	LogDir string
	// LogMaxBytes is the size at which current.log is rotated
	// (DefaultLogMaxBytes when 0).
	LogMaxBytes int64
	// LogKeep is how many rotated files are kept, current.log.1 to
	// current.log.LogKeep (DefaultLogKeep when 0; negative keeps none).
	LogKeep int
	// Credential, when not nil, is the user and groups the process and its
	// log shim run as (steward then runs as root). WorkDir and LogDir are
	// given to that user. nil runs them as steward's own user.
	Credential *syscall.Credential
}

// Runtime starts merchant processes. The zero value is not usable: ShimArgv
// is required.
type Runtime struct {
	// ShimArgv is the command that runs the log shim, for example
	// {"/proc/self/exe", "__logshim"}; the command it names must call
	// logshim.Run with the arguments that follow ShimArgv and with its stdin.
	// ShimArgv[0] must be an absolute path.
	ShimArgv []string
	// Defaults applied to every Spec the methods get whose own field is
	// zero: log rotation, and the user merchants run as.
	LogMaxBytes int64
	LogKeep     int
	Credential  *syscall.Credential
}

// Start starts s's process and its log shim, and returns the process's
// identity once it has been executed.
//
// Both processes get their own session (Setsid), so signals sent to steward
// or its terminal never reach them, and no descriptor of steward: the
// process's stdin is /dev/null and its stdout and stderr are the write end
// of a pipe whose read end is the shim's stdin; steward closes both ends
// after starting them. Killing steward, even with SIGKILL, therefore affects
// neither. The process leads its own process group (its pgid is its PID),
// which is what Stop and Kill signal.
//
// ctx only bounds the start itself: ending it later does not stop the
// process. Start runs Preflight first and fails, starting and creating
// nothing, with its error (matching ErrPreflight) for a Spec it refuses.
func (r *Runtime) Start(ctx context.Context, s Spec) (Proc, error) {
	s = r.fill(s)
	if err := ctx.Err(); err != nil {
		return Proc{}, err
	}
	if len(r.ShimArgv) == 0 || !filepath.IsAbs(r.ShimArgv[0]) {
		return Proc{}, fmt.Errorf("start %s: runtime: ShimArgv must start with an absolute path, have %q", s.Merchant, r.ShimArgv)
	}
	if err := Preflight(s); err != nil {
		return Proc{}, err
	}
	path, err := s.resolve()
	if err != nil {
		return Proc{}, fmt.Errorf("start %s: %w", s.Merchant, err)
	}
	workDir, err := MakeDir(s.WorkDir, s.Credential)
	if err != nil {
		return Proc{}, fmt.Errorf("start %s: work dir: %w", s.Merchant, err)
	}
	logDir, err := MakeDir(s.LogDir, s.Credential)
	if err != nil {
		return Proc{}, fmt.Errorf("start %s: log dir: %w", s.Merchant, err)
	}
	maxBytes, keep := s.LogMaxBytes, s.LogKeep
	if maxBytes <= 0 {
		maxBytes = DefaultLogMaxBytes
	}
	if keep == 0 {
		keep = DefaultLogKeep
	}
	keep = max(keep, 0)

	closeInheritedOnExec()
	// os.Pipe sets O_CLOEXEC on both ends: each child gets exactly the end
	// it is given as stdin or stdout, and no other process inherits either.
	pr, pw, err := os.Pipe()
	if err != nil {
		return Proc{}, fmt.Errorf("start %s: log pipe: %w", s.Merchant, err)
	}
	defer pr.Close()
	defer pw.Close()

	shim := &exec.Cmd{
		Path: r.ShimArgv[0],
		Args: append(append([]string(nil), r.ShimArgv...), logshim.Args(logDir, maxBytes, keep)...),
		// One thread of Go scheduling is all a pipe copier needs, and
		// setting up fewer Ps makes its start about a fifth cheaper.
		Env: []string{"GOMAXPROCS=1"},
		Dir: "/",
		// Stdout and Stderr nil: /dev/null.
		Stdin:       pr,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Credential: s.Credential},
	}
	if err := shim.Start(); err != nil {
		return Proc{}, fmt.Errorf("start %s: log shim: %w", s.Merchant, err)
	}
	// The shim exits when the last writer of the pipe closes it; reap it
	// then so that it leaves no zombie while steward runs.
	go shim.Wait()

	env := s.Env
	if env == nil {
		env = []string{}
	}
	cmd := &exec.Cmd{
		Path: path,
		Args: s.Argv,
		Env:  env,
		Dir:  workDir,
		// Stdin nil: /dev/null.
		Stdout:      pw,
		Stderr:      pw,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Credential: s.Credential},
	}
	if err := cmd.Start(); err != nil {
		// Closing pw (deferred) gives the shim EOF; it exits and is reaped.
		return Proc{}, fmt.Errorf("start %s: %w", s.Merchant, err)
	}
	// The child is not reaped until Wait or Stop, so its PID cannot be
	// reused before Inspect reads its start time.
	p, err := Inspect(cmd.Process.Pid)
	if err != nil {
		return Proc{}, fmt.Errorf("start %s: inspect pid %d: %w", s.Merchant, cmd.Process.Pid, err)
	}
	// Wait and Stop reap through their own pidfd; drop os/exec's handle.
	cmd.Process.Release()
	return p, nil
}

// resolve returns the absolute path of s.Argv[0] after checking that it
// names an executable regular file.
func (s Spec) resolve() (string, error) {
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return "", errors.New("empty command")
	}
	path := s.Argv[0]
	if !filepath.IsAbs(path) {
		if s.ReleaseDir == "" {
			return "", fmt.Errorf("command %q is relative and no release dir is set", path)
		}
		path = filepath.Join(s.ReleaseDir, path)
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("command %q: %w", s.Argv[0], err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("command %q: %s is not a regular file", s.Argv[0], path)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("command %q: %s is not executable", s.Argv[0], path)
	}
	return path, nil
}

// MakeDir creates dir if missing and returns its absolute path. Missing
// parents are created traversable by everyone (0755), since the merchant's
// user must reach dir; dir itself is 0750 and, with cred, owned by that
// user.
func MakeDir(dir string, cred *syscall.Credential) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	if cred != nil {
		var st syscall.Stat_t
		if err := syscall.Lstat(dir, &st); err != nil {
			return "", err
		}
		if st.Uid != cred.Uid || st.Gid != cred.Gid {
			// A merchant that changed users (runtime.user, runtime.uids):
			// what it wrote as the previous one becomes the new one's.
			err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				return os.Lchown(p, int(cred.Uid), int(cred.Gid))
			})
			if err != nil {
				return "", err
			}
		}
	}
	return dir, nil
}
