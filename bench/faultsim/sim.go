package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5"
	"golang.org/x/sys/unix"

	"steward/internal/tcpproxy"
)

// sim is one run of the fault simulator.
type sim struct {
	cfg    config
	out    io.Writer // the report
	logw   io.Writer // progress
	logMu  sync.Mutex
	rng    *mrand.Rand // the injector's only
	policy backoff

	dir      string // scratch directory
	steward  string // the steward binary
	packages string
	specDir  string // dir source
	gitDir   string // git source: a repository with a worktree
	repo     *git.Repository
	commits  int
	stateDir string
	stateFS  string // the tmpfs mounted for the state, or ""
	runRoot  string
	hostFile string
	apiAddr  string
	portLow  int
	portHigh int
	pg       pgServer
	pgUser   string
	dbPrefix string
	layout   fleetLayout
	procs    procTable

	merchants []*merchant
	byID      map[string]*merchant

	// specMu serialises spec writes; channel is the channel's version in
	// the specs now, history every version it held.
	specMu  sync.Mutex
	channel string
	history []string

	// dmu serialises the daemon's lifecycle: kills, restarts, applies.
	dmu      sync.Mutex
	cur      atomic.Pointer[daemonProc] // the daemon started last; changed under dmu
	daemons  int
	stopping atomic.Bool // the end: no more unplanned restarts

	mu         sync.Mutex
	faults     []*fault
	violations []string
	notes      []string
	skipped    map[kind]string      // kinds left out, and why
	busy       map[string]bool      // resources held by a fault in progress
	cool       map[string]time.Time // fleet-wide fault groups: no fault before
	deaths     map[string]*deathCount

	unblamedLost, unblamedDup int

	// histories holds the last events of merchants that failed a check.
	histories map[string][]string

	writes *writeLog
	// restoreNow ends every fault that is still in force.
	restoreCtx  context.Context
	restoreNow  context.CancelFunc
	restoreWG   sync.WaitGroup
	injectStart time.Time
	injectEnd   time.Time
}

// errRestartBlockRefused: the steward under test does not know the
// fleet-wide restart block.
var errRestartBlockRefused = errors.New("this steward refuses the fleet-wide restart block (run with -restart-block=false until it knows it)")

// result is what a run found.
type result struct {
	violations []string
	faults     []*fault
	acked      int
}

func (s *sim) logf(format string, args ...any) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	fmt.Fprintf(s.logw, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

func (s *sim) vlogf(format string, args ...any) {
	if s.cfg.verbose {
		s.logf(format, args...)
	}
}

func (s *sim) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.violations = append(s.violations, msg)
	s.mu.Unlock()
	s.logf("VIOLATION: %s", msg)
}

func (s *sim) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.notes = append(s.notes, msg)
	s.mu.Unlock()
	s.vlogf("note: %s", msg)
}

// simulate runs the whole simulation: setup, faults, convergence, checks,
// report, teardown.
func simulate(ctx context.Context, c config, stdout, stderr io.Writer) (*result, error) {
	s := &sim{cfg: c, out: stdout, logw: stderr, rng: mrand.New(mrand.NewPCG(uint64(c.seed), 0x66617531)),
		skipped: map[kind]string{}, busy: map[string]bool{}, cool: map[string]time.Time{}, deaths: map[string]*deathCount{}, byID: map[string]*merchant{}}
	s.policy = defaultBackoff
	if c.restartBlock {
		s.policy = blockBackoff
	}
	s.restoreCtx, s.restoreNow = context.WithCancel(context.Background())
	defer s.restoreNow()
	s.logf("faultsim: seed %d (replay with -seed %d), %d merchants, %s source, restart block %s", c.seed, c.seed, c.merchants, c.source, onOff(c.restartBlock))

	defer s.teardown()
	if err := s.setup(ctx); err != nil {
		return nil, err
	}
	s.logf("bringing up the fleet (steward run on an empty state)...")
	if err := s.startDaemonLocked(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if v := s.converge(ctx, 3*time.Minute); len(v) > 0 {
		s.logf("bring-up failed; daemon log tail:\n%s", tail(filepath.Join(s.dir, "daemon.log"), 30))
		return nil, fmt.Errorf("the fleet did not come up within 3m:\n  %s", strings.Join(v, "\n  "))
	}
	s.logf("fleet up in %s; writing through every merchant and injecting faults", time.Since(t0).Round(time.Millisecond))

	wctx, stopWrites := context.WithCancel(context.Background())
	s.writes = newWriteLog()
	var wwg sync.WaitGroup
	for _, m := range s.merchants {
		wwg.Go(func() { s.writer(wctx, m) })
	}
	defer func() { stopWrites(); wwg.Wait() }()

	s.injectStart = time.Now()
	s.inject(ctx)
	s.injectEnd = time.Now()
	if ctx.Err() != nil {
		s.restoreNow()
		s.restoreWG.Wait()
		return nil, fmt.Errorf("interrupted after %d faults", len(s.faults))
	}
	s.logf("injected %d faults in %s; restoring what is still in force", len(s.faults), s.injectEnd.Sub(s.injectStart).Round(time.Second))

	// Restore: every fault in force ends now, the daemon runs, the specs
	// are the good ones.
	s.restoreNow()
	s.restoreWG.Wait()
	s.ensureDaemon()
	s.restoreSpecs()

	convergeStart := time.Now()
	left := s.converge(ctx, c.converge)
	convergence := time.Since(convergeStart)
	if len(left) > 0 {
		for _, v := range left {
			s.violate("after %s of convergence: %s", c.converge, v)
		}
		s.logf("daemon log tail:\n%s", tail(filepath.Join(s.dir, "daemon.log"), 20))
		s.keepHistories(left)
	} else {
		s.logf("converged %s after the last fault was restored", convergence.Round(time.Millisecond))
	}
	// Let the recovery watchers of the last faults finish (they are
	// bounded), then stop writing and check everything once more.
	s.waitWatchers(c.recoverBound + s.policy.max + 5*time.Second)
	stopWrites()
	wwg.Wait()
	s.notBackViolations()
	for _, v := range s.converge(ctx, time.Nanosecond) {
		if len(left) == 0 {
			s.violate("final check: %s", v)
		}
	}
	s.checkEvents()
	s.checkWrites(ctx)
	s.report(convergence, len(left) == 0)
	s.mu.Lock()
	res := &result{violations: append([]string(nil), s.violations...), faults: s.faults, acked: s.writes.ackCount()}
	s.mu.Unlock()
	return res, nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// setup builds everything and writes the fleet's files.
func (s *sim) setup(ctx context.Context) error {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return errors.New("faultsim needs Linux with /proc")
	}
	pg, err := pgFromEnv()
	if err != nil {
		return err
	}
	if err := pg.ping(ctx); err != nil {
		return fmt.Errorf("PostgreSQL at %s (STEWARD_TEST_PG) does not answer: %v", pg.addr, err)
	}
	s.pg, s.pgUser = pg, pg.user
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(s.cfg.workRoot, "faultsim-")
	if err != nil {
		return err
	}
	// Merchants run as nobody when faultsim is root: they must reach
	// their releases and work dirs below it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	s.dir = dir
	s.logf("scratch directory %s", dir)

	bin := filepath.Join(dir, "bin")
	s.logf("building steward, steward-logshim and invoicing %s...", strings.Join(allVersions, ", "))
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/steward", "./cmd/steward-logshim")
	build.Dir = root
	if out, err := combinedOutput(build); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	s.steward = filepath.Join(bin, "steward")
	s.packages = filepath.Join(dir, "packages")
	pkg := exec.CommandContext(ctx, "go", "run", "./examples/pkgbuild", "-out", s.packages,
		"-versions", strings.Join(allVersions, ","), "-broken", brokenVersion)
	pkg.Dir = root
	if out, err := combinedOutput(pkg); err != nil {
		return fmt.Errorf("building the packages: %v\n%s", err, out)
	}
	if err := makeReadable(dir); err != nil {
		return err
	}

	n := s.cfg.merchants
	low, err := freePortRange(n+30, s.cfg.seed^int64(os.Getpid()))
	if err != nil {
		return err
	}
	s.portLow, s.portHigh = low, low+n+9
	s.apiAddr = fmt.Sprintf("127.0.0.1:%d", low+n+20)

	var b [3]byte
	rand.Read(b[:])
	s.dbPrefix = fmt.Sprintf("faultsim_%d_%s", os.Getpid(), hex.EncodeToString(b[:]))
	for i := range n {
		id := fmt.Sprintf("m%02d", i+1)
		p, err := tcpproxy.New(pg.addr)
		if err != nil {
			return err
		}
		m := &merchant{id: id, port: low + i, dbName: s.dbPrefix + "_" + id, proxy: p}
		s.merchants = append(s.merchants, m)
		s.byID[id] = m
	}

	s.runRoot = filepath.Join(dir, "run")
	s.stateDir = filepath.Join(dir, "state")
	s.layout = fleetLayout{runRoot: s.runRoot, shimBin: filepath.Join(bin, "steward-logshim"), steward: s.steward}
	s.prepareStateFS()

	s.channel = goodVersions[0]
	s.history = []string{s.channel}
	if s.cfg.source == "git" {
		s.gitDir = filepath.Join(dir, "fleet")
		if s.repo, err = initRepo(s.gitDir); err != nil {
			return err
		}
	} else {
		s.specDir = filepath.Join(dir, "specs")
		if err := os.MkdirAll(s.specDir, 0o755); err != nil {
			return err
		}
	}
	if err := s.writeSpecs(s.channel, nil, "the scratch fleet on "+s.channel); err != nil {
		return err
	}
	s.hostFile = filepath.Join(dir, "steward.hcl")
	if err := os.WriteFile(s.hostFile, []byte(s.hostConfig()), 0o644); err != nil {
		return err
	}
	if out, err := s.stewardCmd(ctx, 30*time.Second, "validate"); err != nil {
		if s.cfg.restartBlock && strings.Contains(out, `Blocks of type "restart" are not expected here`) {
			return fmt.Errorf("%w:\n%s", errRestartBlockRefused, out)
		}
		return fmt.Errorf("steward validate refuses the scratch fleet's specs: %v\n%s", err, out)
	}

	if err := startReaper(); err != nil {
		s.logf("cannot become a child subreaper (%v): merchants orphaned by a killed daemon are left to pid 1", err)
	}
	return nil
}

// makeReadable gives everyone read access below dir (a+rX), so that
// merchants running as another user reach their files.
func makeReadable(dir string) error {
	return filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		perm := fi.Mode().Perm() | 0o044
		if fi.IsDir() || perm&0o100 != 0 {
			perm |= 0o011
		}
		return os.Chmod(p, perm)
	})
}

// prepareStateFS mounts a small tmpfs for the state when faultsim is root,
// so that the disk-full fault can fill it; otherwise that fault is left
// out, saying why.
func (s *sim) prepareStateFS() {
	if !s.enabled(kDiskFull) {
		return
	}
	if os.Geteuid() != 0 {
		s.skipped[kDiskFull] = "not root: cannot mount a tmpfs for the state directory"
		return
	}
	mnt := filepath.Join(s.dir, "statefs")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		s.skipped[kDiskFull] = err.Error()
		return
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64m,mode=0755"); err != nil {
		s.skipped[kDiskFull] = fmt.Sprintf("mount -t tmpfs: %v", err)
		return
	}
	s.stateFS = mnt
	s.stateDir = filepath.Join(mnt, "state")
}

// stewardCmd runs a steward command against the scratch fleet and returns
// its combined output.
func (s *sim) stewardCmd(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := append([]string{args[0], "-config", s.hostFile}, args[1:]...)
	cmd := exec.CommandContext(ctx, s.steward, full...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err := runChild(cmd)
	return buf.String(), err
}

// stewardJSON runs a steward command and returns its stdout alone.
func (s *sim) stewardJSON(ctx context.Context, timeout time.Duration, args ...string) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := append([]string{args[0], "-config", s.hostFile}, args[1:]...)
	cmd := exec.CommandContext(ctx, s.steward, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err := runChild(cmd)
	return out.Bytes(), errb.String(), err
}

// teardown stops everything faultsim started and removes what it made.
func (s *sim) teardown() {
	s.stopping.Store(true)
	if s.dir == "" {
		return
	}
	s.dmu.Lock()
	if d := s.cur.Load(); d != nil {
		d.intended.Store(true)
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
		}
	}
	s.dmu.Unlock()
	if s.cfg.keep && s.stateDir != "" {
		// The state as the run left it, before steward destroy forgets
		// every merchant.
		if out, err := combinedOutput(exec.Command("cp", "-a", s.stateDir, filepath.Join(s.dir, "state-at-end"))); err != nil {
			s.logf("keeping the state: cp: %v %s", err, out)
		}
	}
	if s.steward != "" && s.hostFile != "" {
		if out, err := s.stewardCmd(context.Background(), 90*time.Second, "destroy", "-auto-approve"); err != nil {
			s.logf("steward destroy: %v\n%s", err, out)
		}
	}
	// Whatever is left of the fleet after a grace period for log shims to
	// see their merchant's end (a process steward lost track of) is killed
	// by pid and start time: the processes the kernel made this
	// simulator's descendants (it is their subreaper) that belong to the
	// fleet.
	fleetLeft := func() []proc {
		all := scanProcs()
		parent := map[int]int{}
		for _, p := range all {
			parent[p.pid] = p.ppid
		}
		self := os.Getpid()
		descendant := func(pid int) bool {
			for i := 0; i < 64 && pid > 1; i++ {
				if pid = parent[pid]; pid == self {
					return true
				}
			}
			return false
		}
		var out []proc
		for _, p := range all {
			if p.state != 'Z' && descendant(p.pid) && (s.layout.merchantOf(p) != "" || s.layout.shimOf(p) != "") {
				out = append(out, p)
			}
		}
		return out
	}
	deadline := time.Now().Add(3 * time.Second)
	for len(fleetLeft()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for round := 0; round < 50; round++ {
		left := fleetLeft()
		if len(left) == 0 {
			break
		}
		for _, p := range left {
			if round == 0 {
				s.logf("teardown: pid %d (%s) outlived steward destroy; killing it", p.pid, strings.Join(p.argv, " "))
			}
			signalProc(p, syscall.SIGCONT)
			signalProc(p, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, m := range s.merchants {
		m.proxy.Close()
	}
	if s.stateFS != "" {
		if err := unix.Unmount(s.stateFS, 0); err != nil {
			s.logf("umount %s: %v; detaching it", s.stateFS, err)
			unix.Unmount(s.stateFS, unix.MNT_DETACH)
		}
	}
	if s.cfg.keep {
		s.logf("kept %s (the state as the run ended in state-at-end/) and the databases %s_*", s.dir, s.dbPrefix)
		return
	}
	if s.dbPrefix != "" {
		if err := s.pg.dropDatabases(s.dbPrefix); err != nil {
			s.logf("dropping the databases %s_*: %v", s.dbPrefix, err)
		}
	}
	os.RemoveAll(s.dir)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// apiGet returns the status code and body of GET path on the daemon's API.
func (s *sim) apiGet(path string, timeout time.Duration) (int, []byte, error) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + s.apiAddr + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, err
}

// syncNow asks the daemon to reload the specs (a git source fetches
// first), as a webhook would; best effort, the source's poll is the
// backstop.
func (s *sim) syncNow() {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post("http://"+s.apiAddr+"/v1/sync", "application/json", strings.NewReader("{}"))
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
