// Package gittest makes real git repositories in temporary directories for
// tests, with go-git: a remote that steward's git source can clone by path.
package gittest

import (
	"os"
	"path/filepath"
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
