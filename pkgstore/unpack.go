package pkgstore

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// limits bound what one package may unpack to (Options.MaxFiles,
// Options.MaxBytes). Zero fields take the defaults.
type limits struct {
	MaxFiles int   // entries of any kind
	MaxBytes int64 // total size of regular files
}

func (l limits) withDefaults() limits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// streamMax is the most the decompressed stream may hold: the file data,
// plus 8 KiB per entry for its headers (PAX records included) and padding,
// plus 1 MiB for what follows the end of the archive (tar pads to records
// of 10 KiB).
func (l limits) streamMax() int64 {
	return l.MaxBytes + int64(l.MaxFiles)*(8<<10) + 1<<20
}

// boundedReader fails a read beyond max bytes.
type boundedReader struct {
	r    io.Reader
	max  int64
	read int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.read >= b.max {
		return 0, badPackage{fmt.Errorf("the archive decompresses to more than %d bytes (the unpack limits: file data plus headers)", b.max)}
	}
	if int64(len(p)) > b.max-b.read {
		p = p[:b.max-b.read]
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	return n, err
}

// UnsafeEntryError is returned for an archive entry that is refused: an
// absolute path, a ".." component, a link leading out of the release, a
// device or fifo, or an entry beyond a limit.
type UnsafeEntryError struct {
	Entry  string // the entry's name as written in the archive
	Reason string
}

func (e *UnsafeEntryError) Error() string {
	return fmt.Sprintf("refusing archive entry %q: %s", e.Entry, e.Reason)
}

// Is makes every refused entry match ErrBadPackage.
func (*UnsafeEntryError) Is(t error) bool { return t == ErrBadPackage }

type entryKind int

const (
	kindDir entryKind = iota + 1
	kindFile
	kindSymlink
)

// unpack extracts the gzip-compressed tar stream r into dir, which must be
// an existing, empty directory. Every entry is checked before anything is
// written for it, and all writes go through an os.Root, so nothing lands
// outside dir even if a check were wrong. Files get their write bits; the
// caller makes the tree read-only afterwards (see makeReadOnly). The
// decompressed stream is read in chunks, each after a look at ctx, and is
// bounded by lim.streamMax.
func unpack(ctx context.Context, r io.Reader, dir string, lim limits) error {
	lim = lim.withDefaults()
	gz, err := gzip.NewReader(r)
	if err != nil {
		return formatErr("not a gzip stream", err)
	}
	zr := ctxReader{ctx, &boundedReader{r: gz, max: lim.streamMax()}}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()

	u := &unpacker{root: root, lim: lim, seen: map[string]entryKind{".": kindDir}}
	tr := tar.NewReader(zr)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return formatErr("reading tar", err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return err
		}
	}
	// Read the gzip stream to its end so a trailing checksum error is seen
	// and a caller hashing the stream sees all of it.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return formatErr("reading gzip", err)
	}
	return gz.Close()
}

// formatErr marks a broken archive as a bad package, unless reading was
// cut short by a cancelled context.
func formatErr(what string, err error) error {
	err = fmt.Errorf("%s: %w", what, err)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return badPackage{err}
}

type unpacker struct {
	root  *os.Root
	lim   limits
	files int
	bytes int64
	seen  map[string]entryKind // cleaned path → what was made there
}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	refuse := func(format string, args ...any) error {
		return &UnsafeEntryError{Entry: hdr.Name, Reason: fmt.Sprintf(format, args...)}
	}
	u.files++
	if u.files > u.lim.MaxFiles {
		return refuse("more than %d entries in the archive", u.lim.MaxFiles)
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // metadata for the archive (git archive writes one)
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock:
		return refuse("device files are not allowed")
	case tar.TypeFifo:
		return refuse("fifos are not allowed")
	default:
		return refuse("entry type %q is not allowed", hdr.Typeflag)
	}

	name, err := cleanEntryName(hdr.Name)
	if err != nil {
		return refuse("%v", err)
	}
	if name == "." {
		if hdr.Typeflag == tar.TypeDir {
			return nil // "./" as written by tar -C dir .
		}
		return refuse("only a directory may stand for the release root")
	}
	// Nothing may be made beneath a symlink or a file: that is how a link
	// planted earlier in the archive would redirect later writes.
	for p := path.Dir(name); p != "."; p = path.Dir(p) {
		switch u.seen[p] {
		case kindSymlink:
			return refuse("parent %q is a symlink", p)
		case kindFile:
			return refuse("parent %q is a file", p)
		}
	}
	if prev, ok := u.seen[name]; ok {
		if prev == kindDir && hdr.Typeflag == tar.TypeDir {
			return nil
		}
		return refuse("duplicate entry")
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := u.mkdirAll(name); err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
	case tar.TypeReg:
		if hdr.Size > u.lim.MaxBytes-u.bytes {
			return refuse("unpacked size exceeds the limit of %d bytes", u.lim.MaxBytes)
		}
		u.bytes += hdr.Size
		if err := u.mkdirAll(path.Dir(name)); err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
		// Read and write for the owner while unpacking, plus the
		// archive's execute bits; makeReadOnly takes the write bit away.
		perm := 0o644 | fs.FileMode(hdr.Mode)&0o111
		f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
		n, err := io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
		if n != hdr.Size {
			return fmt.Errorf("archive entry %q: short read: %d of %d bytes", hdr.Name, n, hdr.Size)
		}
		if err := u.root.Chmod(name, perm); err != nil { // umask may have cleared bits
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
		u.seen[name] = kindFile
	case tar.TypeSymlink:
		if err := checkSymlinkTarget(name, hdr.Linkname); err != nil {
			return refuse("symlink to %q %v", hdr.Linkname, err)
		}
		if err := u.mkdirAll(path.Dir(name)); err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
		if err := u.root.Symlink(hdr.Linkname, name); err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
		u.seen[name] = kindSymlink
	case tar.TypeLink:
		target, err := cleanEntryName(hdr.Linkname)
		if err != nil {
			return refuse("hard link target: %v", err)
		}
		if u.seen[target] != kindFile {
			return refuse("hard link target %q is not a regular file earlier in the archive", hdr.Linkname)
		}
		if err := u.mkdirAll(path.Dir(name)); err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
		if err := u.root.Link(target, name); err != nil {
			return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
		}
		u.seen[name] = kindFile
	}
	return nil
}

// mkdirAll makes dir and its missing parents, recording them. The parents
// were already checked not to be symlinks or files.
func (u *unpacker) mkdirAll(dir string) error {
	if dir == "." || u.seen[dir] == kindDir {
		return nil
	}
	if err := u.mkdirAll(path.Dir(dir)); err != nil {
		return err
	}
	if err := u.root.Mkdir(dir, 0o755); err != nil {
		return err
	}
	u.seen[dir] = kindDir
	return nil
}

// cleanEntryName returns the slash-separated, cleaned form of an archive
// entry name, refusing absolute names, ".." components and odd characters.
func cleanEntryName(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty name")
	case strings.HasPrefix(name, "/"):
		return "", errors.New("absolute path")
	case strings.ContainsAny(name, "\x00\\"):
		return "", errors.New("NUL or backslash in name")
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", errors.New(`".." component`)
		}
	}
	return path.Clean(name), nil
}

// checkSymlinkTarget allows relative targets that stay inside the release
// when resolved from the link's directory. ".." may only lead the target:
// the link's own directory holds no symlinks (see entry), so climbing from
// it is exact, while "a/.." would climb from wherever a symlink a points.
func checkSymlinkTarget(link, target string) error {
	switch {
	case target == "":
		return errors.New("is empty")
	case strings.HasPrefix(target, "/"):
		return errors.New("is absolute")
	case strings.ContainsAny(target, "\x00\\"):
		return errors.New("has NUL or backslash")
	}
	depth := strings.Count(link, "/") // directories above the link
	up, down := 0, false
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if down {
				return errors.New(`has ".." after a name; ".." may only lead the target`)
			}
			up++
			if up > depth {
				return errors.New("escapes the release root")
			}
		default:
			down = true
		}
	}
	return nil
}

// makeReadOnly takes the write bits off every file and directory under dir
// (directories become 0555); symlinks are left alone.
func makeReadOnly(dir string) error {
	var dirs []string
	err := fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			dirs = append(dirs, p)
			return nil
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return os.Chmod(dir+"/"+p, 0o444|info.Mode().Perm()&0o111)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Directories last, deepest first, though chmod needs no write access
	// to the parent: this keeps the walk above free of surprises.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chmod(dir+"/"+dirs[i], 0o555); err != nil {
			return err
		}
	}
	return nil
}

// removeAllWritable removes dir even when it was made read-only.
func removeAllWritable(dir string) error {
	_ = fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(dir+"/"+p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
