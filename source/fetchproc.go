package source

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"

	"steward/spec"
)

// A fetch runs in a process of its own when GitOptions.FetchCommand is
// set: go-git holds every fetched object whole in memory (a commit of a
// file of zeros gigabytes large takes a push of a megabyte), so the fetch
// must not run where that memory is the daemon's. The process is killed
// when its resident memory passes GitOptions.FetchMemory, and whatever it
// took is given back when it ends.

// fetchRequest is what the fetch process is asked to do; it reads it as
// JSON on its standard input.
type fetchRequest struct {
	Repo    string         `json:"repo"`
	Git     spec.GitConfig `json:"git"`
	RefSpec string         `json:"refspec"`
	Timeout time.Duration  `json:"timeout"`
	// List asks for the remote's ref that cfg names instead of a fetch: the
	// remote's list of refs is as untrusted as its objects.
	List bool `json:"list"`
}

// listAnswer is the fetch process's answer to a List request, on stdout.
type listAnswer struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

// fetchPoll is how often the fetch process's memory is checked.
const fetchPoll = 10 * time.Millisecond

// RunFetchProcess is the body of the fetch process ("steward __gitfetch"):
// it reads a fetch request on stdin, fetches into the repository it names
// (or, for a List request, writes the remote's ref as JSON on stdout) and
// returns the exit code, writing an error to stderr.
func RunFetchProcess(stdin io.Reader, stdout, stderr io.Writer) int {
	var req fetchRequest
	if err := json.NewDecoder(io.LimitReader(stdin, 1<<20)).Decode(&req); err != nil {
		fmt.Fprintf(stderr, "reading the fetch request: %v\n", err)
		return 2
	}
	repo, err := git.PlainOpen(req.Repo)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	g := &Git{cfg: req.Git, opts: GitOptions{Timeout: req.Timeout}}
	ctx, cancel := context.WithTimeout(context.Background(), req.Timeout)
	defer cancel()
	if req.List {
		name, hash, err := g.listHere(ctx, repo)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return 1
		}
		json.NewEncoder(stdout).Encode(listAnswer{Name: name.String(), Hash: hash.String()})
		return 0
	}
	if err := g.fetchHere(ctx, repo, req.RefSpec); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	return 0
}

// fetch fetches refspec into repo: in this process, or in a fetch process
// when one is configured. After a fetch process, repo must be opened
// again to see what it stored.
func (g *Git) fetch(ctx context.Context, repo *git.Repository, refspec string) error {
	if len(g.opts.FetchCommand) == 0 {
		return g.fetchHere(ctx, repo, refspec)
	}
	return g.fetchThere(ctx, refspec)
}

func (g *Git) fetchHere(ctx context.Context, repo *git.Repository, refspec string) error {
	auth, err := g.auth()
	if err != nil {
		return err
	}
	err = g.remote(repo).FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{config.RefSpec(refspec)},
		Auth:     auth,
		Tags:     git.NoTags,
		Force:    true,
	})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	return err
}

func (g *Git) fetchThere(ctx context.Context, refspec string) error {
	_, err := g.runFetchProcess(ctx, fetchRequest{Repo: g.repoDir(), Git: g.cfg, RefSpec: refspec, Timeout: g.opts.Timeout}, "the fetch")
	return err
}

// listRef resolves the configured ref on the remote (see lsRemote): in
// this process, or in a fetch process when one is configured.
func (g *Git) listRef(ctx context.Context, repo *git.Repository) (plumbing.ReferenceName, plumbing.Hash, error) {
	if len(g.opts.FetchCommand) == 0 {
		return g.listHere(ctx, repo)
	}
	out, err := g.runFetchProcess(ctx, fetchRequest{Repo: g.repoDir(), Git: g.cfg, Timeout: g.opts.Timeout, List: true}, "listing the remote's refs")
	if err != nil {
		return "", plumbing.ZeroHash, err
	}
	var a listAnswer
	if err := json.Unmarshal(out, &a); err != nil || !plumbing.IsHash(a.Hash) {
		return "", plumbing.ZeroHash, fmt.Errorf("the fetch process answered %q", out)
	}
	return plumbing.ReferenceName(a.Name), plumbing.NewHash(a.Hash), nil
}

func (g *Git) listHere(ctx context.Context, repo *git.Repository) (plumbing.ReferenceName, plumbing.Hash, error) {
	auth, err := g.auth()
	if err != nil {
		return "", plumbing.ZeroHash, err
	}
	return g.lsRemote(ctx, g.remote(repo), auth)
}

// runFetchProcess runs req in a fetch process, killed when its memory
// passes FetchMemory, and returns what it wrote on stdout; what names the
// work in errors.
func (g *Git) runFetchProcess(ctx context.Context, r fetchRequest, what string) ([]byte, error) {
	req, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	argv := g.opts.FetchCommand
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(req)
	var stdout, stderr limitedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Its own process group, so that a terminal's Ctrl-C reaches steward
	// first; it dies with the steward that started it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the fetch process: %w", err)
	}
	limit := g.opts.FetchMemory
	over := make(chan int64, 1)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(fetchPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if rss := residentBytes(cmd.Process.Pid); limit > 0 && rss > limit {
				over <- rss
				cmd.Process.Kill()
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	// A killed fetch leaves the pack it was writing; no other fetch runs
	// (the cache lock is held), so every temporary pack is its.
	g.removeTempPacks()
	select {
	case rss := <-over:
		return nil, fmt.Errorf("%s needed more than %s of memory (it was at %s; limits.git_fetch_memory in the host config): the repository holds more than a spec repository should", what, spec.FormatSize(limit), spec.FormatSize(rss))
	default:
	}
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, errors.New(msg)
		}
		return nil, fmt.Errorf("the fetch process: %w", err)
	}
	return stdout.Bytes(), nil
}

// residentBytes is the resident memory of process pid (0 when it cannot
// be read).
func residentBytes(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// removeTempPacks removes the temporary packs (tmp_pack_*, tmp_idx_*) a
// fetch left in the cache's repository.
func (g *Git) removeTempPacks() {
	dir := filepath.Join(g.repoDir(), "objects", "pack")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, "tmp_pack_") || strings.HasPrefix(n, "tmp_idx_") {
			os.Remove(filepath.Join(dir, n))
		}
	}
}
