package pkgstore

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"path/filepath"

	"steward/internal/safefile"
)

// maxPeekManifest bounds the manifest Peek reads from a tarball.
const maxPeekManifest = 1 << 20

// Peek returns the manifest of name at version without installing
// anything: the installed release's, or, for a local source, the one read
// from the tarball (not verified: what Peek returns is for showing, for
// example the schema a plan would migrate to; Install verifies before
// anything runs). It writes nothing. An HTTP source is not read
// (fs.ErrNotExist): that would download the package.
func (s *Store) Peek(ctx context.Context, source, name, version string) (*Manifest, error) {
	if r, err := s.Get(name, version); err == nil {
		return r.Manifest, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if isHTTP(source) {
		return nil, fmt.Errorf("%s %s is not installed, and peeking at an HTTP source would download it: %w", name, version, fs.ErrNotExist)
	}
	srcDir, err := SourceDir(source)
	if err != nil {
		return nil, err
	}
	tarPath := filepath.Join(srcDir, Tarball(name, version))
	f, fi, err := safefile.OpenRegular(tarPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notFound(srcDir, name, Tarball(name, version))
	}
	if err != nil {
		return nil, sourceFileErr(err)
	}
	defer f.Close()
	if fi.Size() > s.opts.PackageSize {
		return nil, s.tooLarge(tarPath, fi.Size())
	}
	var m *Manifest
	err = s.bounded(ctx, "reading the manifest of "+tarPath, func(ctx context.Context) error {
		zr, err := gzip.NewReader(ctxReader{ctx, f})
		if err != nil {
			return badPackage{fmt.Errorf("%s: not a gzip stream: %w", tarPath, err)}
		}
		tr := tar.NewReader(io.LimitReader(zr, s.opts.MaxBytes))
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				return badPackage{fmt.Errorf("no %s at the root of %s", ManifestFile, tarPath)}
			}
			if err != nil {
				return badPackage{fmt.Errorf("reading %s: %w", tarPath, err)}
			}
			if hdr.Typeflag != tar.TypeReg || path.Clean(hdr.Name) != ManifestFile {
				continue
			}
			src, err := io.ReadAll(io.LimitReader(tr, maxPeekManifest+1))
			if err != nil {
				return badPackage{fmt.Errorf("reading %s: %w", tarPath, err)}
			}
			if len(src) > maxPeekManifest {
				return badPackage{fmt.Errorf("%s in %s is larger than %d bytes", ManifestFile, tarPath, maxPeekManifest)}
			}
			mf, diags := ParseManifestLimits(src, Tarball(name, version)+"/"+ManifestFile, s.opts.Manifest)
			if diags.HasErrors() {
				return &ManifestError{Diags: diags}
			}
			m = mf
			return nil
		}
	})
	return m, err
}
