// Package source is where fleet specs come from: a local directory (Dir) or
// a git repository (Git). Both implement Source.
//
// Load returns one consistent read of the specs as a Snapshot: every *.hcl
// file below the spec root, chosen by the same rules as spec.SpecFiles
// (sorted, hidden files and directories skipped). Load never validates; the
// caller parses the sources with spec.Load and keeps its last good state when
// they fail. A snapshot with no spec files is an error, so that an empty or
// misconfigured root never reads as "no merchants".
//
// Only regular files (or symbolic links to them) are read, each up to a size
// limit (DirOptions.MaxFileSize, GitOptions.MaxFileSize; DefaultMaxFileSize
// by default), through package internal/safefile: a *.hcl name on a FIFO, a
// device (a link to /dev/zero), a socket or a directory, or a file over the
// limit, fails Load with an error naming the file, and never blocks it.
//
// Watch is a trigger, not a feed: it sends on a channel whenever the specs may
// have changed, without blocking and coalescing (pass a chan struct{} with a
// buffer of 1), and the receiver calls Load. A notification is sent when the
// current content differs from the last snapshot Load returned or the last
// notification announced, so spurious file system events and unchanged polls
// stay quiet.
//
// # Local directories
//
// Dir watches the root recursively with fsnotify (directories, not files, so
// editors that save by writing a temporary file and renaming it are seen),
// debounces bursts of events and, as a backstop for dropped events and for
// file systems without inotify, rescans periodically and compares the content
// revision. Source names are the paths as spec.LoadDir gives them (the root
// joined with the path below it), and the revision is
// spec.ContentRevision of the sources.
//
// # Git repositories
//
// Git keeps a bare clone per URL below its cache directory and fetches only
// the configured ref. Before fetching it lists the remote's refs (ls-remote)
// and skips the fetch when the ref's commit is the one it already has. Each
// commit it serves is written out, whole, to a checkout directory of its own
// (cacheDir/<url hash>/checkouts/<sha>), so package sources with relative
// local paths (source = "file://../packages") resolve against that checkout
// exactly as they would in a clone of the repository; they may leave the
// spec dir but not the repository. The current and the previous checkout are
// kept, older ones deleted. Source names are paths relative to the repository
// root in slash form ("merchants/east.hcl"); the snapshot's revision is the
// commit SHA and Commit describes the commit.
//
// Errors from git never contain the token named by token_env or a password
// in the URL.
package source
