package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// checkout returns the directory holding the files of commit h, writing it
// first when it does not exist. A checkout is written to a temporary
// directory and renamed into place, so one that exists is complete.
func (g *Git) checkout(ctx context.Context, s storer.EncodedObjectStorer, h plumbing.Hash, tree *object.Tree) (string, error) {
	dst := filepath.Join(g.checkoutDir(), h.String())
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		now := time.Now()
		_ = os.Chtimes(dst, now, now) // recently used: prune keeps it
		return dst, nil
	}
	if err := os.MkdirAll(g.checkoutDir(), 0o755); err != nil {
		return "", fmt.Errorf("git checkout: %w", err)
	}
	tmp, err := os.MkdirTemp(g.checkoutDir(), ".tmp-"+h.String()[:12]+"-")
	if err != nil {
		return "", fmt.Errorf("git checkout: %w", err)
	}
	if err := g.writeTree(ctx, s, tree, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("git checkout of %s: %w", shortHash(h), err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("git checkout: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("git checkout: %w", err)
	}
	g.log.Debug("git checkout written", "commit", h.String(), "dir", dst)
	return dst, nil
}

// writeTree writes the files of tree below dst: regular and executable
// files, and symbolic links that stay inside dst. Submodules are left out.
func (g *Git) writeTree(ctx context.Context, s storer.EncodedObjectStorer, tree *object.Tree, dst string) error {
	w := object.NewTreeWalker(tree, true, nil)
	defer w.Close()
	var links []string
	for {
		name, e, err := w.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := filepath.FromSlash(name)
		if !filepath.IsLocal(rel) {
			return fmt.Errorf("tree entry %q is not a local path", name)
		}
		p := filepath.Join(dst, rel)
		switch e.Mode {
		case filemode.Dir:
			err = os.MkdirAll(p, 0o755)
		case filemode.Regular, filemode.Deprecated:
			err = writeBlob(s, e.Hash, p, 0o644)
		case filemode.Executable:
			err = writeBlob(s, e.Hash, p, 0o755)
		case filemode.Symlink:
			var target string
			if target, err = readBlob(s, e.Hash); err == nil {
				if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
					err = os.Symlink(target, p)
					links = append(links, p)
				}
			}
		default:
			g.log.Debug("git checkout skips an entry", "path", name, "mode", e.Mode.String())
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	// Drop links that resolve outside the checkout, or not at all, checked
	// once every link exists so that chains are followed for real.
	real, err := filepath.EvalSymlinks(dst)
	if err != nil {
		return err
	}
	for _, l := range links {
		t, err := filepath.EvalSymlinks(l)
		if err == nil {
			if r, rerr := filepath.Rel(real, t); rerr == nil && filepath.IsLocal(r) {
				continue
			}
		}
		rel, _ := filepath.Rel(dst, l)
		g.log.Warn("git checkout leaves out a symbolic link that points outside the repository", "path", filepath.ToSlash(rel))
		if err := os.Remove(l); err != nil {
			return err
		}
	}
	return nil
}

func writeBlob(s storer.EncodedObjectStorer, h plumbing.Hash, p string, mode os.FileMode) error {
	b, err := object.GetBlob(s, h)
	if err != nil {
		return err
	}
	r, err := b.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readBlob(s storer.EncodedObjectStorer, h plumbing.Hash) (string, error) {
	b, err := object.GetBlob(s, h)
	if err != nil {
		return "", err
	}
	r, err := b.Reader()
	if err != nil {
		return "", err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, 4096))
	return string(data), err
}

// prune deletes checkouts other than current and the most recently used
// one before it, and leftovers of interrupted writes. Callers hold the lock.
func (g *Git) prune(current string) {
	entries, err := os.ReadDir(g.checkoutDir())
	if err != nil {
		g.log.Warn("git checkout prune", "err", err)
		return
	}
	type old struct {
		name string
		mod  time.Time
	}
	var olds []old
	for _, e := range entries {
		name := e.Name()
		if name == current {
			continue
		}
		if strings.HasPrefix(name, ".tmp-") {
			g.remove(name)
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			g.log.Warn("git checkout prune", "err", err)
			continue
		}
		olds = append(olds, old{name, fi.ModTime()})
	}
	sort.Slice(olds, func(i, j int) bool { return olds[i].mod.After(olds[j].mod) })
	for i, o := range olds {
		if i >= keepCheckouts-1 {
			g.remove(o.name)
		}
	}
}

func (g *Git) remove(name string) {
	if err := os.RemoveAll(filepath.Join(g.checkoutDir(), name)); err != nil {
		g.log.Warn("git checkout prune", "dir", name, "err", err)
	}
}
