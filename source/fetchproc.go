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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/transport"

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
}

// fetchPoll is how often the fetch process's memory is checked.
const fetchPoll = 10 * time.Millisecond

// RunFetchProcess is the body of the fetch process ("steward __gitfetch"):
// it reads a fetch request on stdin, fetches into the repository it names
// and returns the exit code, writing an error to stderr.
func RunFetchProcess(stdin io.Reader, stderr io.Writer) int {
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

var _ transport.AuthMethod = nil

func (g *Git) fetchThere(ctx context.Context, refspec string) error {
	req, err := json.Marshal(fetchRequest{Repo: g.repoDir(), Git: g.cfg, RefSpec: refspec, Timeout: g.opts.Timeout})
	if err != nil {
		return err
	}
	argv := g.opts.FetchCommand
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(req)
	var stderr limitedBuffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	// Its own process group, so that a terminal's Ctrl-C reaches steward
	// first; it dies with the steward that started it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the fetch process: %w", err)
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
	select {
	case rss := <-over:
		return fmt.Errorf("the fetch needed more than %s of memory (it was at %s; limits.git_fetch_memory in the host config): the commit holds files too large for a spec repository", spec.FormatSize(limit), spec.FormatSize(rss))
	default:
	}
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return errors.New(msg)
		}
		return fmt.Errorf("the fetch process: %w", err)
	}
	return nil
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
