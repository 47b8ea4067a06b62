// Package pkgstore verifies, unpacks and describes package releases.
//
// A package release is a tarball NAME-VERSION.tar.gz with a sha256sum-format
// file NAME-VERSION.tar.gz.sha256 beside it, in a source directory (a path
// or a file:// URL, see SourceDir). The tarball's root holds the app and a
// manifest, package.hcl:
//
//	command = ["bin/invoicing", "--port=${port}"]  # ${port} and ${merchant} are bound per merchant
//	health { http = "/health" }                    # or: tcp = true; no block means tcp
//	migrate = ["bin/invoicing", "migrate"]         # optional
//
// Programs are paths relative to the release directory and must exist in the
// package as executable files.
//
// A Store keeps releases under its directory as <dir>/<name>/<version>/,
// each unpacked once and shared by every merchant running it. The contract:
//
//   - Install checks the tarball's digest against its .sha256 before it
//     writes anything, and hashes the stream again while unpacking.
//   - A release appears under its final name only complete: it is unpacked
//     into a temporary directory beside it and renamed into place. Installs
//     of one version are serialised by an flock'd lock file, so goroutines
//     and processes may install concurrently; one of them unpacks.
//   - Unpacking refuses absolute names, ".." components, symlinks leading
//     out of the release (or using ".." anywhere but at their start),
//     hard links to anything but a regular file unpacked before, devices,
//     fifos and other entry types, entries beneath a symlink or file,
//     duplicates, and archives beyond Limits (default 100 000 entries and
//     1 GiB of file data). The error (an *UnsafeEntryError) names the entry.
//     All writes go through an os.Root on the temporary directory as well.
//   - An installed release is read-only: directories 0555, files 0444 plus
//     their execute bits; set-id bits are dropped.
//   - Errors caused by the package itself (missing or malformed .sha256,
//     digest mismatch, corrupt archive, refused entry, bad manifest) match
//     ErrBadPackage; bad manifests are *ManifestError with hcl.Diagnostics
//     whose ranges name "NAME-VERSION.tar.gz/package.hcl". A missing
//     tarball or release wraps fs.ErrNotExist.
//
// Besides releases, a name directory holds files starting with ".": lock
// files, digest records (.VERSION.sha256) and temporary directories, which
// the next Install or Remove of that version cleans up after a crash.
package pkgstore
