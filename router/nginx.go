package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// controlPoll is how often a reload or start is checked for having taken
// effect: nginx tells no one when its new workers serve.
const controlPoll = 10 * time.Millisecond

// orphanGrace is how long workers left behind by a killed master get to
// close their listening sockets after SIGQUIT before they are killed.
const orphanGrace = 5 * time.Second

func controlClient(control string) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, MaxResponseHeaderBytes: 4096}
	if sock, ok := strings.CutPrefix(control, "unix:"); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Second}
}

func (r *Router) controlURL() string {
	if strings.HasPrefix(r.cfg.Control, "unix:") {
		return "http://steward-control" + generationPath
	}
	return "http://" + r.cfg.Control + generationPath
}

// served asks the control server which generation nginx serves, and which
// worker answered. Every call opens a new connection, so that a worker of
// a replaced configuration answers only while it still accepts.
func (r *Router) served(ctx context.Context) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.controlURL(), nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		return "", 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("control server %s answered %s", r.cfg.Control, resp.Status)
	}
	gen, pid, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	n, _ := strconv.Atoi(pid)
	return gen, n, nil
}

// genRe finds the generation in a rendered configuration.
var genRe = regexp.MustCompile(`return 200 "([0-9a-f]{16}) \$pid\\n";`)

// generationOf returns the generation of a rendered configuration, or "".
func generationOf(conf []byte) string {
	if m := genRe.FindSubmatch(conf); m != nil {
		return string(m[1])
	}
	return ""
}

// waitServed waits until nginx serves gen and every worker of the
// replaced configuration has stopped accepting connections, bounded by
// ReloadTimeout. After a reload nginx's master starts the new workers and
// only about 100 ms later tells the old ones to stop accepting; until then
// both serve. old are the workers before the reload; when they could not
// be known (nil: system mode, before the control server was loaded), they
// are the master's workers that started before the one that answered.
func (r *Router) waitServed(ctx context.Context, gen string, old []proc) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ReloadTimeout)
	defer cancel()
	t := time.NewTicker(controlPoll)
	defer t.Stop()
	var last string
	var lastErr error
	for {
		g, w, err := r.served(ctx)
		if err == nil && g == gen {
			if old == nil {
				old = r.workersBefore(w)
			}
			break
		}
		last, lastErr = g, err
		select {
		case <-ctx.Done():
			seen := fmt.Sprintf("it serves generation %q", last)
			if lastErr != nil {
				seen = fmt.Sprintf("its control server %s: %v", r.cfg.Control, lastErr)
			}
			hint := ""
			if r.cfg.Mode == System {
				hint = fmt.Sprintf(" (is %s included inside the http block of nginx.conf?)", r.cfg.IncludeFile)
			}
			return fmt.Errorf("nginx did not load generation %s within %s%s: %s", gen, r.cfg.ReloadTimeout, hint, seen)
		case <-t.C:
		}
	}
	for {
		busy := 0
		for _, w := range old {
			if !shuttingDown(w) {
				busy++
			}
		}
		if busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nginx serves generation %s, but %d workers of the replaced configuration still accept connections after %s", gen, busy, r.cfg.ReloadTimeout)
		case <-t.C:
		}
	}
}

// workersBefore returns the workers of w's master that started before w
// and are not shutting down.
func (r *Router) workersBefore(w int) []proc {
	st, err := readStat(w)
	if err != nil {
		return nil
	}
	m, _, ok := inspect(st.ppid)
	if !ok {
		return nil
	}
	var out []proc
	for _, p := range r.activeWorkers(m, r.masterBin(m)) {
		if p.Start < st.start {
			out = append(out, p)
		}
	}
	return out
}

// activeWorkers returns master's workers that are not shutting down.
func (r *Router) activeWorkers(m proc, bin string) []proc {
	var out []proc
	for _, w := range workers(m, bin) {
		if !shuttingDown(w) {
			out = append(out, w)
		}
	}
	return out
}

// masterProc returns the nginx master serving the routing: in managed
// mode steward's own; in system mode the parent of the worker that answers
// on the control server.
func (r *Router) masterProc(ctx context.Context) (proc, bool) {
	if r.cfg.Mode == Managed {
		return r.findMaster()
	}
	_, w, err := r.served(ctx)
	if err != nil || w <= 0 {
		return proc{}, false
	}
	st, err := readStat(w)
	if err != nil {
		return proc{}, false
	}
	m, _, ok := inspect(st.ppid)
	return m, ok
}

// masterBin is the executable the workers of master m run, for workers().
func (r *Router) masterBin(m proc) string {
	if r.cfg.Mode == Managed {
		return r.bin
	}
	e, _ := exe(m.PID)
	return e // "" when unreadable: the session and title still identify them
}

// recordFile holds the identity of the master steward started or adopted,
// so that workers a killed master left behind can be found.
func (r *Router) recordFile() string { return filepath.Join(r.cfg.Prefix, "master.json") }

// findMaster returns steward's nginx master when it runs: the one it knows,
// or the one the pid file names if that is an nginx master running
// Binary with this prefix's nginx.conf (a bare pid is never trusted).
func (r *Router) findMaster() (proc, bool) {
	r.mu.Lock()
	m := r.master
	r.mu.Unlock()
	if m.alive() {
		return m, true
	}
	b, err := os.ReadFile(r.pidFile())
	if err != nil {
		return proc{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return proc{}, false
	}
	p, _, ok := inspect(pid)
	if !ok || !r.isOurMaster(pid) {
		return proc{}, false
	}
	r.mu.Lock()
	r.master = p
	r.mu.Unlock()
	return p, true
}

// adopt is findMaster for the operations that manage nginx: it also
// records the master's identity in the prefix, for stopOrphans should the
// master be killed. (Status and Drain only read.)
func (r *Router) adopt() (proc, bool) {
	m, ok := r.findMaster()
	if !ok {
		return m, false
	}
	var rec proc
	if b, err := os.ReadFile(r.recordFile()); err == nil && json.Unmarshal(b, &rec) == nil && rec == m {
		return m, true
	}
	if b, err := json.Marshal(m); err == nil {
		if err := writeFileAtomic(r.recordFile(), b, 0o644); err != nil {
			r.log.Warn("recording nginx's master", "err", err)
		}
	}
	return m, true
}

// isOurMaster reports whether pid is an nginx master running Binary with
// this prefix's nginx.conf. A daemonized master leads its own session; a
// worker just forked, still under the master's title, does not.
func (r *Router) isOurMaster(pid int) bool {
	if st, err := readStat(pid); err != nil || st.session != pid {
		return false
	}
	if e, err := exe(pid); err != nil || e != r.bin {
		return false
	}
	cl := cmdline(pid)
	if !strings.HasPrefix(cl, "nginx: master process ") {
		return false
	}
	f := strings.Fields(cl)
	for i := range len(f) - 1 {
		if f[i] == "-c" && f[i+1] == r.live {
			return true
		}
	}
	return false
}

// Ensure makes sure the managed nginx runs: it adopts the nginx that the
// pid file names when that is steward's (right executable, this prefix's
// configuration), or else starts one with the live configuration (tested
// first; the last applied routes, or none, when there is no live
// configuration). Workers a killed master left behind are asked to finish
// and then stopped first. In system mode it does nothing.
func (r *Router) Ensure(ctx context.Context) error {
	if r.cfg.Mode != Managed {
		return nil
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	gen, err := r.ensure(ctx)
	r.recordResult(false, false, gen != "", gen, -1, err)
	return err
}

// ensure returns the generation it started nginx with, or "" when nginx
// was running.
func (r *Router) ensure(ctx context.Context) (string, error) {
	if _, ok := r.adopt(); ok {
		return "", nil
	}
	if err := r.prepareDirs(); err != nil {
		return "", err
	}
	live, err := os.ReadFile(r.live)
	gen := generationOf(live)
	switch {
	case err == nil && gen != "":
		if err := r.test(ctx); err != nil {
			return "", err
		}
	case err == nil || errors.Is(err, os.ErrNotExist):
		r.mu.Lock()
		routes := r.lastRoutes
		r.mu.Unlock()
		rd, err := r.render(routes)
		if err != nil {
			return "", err
		}
		if err := r.install(ctx, rd.conf); err != nil {
			return "", err
		}
		if _, err := r.writePages(rd.pages); err != nil {
			return "", err
		}
		gen = rd.gen
	default:
		return "", err
	}
	if err := r.start(ctx, gen); err != nil {
		return "", err
	}
	return gen, nil
}

// prepareDirs creates the prefix and what nginx needs in it. nginx creates
// the temp directories' leaves itself, owned by the worker user.
func (r *Router) prepareDirs() error {
	for _, d := range []string{r.cfg.Prefix, filepath.Join(r.cfg.Prefix, "logs"), filepath.Join(r.cfg.Prefix, "temp"), r.pages} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("router: %w", err)
		}
	}
	if r.user != "" {
		return checkReachable(r.pages, r.cfg.User)
	}
	return nil
}

// start starts the managed nginx and waits until it serves gen.
func (r *Router) start(ctx context.Context, gen string) error {
	r.stopOrphans(ctx)
	if err := r.checkListen(); err != nil {
		return err
	}
	if sock, ok := strings.CutPrefix(r.cfg.Control, "unix:"); ok {
		// Left by a master that was killed; nginx does not bind over it.
		os.Remove(sock)
	}
	out, err := r.run(ctx, []string{r.bin, "-p", r.cfg.Prefix + "/", "-c", r.live, "-e", r.errorLog()})
	if err != nil {
		return fmt.Errorf("starting nginx: %w", err)
	}
	if out != "" {
		r.log.Warn("nginx said at start", "output", out)
	}
	ctx2, cancel := context.WithTimeout(ctx, r.cfg.ReloadTimeout)
	defer cancel()
	t := time.NewTicker(controlPoll)
	defer t.Stop()
	for {
		if _, ok := r.adopt(); ok {
			break
		}
		select {
		case <-ctx2.Done():
			return fmt.Errorf("nginx started but %s names no running nginx master after %s; %s", r.pidFile(), r.cfg.ReloadTimeout, r.errorLogTail(0))
		case <-t.C:
		}
	}
	if err := r.waitServed(ctx, gen, []proc{}); err != nil { // a new master has no old workers
		return err
	}
	m, _ := r.findMaster()
	r.log.Info("nginx started", "pid", m.PID, "generation", gen)
	return nil
}

// stopOrphans stops the workers a killed master left behind: they still
// hold the listening sockets, so a new master could not bind them. They
// get SIGQUIT, which closes their listening sockets at once and lets them
// finish their requests, and SIGKILL if they have not done so after
// orphanGrace.
func (r *Router) stopOrphans(ctx context.Context) {
	b, err := os.ReadFile(r.recordFile())
	if err != nil {
		return
	}
	var m proc
	if json.Unmarshal(b, &m) != nil || m.PID <= 0 || m.alive() {
		return
	}
	ws := workers(m, r.bin)
	if len(ws) == 0 {
		return
	}
	r.log.Warn("nginx master died; stopping the workers it left", "master", m.PID, "workers", len(ws))
	for _, w := range ws {
		w.signal(syscall.SIGQUIT)
	}
	ctx, cancel := context.WithTimeout(ctx, orphanGrace)
	defer cancel()
	t := time.NewTicker(controlPoll)
	defer t.Stop()
	for {
		left := 0
		for _, w := range ws {
			if !shuttingDown(w) {
				left++
			}
		}
		if left == 0 {
			return
		}
		select {
		case <-ctx.Done():
			for _, w := range ws {
				w.signal(syscall.SIGKILL)
			}
			return
		case <-t.C:
		}
	}
}

// Stop stops the managed nginx by its recorded identity: SIGQUIT, so that
// requests in flight finish, then SIGKILL to master and workers if they
// are still there when ctx ends. For tests and steward destroy; nginx
// otherwise outlives steward.
func (r *Router) Stop(ctx context.Context) error {
	if r.cfg.Mode != Managed {
		return nil
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	m, ok := r.adopt()
	if !ok {
		r.stopOrphans(ctx)
		return nil
	}
	ps := append([]proc{m}, workers(m, r.bin)...)
	m.signal(syscall.SIGQUIT)
	t := time.NewTicker(controlPoll)
	defer t.Stop()
	for {
		if len(pruneGone(ps)) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			for _, p := range ps {
				p.signal(syscall.SIGKILL)
			}
			return fmt.Errorf("nginx (pid %d) did not stop in time, killed: %w", m.PID, ctx.Err())
		case <-t.C:
		}
	}
	os.Remove(r.recordFile())
	r.mu.Lock()
	r.master = proc{}
	r.mu.Unlock()
	r.log.Info("nginx stopped", "pid", m.PID)
	return nil
}

// run runs argv and returns its output. The output goes to a file, not a
// pipe: nginx's master inherits it when nginx daemonizes, and a pipe would
// stay open as long as nginx runs.
func (r *Router) run(ctx context.Context, argv []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	f, err := os.CreateTemp("", "steward-nginx-*.out")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	out = bytes.TrimSpace(out)
	if len(out) > 8192 {
		out = append(out[:8192:8192], " ..."...)
	}
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
	}
	return string(out), nil
}

// errorLogTail returns the managed error log written past offset (its
// last 2 kB), for errors about a reload or start.
func (r *Router) errorLogTail(offset int64) string {
	b, err := os.ReadFile(r.errorLog())
	if err != nil {
		return "error log: " + err.Error()
	}
	if offset > int64(len(b)) {
		offset = 0
	}
	b = b[offset:]
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return "nothing new in " + r.errorLog()
	}
	return r.errorLog() + ":\n" + string(bytes.TrimSpace(b))
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
