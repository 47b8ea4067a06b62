package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrPreflight is matched by every error of Preflight, and so by Start's
// errors for a Spec that Preflight refuses: the process could not have
// been started, and nothing was.
var ErrPreflight = errors.New("cannot start")

// Kernel limits of execve(2) on Linux (include/uapi/linux/binfmts.h,
// fs/exec.c).
const (
	// MaxArgStrlen is MAX_ARG_STRLEN: the longest argument or environment
	// string execve accepts, its terminating NUL included.
	MaxArgStrlen = 32 * 4096
	// argMaxFloor is ARG_MAX, the room for arguments the kernel grants
	// whatever the stack limit.
	argMaxFloor = 32 * 4096
	// argMaxCeiling is 3/4 of _STK_LIM (8 MiB), the most the kernel ever
	// grants.
	argMaxCeiling = 6 << 20
)

// ArgLimit returns the room execve(2) gives a new program's arguments and
// environment, as the kernel computes it for a child of this process: a
// quarter of RLIMIT_STACK (what sysconf(_SC_ARG_MAX) reports), at least
// 128 KiB and at most 6 MiB. Strings (with their NULs, the program's path
// included) and one pointer per string must fit in it.
func ArgLimit() int64 {
	stack := uint64(8 << 20)
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_STACK, &rl) == nil {
		stack = rl.Cur
	}
	return int64(max(min(argMaxCeiling, stack/4), argMaxFloor))
}

// Preflight checks what the start of s needs and execve(2) accepts,
// without starting or changing anything, so that a caller replacing a
// running process can refuse before it stops the old one:
//
//   - Argv is not empty and Argv[0] resolves (as Start resolves it: an
//     absolute path, or relative to ReleaseDir) to an absolute path of an
//     existing regular file on a file system not mounted noexec, that the
//     merchant's user (Credential, or the user steward runs as) may
//     execute, reaching it through directories it may search; a script
//     ("#!") must also be readable by it. File ACLs and security modules
//     are not consulted.
//   - No Argv or Env string holds a NUL byte, and none is longer than
//     execve accepts (MaxArgStrlen bytes with its NUL).
//   - The strings (the program's path, Argv, Env, each with its NUL) and
//     their pointers fit in ArgLimit.
//   - ReleaseDir, when set, is a directory the merchant's user may read
//     and search.
//   - WorkDir and LogDir are set, and are directories or can be created:
//     their nearest existing ancestor is a directory steward may write,
//     and the merchant's user can reach them.
//
// Every error matches ErrPreflight and names the merchant and what is
// wrong; environment values are never quoted (they may be secrets), only
// their names.
func Preflight(s Spec) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w %s: %s", ErrPreflight, s.Merchant, fmt.Sprintf(format, args...))
	}
	u, err := userOf(s.Credential)
	if err != nil {
		return fail("%v", err)
	}
	path, err := s.resolve()
	if err != nil {
		return fail("%v", err)
	}
	if err := u.checkExecutable(path); err != nil {
		return fail("command %q: %v", s.Argv[0], err)
	}
	if err := checkArgs(path, s.Argv, s.Env); err != nil {
		return fail("%v", err)
	}
	if s.ReleaseDir != "" {
		if err := u.checkDir(s.ReleaseDir, 4|1); err != nil {
			return fail("release dir: %v", err)
		}
	}
	for _, d := range []struct{ what, dir string }{{"work dir", s.WorkDir}, {"log dir", s.LogDir}} {
		if d.dir == "" {
			return fail("%s is not set", d.what)
		}
		if err := u.checkCreatable(d.dir); err != nil {
			return fail("%s: %v", d.what, err)
		}
	}
	return nil
}

// checkArgs checks the strings execve would copy for path, argv and env.
func checkArgs(path string, argv, env []string) error {
	total := int64(len(path) + 1)
	for i, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("argument %d holds a NUL byte, which execve cannot pass; remove it from the command", i)
		}
		if len(a)+1 > MaxArgStrlen {
			return fmt.Errorf("argument %d is %d bytes, over the kernel's limit of %d bytes for one argument (MAX_ARG_STRLEN, its NUL included); shorten it", i, len(a), MaxArgStrlen-1)
		}
		total += int64(len(a) + 1)
	}
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if strings.IndexByte(kv, 0) >= 0 {
			return fmt.Errorf("environment variable %s holds a NUL byte, which execve cannot pass; remove it from the merchant's env", strings.ReplaceAll(name, "\x00", `\0`))
		}
		if len(kv)+1 > MaxArgStrlen {
			return fmt.Errorf("environment variable %s is %d bytes (NAME=value), over the kernel's limit of %d bytes for one string (MAX_ARG_STRLEN, its NUL included); shorten it or pass it in a file", name, len(kv), MaxArgStrlen-1)
		}
		total += int64(len(kv) + 1)
	}
	ptrs := int64(max(len(argv), 1)+len(env)) * 8
	if limit := ArgLimit(); total+ptrs > limit {
		return fmt.Errorf("command and environment take %d bytes (%d of strings, %d of pointers), over the kernel's limit of %d bytes for a new program (a quarter of the stack limit, RLIMIT_STACK); shorten them", total+ptrs, total, ptrs, limit)
	}
	return nil
}

// account is whom permissions are checked for: the merchant's user.
type account struct {
	uid, gid uint32
	groups   []uint32
	own      bool // steward's own user: merchants run as it (no Credential)
}

func userOf(cred *syscall.Credential) (account, error) {
	if cred != nil {
		return account{uid: cred.Uid, gid: cred.Gid, groups: cred.Groups}, nil
	}
	u := account{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()), own: true}
	gs, err := os.Getgroups()
	if err != nil {
		return account{}, fmt.Errorf("groups of uid %d: %w", u.uid, err)
	}
	for _, g := range gs {
		u.groups = append(u.groups, uint32(g))
	}
	return u, nil
}

func (u account) String() string {
	if u.own {
		return fmt.Sprintf("the merchant's user (uid %d, steward's own)", u.uid)
	}
	return fmt.Sprintf("the merchant's user (uid %d)", u.uid)
}

// may reports whether u has the access bits want (4 read, 2 write, 1
// execute or search) to a file with st's owner and mode, by the mode bits
// alone.
func (u account) may(st *unix.Stat_t, want uint32) bool {
	if u.uid == 0 {
		// root may do anything but execute a file no one may execute.
		return want&1 == 0 || st.Mode&unix.S_IFMT == unix.S_IFDIR || st.Mode&0o111 != 0
	}
	var bits uint32
	switch {
	case st.Uid == u.uid:
		bits = st.Mode >> 6
	case st.Gid == u.gid || slices.Contains(u.groups, st.Gid):
		bits = st.Mode >> 3
	default:
		bits = st.Mode
	}
	return bits&7&want == want
}

// checkReach checks that u may search every directory from / down to dir
// (dir included), following symbolic links first.
func (u account) checkReach(dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	for p := real; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return &fs.PathError{Op: "stat", Path: p, Err: err}
		}
		if !u.may(&st, 1) {
			return fmt.Errorf("%s may not search %s (mode %04o, owner %d:%d)", u, p, st.Mode&0o7777, st.Uid, st.Gid)
		}
		if p == "/" || p == "." {
			return nil
		}
	}
}

// checkExecutable checks that u may execute the regular file at path.
func (u account) checkExecutable(path string) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return &fs.PathError{Op: "stat", Path: real, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s is %s, not a regular file", path, kindOf(st.Mode))
	}
	if err := u.checkReach(filepath.Dir(real)); err != nil {
		return err
	}
	if !u.may(&st, 1) {
		return fmt.Errorf("%s may not execute %s (mode %04o, owner %d:%d)", u, path, st.Mode&0o7777, st.Uid, st.Gid)
	}
	var sfs unix.Statfs_t
	if unix.Statfs(real, &sfs) == nil && sfs.Flags&unix.ST_NOEXEC != 0 {
		return fmt.Errorf("%s is on a file system mounted noexec", path)
	}
	if script, err := isScript(real); err != nil {
		return err
	} else if script && !u.may(&st, 4) {
		return fmt.Errorf("%s is a script and %s may not read it (mode %04o, owner %d:%d)", path, u, st.Mode&0o7777, st.Uid, st.Gid)
	}
	return nil
}

// isScript reports whether the file at path starts with "#!".
func isScript(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [2]byte
	n, _ := f.Read(b[:])
	return n == 2 && b == [2]byte{'#', '!'}, nil
}

// checkDir checks that dir is a directory u has the access bits want to
// and can reach.
func (u account) checkDir(dir string, want uint32) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return &fs.PathError{Op: "stat", Path: dir, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is %s, not a directory", dir, kindOf(st.Mode))
	}
	if !u.may(&st, want) {
		return fmt.Errorf("%s may not read and search %s (mode %04o, owner %d:%d)", u, dir, st.Mode&0o7777, st.Uid, st.Gid)
	}
	return u.checkReach(dir)
}

// checkCreatable checks that dir is a directory, or that MakeDir can
// create it: its nearest existing ancestor is a directory steward may
// write and search. u must be able to reach the existing part (MakeDir
// creates the rest searchable by everyone, and dir itself u's).
func (u account) checkCreatable(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := dir; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		err := unix.Stat(p, &st)
		if (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)) && p != "/" {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "stat", Path: p, Err: err}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%s is %s, not a directory", p, kindOf(st.Mode))
		}
		if p != dir {
			if err := unix.Faccessat(unix.AT_FDCWD, p, unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
				return fmt.Errorf("cannot create %s: steward may not write %s: %w", dir, p, err)
			}
			return u.checkReach(p)
		}
		// dir exists: MakeDir gives it to u, so only its parents matter.
		return u.checkReach(filepath.Dir(p))
	}
}

func kindOf(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a named pipe (FIFO)"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFREG:
		return "a regular file"
	}
	return "an irregular file"
}
