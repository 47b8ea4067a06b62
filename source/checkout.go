package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// checkoutSuffix marks checkout directories written by the confined writer
// below; directories without it (written by older builds) are never reused
// and are pruned like any other old checkout.
const checkoutSuffix = ".v2"

// Limits on what one commit may check out. A commit over a limit is a bad
// commit: it is refused whole and nothing changes.
const (
	maxCheckoutEntries       = 100_000
	maxCheckoutBytes   int64 = 1 << 30
	maxCheckoutDepth         = 128
	maxLinkTarget            = 4096
	maxLinkHops              = 40
)

// checkout returns the directory holding the files of commit h, writing it
// first when it does not exist. A checkout is written to a temporary
// directory and renamed into place, so one that exists is complete.
func (g *Git) checkout(ctx context.Context, s storer.EncodedObjectStorer, h plumbing.Hash, tree *object.Tree) (string, error) {
	dst := filepath.Join(g.checkoutDir(), h.String()+checkoutSuffix)
	if fi, err := os.Lstat(dst); err == nil && fi.IsDir() {
		now := time.Now()
		_ = os.Chtimes(dst, now, now) // recently used: prune keeps it
		return dst, nil
	}
	if err := os.MkdirAll(g.checkoutDir(), 0o700); err != nil {
		return "", fmt.Errorf("git checkout: %w", err)
	}
	model, err := readTree(ctx, s, tree)
	if err != nil {
		return "", fmt.Errorf("git checkout of %s refused: %w", shortHash(h), err)
	}
	tmp, err := os.MkdirTemp(g.checkoutDir(), ".tmp-"+h.String()[:12]+"-")
	if err != nil {
		return "", fmt.Errorf("git checkout: %w", err)
	}
	if err := g.writeTree(ctx, s, model, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("git checkout of %s: %w", shortHash(h), err)
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
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

// entryKind is what a tree entry becomes in a checkout.
type entryKind int

const (
	kindDir entryKind = iota + 1
	kindFile
	kindExec
	kindLink
)

// treeEntry is one entry of a commit's tree, read and checked before
// anything is written.
type treeEntry struct {
	kind   entryKind
	hash   plumbing.Hash
	target string // a link's target
}

// treeModel is a whole commit tree in memory: every path (slash-separated,
// relative to the checkout) and what it is. It is complete before the first
// file is written, so every link can be resolved against it.
type treeModel struct {
	entries map[string]*treeEntry
	order   []string // parents before children
	bytes   int64
}

// checkEntryName refuses tree entry names that are not one plain path
// component, or that git itself would never write: empty, ".", "..",
// ".git" (in any case), and names holding "/", "\\" or NUL.
func checkEntryName(name string) error {
	switch {
	case name == "":
		return errors.New("a tree entry has an empty name")
	case name == "." || name == "..":
		return fmt.Errorf("a tree entry is named %q", name)
	case strings.EqualFold(name, ".git"):
		return fmt.Errorf("a tree entry is named %q", name)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("tree entry %q holds a slash, backslash or NUL", name)
	}
	return nil
}

// readTree reads tree and its subtrees into a model, refusing bad names,
// duplicate names, and trees over the checkout limits.
func readTree(ctx context.Context, s storer.EncodedObjectStorer, tree *object.Tree) (*treeModel, error) {
	m := &treeModel{entries: map[string]*treeEntry{}}
	if err := m.add(ctx, s, tree, "", 0); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *treeModel) add(ctx context.Context, s storer.EncodedObjectStorer, tree *object.Tree, dir string, depth int) error {
	if depth > maxCheckoutDepth {
		return fmt.Errorf("%s: trees nested deeper than %d levels", dir, maxCheckoutDepth)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	seen := make(map[string]bool, len(tree.Entries))
	for _, e := range tree.Entries {
		if err := checkEntryName(e.Name); err != nil {
			if dir != "" {
				return fmt.Errorf("in %s: %w", dir, err)
			}
			return err
		}
		p := path.Join(dir, e.Name)
		if seen[e.Name] {
			return fmt.Errorf("tree entry %q appears twice", p)
		}
		seen[e.Name] = true
		if len(m.entries) >= maxCheckoutEntries {
			return fmt.Errorf("more than %d entries", maxCheckoutEntries)
		}
		switch e.Mode {
		case filemode.Dir:
			sub, err := object.GetTree(s, e.Hash)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			m.put(p, &treeEntry{kind: kindDir, hash: e.Hash})
			if err := m.add(ctx, s, sub, p, depth+1); err != nil {
				return err
			}
		case filemode.Regular, filemode.Deprecated, filemode.Executable:
			b, err := object.GetBlob(s, e.Hash)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if b.Size < 0 || b.Size > maxCheckoutBytes-m.bytes {
				return fmt.Errorf("the files add up to more than %d bytes (at %s)", maxCheckoutBytes, p)
			}
			m.bytes += b.Size
			kind := kindFile
			if e.Mode == filemode.Executable {
				kind = kindExec
			}
			m.put(p, &treeEntry{kind: kind, hash: e.Hash})
		case filemode.Symlink:
			target, err := readBlob(s, e.Hash)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			m.put(p, &treeEntry{kind: kindLink, hash: e.Hash, target: target})
		default:
			// Submodules (commits) have no content here.
		}
	}
	return nil
}

func (m *treeModel) put(p string, e *treeEntry) {
	m.entries[p] = e
	m.order = append(m.order, p)
}

// resolve follows p through the model's links the way the kernel would
// once the checkout is written, and returns the entry it ends at. It fails
// when the path climbs above the checkout, names an absolute target, ends
// at nothing, or loops.
func (m *treeModel) resolve(p string) (string, error) {
	parts := strings.Split(p, "/")
	var cur []string
	hops := 0
	for len(parts) > 0 {
		c := parts[0]
		parts = parts[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return "", errors.New("leads outside the repository")
			}
			cur = cur[:len(cur)-1]
			continue
		}
		next := strings.Join(append(cur[:len(cur):len(cur)], c), "/")
		e := m.entries[next]
		switch {
		case e == nil:
			return "", errors.New("leads to nothing in the repository")
		case e.kind == kindLink:
			if hops++; hops > maxLinkHops {
				return "", errors.New("is a loop of links")
			}
			if strings.HasPrefix(e.target, "/") {
				return "", errors.New("leads outside the repository")
			}
			// The target is relative to the link's directory, which is cur.
			parts = append(strings.Split(e.target, "/"), parts...)
		case e.kind != kindDir && len(parts) > 0:
			return "", errors.New("goes through a file")
		default:
			cur = append(cur, c)
		}
	}
	return strings.Join(cur, "/"), nil
}

// writeTree writes the checked model below dst through an os.Root:
// directories and files first, then only the symbolic links that resolve
// inside the checkout. No link exists while files are written, and the
// root refuses any path that would leave dst, so nothing is ever written
// outside it. Submodules are left out.
func (g *Git) writeTree(ctx context.Context, s storer.EncodedObjectStorer, m *treeModel, dst string) error {
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	var links []string
	for _, p := range m.order {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := m.entries[p]
		switch e.kind {
		case kindDir:
			err = root.Mkdir(p, 0o755)
		case kindFile:
			err = writeBlob(root, s, e.hash, p, 0o644)
		case kindExec:
			err = writeBlob(root, s, e.hash, p, 0o755)
		case kindLink:
			links = append(links, p)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	for _, p := range links {
		if _, err := m.resolve(p); err != nil {
			if g.dir == "" || p == g.dir || strings.HasPrefix(p, g.dir+"/") {
				// Leaving it out would drop the specs it stands for (and
				// delete their merchants): the commit is refused instead.
				return fmt.Errorf("%s is a symbolic link to %q, which cannot be followed inside the repository (%v): refused, since spec files and directories must be in the commit itself", p, m.entries[p].target, err)
			}
			g.log.Warn("git checkout leaves out a symbolic link", "path", p, "target", m.entries[p].target, "why", err.Error())
			continue
		}
		if err := root.Symlink(m.entries[p].target, p); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func writeBlob(root *os.Root, s storer.EncodedObjectStorer, h plumbing.Hash, p string, mode os.FileMode) error {
	b, err := object.GetBlob(s, h)
	if err != nil {
		return err
	}
	r, err := b.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	f, err := root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	// The model checked the blob's size; the copy is bounded by it too.
	n, err := io.Copy(f, io.LimitReader(r, b.Size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != b.Size {
		err = fmt.Errorf("short blob: %d of %d bytes", n, b.Size)
	}
	if err == nil {
		err = root.Chmod(p, mode) // the umask may have cleared bits
	}
	return err
}

func readBlob(s storer.EncodedObjectStorer, h plumbing.Hash) (string, error) {
	b, err := object.GetBlob(s, h)
	if err != nil {
		return "", err
	}
	if b.Size > maxLinkTarget {
		return "", fmt.Errorf("link target of %d bytes", b.Size)
	}
	r, err := b.Reader()
	if err != nil {
		return "", err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxLinkTarget))
	if err != nil {
		return "", err
	}
	if bytes.IndexByte(data, 0) >= 0 || len(data) == 0 {
		return "", errors.New("link target is empty or holds NUL")
	}
	return string(data), nil
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
