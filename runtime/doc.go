// Package runtime starts, identifies, adopts, watches and stops merchant
// processes on Linux, and reads their logs.
//
// # Contract
//
// A process is identified by a Proc: its PID together with its start time
// (field 22 of /proc/PID/stat). A Proc whose PID now carries another start
// time is a different process; nothing in this package ever signals it.
// Stop and Kill open a pidfd first and check the start time afterwards, so
// the pidfd is known to refer to the right process, and signal the process
// through that pidfd.
//
// Merchants outlive steward. Runtime.Start puts the merchant in its own
// session (setsid; its process group id is its PID) and gives it no
// descriptor of steward's: stdin is /dev/null, stdout and stderr are the
// write end of a pipe read by a log shim, itself in its own session with
// stdin the read end and stdout/stderr /dev/null. steward keeps neither end
// of the pipe. Killing steward, even with SIGKILL, leaves both running; a
// new steward adopts a merchant through its recorded Proc (Alive), and
// watches it with Wait, which works for adopted processes too (through a
// pidfd), only without an exit status.
//
// The merchant's environment is exactly Spec.Env; its working directory is
// Spec.WorkDir. Before each start, every descriptor of steward from 3 up
// is marked close-on-exec (close_range(2)), so that descriptors steward
// inherited without that flag from whatever started it do not leak into
// merchants either. Signal dispositions set to "ignore" in steward survive exec
// (POSIX), so steward must not ignore signals (use signal.Notify instead of
// signal.Ignore) or its merchants would inherit that.
//
// Stop sends SIGTERM (and SIGCONT) to the process and to its process group,
// waits up to a grace period for both to end, then sends SIGKILL; it
// returns once the process has exited and its group is empty. Kill sends
// SIGKILL at once. Wait waits for an exit without polling (pidfd in the Go
// runtime's poller; a 100ms /proc poll only where pidfd_open is missing)
// and reaps children, so no zombie stays behind; the status of a reaped
// child is kept for an hour so that every Wait and Stop on it agrees.
//
// A group signal goes to -PID only while the process is known to lead its
// group. After a non-child leader has been reaped by init, one race is
// left that no Linux interface closes: if the whole group vanishes and the
// PID is reused as a new group id between the check and kill(2), the new
// group would be signalled. It needs a full PID wrap-around within
// microseconds.
//
// # Liveness
//
// Proc.Check says Alive, Dead or Unknown. Dead is only what the kernel
// says: no process has the PID (kill(2) agrees when /proc does not
// answer), the PID carries another start time, or the process is a zombie.
// A failure to read /proc (EMFILE or ENFILE when steward is out of
// descriptors, EACCES, an I/O error) is Unknown, with the error, and never
// Dead: callers that record exits, restart merchants or count crashes use
// Check and look again later on Unknown. Proc.Alive is Check == Alive, for
// displays. Stop and Kill signal nothing unless the identity is confirmed,
// and Wait returns an exit status only for an exit it saw or the kernel
// confirms; otherwise they return an error matching ErrLivenessUnknown.
// /proc is parsed by hand (one read and a fuzzed parser, about 11µs and 9
// allocations an Inspect; github.com/prometheus/procfs takes twice that).
//
// # Pre-flight
//
// Preflight checks, without changing anything, what Start needs and
// execve(2) accepts: the program (a regular file the merchant's user may
// reach and execute, on a file system not mounted noexec), no NUL byte in
// any argument or environment string, none longer than MAX_ARG_STRLEN, all
// of them with their pointers within the kernel's limit (ArgLimit: a
// quarter of RLIMIT_STACK, at least 128 KiB, at most 6 MiB), the release
// dir readable, the work and log dirs creatable. Start runs it first, so a
// caller that checks with Preflight before stopping an old process knows
// Start will not refuse the new one for any of these reasons. Its errors
// match ErrPreflight and never quote environment values.
//
// # Logs
//
// The log shim (package runtime/logshim, run as Runtime.ShimArgv followed
// by logshim.Args, with GOMAXPROCS=1; steward's ShimArgv is the small
// steward-logshim program when it is installed beside steward) appends
// everything the merchant and its children write to LOGDIR/current.log
// (mode 0640), rotating by size at
// line boundaries into current.log.1 (newest) .. current.log.N (oldest). It
// ignores SIGTERM, SIGINT, SIGHUP and SIGPIPE and exits at EOF, that is
// when every process holding the pipe's write end has exited. Rotation
// holds an exclusive flock(2) on LOGDIR/.rotate.lock; TailLines, Follow and
// TailFollow, which read those files for `steward logs`, take it shared
// while they find their way through the names, so that a reader never
// sees them half shifted and Follow loses no file even when it lags
// several rotations behind (as long as the files are still kept).
//
// A merchant's files live below the runtime root in merchants/ID/work and
// merchants/ID/logs (MerchantDirs). TailMerchant and FollowMerchant, which
// `steward logs` uses, take the root and a merchant id, refuse an id that
// is not a single plain name (CheckMerchantID: "../x" is refused), and
// open every file through an os.Root on root/merchants: no name and no
// symbolic link planted in a merchant's directory (which the merchant's
// user owns) leads a reader out of it. Log readers open only regular
// files, without blocking: a FIFO in place of a log file is refused, not
// waited on. TailLines, Follow and TailFollow read a given directory the
// same way, through an os.Root on its parent.
//
// # API
//
//	Inspect(pid) (Proc, error)            Proc.Check() (Liveness, error)
//	Proc.Alive() bool
//	Preflight(Spec) error                 ArgLimit() int64
//	(*Runtime).Start(ctx, Spec) (Proc, error)
//	Stop(ctx, Proc, grace) error          Kill(Proc) error
//	Wait(ctx, Proc) (ExitStatus, error)
//	TailMerchant(root, id, n, filter) ([]string, error)
//	FollowMerchant(ctx, root, id, n, filter, w) error
//	MerchantDirs(root, id) (work, logs, error)  CheckMerchantID(id) error
//	TailLines(dir, n, filter) ([]string, error)     Grep(re) LineFilter
//	Follow(ctx, dir, filter, w) error     TailFollow(ctx, dir, n, filter, w) error
//	RunOnce(ctx, Spec, timeout, quiet) (output, error)
//	PortOwner(port, workDir) (p, mine, found, error)
//	PortHolder(port) (pid, found, error)  PortFree(port) bool
//	FreePort(low, high, taken) (int, bool)
//	LookupUser(name) (*syscall.Credential, error)
//
// Stop and Kill return an error matching ErrNotAlive when the Proc no
// longer exists (exited and reaped, or its PID reused): nothing was
// signalled, and for a caller that wanted it gone that is success. An
// error matching ErrLivenessUnknown from Stop, Kill or Wait means the
// process could not be looked at: it may still run.
//
// # Ports
//
// PortHolder maps a listening TCP port to the process holding its socket
// (via /proc/net/tcp{,6} and /proc/*/fd); PortFree is a bind test.
// PortOwner combines them for adoption: the holder of a taken port and
// whether it runs in a given merchant's work dir. FreePort finds the
// lowest bindable port of a range that a caller's function does not claim.
// They only observe: which port a merchant gets is the planner's decision.
// A failure to read /proc is an error, never "free" or "nobody".
//
// # One-off commands
//
// RunOnce runs a command (a migration, a schema version query) the way a
// merchant runs, after Preflight: its user, work dir and exact
// environment, in its own process group, which is killed with SIGKILL when
// the timeout passes. It returns the end of the output (RunOutputMax
// bytes) and, unless quiet, appends all of it, framed, to the merchant's
// log, which it never opens through a link.
package runtime
