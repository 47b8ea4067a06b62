package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"steward/spec"
)

// Defaults of GitOptions; a GitConfig without a poll interval polls every
// spec.DefaultGitPoll.
const (
	DefaultGitTimeout = 60 * time.Second
	// TokenUser is the HTTP basic auth user name sent with a token_env
	// token when the URL names no user; GitHub expects it, most other
	// hosts accept any name. Put another in the URL (https://oauth2@host/...)
	// to change it.
	TokenUser = "x-access-token"
)

// trackedRef is the local ref the configured remote ref is fetched into.
const trackedRef = plumbing.ReferenceName("refs/steward/tracked")

// keepCheckouts is how many checkout directories are kept: the current and
// the previous one, which a concurrent reader may still use.
const keepCheckouts = 2

// GitOptions tune a Git.
type GitOptions struct {
	Logger *slog.Logger
	// Now is the clock deciding when a fetch is due; time.Now when nil.
	Now func() time.Time
	// Timeout bounds each network operation (ls-remote, fetch) and the wait
	// for another process's lock on the cache. Zero means DefaultGitTimeout.
	Timeout time.Duration
	// MaxFileSize is the largest spec file read from a commit, in bytes;
	// a larger one fails Load with an error naming the file and the limit.
	// Zero means DefaultMaxFileSize.
	MaxFileSize int64
	// MaxTotalSize is the largest size of a commit's spec files together;
	// a commit beyond it is refused. Zero means no limit here.
	MaxTotalSize int64
	// FetchCommand, when set, is the command of a process that fetches
	// (RunFetchProcess), so that what a fetch takes in memory is not this
	// process's; FetchMemory bounds that process's resident memory (zero:
	// no bound). Without FetchCommand the fetch runs in this process.
	FetchCommand []string
	FetchMemory  int64
}

// Git is a git repository of spec files, fetched into a local cache.
//
// Its methods may be called concurrently; a lock file also serialises
// processes sharing the cache (a daemon and a CLI run).
type Git struct {
	cfg    spec.GitConfig
	dir    string // cfg.Dir cleaned: slash-separated, "" for the root
	dirErr error
	root   string // cacheDir/<url hash>
	opts   GitOptions
	log    *slog.Logger

	mu        sync.Mutex
	lastCheck time.Time // last successful ls-remote
	last      string    // SHA last loaded or announced

	fetches atomic.Int64 // fetches run, for tests
}

// NewGit returns the git source cfg, cached below cacheDir (typically
// <state>/git): the repository for cfg.URL lives in cacheDir/<hash of URL>.
func NewGit(cfg spec.GitConfig, cacheDir string, opts GitOptions) *Git {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultGitTimeout
	}
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if cfg.Poll <= 0 {
		cfg.Poll = spec.DefaultGitPoll
	}
	if cfg.Ref == "" {
		cfg.Ref = "main"
	}
	sum := sha256.Sum256([]byte(cfg.URL))
	g := &Git{
		cfg:  cfg,
		root: filepath.Join(cacheDir, hex.EncodeToString(sum[:8])),
		opts: opts,
	}
	g.dir, g.dirErr = cleanRepoDir(cfg.Dir)
	g.log = orDiscard(opts.Logger).With("source", redactURL(cfg.URL), "ref", cfg.Ref)
	return g
}

// cleanRepoDir normalises a dir inside a repository to slash form
// without leading or trailing slashes; "" is the root.
func cleanRepoDir(dir string) (string, error) {
	d := path.Clean("./" + strings.Trim(filepath.ToSlash(dir), "/"))
	if d == "." {
		return "", nil
	}
	if !filepath.IsLocal(filepath.FromSlash(d)) {
		return "", fmt.Errorf("git dir %q leaves the repository", dir)
	}
	return d, nil
}

// Load returns the snapshot of the fetched commit, fetching first when no
// commit was fetched yet or the last check of the remote is a poll interval
// old. A failed fetch fails Load: the caller keeps its last good state.
func (g *Git) Load(ctx context.Context) (*Snapshot, error) {
	if g.dirErr != nil {
		return nil, g.dirErr
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	unlock, err := g.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	repo, err := g.open()
	if err != nil {
		return nil, err
	}
	local, _ := g.localHash(repo)
	if local.IsZero() || !g.opts.Now().Before(g.lastCheck.Add(g.cfg.Poll)) {
		var err error
		if repo, _, err = g.sync(ctx, repo); err != nil {
			if local.IsZero() {
				return nil, err
			}
			// The remote is unreachable but a commit is cached: serve it,
			// so a daemon that starts during a git outage still has its
			// desired state; the next poll fetches again.
			g.log.Warn("git fetch failed; using the cached commit", "commit", local.String(), "err", err)
		}
	}
	s, err := g.snapshot(ctx, repo)
	if err != nil {
		return nil, err
	}
	g.last = s.Revision
	return s, nil
}

// Sync checks the remote now and fetches when the ref moved (the webhook's
// "sync"). It reports whether the fetched commit changed. When the ref's
// commit is the one already fetched, it does not fetch.
func (g *Git) Sync(ctx context.Context) (changed bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	unlock, err := g.lock(ctx)
	if err != nil {
		return false, err
	}
	defer unlock()
	repo, err := g.open()
	if err != nil {
		return false, err
	}
	_, changed, err = g.sync(ctx, repo)
	return changed, err
}

// Watch checks the remote every poll interval (cfg.Poll) and notifies ch
// when the fetched commit differs from the last one loaded or announced.
// Failed checks are logged and retried at the next interval.
func (g *Git) Watch(ctx context.Context, ch chan<- struct{}) error {
	t := time.NewTicker(g.cfg.Poll)
	defer t.Stop()
	for {
		g.announce(ch)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := g.Sync(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("git poll failed", "err", err)
		}
	}
}

// announce notifies ch when the fetched commit is not the last one loaded
// or announced.
func (g *Git) announce(ch chan<- struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	repo, err := git.PlainOpen(g.repoDir())
	if err != nil {
		return
	}
	h, err := g.localHash(repo)
	if err != nil || h.IsZero() || h.String() == g.last {
		return
	}
	g.last = h.String()
	notify(ch)
}

func (g *Git) repoDir() string     { return filepath.Join(g.root, "repo.git") }
func (g *Git) checkoutDir() string { return filepath.Join(g.root, "checkouts") }

// largeObject is the size from which an object of the cache is read from
// its pack as it is used, not whole into memory.
const largeObject = 1 << 20

// open opens the cache's bare repository, creating it when missing.
func (g *Git) open() (*git.Repository, error) {
	st := filesystem.NewStorageWithOptions(osfs.New(g.repoDir()), cache.NewObjectLRUDefault(), filesystem.Options{LargeObjectThreshold: largeObject})
	repo, err := git.Open(st, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.Init(st, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("git cache %s: %w", g.repoDir(), err)
	}
	return repo, nil
}

// localHash is the commit (or tag) fetched last; zero when none was.
func (g *Git) localHash(repo *git.Repository) (plumbing.Hash, error) {
	ref, err := repo.Reference(trackedRef, false)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if !hasObject(repo, ref.Hash()) {
		return plumbing.ZeroHash, nil // an interrupted fetch: fetch again
	}
	return ref.Hash(), nil
}

func hasObject(repo *git.Repository, h plumbing.Hash) bool {
	return repo.Storer.HasEncodedObject(h) == nil
}

func (g *Git) remote(repo *git.Repository) *git.Remote {
	return git.NewRemote(repo.Storer, &config.RemoteConfig{Name: "origin", URLs: []string{g.cfg.URL}})
}

// sync lists the remote's refs and fetches the configured one when its
// commit is not the one fetched last. Callers hold the locks.
func (g *Git) sync(ctx context.Context, repo *git.Repository) (_ *git.Repository, _ bool, err error) {
	name, want, err := g.listRef(ctx, repo)
	if err != nil {
		return repo, false, err
	}
	before, err := g.localHash(repo)
	if err != nil {
		return repo, false, g.errorf("read %s: %w", trackedRef, err)
	}
	g.lastCheck = g.opts.Now()
	if before == want {
		g.log.Debug("git ref unchanged", "commit", want.String())
		return repo, false, nil
	}
	fctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	g.fetches.Add(1)
	if err := g.fetch(fctx, repo, "+"+name.String()+":"+trackedRef.String()); err != nil {
		return repo, false, g.errorf("fetch %s from %s: %w", name, redactURL(g.cfg.URL), err)
	}
	if len(g.opts.FetchCommand) > 0 {
		// The fetch process stored new packs this repository has not seen.
		reopened, err := g.open()
		if err != nil {
			return repo, false, err
		}
		repo = reopened
	}
	after, err := g.localHash(repo)
	if err != nil || after.IsZero() {
		return repo, false, g.errorf("fetch %s from %s: ref not stored after the fetch (%v)", name, redactURL(g.cfg.URL), err)
	}
	g.log.Info("git fetched", "ref_name", name.String(), "from", shortHash(before), "to", after.String())
	return repo, after != before, nil
}

// lsRemote resolves the configured ref on the remote: a full ref name, HEAD,
// or a branch or tag name.
func (g *Git) lsRemote(ctx context.Context, rem *git.Remote, auth transport.AuthMethod) (plumbing.ReferenceName, plumbing.Hash, error) {
	lctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	refs, err := rem.ListContext(lctx, &git.ListOptions{Auth: auth})
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return "", plumbing.ZeroHash, g.errorf("ref %q not found at %s: the repository is empty", g.cfg.Ref, redactURL(g.cfg.URL))
	}
	if err != nil {
		return "", plumbing.ZeroHash, g.errorf("list refs of %s: %w", redactURL(g.cfg.URL), err)
	}
	byName := make(map[plumbing.ReferenceName]*plumbing.Reference, len(refs))
	for _, r := range refs {
		byName[r.Name()] = r
	}
	var candidates []plumbing.ReferenceName
	switch ref := g.cfg.Ref; {
	case strings.HasPrefix(ref, "refs/") || ref == "HEAD":
		candidates = []plumbing.ReferenceName{plumbing.ReferenceName(ref)}
	default:
		candidates = []plumbing.ReferenceName{plumbing.NewBranchReferenceName(ref), plumbing.NewTagReferenceName(ref)}
	}
	for _, c := range candidates {
		r := byName[c]
		for i := 0; r != nil && r.Type() == plumbing.SymbolicReference && i < 5; i++ {
			c = r.Target()
			r = byName[c]
		}
		if r != nil && r.Type() == plumbing.HashReference {
			return c, r.Hash(), nil
		}
	}
	return "", plumbing.ZeroHash, g.errorf("ref %q not found at %s (looked for %s)", g.cfg.Ref, redactURL(g.cfg.URL), joinNames(candidates))
}

func joinNames(ns []plumbing.ReferenceName) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = n.String()
	}
	return strings.Join(s, " and ")
}

// snapshot reads the fetched commit: it checks dir, writes the checkout if
// missing and reads the spec files from it, regular files only and each up
// to GitOptions.MaxFileSize (see readSpecFile); errors name files by their
// path in the repository.
func (g *Git) snapshot(ctx context.Context, repo *git.Repository) (*Snapshot, error) {
	h, err := g.localHash(repo)
	if err != nil || h.IsZero() {
		return nil, g.errorf("no commit of ref %q fetched from %s (%v)", g.cfg.Ref, redactURL(g.cfg.URL), err)
	}
	commit, err := peelCommit(repo, h)
	if err != nil {
		return nil, g.errorf("ref %q of %s: %w", g.cfg.Ref, redactURL(g.cfg.URL), err)
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, g.errorf("commit %s: %w", commit.Hash, err)
	}
	if g.dir != "" {
		e, err := tree.FindEntry(g.dir)
		if err != nil || e.Mode.IsFile() {
			return nil, g.errorf("dir %q not found in commit %s of %s (ref %q)", g.dir, shortHash(commit.Hash), redactURL(g.cfg.URL), g.cfg.Ref)
		}
	}
	co, err := g.checkout(ctx, repo.Storer, commit.Hash, tree)
	if err != nil {
		return nil, err
	}
	specRoot := filepath.Join(co, filepath.FromSlash(g.dir))
	paths, err := spec.SpecFiles(specRoot)
	if err != nil {
		return nil, fmt.Errorf("read specs of commit %s: %w", shortHash(commit.Hash), err)
	}
	srcs := make([]spec.Source, 0, len(paths))
	var total int64
	for _, p := range paths {
		rel, err := filepath.Rel(co, p)
		if err != nil {
			return nil, err
		}
		b, err := readSpecFile(ctx, p, filepath.ToSlash(rel), g.opts.MaxFileSize)
		if err != nil {
			return nil, fmt.Errorf("read specs of commit %s: %w", shortHash(commit.Hash), err)
		}
		if total += int64(len(b)); g.opts.MaxTotalSize > 0 && total > g.opts.MaxTotalSize {
			return nil, fmt.Errorf("read specs of commit %s: %w", shortHash(commit.Hash), spec.TotalSizeError(total, g.opts.MaxTotalSize))
		}
		srcs = append(srcs, spec.Source{Name: filepath.ToSlash(rel), Dir: filepath.Dir(p), Bytes: b})
	}
	if len(srcs) == 0 {
		where := "the repository root"
		if g.dir != "" {
			where = fmt.Sprintf("dir %q", g.dir)
		}
		return nil, g.errorf("no *.hcl spec files below %s in commit %s of %s", where, shortHash(commit.Hash), redactURL(g.cfg.URL))
	}
	g.prune(filepath.Base(co))
	return &Snapshot{
		Revision: commit.Hash.String(),
		Sources:  srcs,
		Commit: &CommitInfo{
			SHA:     commit.Hash.String(),
			Author:  fmt.Sprintf("%s <%s>", commit.Author.Name, commit.Author.Email),
			Subject: firstLine(commit.Message),
			Time:    commit.Committer.When,
		},
	}, nil
}

// peelCommit resolves h, a commit or an annotated tag, to its commit.
func peelCommit(repo *git.Repository, h plumbing.Hash) (*object.Commit, error) {
	for range 10 {
		obj, err := repo.Object(plumbing.AnyObject, h)
		if err != nil {
			return nil, err
		}
		switch o := obj.(type) {
		case *object.Commit:
			return o, nil
		case *object.Tag:
			h = o.Target
		default:
			return nil, fmt.Errorf("%s is a %s, not a commit", h, obj.Type())
		}
	}
	return nil, fmt.Errorf("tag chain at %s too long", h)
}

func firstLine(s string) string {
	s = strings.TrimLeft(s, "\n")
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func shortHash(h plumbing.Hash) string {
	if h.IsZero() {
		return "none"
	}
	return h.String()[:12]
}

// auth is the transport auth of the config: an ssh key file, or an HTTP
// token from the environment.
func (g *Git) auth() (transport.AuthMethod, error) {
	ep, err := transport.NewEndpoint(g.cfg.URL)
	if err != nil {
		return nil, g.errorf("git url %s: %w", redactURL(g.cfg.URL), err)
	}
	switch {
	case g.cfg.SSHKeyFile != "":
		user := ep.User
		if user == "" {
			user = "git"
		}
		a, err := gitssh.NewPublicKeysFromFile(user, g.cfg.SSHKeyFile, "")
		if err != nil {
			return nil, fmt.Errorf("ssh key %s (keys with a passphrase are not supported): %w", g.cfg.SSHKeyFile, err)
		}
		return a, nil
	case g.cfg.TokenEnv != "":
		tok := os.Getenv(g.cfg.TokenEnv)
		if tok == "" {
			return nil, fmt.Errorf("git token: environment variable %s (token_env) is empty or not set", g.cfg.TokenEnv)
		}
		user := ep.User
		if user == "" {
			user = TokenUser
		}
		return &githttp.BasicAuth{Username: user, Password: tok}, nil
	}
	return nil, nil
}

// errorf formats an error and removes secrets from its text. When it had to
// remove one, the result does not wrap err, whose text holds the secret.
func (g *Git) errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	msg := err.Error()
	red := msg
	for _, s := range g.secrets() {
		red = strings.ReplaceAll(red, s, "[redacted]")
	}
	if red != msg {
		return errors.New(red)
	}
	return err
}

// secrets are the strings errors must not contain: the token and a
// password in the URL.
func (g *Git) secrets() []string {
	var out []string
	if g.cfg.TokenEnv != "" {
		if tok := os.Getenv(g.cfg.TokenEnv); len(tok) >= 4 {
			out = append(out, tok)
		}
	}
	if u, err := url.Parse(g.cfg.URL); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			out = append(out, p, url.PathEscape(p), url.QueryEscape(p))
		}
	}
	return out
}

// redactURL hides a password in u.
func redactURL(u string) string {
	if p, err := url.Parse(u); err == nil && p.User != nil {
		return p.Redacted()
	}
	return u
}

// Redact hides a password or token in a URL, for messages.
func Redact(u string) string { return redactURL(u) }
