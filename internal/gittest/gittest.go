// Package gittest makes real git repositories in temporary directories for
// tests, with go-git: a remote that steward's git source can clone by path.
package gittest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Repo is a git repository with a worktree, on branch main.
type Repo struct {
	t    testing.TB
	Path string
	repo *git.Repository
	n    int
}

// New creates an empty repository in a temporary directory.
func New(t testing.TB) *Repo {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fleet")
	repo, err := git.PlainInitWithOptions(p, &git.PlainInitOptions{
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &Repo{t: t, Path: p, repo: repo}
}

// Git returns the underlying go-git repository, for what Commit does not
// cover (tags, symlinks).
func (r *Repo) Git() *git.Repository { return r.repo }

// ResetMain points main at the commit sha, as a force push does.
func (r *Repo) ResetMain(sha string) {
	r.t.Helper()
	if err := r.repo.Storer.SetReference(plumbing.NewHashReference(plumbing.NewBranchReferenceName("main"), plumbing.NewHash(sha))); err != nil {
		r.t.Fatal(err)
	}
}

// Commit writes files (an empty content deletes the file), commits them on
// the current branch and returns the commit SHA. The n-th commit is made
// at 2025-03-01 12:00:n UTC by "Ops Person <ops@example.com>".
func (r *Repo) Commit(msg string, files map[string]string) string {
	r.t.Helper()
	wt, err := r.repo.Worktree()
	if err != nil {
		r.t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(r.Path, filepath.FromSlash(name))
		if content == "" {
			if _, err := wt.Remove(name); err != nil {
				r.t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
		if _, err := wt.Add(name); err != nil {
			r.t.Fatal(err)
		}
	}
	r.n++
	// Fixed, increasing commit times keep SHAs and commit metadata the same
	// from run to run.
	when := time.Date(2025, 3, 1, 12, 0, r.n, 0, time.UTC)
	h, err := wt.Commit(msg, &git.CommitOptions{
		Author:    &object.Signature{Name: "Ops Person", Email: "ops@example.com", When: when},
		Committer: &object.Signature{Name: "Ops Person", Email: "ops@example.com", When: when},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return h.String()
}

// RawEntry is one entry of a tree object written byte for byte, as a
// hostile pusher could: any mode, any name (slashes, "..", duplicates).
type RawEntry struct {
	Mode string // "100644", "100755", "120000" (symlink), "40000" (tree)
	Name string
	Hash string // hex object id
}

// git runs the git command in the repository with a fixed identity and
// clock, and returns its trimmed output.
func (r *Repo) git(stdin []byte, args ...string) string {
	r.t.Helper()
	out, err := r.tryGit(stdin, args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

func (r *Repo) tryGit(stdin []byte, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = r.Path
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Mallory", "GIT_AUTHOR_EMAIL=mallory@example.com",
		"GIT_COMMITTER_NAME=Mallory", "GIT_COMMITTER_EMAIL=mallory@example.com",
		"GIT_AUTHOR_DATE=2025-03-02T12:00:00Z", "GIT_COMMITTER_DATE=2025-03-02T12:00:00Z")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return strings.TrimSpace(string(out)), nil
}

// Blob writes content as a blob object and returns its id.
func (r *Repo) Blob(content string) string {
	r.t.Helper()
	return r.git([]byte(content), "hash-object", "-w", "--stdin")
}

// BlobOfFile writes the content of the file path as a blob object and
// returns its id (for contents too large to pass as a string).
func (r *Repo) BlobOfFile(path string) string {
	r.t.Helper()
	return r.git(nil, "hash-object", "-w", path)
}

// RawTree writes a tree object holding exactly entries, in the order
// given, with `git hash-object --literally` (which checks nothing), and
// returns its id.
func (r *Repo) RawTree(entries ...RawEntry) string {
	r.t.Helper()
	var b bytes.Buffer
	for _, e := range entries {
		id, err := hex.DecodeString(e.Hash)
		if err != nil || len(id) != 20 {
			r.t.Fatalf("RawTree: bad object id %q", e.Hash)
		}
		fmt.Fprintf(&b, "%s %s\x00", e.Mode, e.Name)
		b.Write(id)
	}
	return r.git(b.Bytes(), "hash-object", "-t", "tree", "--literally", "-w", "--stdin")
}

// CommitTree commits tree with `git commit-tree` as a commit without
// parents (a force push: a fetch then reads no history that an earlier
// crafted commit may have broken), points main at it and returns its id.
func (r *Repo) CommitTree(tree, msg string) string {
	r.t.Helper()
	args := []string{"commit-tree", tree, "-m", msg}
	sha := r.git(nil, args...)
	r.git(nil, "update-ref", "refs/heads/main", sha)
	return sha
}

// TreeOf returns the id of the tree of commit sha's path dir ("" for the
// root), for building crafted trees beside real content.
func (r *Repo) TreeOf(sha, dir string) string {
	r.t.Helper()
	return r.git(nil, "rev-parse", sha+"^{tree}:"+dir)
}
