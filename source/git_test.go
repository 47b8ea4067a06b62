package source

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"steward/internal/gittest"
	"steward/spec"
)

// clock is a settable clock for GitOptions.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newGit(t *testing.T, cfg spec.GitConfig) *Git {
	t.Helper()
	if cfg.Ref == "" {
		cfg.Ref = "main"
	}
	return NewGit(cfg, filepath.Join(t.TempDir(), "git"), GitOptions{Timeout: 20 * time.Second})
}

func sourceNames(s *Snapshot) []string {
	var out []string
	for _, src := range s.Sources {
		out = append(out, src.Name)
	}
	return out
}

func TestGitLoadClones(t *testing.T) {
	r := gittest.New(t)
	h := r.Commit("Add east and west\n\nLonger body.", map[string]string{
		"merchants/east.hcl":        "merchant \"acme\" {}\n",
		"merchants/sub/west.hcl":    "merchant \"bluebird\" {}\n",
		"merchants/.draft/x.hcl":    "hidden\n",
		"merchants/notes.md":        "not a spec\n",
		"top.hcl":                   "outside dir\n",
		"packages/inv-1.0.0.tar.gz": "tarball\n",
	})
	g := newGit(t, spec.GitConfig{URL: r.Path, Dir: "merchants"})
	snap := load(t, g)

	if snap.Revision != h {
		t.Errorf("revision %s, want commit %s", snap.Revision, h)
	}
	if got := strings.Join(sourceNames(snap), ","); got != "merchants/east.hcl,merchants/sub/west.hcl" {
		t.Errorf("sources %s", got)
	}
	east := snap.Sources[0]
	if string(east.Bytes) != "merchant \"acme\" {}\n" {
		t.Errorf("east.hcl = %q", east.Bytes)
	}
	// Relative package sources resolve against the checkout: ../packages
	// from the spec dir is the repository's packages dir.
	if b, err := os.ReadFile(filepath.Join(east.Dir, "..", "packages", "inv-1.0.0.tar.gz")); err != nil || string(b) != "tarball\n" {
		t.Errorf("package beside the specs in the checkout: %q, %v", b, err)
	}
	if want := filepath.Join(east.Dir, "sub"); snap.Sources[1].Dir != want {
		t.Errorf("west's dir %s, want %s", snap.Sources[1].Dir, want)
	}
	c := snap.Commit
	if c == nil || c.SHA != h || c.Author != "Ops Person <ops@example.com>" || c.Subject != "Add east and west" ||
		!c.Time.Equal(time.Date(2025, 3, 1, 12, 0, 1, 0, time.UTC)) {
		t.Errorf("commit info %+v", c)
	}
}

func TestGitDirDefaultsToRoot(t *testing.T) {
	r := gittest.New(t)
	r.Commit("specs at the root", map[string]string{"a.hcl": "a\n", "b/c.hcl": "c\n", ".github/x.hcl": "hidden\n"})
	snap := load(t, newGit(t, spec.GitConfig{URL: r.Path}))
	if got := strings.Join(sourceNames(snap), ","); got != "a.hcl,b/c.hcl" {
		t.Errorf("sources %s", got)
	}
}

func TestGitSync(t *testing.T) {
	r := gittest.New(t)
	r.Commit("one", map[string]string{"m/a.hcl": "a1\n"})
	g := newGit(t, spec.GitConfig{URL: r.Path, Dir: "m"})
	load(t, g)
	ctx := context.Background()

	fetches := g.fetches.Load()
	changed, err := g.Sync(ctx)
	if err != nil || changed {
		t.Fatalf("Sync without a new commit = %v, %v; want false, nil", changed, err)
	}
	if n := g.fetches.Load() - fetches; n != 0 {
		t.Errorf("Sync without a new commit fetched %d times; ls-remote should have skipped the fetch", n)
	}

	h2 := r.Commit("two", map[string]string{"m/a.hcl": "a2\n", "m/b.hcl": "b\n"})
	changed, err = g.Sync(ctx)
	if err != nil || !changed {
		t.Fatalf("Sync after a new commit = %v, %v; want true, nil", changed, err)
	}
	snap := load(t, g)
	if snap.Revision != h2 || contents(snap)["m/a.hcl"] != "a2\n" || len(snap.Sources) != 2 {
		t.Errorf("after Sync: revision %s (want %s), sources %v", snap.Revision, h2, contents(snap))
	}
}

func TestGitLoadFetchesWhenDue(t *testing.T) {
	r := gittest.New(t)
	h1 := r.Commit("one", map[string]string{"a.hcl": "1\n"})
	clk := &clock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	g := NewGit(spec.GitConfig{URL: r.Path, Ref: "main", Poll: time.Minute}, t.TempDir(), GitOptions{Now: clk.Now})
	load(t, g)
	h2 := r.Commit("two", map[string]string{"a.hcl": "2\n"})

	clk.Add(59 * time.Second)
	if snap := load(t, g); snap.Revision != h1 {
		t.Errorf("Load before the poll interval passed: %s, want the cached %s", snap.Revision, h1)
	}
	clk.Add(time.Second)
	if snap := load(t, g); snap.Revision != h2 {
		t.Errorf("Load once a fetch is due: %s, want %s", snap.Revision, h2)
	}
}

func TestGitWatchPolls(t *testing.T) {
	r := gittest.New(t)
	r.Commit("one", map[string]string{"a.hcl": "1\n"})
	g := newGit(t, spec.GitConfig{URL: r.Path, Poll: 20 * time.Millisecond})
	load(t, g)

	ch := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Watch(ctx, ch) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("Watch did not return after its context ended")
		}
	}()

	h2 := r.Commit("two", map[string]string{"a.hcl": "2\n"})
	loadUntil(t, g, ch, "the new commit", func(s *Snapshot) bool { return s.Revision == h2 })
}

func TestGitFollowsForcePush(t *testing.T) {
	r := gittest.New(t)
	h1 := r.Commit("one", map[string]string{"a.hcl": "1\n"})
	h2 := r.Commit("two", map[string]string{"a.hcl": "2\n"})
	g := newGit(t, spec.GitConfig{URL: r.Path})
	if snap := load(t, g); snap.Revision != h2 {
		t.Fatalf("revision %s, want %s", snap.Revision, h2)
	}

	r.ResetMain(h1)
	changed, err := g.Sync(context.Background())
	if err != nil || !changed {
		t.Fatalf("Sync after a force push = %v, %v; want true, nil", changed, err)
	}
	snap := load(t, g)
	if snap.Revision != h1 || contents(snap)["a.hcl"] != "1\n" {
		t.Errorf("after force push: %s %v, want %s", snap.Revision, contents(snap), h1)
	}

	// And forward again past the old head, on a diverged history.
	h3 := r.Commit("three", map[string]string{"a.hcl": "3\n"})
	if changed, err := g.Sync(context.Background()); err != nil || !changed {
		t.Fatalf("Sync after a diverging commit = %v, %v", changed, err)
	}
	if snap := load(t, g); snap.Revision != h3 {
		t.Errorf("revision %s, want %s", snap.Revision, h3)
	}
}

func TestGitTagRef(t *testing.T) {
	r := gittest.New(t)
	h1 := r.Commit("one", map[string]string{"a.hcl": "1\n"})
	sig := &object.Signature{Name: "Ops", Email: "ops@example.com", When: time.Unix(1, 0)}
	if _, err := r.Git().CreateTag("v1", plumbing.NewHash(h1), &git.CreateTagOptions{Tagger: sig, Message: "release v1"}); err != nil {
		t.Fatal(err)
	}
	r.Commit("two", map[string]string{"a.hcl": "2\n"})
	snap := load(t, newGit(t, spec.GitConfig{URL: r.Path, Ref: "v1"}))
	if snap.Revision != h1 || contents(snap)["a.hcl"] != "1\n" {
		t.Errorf("annotated tag v1: revision %s, want the tagged commit %s", snap.Revision, h1)
	}
}

func TestGitMissingRef(t *testing.T) {
	r := gittest.New(t)
	r.Commit("one", map[string]string{"a.hcl": "1\n"})
	_, err := newGit(t, spec.GitConfig{URL: r.Path, Ref: "release"}).Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), `"release"`) || !strings.Contains(err.Error(), r.Path) {
		t.Fatalf("err = %v, want one naming the ref and the URL", err)
	}
	t.Log(err)
}

func TestGitMissingDir(t *testing.T) {
	r := gittest.New(t)
	r.Commit("one", map[string]string{"merchants/a.hcl": "1\n", "file": "x\n"})
	for _, dir := range []string{"fleet", "file"} {
		_, err := newGit(t, spec.GitConfig{URL: r.Path, Dir: dir}).Load(context.Background())
		if err == nil || !strings.Contains(err.Error(), `dir "`+dir+`" not found`) {
			t.Errorf("dir %q: err = %v, want dir not found", dir, err)
		}
	}
	if _, err := newGit(t, spec.GitConfig{URL: r.Path, Dir: "../x"}).Load(context.Background()); err == nil {
		t.Error("dir ../x: no error")
	}
	if snap := load(t, newGit(t, spec.GitConfig{URL: r.Path, Dir: "/merchants/"})); len(snap.Sources) != 1 {
		t.Errorf("dir /merchants/: %v", sourceNames(snap))
	}
}

func TestGitPrunesOldCheckouts(t *testing.T) {
	r := gittest.New(t)
	g := newGit(t, spec.GitConfig{URL: r.Path})
	var last []string
	for i := range 4 {
		last = append(last, r.Commit("c", map[string]string{"a.hcl": strings.Repeat("x", i+1)}))
		if _, err := g.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		load(t, g)
	}
	entries, err := os.ReadDir(g.checkoutDir())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{last[2] + checkoutSuffix, last[3] + checkoutSuffix}
	if strings.Join(got, ",") != strings.Join(want, ",") && strings.Join(got, ",") != want[1]+","+want[0] {
		t.Errorf("checkouts %v, want the current and the previous %v", got, want)
	}
}

func TestGitErrorsHideSecrets(t *testing.T) {
	var mu sync.Mutex
	var seenAuth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		seenAuth = append(seenAuth, req.Header.Get("Authorization"))
		mu.Unlock()
		http.Error(w, "denied", http.StatusForbidden)
	}))
	defer srv.Close()

	const token = "ghp_s3cretTokenValue"
	t.Setenv("STEWARD_TEST_GIT_TOKEN", token)
	g := newGit(t, spec.GitConfig{URL: srv.URL + "/fleet.git", TokenEnv: "STEWARD_TEST_GIT_TOKEN"})
	_, err := g.Load(context.Background())
	if err == nil {
		t.Fatal("Load from a server that refuses: no error")
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("error shows the token: %v", err)
	}
	t.Log(err)
	mu.Lock()
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(TokenUser+":"+token))
	if len(seenAuth) == 0 || seenAuth[0] != want {
		t.Errorf("server saw Authorization %q, want basic auth with %s and the token", seenAuth, TokenUser)
	}
	mu.Unlock()

	const password = "pa55wordInURL"
	g = newGit(t, spec.GitConfig{URL: strings.Replace(srv.URL, "http://", "http://deploy:"+password+"@", 1) + "/fleet.git"})
	if _, err := g.Load(context.Background()); err == nil || strings.Contains(err.Error(), password) {
		t.Errorf("URL with a password: err = %v, want one without the password", err)
	}

	t.Setenv("STEWARD_TEST_GIT_TOKEN", "")
	g = newGit(t, spec.GitConfig{URL: srv.URL + "/fleet.git", TokenEnv: "STEWARD_TEST_GIT_TOKEN"})
	if _, err := g.Load(context.Background()); err == nil || !strings.Contains(err.Error(), "STEWARD_TEST_GIT_TOKEN") {
		t.Errorf("empty token env: err = %v, want one naming the variable", err)
	}
}

func TestGitCheckoutKeepsOnlyLinksInside(t *testing.T) {
	r := gittest.New(t)
	wt, err := r.Git().Worktree()
	if err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"merchants/pkgs": "../packages",       // inside: kept
		"docs/etc.hcl":   "/etc/hostname",     // absolute: dropped
		"docs/up.hcl":    "../../outside.hcl", // leaves the checkout: dropped
		"docs/loop.hcl":  "loop.hcl",          // resolves nowhere: dropped
	} {
		if err := os.MkdirAll(filepath.Join(r.Path, filepath.Dir(link)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(r.Path, filepath.FromSlash(link))); err != nil {
			t.Fatal(err)
		}
		if _, err := wt.Add(link); err != nil {
			t.Fatal(err)
		}
	}
	h := r.Commit("links", map[string]string{"merchants/a.hcl": "a\n", "packages/inv.tar.gz": "tarball\n"})
	if n := countLinks(t, r.Git(), plumbing.NewHash(h)); n != 4 {
		t.Fatalf("the commit has %d symbolic links, want 4", n)
	}
	snap := load(t, newGit(t, spec.GitConfig{URL: r.Path, Dir: "merchants"}))
	if got := strings.Join(sourceNames(snap), ","); got != "merchants/a.hcl" {
		t.Errorf("sources %s, want only merchants/a.hcl", got)
	}
	if b, err := os.ReadFile(filepath.Join(snap.Sources[0].Dir, "pkgs", "inv.tar.gz")); err != nil || string(b) != "tarball\n" {
		t.Errorf("link inside the repository: %q, %v", b, err)
	}
	for _, l := range []string{"etc.hcl", "up.hcl", "loop.hcl"} {
		if _, err := os.Lstat(filepath.Join(snap.Sources[0].Dir, "..", "docs", l)); err == nil {
			t.Errorf("docs/%s was created", l)
		}
	}
}

func countLinks(t *testing.T, repo *git.Repository, h plumbing.Hash) int {
	t.Helper()
	c, err := repo.CommitObject(h)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := c.Tree()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = tree.Files().ForEach(func(f *object.File) error {
		if f.Mode == filemode.Symlink {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestGitLoadServesTheCachedCommitWhenTheRemoteIsGone(t *testing.T) {
	r := gittest.New(t)
	h := r.Commit("first", map[string]string{"merchants/a.hcl": `merchant "a" {}`})
	cache := t.TempDir()
	g := NewGit(spec.GitConfig{URL: r.Path, Ref: "main", Dir: "merchants", Poll: time.Nanosecond}, cache, GitOptions{})
	if _, err := g.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(r.Path); err != nil {
		t.Fatal(err)
	}
	s, err := g.Load(context.Background())
	if err != nil {
		t.Fatalf("Load with the remote gone: %v", err)
	}
	if s.Revision != h {
		t.Errorf("revision %s, want the cached %s", s.Revision, h)
	}
	// A fresh cache has nothing to fall back on.
	g2 := NewGit(spec.GitConfig{URL: r.Path, Ref: "main", Dir: "merchants"}, t.TempDir(), GitOptions{})
	if _, err := g2.Load(context.Background()); err == nil {
		t.Error("Load without a cache and without a remote succeeded")
	}
}

// The cache holds the specs, secrets included, and merchants run as other
// users: it is private to steward's user, also when an older build left
// it readable.
func TestGitCacheIsPrivate(t *testing.T) {
	r := gittest.New(t)
	r.Commit("specs", map[string]string{"merchants/east.hcl": "merchant \"acme\" {}\n"})
	state := filepath.Join(t.TempDir(), "state")
	cache := filepath.Join(state, "git")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	g := NewGit(spec.GitConfig{URL: r.Path, Dir: "merchants"}, cache, GitOptions{Timeout: 20 * time.Second})
	load(t, g)
	for _, d := range []string{cache, g.root, g.checkoutDir()} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v; want no access for group and others", d, fi.Mode().Perm())
		}
	}
}
