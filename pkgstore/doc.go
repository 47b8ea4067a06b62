// Package pkgstore fetches, verifies, unpacks and describes package releases.
//
// A package release is a tarball NAME-VERSION.tar.gz in a source: a local
// directory (a path or a file:// URL, see SourceDir) or an http:// or
// https:// base URL, the tarball being at BASE/NAME-VERSION.tar.gz. Its
// sha256 is given by NAME-VERSION.tar.gz.sha256 beside it or, when there
// is none, by its line in a SHA256SUMS list in the same place (both in
// sha256sum format; a line names the file by its base name). A .sha256
// that exists but does not list the tarball is an error, not a reason to
// look in SHA256SUMS. The tarball's root holds the app and a manifest,
// package.hcl:
//
//	command = ["bin/invoicing", "--port=${port}"]  # ${port} and ${merchant} are bound per merchant
//	health { http = "/health" }                    # or: tcp = true; no block means tcp
//	migrate = ["bin/invoicing", "migrate"]         # optional
//	schema {                                       # optional: the database schema the release needs
//	  version = 2                                  # an integer >= 0
//	  migrate = ["bin/invoicing", "migrate", "up"] # forward to version; default: the top-level migrate
//	  down    = ["bin/invoicing", "migrate", "down", "${to}"]  # optional; ${to} is the version to go down to
//	  query   = "SELECT coalesce(max(version), 0) FROM schema_migrations"  # the default; or:
//	  # command = ["bin/invoicing", "migrate", "version"]      # prints the version
//	  timeout = "5m"                               # bound for one migration (the default)
//	}
//
// Programs are paths relative to the release directory and must exist in the
// package as executable files. ${to} is a number, and only down may (and
// must) use it. A schema version above 0 needs a migrate command, the
// block's or the top-level one. See Schema and the Release methods
// SchemaMigrateCommand, SchemaDownCommand and SchemaVersionCommand.
//
// A Store keeps releases under its directory as <dir>/<name>/<version>/,
// each unpacked once and shared by every merchant running it. The contract:
//
//   - Only regular files are read from a local source: its tarball, .sha256
//     and SHA256SUMS are opened without blocking (a FIFO never hangs an
//     Install), checked with fstat and refused, as a bad package naming the
//     file and what it is, when they are anything else (a FIFO, a device
//     such as a link to /dev/zero, a socket, a directory). Digest files,
//     local or over HTTP, are read up to 16 MiB.
//   - Install knows the tarball's digest before it unpacks anything, checks
//     the tarball against it, and hashes the stream again while unpacking.
//     A local tarball is checked before anything is written. An HTTP
//     tarball is downloaded, under the version's lock, into
//     <dir>/<name>/.tmp-<version>-download, hashed while it is written and
//     refused beyond Options.PackageSize; it is unpacked only once its
//     digest matches, and removed afterwards, whatever happened.
//   - Reading is bounded in size and in time (see Options, set with
//     OpenWith): a tarball larger than Options.PackageSize (default 1 GiB)
//     is a bad package naming the limit, local ones refused before they are
//     read. Hashing, downloading and unpacking look at the context before
//     every chunk (32 KiB, of the compressed and of the decompressed
//     stream), and each stage of an Install that reads a package (the
//     check of a local tarball; under the version's lock, the download and
//     the unpacking) has a deadline of Options.Timeout (default 15m): past
//     it the Install fails with an error naming the limit that matches
//     context.DeadlineExceeded.
//   - HTTP requests go through Options.HTTPClient (see NewHTTPClient: 10s to
//     connect, 1m for response headers, DefaultHTTPTimeout per request)
//     and end with the context of the call; a tarball download that brings
//     less than 16 KiB in any 30 seconds is given up on. Userinfo in a source URL is
//     sent as basic auth. Errors name URLs without userinfo, query or
//     fragment: "GET https://pkgs.example/invoicing-1.2.0.tar.gz: 404 Not
//     Found".
//   - A release appears under its final name only complete: it is unpacked
//     into a temporary directory beside it and renamed into place. Installs
//     of one version are serialised by an flock'd lock file, so goroutines
//     and processes may install concurrently; one of them downloads (for an
//     HTTP source) and unpacks, the others find the release in place.
//   - Unpacking refuses absolute names, ".." components, symlinks leading
//     out of the release (or using ".." anywhere but at their start),
//     hard links to anything but a regular file unpacked before, devices,
//     fifos and other entry types, entries beneath a symlink or file,
//     duplicates, and archives beyond the unpack limits (Options.MaxFiles,
//     default 100 000 entries; Options.MaxBytes, default 1 GiB of file
//     data). The error (an *UnsafeEntryError) names the entry. The
//     decompressed stream as a whole, what follows the end of the archive
//     included, is bounded too (a gzip bomb is a bad package).
//     All writes go through an os.Root on the temporary directory as well.
//   - An installed release is read-only: directories 0555, files 0444 plus
//     their execute bits; set-id bits are dropped.
//   - Errors caused by the package itself (no digest, a malformed .sha256
//     or SHA256SUMS, a tarball or digest file that is not a regular file or
//     is over its size limit, digest mismatch, corrupt archive, refused
//     entry, bad manifest) match ErrBadPackage;
//     bad manifests are *ManifestError with hcl.Diagnostics whose ranges
//     name "NAME-VERSION.tar.gz/package.hcl". A missing tarball or release
//     (an HTTP 404 or 410 included) wraps fs.ErrNotExist, and so does a
//     tarball no digest file lists, since often it was not published at
//     all. Other HTTP statuses and network errors are neither: retrying
//     may help.
//
// AvailableVersions lists a local source's tarballs; over HTTP, where a
// directory cannot be listed, it lists what the source's SHA256SUMS lists,
// and is an error without one.
//
// GC removes the releases of a package that the caller's keep function
// rejects (pkgstore does not know which versions merchants run). Each is
// removed under its version's lock, so never while an Install of it holds
// the lock: GC waits for it, bounded by its context. GC also removes what
// crashes left behind for any version whose lock is free at that moment.
//
// Besides releases, a name directory holds files starting with ".": lock
// files (.VERSION.lock, never removed: a waiter holding a removed one open
// would lock a different file than the next opener), digest records
// (.VERSION.sha256) and temporary entries (.tmp-VERSION-SUFFIX, SUFFIX
// without "-"), which the next Install or Remove of that version, or a
// GC, cleans up after a crash.
package pkgstore
