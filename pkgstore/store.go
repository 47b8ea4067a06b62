package pkgstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"steward/spec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/hcl/v2"

	"steward/internal/safefile"
)

// ErrBadPackage is matched (errors.Is) by every error that is about the
// content of a package rather than about this machine: a missing or
// malformed .sha256, a digest mismatch, a refused archive entry, a corrupt
// archive, a bad manifest. Retrying such an install cannot help until the
// package or the spec changes.
var ErrBadPackage = errors.New("bad package")

type badPackage struct{ error }

func (b badPackage) Unwrap() error      { return b.error }
func (badPackage) Is(target error) bool { return target == ErrBadPackage }

// ManifestError is a package.hcl that does not parse or validate. Diags
// keep the source ranges; their file names are like
// "invoicing-1.2.0.tar.gz/package.hcl" for a package being installed.
type ManifestError struct {
	Diags hcl.Diagnostics
}

func (e *ManifestError) Error() string { return "bad manifest: " + e.Diags.Error() }
func (*ManifestError) Is(t error) bool { return t == ErrBadPackage }

// Store is a releases directory: each release unpacked, read-only, at
// <dir>/<name>/<version>/. Lock files, digest records and temporary
// directories live beside the releases under names starting with ".".
// A Store is safe for concurrent use by goroutines and by processes.
type Store struct {
	dir  string
	opts Options // with defaults

	unpacks atomic.Int64 // releases unpacked by this Store, for tests

	// manifests caches the manifests of installed releases, each with the
	// identity of the directory it was read from: a release directory is
	// never changed in place (a new install is a new directory), so the
	// same directory means the same manifest.
	mu        sync.Mutex
	manifests map[string]cachedManifest
}

type cachedManifest struct {
	dir fs.FileInfo
	m   *Manifest
}

// Open returns the store rooted at dir, creating dir if needed, with the
// default Options.
func Open(dir string) (*Store, error) { return OpenWith(dir, Options{}) }

// OpenWith returns the store rooted at dir, creating dir if needed, tuned
// by opts (zero fields take the defaults).
func OpenWith(dir string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("releases directory: %w", err)
	}
	return &Store{dir: abs, opts: opts.withDefaults()}, nil
}

// Options returns the store's options, defaults filled in.
func (s *Store) Options() Options { return s.opts }

// Dir returns the absolute releases directory.
func (s *Store) Dir() string { return s.dir }

// Release is an unpacked package version.
type Release struct {
	Name    string
	Version string
	Dir     string // absolute; the tree under it is read-only
	SHA256  string // hex digest of the tarball it came from
	// Manifest is the parsed package.hcl; its command program (and the
	// migrate and schema programs, if any) exist in Dir and are executable.
	Manifest *Manifest
}

// Command returns the argv to start the release for a merchant, with
// argv[0] an absolute path inside r.Dir.
func (r *Release) Command(port int, merchant string) ([]string, error) {
	argv, err := r.Manifest.Argv(port, merchant)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.Name, r.Version, err)
	}
	argv[0] = filepath.Join(r.Dir, argv[0])
	return argv, nil
}

// MigrateCommand returns the migrate argv with argv[0] an absolute path
// inside r.Dir, or nil when the package has no migrate command.
func (r *Release) MigrateCommand() []string {
	if len(r.Manifest.Migrate) == 0 {
		return nil
	}
	argv := slices.Clone(r.Manifest.Migrate)
	argv[0] = filepath.Join(r.Dir, argv[0])
	return argv
}

func checkNameVersion(name, version string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	return CheckVersion(version)
}

// Get returns an installed release, or an error wrapping fs.ErrNotExist
// when name@version is not unpacked.
func (s *Store) Get(name, version string) (*Release, error) {
	if err := checkNameVersion(name, version); err != nil {
		return nil, err
	}
	dir := filepath.Join(s.dir, name, version)
	fi, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s %s is not installed: %w", name, version, fs.ErrNotExist)
		}
		return nil, err
	}
	s.mu.Lock()
	c, ok := s.manifests[dir]
	s.mu.Unlock()
	m := c.m
	if !ok || !os.SameFile(c.dir, fi) || !c.dir.ModTime().Equal(fi.ModTime()) {
		if m, err = loadManifest(dir, filepath.Join(dir, ManifestFile), s.opts.Manifest); err != nil {
			return nil, fmt.Errorf("%s %s: %w", name, version, err)
		}
		s.mu.Lock()
		if s.manifests == nil {
			s.manifests = map[string]cachedManifest{}
		}
		s.manifests[dir] = cachedManifest{dir: fi, m: m}
		s.mu.Unlock()
	}
	sum, _ := readDigestFile(s.digestRecord(name, version), Tarball(name, version))
	return &Release{Name: name, Version: version, Dir: dir, SHA256: sum, Manifest: m}, nil
}

// Installed lists the unpacked versions of name, oldest first by
// spec.CompareVersions; none is not an error.
func (s *Store) Installed(name string) ([]string, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(s.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var versions []string
	for _, e := range entries {
		if e.IsDir() && CheckVersion(e.Name()) == nil {
			versions = append(versions, e.Name())
		}
	}
	slices.SortFunc(versions, spec.CompareVersions)
	return versions, nil
}

func (s *Store) digestRecord(name, version string) string {
	return filepath.Join(s.dir, name, "."+version+".sha256")
}

// Install makes name@version available and returns it. When it is already
// unpacked it returns at once. Otherwise it fetches Tarball(name, version)
// from source, checks its sha256 against the digest the source gives (its
// .sha256, or its line in SHA256SUMS), unpacks it into a temporary
// directory beside the final one (refusing unsafe entries, see
// UnsafeEntryError and Options), checks the manifest, makes the tree
// read-only and renames it into place. Installs of one version are
// serialised by a lock file, across processes too.
//
// source is a local directory (see SourceDir), whose tarball is verified
// before anything is written, or an http:// or https:// base URL, whose
// tarball is downloaded under the version's lock into a file beside the
// release, at most Options.PackageSize, and verified before it is unpacked.
//
// Each stage that reads the package is bounded by Options.Timeout (see
// Options).
func (s *Store) Install(ctx context.Context, source, name, version string) (*Release, error) {
	if err := checkNameVersion(name, version); err != nil {
		return nil, err
	}
	if r, err := s.Get(name, version); !errors.Is(err, fs.ErrNotExist) {
		return r, err
	}
	if isHTTP(source) {
		return s.installHTTP(ctx, source, name, version)
	}
	srcDir, err := SourceDir(source)
	if err != nil {
		return nil, err
	}
	tarName := Tarball(name, version)
	tarPath := filepath.Join(srcDir, tarName)
	f, fi, err := safefile.OpenRegular(tarPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notFound(srcDir, name, tarName)
	}
	if err != nil {
		return nil, sourceFileErr(err)
	}
	defer f.Close()
	if fi.Size() > s.opts.PackageSize {
		return nil, s.tooLarge(tarPath, fi.Size())
	}
	var want string
	err = s.bounded(ctx, "checking "+tarPath, func(ctx context.Context) error {
		var err error
		want, err = sourceDigest(tarName, func(file string) ([]byte, error) {
			b, err := safefile.ReadRegular(ctx, filepath.Join(srcDir, file), maxSumsBytes)
			return b, sourceFileErr(err)
		})
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(h, ctxReader{ctx, io.LimitReader(f, s.opts.PackageSize+1)})
		if err != nil {
			return fmt.Errorf("reading %s: %w", tarName, err)
		}
		if n > s.opts.PackageSize {
			return s.tooLarge(tarPath, -1)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return badPackage{fmt.Errorf("sha256 mismatch for %s: got %s, want %s", tarName, got, want)}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// The tarball is what its digest says: from here on we write.
	return s.install(ctx, name, version, func(ctx context.Context, nameDir string) (*tarball, error) {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		return &tarball{f: f, path: tarPath, sum: want}, nil
	})
}

// tooLarge is the error for a tarball over Options.PackageSize; size is
// -1 when it grew beyond the limit while it was read.
func (s *Store) tooLarge(path string, size int64) error {
	if size < 0 {
		return badPackage{fmt.Errorf("%s grew beyond the package size limit of %d bytes while it was read", path, s.opts.PackageSize)}
	}
	return badPackage{fmt.Errorf("%s is %d bytes, over the package size limit of %d bytes", path, size, s.opts.PackageSize)}
}

// installHTTP fetches the digest and the tarball under the version's lock,
// so that concurrent installs of one version download it once.
func (s *Store) installHTTP(ctx context.Context, source, name, version string) (*Release, error) {
	src, err := newHTTPSource(s.opts.HTTPClient, source)
	if err != nil {
		return nil, err
	}
	tarName := Tarball(name, version)
	return s.install(ctx, name, version, func(ctx context.Context, nameDir string) (*tarball, error) {
		want, err := src.digest(ctx, tarName)
		if err != nil {
			return nil, err
		}
		spool := filepath.Join(nameDir, ".tmp-"+version+"-download")
		f, err := src.download(ctx, tarName, spool, want, s.opts.PackageSize)
		if err != nil {
			return nil, err
		}
		return &tarball{f: f, path: spool, sum: want, cleanup: func() {
			f.Close()
			os.Remove(spool)
		}}, nil
	})
}

// tarball is a package tarball whose digest was checked, open at its start.
type tarball struct {
	f       *os.File
	path    string // for errors
	sum     string
	cleanup func() // if not nil, called when the install is done with it
}

// install takes the version's lock and, unless the release appeared while
// it waited, gets the tarball from fetch and unpacks it into place.
func (s *Store) install(ctx context.Context, name, version string, fetch func(ctx context.Context, nameDir string) (*tarball, error)) (*Release, error) {
	nameDir := filepath.Join(s.dir, name)
	if err := os.MkdirAll(nameDir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFile(ctx, s.lockPath(name, version))
	if err != nil {
		return nil, fmt.Errorf("locking %s %s: %w", name, version, err)
	}
	defer unlock()
	if r, err := s.Get(name, version); !errors.Is(err, fs.ErrNotExist) {
		return r, err // installed while we waited for the lock
	}
	if err := removeStale(nameDir, version); err != nil {
		return nil, err
	}
	tarName := Tarball(name, version)
	var r *Release
	err = s.bounded(ctx, "installing "+tarName, func(ctx context.Context) error {
		var err error
		r, err = s.fetchAndUnpack(ctx, nameDir, name, version, fetch)
		return err
	})
	return r, err
}

// fetchAndUnpack gets the tarball from fetch and unpacks it into place;
// the caller holds the version's lock.
func (s *Store) fetchAndUnpack(ctx context.Context, nameDir, name, version string, fetch func(ctx context.Context, nameDir string) (*tarball, error)) (*Release, error) {
	tb, err := fetch(ctx, nameDir)
	if err != nil {
		return nil, err
	}
	if tb.cleanup != nil {
		defer tb.cleanup()
	}
	tarName := Tarball(name, version)
	tmp, err := os.MkdirTemp(nameDir, ".tmp-"+version+"-")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			_ = removeAllWritable(tmp)
		}
	}()

	// Hash again while unpacking, so a tarball rewritten since it was
	// checked is caught rather than installed.
	h := sha256.New()
	tee := io.TeeReader(ctxReader{ctx, io.LimitReader(tb.f, s.opts.PackageSize+1)}, h)
	if err := unpack(ctx, tee, tmp, s.opts.limits()); err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", tarName, err)
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return nil, fmt.Errorf("reading %s: %w", tarName, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != tb.sum {
		return nil, fmt.Errorf("%s changed while it was being unpacked", tb.path)
	}
	m, err := loadManifest(tmp, tarName+"/"+ManifestFile, s.opts.Manifest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tarName, err)
	}
	if err := makeReadOnly(tmp); err != nil {
		return nil, err
	}
	if err := writeDigestRecord(s.digestRecord(name, version), tb.sum, tarName); err != nil {
		return nil, err
	}
	final := filepath.Join(nameDir, version)
	if err := os.Rename(tmp, final); err != nil {
		// Only a writer ignoring the lock could have put it there; if
		// it did, the release is there and ours is not needed.
		if r, gerr := s.Get(name, version); gerr == nil {
			return r, nil
		}
		return nil, err
	}
	done = true
	s.unpacks.Add(1)
	return &Release{Name: name, Version: version, Dir: final, SHA256: tb.sum, Manifest: m}, nil
}

func (s *Store) lockPath(name, version string) string {
	return filepath.Join(s.dir, name, "."+version+".lock")
}

// Remove deletes an installed release. Removing one that is not installed
// is not an error. Whether a process still runs it is the caller's concern.
func (s *Store) Remove(ctx context.Context, name, version string) error {
	if err := checkNameVersion(name, version); err != nil {
		return err
	}
	nameDir := filepath.Join(s.dir, name)
	if _, err := os.Stat(nameDir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	unlock, err := lockFile(ctx, s.lockPath(name, version))
	if err != nil {
		return fmt.Errorf("locking %s %s: %w", name, version, err)
	}
	defer unlock()
	if err := removeStale(nameDir, version); err != nil {
		return err
	}
	// Rename first so that no reader ever sees a half-deleted release.
	gone := filepath.Join(nameDir, ".tmp-"+version+"-removed")
	if err := os.Rename(filepath.Join(nameDir, version), gone); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := removeAllWritable(gone); err != nil {
		return err
	}
	if err := os.Remove(s.digestRecord(name, version)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// sourceFileErr marks a file of a package source that is not a regular
// file, or is too large, as a bad package: retrying cannot help until the
// source changes.
func sourceFileErr(err error) error {
	if errors.Is(err, safefile.ErrNotRegular) || errors.Is(err, safefile.ErrTooLarge) {
		return badPackage{err}
	}
	return err
}

func notFound(srcDir, name, tarName string) error {
	have := "no versions of " + name + " there"
	if vs, err := AvailableVersions(srcDir, name); err != nil {
		have = err.Error()
	} else if len(vs) > 0 {
		have = "have " + strings.Join(vs, ", ")
	}
	return fmt.Errorf("%s not found in %s (%s): %w", tarName, srcDir, have, fs.ErrNotExist)
}

// loadManifest reads and checks dir/package.hcl, naming it filename.
func loadManifest(dir, filename string, lim spec.Limits) (*Manifest, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	src, err := readManifest(root, lim)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, badPackage{fmt.Errorf("no %s at the root of the package", ManifestFile)}
	}
	if err != nil {
		return nil, err
	}
	m, diags := ParseManifestLimits(src, filename, lim)
	if diags.HasErrors() {
		return nil, &ManifestError{Diags: diags}
	}
	for _, prog := range m.programs() {
		if prog.path == "" {
			continue
		}
		fi, err := root.Stat(prog.path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, badPackage{fmt.Errorf("%s: %s program %s is not in the package", filename, prog.what, prog.path)}
		case err != nil:
			return nil, badPackage{fmt.Errorf("%s: %s program %s: %w", filename, prog.what, prog.path, err)}
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			return nil, badPackage{fmt.Errorf("%s: %s program %s is not an executable file", filename, prog.what, prog.path)}
		}
	}
	return m, nil
}

func firstOr(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// removeStale removes what a crashed Install or Remove of version left
// behind: temporary directories, a partial download, a digest record being
// written. The caller holds the version's lock.
func removeStale(nameDir, version string) error {
	entries, err := os.ReadDir(nameDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if v, ok := staleVersion(e.Name()); !ok || v != version {
			continue
		}
		if err := removeAllWritable(filepath.Join(nameDir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// staleVersion returns the version a temporary entry of a name directory
// belongs to: ".tmp-VERSION-SUFFIX" (an unpack in progress or left by a
// crash, a release being removed, a download), or ".VERSION.sha256.tmp".
// SUFFIX never holds a "-", so ".tmp-1.0.0-rc1-123" is 1.0.0-rc1's and
// not 1.0.0's, although versions may hold "-" themselves.
func staleVersion(entry string) (string, bool) {
	if rest, ok := strings.CutPrefix(entry, ".tmp-"); ok {
		i := strings.LastIndex(rest, "-")
		if i <= 0 || i == len(rest)-1 || CheckVersion(rest[:i]) != nil {
			return "", false
		}
		return rest[:i], true
	}
	if rest, ok := strings.CutPrefix(entry, "."); ok {
		if v, ok := strings.CutSuffix(rest, ".sha256.tmp"); ok && CheckVersion(v) == nil {
			return v, true
		}
	}
	return "", false
}

func writeDigestRecord(p, sum, tarName string) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(sum+"  "+tarName+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// lockFile takes an exclusive flock on p, waiting until it is free or ctx
// is done. The lock is tied to the open file, so it is exclusive between
// goroutines as well as processes, and a crashed holder releases it.
// Lock files are never removed: a waiter holding the old file open would
// otherwise lock a different file than the next opener.
func lockFile(ctx context.Context, p string) (unlock func(), err error) {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		return func() { f.Close() }, nil
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return nil, err
	}
	if lockWaitHook != nil {
		lockWaitHook(p)
	}
	got := make(chan error, 1)
	go func() { got <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, err
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		// Closing the file when the lock is finally granted releases it.
		go func() { <-got; f.Close() }()
		return nil, ctx.Err()
	}
}

// tryLockFile takes the flock on p if it is free; ok is false when another
// holds it.
func tryLockFile(p string) (unlock func(), ok bool, err error) {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, err
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return nil, false, nil
	}
	if err != nil {
		f.Close()
		return nil, false, err
	}
	return func() { f.Close() }, true, nil
}

// lockWaitHook, when set (by tests), is called when lockFile finds p
// locked and is about to wait for it.
var lockWaitHook func(p string)

// ctxReader stops a long read when its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readManifest reads package.hcl from root, a regular file no larger than
// the limit (a larger one is refused before it is parsed).
func readManifest(root *os.Root, lim spec.Limits) ([]byte, error) {
	f, fi, err := safefile.OpenRegularIn(root, ManifestFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	max := lim.WithDefaults().FileSize
	if fi.Size() > max {
		return nil, badPackage{fmt.Errorf("%s is %d bytes, over the limit of %d bytes (limits.spec_file_size in the host config)", ManifestFile, fi.Size(), max)}
	}
	return io.ReadAll(io.LimitReader(f, max+1))
}
