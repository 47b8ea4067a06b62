package router

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// TestError is returned when nginx's configuration test refuses a
// candidate. The previous routing stays in force.
type TestError struct {
	// Command is the test that was run.
	Command []string
	// Output is what it printed: nginx names the file, line and problem.
	Output string
	// Err is how it failed.
	Err error
}

func (e *TestError) Error() string {
	return fmt.Sprintf("nginx refused the new routing, the previous routing stays in force: %s: %s", strings.Join(e.Command, " "), e.Output)
}

func (e *TestError) Unwrap() error { return e.Err }

// Apply makes routes the routing nginx serves. It renders them; when the
// rendering equals the live file and nginx already serves it, it does
// nothing (no reload). Otherwise it writes the candidate beside the live
// file, tests it (managed: nginx -t on the candidate; system: the candidate
// is swapped in, TestCommand runs, and the previous file is swapped back
// if the test fails), swaps it in atomically, writes the maintenance pages
// and reloads (managed: starts nginx if it does not run), then waits until
// nginx serves it and no worker of the previous configuration accepts
// connections any more. changed reports whether a file was written or
// nginx reloaded or started.
//
// A candidate that fails the test leaves the live file and nginx as they
// were and returns a *TestError with the test's output. Invalid routes
// change nothing either. Every outcome is recorded for Status.
func (r *Router) Apply(ctx context.Context, routes []Route) (changed bool, err error) {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	changed, reloaded, started, gen, n, err := r.apply(ctx, routes)
	if err == nil {
		r.recordResult(true, reloaded, started, gen, n, nil)
	} else {
		r.recordResult(true, false, started, "", -1, err)
	}
	return changed, err
}

func (r *Router) apply(ctx context.Context, routes []Route) (changed, reloaded, started bool, gen string, n int, err error) {
	rd, err := r.render(routes)
	if err != nil {
		return false, false, false, "", 0, fmt.Errorf("router: routes refused, nothing changed: %w", err)
	}
	if r.cfg.Mode == Managed {
		if err := r.prepareDirs(); err != nil {
			return false, false, false, "", 0, err
		}
	}
	live, err := os.ReadFile(r.live)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, false, false, "", 0, fmt.Errorf("router: %w", err)
	}
	tested := false
	if !bytes.Equal(live, rd.conf) {
		if err := r.install(ctx, rd.conf); err != nil {
			return false, false, false, "", 0, err
		}
		tested, changed = true, true
	}
	pagesChanged, err := r.writePages(rd.pages)
	if err != nil {
		return changed, false, false, "", 0, err
	}
	changed = changed || pagesChanged
	var m proc
	running := true
	if r.cfg.Mode == Managed {
		m, running = r.adopt()
	}
	if !running {
		if !tested {
			if err := r.test(ctx); err != nil {
				return changed, false, false, "", 0, err
			}
		}
		if err := r.start(ctx, rd.gen); err != nil {
			return changed, false, true, "", 0, err
		}
		started, changed = true, true
	} else if g, _, err := r.served(ctx); err != nil || g != rd.gen {
		if !tested {
			if err := r.test(ctx); err != nil {
				return changed, false, false, "", 0, err
			}
		}
		t0 := time.Now()
		if err := r.reload(ctx, m, rd.gen); err != nil {
			return changed, false, false, "", 0, err
		}
		r.log.Debug("reloaded", "generation", rd.gen, "took", time.Since(t0).Round(time.Millisecond))
		reloaded, changed = true, true
	}
	r.prunePages(rd.pages)
	r.mu.Lock()
	r.lastRoutes = rd.routes
	r.mu.Unlock()
	return changed, reloaded, started, rd.gen, len(rd.routes), nil
}

// install tests conf and makes it the live file, or leaves the live file
// as it was.
func (r *Router) install(ctx context.Context, conf []byte) error {
	cand := r.live + ".candidate"
	if err := writeFileAtomic(cand, conf, 0o644); err != nil {
		return fmt.Errorf("router: writing the candidate: %w", err)
	}
	if r.cfg.Mode == Managed {
		argv := r.managedTest(cand)
		if out, err := r.run(ctx, argv); err != nil {
			os.Remove(cand)
			return &TestError{Command: argv, Output: out, Err: err}
		}
		if err := os.Rename(cand, r.live); err != nil {
			return fmt.Errorf("router: %w", err)
		}
		return syncDir(filepath.Dir(r.live))
	}
	// System: the operator's nginx.conf includes the live path, so the
	// candidate is tested in place and the previous file put back if the
	// test fails.
	prev := r.live + ".previous"
	os.Remove(prev)
	hadLive := true
	if err := os.Link(r.live, prev); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("router: keeping the previous routing: %w", err)
		}
		hadLive = false
	}
	if err := os.Rename(cand, r.live); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if out, err := r.run(ctx, r.cfg.TestCommand); err != nil {
		var rerr error
		if hadLive {
			rerr = os.Rename(prev, r.live)
		} else {
			rerr = os.Remove(r.live)
		}
		if rerr != nil {
			return errors.Join(&TestError{Command: r.cfg.TestCommand, Output: out, Err: err},
				fmt.Errorf("router: putting the previous routing back failed, %s holds the refused one: %w", r.live, rerr))
		}
		syncDir(filepath.Dir(r.live))
		return &TestError{Command: r.cfg.TestCommand, Output: out, Err: err}
	}
	os.Remove(prev)
	return syncDir(filepath.Dir(r.live))
}

func (r *Router) managedTest(conf string) []string {
	return []string{r.bin, "-t", "-q", "-p", r.cfg.Prefix + "/", "-c", conf, "-e", r.errorLog()}
}

// test tests the live file as it is.
func (r *Router) test(ctx context.Context) error {
	argv := r.cfg.TestCommand
	if r.cfg.Mode == Managed {
		argv = r.managedTest(r.live)
	}
	if out, err := r.run(ctx, argv); err != nil {
		return &TestError{Command: argv, Output: out, Err: err}
	}
	return nil
}

// reload makes nginx load the live file and waits until it serves gen.
func (r *Router) reload(ctx context.Context, m proc, gen string) error {
	if r.cfg.Mode == Managed {
		old := append([]proc{}, r.activeWorkers(m, r.bin)...) // known, even when none
		off := fileSize(r.errorLog())
		if err := m.signal(syscall.SIGHUP); err != nil {
			return fmt.Errorf("reloading nginx (pid %d): %w", m.PID, err)
		}
		if err := r.waitServed(ctx, gen, old); err != nil {
			return fmt.Errorf("%w; %s", err, r.errorLogTail(off))
		}
		return nil
	}
	var old []proc // nil: unknown, waitServed finds them
	if sm, ok := r.masterProc(ctx); ok {
		old = append([]proc{}, r.activeWorkers(sm, r.masterBin(sm))...)
	}
	if _, err := r.run(ctx, r.cfg.ReloadCommand); err != nil {
		return fmt.Errorf("reloading nginx: %w", err)
	}
	return r.waitServed(ctx, gen, old)
}

// writePages writes the maintenance pages that differ from what is there.
func (r *Router) writePages(pages map[string][]byte) (bool, error) {
	if err := os.MkdirAll(r.pages, 0o755); err != nil {
		return false, fmt.Errorf("router: %w", err)
	}
	if r.pageSums == nil {
		r.pageSums = map[string][sha256.Size]byte{}
	}
	changed := false
	for name, content := range pages {
		sum := sha256.Sum256(content)
		if r.pageSums[name] == sum {
			continue // written by this router
		}
		p := filepath.Join(r.pages, name)
		if old, err := os.ReadFile(p); err != nil || !bytes.Equal(old, content) {
			if err := writeFileAtomic(p, content, 0o644); err != nil {
				return changed, fmt.Errorf("router: maintenance page: %w", err)
			}
			changed = true
		}
		r.pageSums[name] = sum
	}
	return changed, nil
}

// prunePages removes the pages of merchants no longer routed.
func (r *Router) prunePages(pages map[string][]byte) {
	ents, err := os.ReadDir(r.pages)
	if err != nil {
		return
	}
	for _, e := range ents {
		if _, ok := pages[e.Name()]; !ok && strings.HasSuffix(e.Name(), ".html") {
			os.Remove(filepath.Join(r.pages, e.Name()))
			delete(r.pageSums, e.Name())
		}
	}
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, synced before the rename, so that readers see the old or the
// new content, never a part.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("router: sync %s: %w", dir, err)
	}
	return nil
}

// checkReachable returns an error unless the user can traverse every
// directory down to dir, so that nginx's workers can read the pages.
func checkReachable(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return fmt.Errorf("router: user %q: %w", name, err)
		}
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gids := map[uint64]bool{}
	ids, _ := u.GroupIds()
	for _, id := range append(ids, u.Gid) {
		g, _ := strconv.ParseUint(id, 10, 32)
		gids[g] = true
	}
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("router: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		if ok {
			var can bool
			switch {
			case uint64(st.Uid) == uid:
				can = mode&0o100 != 0
			case gids[uint64(st.Gid)]:
				can = mode&0o010 != 0
			default:
				can = mode&0o001 != 0
			}
			if !can {
				return fmt.Errorf("router: nginx's workers run as %s and cannot enter %s (mode %s), so they could not serve the maintenance pages in %s: make it traversable (chmod o+x %s) or choose another prefix", name, d, mode, dir, d)
			}
		}
		if d == "/" {
			return nil
		}
	}
}

// recordResult updates the health record with the outcome of an Apply
// (apply) or Ensure. n < 0 leaves Routes as it is.
func (r *Router) recordResult(apply, reloaded, started bool, gen string, n int, err error) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	h := &r.health
	if reloaded {
		h.Reloads++
		h.LastReload = now
	}
	if started {
		h.Starts++
		h.LastReload = now
	}
	if gen != "" {
		h.Generation = gen
	}
	if n >= 0 {
		h.Routes = n
	}
	if err != nil {
		h.Failing = true
		h.Failures++
		h.LastError = err.Error()
		h.LastErrorAt = now
		r.log.Error("routing not applied", "err", err)
	} else {
		if apply {
			h.Failing = false
		}
		if reloaded || started {
			r.log.Info("routing live", "generation", gen, "routes", n, "reloads", h.Reloads, "starts", h.Starts)
		}
	}
	r.saveHealthLocked()
}

// Drift says why Apply(routes) would change what nginx serves, "" when it
// serves exactly routes already. It only reads: whether steward's nginx
// runs (managed), the live file, and the generation nginx answers.
func (r *Router) Drift(ctx context.Context, routes []Route) (string, error) {
	rd, err := r.render(routes)
	if err != nil {
		return "", fmt.Errorf("router: routes refused: %w", err)
	}
	if r.cfg.Mode == Managed {
		if _, ok := r.findMaster(); !ok {
			return "nginx is not running", nil
		}
	}
	live, err := os.ReadFile(r.live)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("router: %w", err)
	}
	if !bytes.Equal(live, rd.conf) {
		return "the routing changed", nil
	}
	if g, _, err := r.served(ctx); err != nil || g != rd.gen {
		return "nginx does not serve the current routing", nil
	}
	return "", nil
}
