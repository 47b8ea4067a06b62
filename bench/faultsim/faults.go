package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// kind is a kind of fault.
type kind int

const (
	kMerchantKill kind = iota
	kMerchantStop
	kShimKill
	kDaemonKill
	kDaemonRollout
	kDaemonApply
	kDBCut
	kDBBlackhole
	kBadSpec
	kDiskFull
	kAPIFlood
	numKinds
)

var kindInfo = [numKinds]struct {
	name   string
	weight int
	what   string
}{
	kMerchantKill:  {"merchant-kill", 4, "SIGKILL of a merchant process"},
	kMerchantStop:  {"merchant-stop", 2, "SIGSTOP of a merchant; SIGCONT later, or left to steward's health check"},
	kShimKill:      {"shim-kill", 2, "SIGKILL of a merchant's log shim"},
	kDaemonKill:    {"daemon-kill", 1, "SIGKILL of steward run at a random moment, then a restart"},
	kDaemonRollout: {"daemon-kill-rollout", 1, "a new channel version pushed, SIGKILL of steward run once a change is in progress, then a restart"},
	kDaemonApply:   {"daemon-kill-apply", 1, "daemon SIGKILLed, a version pushed, steward apply SIGKILLed partway, daemon restarted"},
	kDBCut:         {"db-cut", 2, "a merchant's database connections cut (refused) for a while"},
	kDBBlackhole:   {"db-blackhole", 1, "a merchant's database accepting connections but never answering for a while"},
	kBadSpec:       {"bad-spec", 1, "a spec with a syntax or validation error (a bad commit with git), fixed later"},
	kDiskFull:      {"disk-full", 1, "the state directory's file system filled up for a while"},
	kAPIFlood:      {"api-flood", 1, "concurrent requests, half-sent bodies and slowloris headers against the API"},
}

func (k kind) String() string { return kindInfo[k].name }

func kindNames() []string {
	var out []string
	for k := range numKinds {
		out = append(out, k.String())
	}
	return out
}

func parseKinds(s string) ([]kind, error) {
	if s == "" || s == "all" {
		var all []kind
		for k := range numKinds {
			all = append(all, k)
		}
		return all, nil
	}
	var out []kind
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		i := slices.Index(kindNames(), f)
		if i < 0 {
			return nil, fmt.Errorf("-kinds: unknown fault kind %q (known: %s)", f, strings.Join(kindNames(), ", "))
		}
		if !slices.Contains(out, kind(i)) {
			out = append(out, kind(i))
		}
	}
	return out, nil
}

func (s *sim) enabled(k kind) bool {
	if !slices.Contains(s.cfg.kinds, k) {
		return false
	}
	_, skipped := s.skipped[k]
	return !skipped
}

// fault is one injected fault and what became of it.
type fault struct {
	n      int
	kind   kind
	target string // a merchant id, or "daemon", "specs", "state", "api"
	detail string
	at     time.Time
	// restored is when the fault ended (for faults that last); zero for
	// instant ones.
	restored time.Time
	bound    time.Duration
	// watched: the recovery watch ended; recovered: the target was back
	// within bound, after took.
	watched   bool
	recovered bool
	// failure says how the target was not back in time ("" when it was).
	failure string
	// left: a SIGSTOP left for steward to end (the fault does not last
	// until faultsim ends it).
	left      bool
	took      time.Duration
	lost, dup int
}

// affects says whether f may explain a problem of merchant id's writes.
func (f *fault) affects(id string) bool {
	switch f.kind {
	case kMerchantKill, kMerchantStop, kShimKill, kDBCut, kDBBlackhole:
		return f.target == id
	}
	return true
}

// backoff mirrors steward's restart policy closely enough to know how
// long a merchant that died may wait before it starts again.
type backoff struct {
	initial, max, resetAfter time.Duration
}

var (
	defaultBackoff = backoff{time.Second, 5 * time.Minute, 10 * time.Minute}
	blockBackoff   = backoff{100 * time.Millisecond, 2 * time.Second, 10 * time.Second}
)

// delay is the wait before the start after the failures-th consecutive
// fast failure, with steward's ±10% spread.
func (b backoff) delay(failures int) time.Duration {
	if failures <= 1 {
		return 0
	}
	d := b.initial
	for i := 2; i < failures && d < b.max; i++ {
		d *= 2
	}
	return time.Duration(math.Min(float64(d)*1.1, float64(b.max)))
}

// deathCount is faultsim's count of a merchant's consecutive fast
// failures.
type deathCount struct {
	failures int
	last     time.Time
}

// maxDeathDelay is the longest restart backoff faultsim lets a merchant
// run into: a merchant whose next death would wait longer is left alone
// (only without the restart block, whose backoff stops at 2s).
const maxDeathDelay = 5 * time.Second

// nextDelay is the backoff merchant id would wait after dying now, given
// how long its process has been up.
func (s *sim) nextDelay(id string, up time.Duration) (time.Duration, int) {
	dc := s.deaths[id]
	n := 1
	if dc != nil && up < s.policy.resetAfter {
		n = dc.failures + 1
	}
	return s.policy.delay(n), n
}

// died records a death of merchant id that faultsim caused; it returns
// the restart backoff due.
func (s *sim) died(id string, up time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, n := s.nextDelay(id, up)
	s.deaths[id] = &deathCount{failures: n, last: time.Now()}
	return d
}

// mayKill says whether merchant id may die now without its restart
// backoff outgrowing what faultsim can wait for.
func (s *sim) mayKill(id string, up time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, _ := s.nextDelay(id, up)
	return d <= maxDeathDelay
}

// claim marks resource r busy; false when it already is.
func (s *sim) claim(r string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[r] {
		return false
	}
	s.busy[r] = true
	return true
}

func (s *sim) release(r string) {
	s.mu.Lock()
	delete(s.busy, r)
	s.mu.Unlock()
}

func (s *sim) isBusy(r string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busy[r]
}

// disruptsDaemon says whether faults of kind k kill the daemon.
func (k kind) disruptsDaemon() bool {
	return k == kDaemonKill || k == kDaemonRollout || k == kDaemonApply
}

// fleetGroup names the fleet-wide faults that share a cooldown (see
// -fleet-gap); "" for the faults of one merchant.
func (k kind) fleetGroup() string {
	switch {
	case k.disruptsDaemon():
		return "daemon"
	case k == kDiskFull:
		return "state"
	case k == kAPIFlood:
		return "api"
	case k == kBadSpec:
		return "specs"
	}
	return ""
}

// coolDown makes faults of k's group wait -fleet-gap from now.
func (s *sim) coolDown(k kind) {
	if g := k.fleetGroup(); g != "" {
		s.mu.Lock()
		s.cool[g] = time.Now().Add(s.cfg.fleetGap)
		s.mu.Unlock()
	}
}

// cooled says whether k's group may have a fault now.
func (s *sim) cooled(k kind) bool {
	g := k.fleetGroup()
	if g == "" {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !time.Now().Before(s.cool[g])
}

// inject injects faults until -duration passes or -faults are done.
func (s *sim) inject(ctx context.Context) {
	var deadline time.Time
	if s.cfg.duration > 0 {
		deadline = s.injectStart.Add(s.cfg.duration)
	}
	lastReport := time.Now()
	lastInjected := time.Now()
	for ctx.Err() == nil {
		if s.cfg.faults > 0 && len(s.faults) >= s.cfg.faults {
			return
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return
		}
		// Fleet-wide faults of one group at most every -fleet-gap (after
		// the last one ended), so that steward's health checks, gates and
		// retries get to decide between them.
		k, ok := s.pick(s.cooled)
		if !ok || !s.injectOne(ctx, k) {
			// Every target of that kind busy: try again shortly.
			if time.Since(lastInjected) > time.Minute {
				s.violate("no fault could be injected for a minute (every target busy or ineligible)")
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		lastInjected = time.Now()
		if !k.lasts() {
			s.coolDown(k)
		}
		if time.Since(lastReport) > 30*time.Second {
			lastReport = time.Now()
			s.logf("%d faults so far, %d writes acknowledged", len(s.faults), s.writes.ackCount())
		}
		// The pause between faults: exponential, bounded.
		gap := time.Duration(s.rng.ExpFloat64() * float64(s.cfg.interval))
		gap = min(max(gap, s.cfg.interval/10), 5*s.cfg.interval)
		select {
		case <-ctx.Done():
		case <-time.After(gap):
		}
	}
}

// pick chooses a fault kind at random, by weight, among the enabled ones
// ok accepts.
func (s *sim) pick(ok func(kind) bool) (kind, bool) {
	total := 0
	for _, k := range s.cfg.kinds {
		if s.enabled(k) && ok(k) {
			total += kindInfo[k].weight
		}
	}
	if total == 0 {
		return 0, false
	}
	r := s.rng.IntN(total)
	for _, k := range s.cfg.kinds {
		if !s.enabled(k) || !ok(k) {
			continue
		}
		if r -= kindInfo[k].weight; r < 0 {
			return s.leastOfGroup(k, ok), true
		}
	}
	return 0, false
}

// leastOfGroup returns, for a kind of a fleet-wide group (which comes only
// every -fleet-gap), the kind of that group injected least so far, so
// that a short run still has each of them; k itself among equals.
func (s *sim) leastOfGroup(k kind, ok func(kind) bool) kind {
	g := k.fleetGroup()
	if g == "" {
		return k
	}
	count := map[kind]int{}
	s.mu.Lock()
	for _, f := range s.faults {
		count[f.kind]++
	}
	s.mu.Unlock()
	best := k
	for _, o := range s.cfg.kinds {
		if o.fleetGroup() == g && s.enabled(o) && ok(o) && count[o] < count[best] {
			best = o
		}
	}
	return best
}

// newFault registers a fault.
func (s *sim) newFault(k kind, target, detail string) *fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &fault{n: len(s.faults) + 1, kind: k, target: target, detail: detail, at: time.Now(), bound: s.cfg.recoverBound}
	s.faults = append(s.faults, f)
	return f
}

// pickMerchant picks a merchant at random among those ok accepts.
func (s *sim) pickMerchant(ok func(*merchant) bool) *merchant {
	var cands []*merchant
	for _, m := range s.merchants {
		if ok(m) {
			cands = append(cands, m)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[s.rng.IntN(len(cands))]
}

// between is a random duration in [lo, hi).
func (s *sim) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

// injectOne injects one fault of kind k; false when there was no target.
func (s *sim) injectOne(ctx context.Context, k kind) bool {
	switch k {
	case kMerchantKill:
		return s.merchantKill()
	case kMerchantStop:
		return s.merchantStop()
	case kShimKill:
		return s.shimKill()
	case kDaemonKill:
		return s.daemonKill()
	case kDaemonRollout:
		return s.daemonKillRollout()
	case kDaemonApply:
		return s.daemonKillApply()
	case kDBCut, kDBBlackhole:
		return s.dbFault(k)
	case kBadSpec:
		return s.badSpec()
	case kDiskFull:
		return s.diskFull()
	case kAPIFlood:
		return s.apiFlood()
	}
	return false
}

// upFor is how long p has been running.
func upFor(p proc) time.Duration {
	bt, err := bootTime()
	if err != nil {
		return 0
	}
	return time.Since(bt.Add(time.Duration(p.start) * time.Second / clockTicks))
}

// liveServer returns merchant m's serving process, if it has exactly one,
// not stopped.
//
// Faults hit only the processes steward recorded: the process is the one
// the merchant's record names (pid and start time), and it must be the
// one serving the merchant now.
func (s *sim) liveServer(m *merchant) (proc, bool) {
	recs, err := readRecords(s.stateDir)
	r := recs[m.id]
	if err != nil || r == nil || r.Current.PID == 0 {
		return proc{}, false
	}
	p, ok := inspect(r.Current.PID)
	if !ok || p.start != r.Current.StartTime || p.state == 'T' || p.state == 't' || p.state == 'Z' {
		return proc{}, false
	}
	if srv, ok := s.layout.classify(scanProcs()).server(m.id); !ok || srv.pid != p.pid {
		return proc{}, false
	}
	return p, true
}

// pickVictim picks, at random, a merchant that no other merchant fault is
// working on, whose serving process runs and may die without a restart
// backoff longer than faultsim waits for; it claims the merchant until
// the fault's recovery watch ends (release).
func (s *sim) pickVictim() (*merchant, proc, func()) {
	m := s.pickMerchant(func(m *merchant) bool {
		if s.isBusy("m:" + m.id) {
			return false
		}
		p, ok := s.liveServer(m)
		return ok && s.mayKill(m.id, upFor(p))
	})
	if m == nil || !s.claim("m:"+m.id) {
		return nil, proc{}, nil
	}
	p, ok := s.liveServer(m)
	if !ok {
		s.release("m:" + m.id)
		return nil, proc{}, nil
	}
	return m, p, func() { s.release("m:" + m.id) }
}

func (s *sim) merchantKill() bool {
	m, victim, release := s.pickVictim()
	if m == nil {
		return false
	}
	delay := s.died(m.id, upFor(victim))
	if err := signalProc(victim, syscall.SIGKILL); err != nil {
		release()
		s.vlogf("merchant-kill %s: %v", m.id, err)
		return false
	}
	f := s.newFault(kMerchantKill, m.id, fmt.Sprintf("pid %d", victim.pid))
	f.bound += delay
	s.vlogf("#%d merchant-kill %s pid %d (backoff due %s)", f.n, m.id, victim.pid, delay)
	go func() {
		defer release()
		s.watchNow(f, func() bool { return s.merchantOK(m, victim.pid) })
	}()
	return true
}

func (s *sim) merchantStop() bool {
	m, victim, release := s.pickVictim()
	if m == nil {
		return false
	}
	// Half the time SIGCONT comes before the health check can decide;
	// otherwise it is left to steward, which must replace the process.
	leave := s.rng.IntN(2) == 0
	hold := s.between(200*time.Millisecond, time.Second)
	if err := signalProc(victim, syscall.SIGSTOP); err != nil {
		release()
		return false
	}
	detail := fmt.Sprintf("pid %d, SIGCONT after %s", victim.pid, hold.Round(time.Millisecond))
	if leave {
		detail = fmt.Sprintf("pid %d, left to the health check", victim.pid)
	}
	f := s.newFault(kMerchantStop, m.id, detail)
	if leave {
		s.mu.Lock()
		f.left = true
		s.mu.Unlock()
		f.bound += s.died(m.id, upFor(victim))
	}
	s.vlogf("#%d merchant-stop %s %s", f.n, m.id, detail)
	s.restoreWG.Add(1)
	go func() {
		defer release()
		if !leave {
			s.sleepOrRestore(hold)
			signalProc(victim, syscall.SIGCONT)
			s.ended(f)
			s.restoreWG.Done()
			s.watchNow(f, func() bool { return s.merchantOK(m, 0) })
			return
		}
		// steward must notice the hang and replace the process; the
		// recovery counts from the SIGSTOP.
		for alive(victim) && time.Now().Before(s.deadline(f)) {
			if s.sleepOrRestore(100 * time.Millisecond) {
				break
			}
		}
		if alive(victim) {
			interrupted := s.restoreCtx.Err() != nil
			signalProc(victim, syscall.SIGCONT)
			s.ended(f)
			s.restoreWG.Done()
			if !interrupted {
				s.notBack(f, fmt.Sprintf("fault #%d merchant-stop %s, injected at %s: steward did not replace the stopped (SIGSTOP) pid %d within %s of %s; faultsim sent SIGCONT",
					f.n, m.id, f.at.Format("15:04:05.000"), victim.pid, f.bound, s.lastHolder(f)))
				return
			}
		} else {
			s.restoreWG.Done()
		}
		s.watchNow(f, func() bool { return s.merchantOK(m, 0) })
	}()
	return true
}

func (s *sim) shimKill() bool {
	m, server, release := s.pickVictim()
	if m == nil {
		return false
	}
	// The shim is the process reading the recorded process's output: its
	// stdin is the pipe the merchant's stdout writes to.
	out, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", server.pid))
	shims := s.layout.classify(scanProcs()).shims[m.id]
	if err != nil || !strings.HasPrefix(out, "pipe:") || len(shims) != 1 {
		release()
		return false
	}
	if in, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", shims[0].pid)); err != nil || in != out {
		release()
		return false
	}
	shim := shims[0]
	// The merchant dies of SIGPIPE at its next log line (the example app
	// logs every request, and faultsim writes to it all the time).
	delay := s.died(m.id, upFor(server))
	if err := signalProc(shim, syscall.SIGKILL); err != nil {
		release()
		return false
	}
	f := s.newFault(kShimKill, m.id, fmt.Sprintf("shim pid %d of merchant pid %d", shim.pid, server.pid))
	f.bound += delay
	s.vlogf("#%d shim-kill %s: shim pid %d", f.n, m.id, shim.pid)
	go func() {
		defer release()
		s.watchNow(f, func() bool { return s.merchantOK(m, 0) && !alive(shim) })
	}()
	return true
}

// merchantOK says whether merchant m is back: exactly one process in its
// work dir, serving, not stopped, and not the pid notPID; exactly one log
// shim; /health answers 200 on its port.
func (s *sim) merchantOK(m *merchant, notPID int) bool {
	fp := s.layout.classify(s.procs.get(50 * time.Millisecond))
	ps := fp.merchants[m.id]
	if len(ps) != 1 || !isServer(ps[0]) || ps[0].state == 'T' || ps[0].state == 't' || ps[0].pid == notPID {
		return false
	}
	if len(fp.shims[m.id]) != 1 {
		return false
	}
	code, _ := httpGet(m.port, "/health", time.Second)
	return code == 200
}

func (s *sim) daemonKill() bool {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	old := s.cur.Load()
	if err := s.killDaemonLocked(); err != nil {
		s.violate("daemon-kill: %v", err)
		return false
	}
	down := s.between(0, 300*time.Millisecond)
	f := s.newFault(kDaemonKill, "daemon", fmt.Sprintf("pid %d, restarted after %s", old.pid, down.Round(time.Millisecond)))
	s.vlogf("#%d daemon-kill pid %d", f.n, old.pid)
	time.Sleep(down)
	if err := s.startDaemonLocked(); err != nil {
		s.violate("restarting the daemon: %v", err)
	}
	// The daemon is back from here; its recovery is timed from the restart.
	s.ended(f)
	s.watch(f, s.apiUp)
	return true
}

// nextVersion picks the channel's next version: another good one mostly,
// the broken one sometimes.
func (s *sim) nextVersion() string {
	if !isBroken(s.channel) && s.rng.IntN(5) == 0 {
		return brokenVersion
	}
	var cands []string
	for _, v := range goodVersions {
		if v != s.channel {
			cands = append(cands, v)
		}
	}
	return cands[s.rng.IntN(len(cands))]
}

// pushVersion moves the channel to the next version; s.specMu is held.
func (s *sim) pushVersion() (string, error) {
	v := s.nextVersion()
	if err := s.writeSpecs(v, nil, "channel stable: "+v); err != nil {
		return "", err
	}
	s.channel = v
	s.history = append(s.history, v)
	return v, nil
}

// changes returns the version changes in progress, from the state's
// records: "m03 upgrade 1.0.0→1.1.0 at migrated".
func (s *sim) changes() []string {
	recs, _ := readRecords(s.stateDir)
	var out []string
	for _, r := range recs {
		if c := r.Change; c != nil {
			out = append(out, fmt.Sprintf("%s %s %s→%s at %s", r.ID, c.Kind, c.From, c.To, stepName(c.Step)))
		}
	}
	slices.Sort(out)
	return out
}

// anyNotOn says whether a merchant's record names another version than v
// (or none): a push of v has something to change.
func (s *sim) anyNotOn(v string) bool {
	recs, _ := readRecords(s.stateDir)
	for _, m := range s.merchants {
		if r := recs[m.id]; r == nil || r.Current.Version != v {
			return true
		}
	}
	return false
}

// waitChange waits (bounded) until a record shows a change in progress,
// or stop says to give up.
func (s *sim) waitChange(bound time.Duration, stop func() bool) []string {
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		if c := s.changes(); len(c) > 0 {
			return c
		}
		if stop != nil && stop() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (s *sim) daemonKillRollout() bool {
	if !s.claim("specs") {
		return false
	}
	defer s.release("specs")
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.specMu.Lock()
	v, err := s.pushVersion()
	s.specMu.Unlock()
	if err != nil {
		s.violate("pushing a version: %v", err)
		return false
	}
	if s.cfg.source == "git" {
		s.syncNow()
	}
	var seen []string
	if s.anyNotOn(v) {
		seen = s.waitChange(15*time.Second, nil)
	}
	// Somewhere further along the change's steps.
	time.Sleep(s.between(0, time.Second))
	at := s.changes()
	old := s.cur.Load()
	if err := s.killDaemonLocked(); err != nil {
		s.violate("daemon-kill-rollout: %v", err)
		return false
	}
	detail := fmt.Sprintf("pushed %s; killed pid %d with %s", v, old.pid, describeChanges(at))
	if len(seen) == 0 && s.anyNotOn(v) {
		detail += " (no change in progress was seen within 15s of the push)"
		s.note("daemon-kill-rollout: no change in progress within 15s of pushing %s", v)
	}
	f := s.newFault(kDaemonRollout, "daemon", detail)
	s.vlogf("#%d daemon-kill-rollout: %s", f.n, detail)
	time.Sleep(s.between(0, 300*time.Millisecond))
	if err := s.startDaemonLocked(); err != nil {
		s.violate("restarting the daemon: %v", err)
	}
	// The daemon is back from here; its recovery is timed from the restart.
	s.ended(f)
	s.watch(f, s.apiUp)
	return true
}

func describeChanges(c []string) string {
	if len(c) == 0 {
		return "no change in progress"
	}
	return "changes in progress: " + strings.Join(c, ", ")
}

func (s *sim) daemonKillApply() bool {
	if !s.claim("specs") {
		return false
	}
	defer s.release("specs")
	s.dmu.Lock()
	defer s.dmu.Unlock()
	old := s.cur.Load()
	if err := s.killDaemonLocked(); err != nil {
		s.violate("daemon-kill-apply: %v", err)
		return false
	}
	s.specMu.Lock()
	v, err := s.pushVersion()
	s.specMu.Unlock()
	if err != nil {
		s.violate("pushing a version: %v", err)
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, "apply.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.violate("apply log: %v", err)
		if err := s.startDaemonLocked(); err != nil {
			s.violate("restarting the daemon: %v", err)
		}
		return false
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== faultsim: steward apply after pushing %s, at %s\n", v, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.steward, "apply", "-auto-approve", "-config", s.hostFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	f := s.newFault(kDaemonApply, "daemon", "")
	detail := fmt.Sprintf("daemon pid %d killed, pushed %s", old.pid, v)
	if err := startChild(cmd); err != nil {
		s.violate("starting steward apply: %v", err)
	} else {
		exited := make(chan struct{})
		go func() { waitChild(cmd); close(exited) }()
		isDone := func() bool {
			select {
			case <-exited:
				return true
			default:
				return false
			}
		}
		s.waitChange(15*time.Second, isDone)
		if !isDone() {
			select {
			case <-exited:
			case <-time.After(s.between(0, time.Second)):
			}
		}
		at := s.changes()
		if isDone() {
			detail += fmt.Sprintf("; apply exited (%v) before the kill, %s", cmd.ProcessState, describeChanges(at))
			if !cmd.ProcessState.Success() {
				s.note("#%d daemon-kill-apply: steward apply exited %v before it was killed; see apply.log", f.n, cmd.ProcessState)
			}
		} else {
			cmd.Process.Signal(syscall.SIGKILL)
			<-exited
			detail += fmt.Sprintf("; apply pid %d killed with %s", cmd.Process.Pid, describeChanges(at))
		}
	}
	f.detail = detail
	s.vlogf("#%d daemon-kill-apply: %s", f.n, detail)
	if err := s.startDaemonLocked(); err != nil {
		s.violate("restarting the daemon: %v", err)
	}
	// The daemon is back from here; its recovery is timed from the restart.
	s.ended(f)
	s.watch(f, s.apiUp)
	return true
}

func (s *sim) dbFault(k kind) bool {
	// At most half the databases away at once, so that writes go on.
	down := 0
	for _, m := range s.merchants {
		if s.isBusy("db:" + m.id) {
			down++
		}
	}
	if down >= max(len(s.merchants)/2, 1) {
		return false
	}
	m := s.pickMerchant(func(m *merchant) bool { return !s.isBusy("db:" + m.id) })
	if m == nil || !s.claim("db:"+m.id) {
		return false
	}
	hold := s.between(300*time.Millisecond, 3*time.Second)
	if k == kDBCut {
		m.proxy.Cut()
	} else {
		m.proxy.Blackhole()
	}
	f := s.newFault(k, m.id, fmt.Sprintf("for %s", hold.Round(time.Millisecond)))
	s.vlogf("#%d %s %s for %s", f.n, k, m.id, hold.Round(time.Millisecond))
	s.restoreWG.Add(1)
	go func() {
		s.sleepOrRestore(hold)
		m.proxy.Restore()
		s.release("db:" + m.id)
		s.ended(f)
		// Back: a write through the merchant is acknowledged again.
		s.restoreWG.Done()
		s.watchNow(f, func() bool { return s.writes.lastAck(m.id).After(f.restored) })
	}()
	return true
}

// Bad spec variants: a syntax error, and a spec that parses but does not
// validate.
var badSpecs = []struct{ file, content, what string }{
	{"zz-bad.hcl", "merchant \"zz-bad\" {\n  port = \n", "a syntax error (unclosed block, missing value)"},
	{"zz-bad.hcl", "merchant \"zz-bad\" {\n  database = \"no-such-database\"\n}\n", "a merchant on a database that does not exist"},
	{"zz-bad.hcl", "package \"invoicing\" {\n  source = \"file:///nowhere\"\n}\n", "a second package block of the same name"},
}

func (s *sim) badSpec() bool {
	if !s.claim("specs") {
		return false
	}
	bad := badSpecs[s.rng.IntN(len(badSpecs))]
	hold := s.between(500*time.Millisecond, 3*time.Second)
	s.specMu.Lock()
	err := s.writeSpecs(s.channel, map[string]string{bad.file: bad.content}, "a bad commit: "+bad.what)
	s.specMu.Unlock()
	if err != nil {
		s.release("specs")
		s.violate("writing a bad spec: %v", err)
		return false
	}
	if s.cfg.source == "git" {
		go s.syncNow()
	}
	f := s.newFault(kBadSpec, "specs", fmt.Sprintf("%s for %s", bad.what, hold.Round(time.Millisecond)))
	s.vlogf("#%d bad-spec: %s", f.n, f.detail)
	s.restoreWG.Add(1)
	go func() {
		s.sleepOrRestore(hold)
		s.restoreSpecs()
		s.release("specs")
		s.ended(f)
		if s.cfg.source == "git" {
			s.syncNow()
		}
		s.restoreWG.Done()
		s.watchNow(f, s.specsGood)
	}()
	return true
}

// restoreSpecs writes the good specs for the channel's version.
func (s *sim) restoreSpecs() {
	s.specMu.Lock()
	defer s.specMu.Unlock()
	extra := map[string]string{}
	for _, b := range badSpecs {
		extra[b.file] = ""
	}
	if err := s.writeSpecs(s.channel, extra, "fix: channel stable on "+s.channel); err != nil {
		s.violate("restoring the specs: %v", err)
	}
}

// specsGood says whether the daemon reports no spec error.
func (s *sim) specsGood() bool {
	code, body, err := s.apiGet("/v1/status", 2*time.Second)
	if err != nil || code != 200 {
		return false
	}
	st, err := parseStatus(body)
	return err == nil && st.SpecError == ""
}

func (s *sim) diskFull() bool {
	if !s.claim("state") {
		return false
	}
	hold := s.between(time.Second, 4*time.Second)
	ballast := filepath.Join(s.stateFS, "ballast")
	n, err := fill(ballast)
	if err != nil {
		s.release("state")
		s.violate("disk-full: filling %s: %v", s.stateFS, err)
		return false
	}
	f := s.newFault(kDiskFull, "state", fmt.Sprintf("%d MiB of ballast, for %s", n>>20, hold.Round(time.Millisecond)))
	s.vlogf("#%d disk-full: %s", f.n, f.detail)
	s.restoreWG.Add(1)
	go func() {
		s.sleepOrRestore(hold)
		if err := os.Remove(ballast); err != nil {
			s.violate("disk-full: removing the ballast: %v", err)
		}
		s.release("state")
		s.ended(f)
		s.restoreWG.Done()
		s.watchNow(f, s.apiUp)
	}()
	return true
}

// fill writes path until the file system is full; it returns the bytes
// written.
func fill(path string) (int64, error) {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer fh.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for len(buf) > 0 {
		w, err := fh.Write(buf)
		n += int64(w)
		if err != nil {
			if pe, ok := err.(*os.PathError); ok && pe.Err == syscall.ENOSPC {
				// Smaller chunks fill the last pages.
				buf = buf[:len(buf)/2]
				continue
			}
			return n, err
		}
	}
	return n, nil
}

func (s *sim) apiFlood() bool {
	if !s.claim("api") {
		return false
	}
	hold := s.between(time.Second, 4*time.Second)
	f := s.newFault(kAPIFlood, "api", "")
	s.restoreWG.Add(1)
	fl := startFlood(s.apiAddr, s.cfg.floodConns)
	go func() {
		s.sleepOrRestore(hold)
		st := fl.stop()
		s.release("api")
		s.mu.Lock()
		f.detail = fmt.Sprintf("for %s: %s", hold.Round(time.Millisecond), st)
		s.mu.Unlock()
		s.ended(f)
		s.vlogf("#%d api-flood %s", f.n, f.detail)
		s.restoreWG.Done()
		s.watchNow(f, s.apiUp)
	}()
	return true
}

// sleepOrRestore waits d, or less when the end asks every fault to be
// restored; it reports the latter.
func (s *sim) sleepOrRestore(d time.Duration) bool {
	select {
	case <-time.After(d):
		return false
	case <-s.restoreCtx.Done():
		return true
	}
}

// watch times the recovery of an instant fault in the background.
func (s *sim) watch(f *fault, ok func() bool) {
	go s.watchNow(f, ok)
}

// watchNow polls ok until it holds or f's deadline passes (see
// deadline).
func (s *sim) watchNow(f *fault, ok func() bool) {
	for {
		if ok() {
			s.mu.Lock()
			f.watched, f.recovered, f.took = true, true, time.Since(f.start())
			s.mu.Unlock()
			s.vlogf("#%d %s %s: back after %s", f.n, f.kind, f.target, f.took.Round(time.Millisecond))
			return
		}
		if d := s.deadline(f); time.Now().After(d) {
			s.notBack(f, fmt.Sprintf("fault #%d %s %s (%s), injected at %s: not back within %s of %s", f.n, f.kind, f.target, f.detail,
				f.at.Format("15:04:05.000"), f.bound, s.lastHolder(f)))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// notBack records that f's target was not back within its deadline. The
// violations are reported by target (notBackViolations): one merchant
// that stays down fails every fault that concerned it since.
func (s *sim) notBack(f *fault, msg string) {
	s.mu.Lock()
	f.watched, f.failure = true, msg
	s.mu.Unlock()
	s.logf("NOT BACK: %s", msg)
}

// notBackViolations adds one violation per target whose faults were not
// all back in time: the first such fault, and the numbers of the others.
func (s *sim) notBackViolations() {
	s.mu.Lock()
	byTarget := map[string][]*fault{}
	var targets []string
	for _, f := range s.faults {
		if f.failure == "" {
			continue
		}
		if byTarget[f.target] == nil {
			targets = append(targets, f.target)
		}
		byTarget[f.target] = append(byTarget[f.target], f)
	}
	s.mu.Unlock()
	slices.Sort(targets)
	for _, t := range targets {
		fs := byTarget[t]
		msg := fs[0].failure
		if len(fs) > 1 {
			var ns []string
			for _, f := range fs[1:] {
				if len(ns) == 15 {
					ns = append(ns, "…")
					break
				}
				ns = append(ns, fmt.Sprintf("#%d %s", f.n, f.kind))
			}
			msg += fmt.Sprintf("; and %d later faults of %s not back either: %s", len(fs)-1, t, strings.Join(ns, ", "))
		}
		s.mu.Lock()
		s.violations = append(s.violations, msg)
		s.mu.Unlock()
	}
}

// ended records that a lasting fault is over.
func (s *sim) ended(f *fault) {
	s.mu.Lock()
	f.restored = time.Now()
	s.mu.Unlock()
	s.coolDown(f.kind)
}

// start is when f's recovery is timed from: its end for faults that
// last, its injection for the others. Called with s.mu held.
func (f *fault) start() time.Time {
	if !f.restored.IsZero() {
		return f.restored
	}
	return f.at
}

// lasting says whether f lasts until faultsim ends it.
func (f *fault) lasting() bool { return f.kind.lasts() && !f.left }

// lasts says whether faults of kind k last a while before faultsim ends
// them.
func (k kind) lasts() bool {
	switch k {
	case kMerchantStop, kDBCut, kDBBlackhole, kBadSpec, kDiskFull, kAPIFlood:
		return true
	}
	return false
}

// fleetAllowance is how long after a daemon restart, a fix of the specs
// or a freed disk a merchant may still take to be back: the daemon
// adopts its processes with a fresh health grace (2s), decides a hang
// after 3 failed probes, and restarts what it could not before.
const fleetAllowance = 10 * time.Second

// allowance says how long after the end of fault g, injected after f,
// f's target may still take to be back because g rightly delays it; 0
// when g does not excuse f. A merchant waits for its database, for a
// daemon that was killed, for specs that load (a daemon started meanwhile
// has no desired state) and for a state that can record a start. The API
// waits for a daemon restart and for a flood against it. An API flood never
// excuses a merchant: steward must keep its merchants while flooded.
func allowance(f, g *fault) time.Duration {
	sameMerchant := g.target == f.target
	switch f.kind {
	case kMerchantKill, kMerchantStop, kShimKill:
		switch {
		case g.kind.disruptsDaemon() || g.kind == kBadSpec || g.kind == kDiskFull:
			return fleetAllowance
		case (g.kind == kDBCut || g.kind == kDBBlackhole) && sameMerchant:
			return f.bound
		}
	case kDBCut, kDBBlackhole:
		switch {
		case g.kind.disruptsDaemon() || g.kind == kBadSpec || g.kind == kDiskFull:
			return fleetAllowance
		case g.kind.fleetGroup() == "" && sameMerchant:
			return f.bound + g.bound
		}
	default: // checked through the daemon's API
		if g.kind.disruptsDaemon() || g.kind == kAPIFlood {
			return fleetAllowance
		}
	}
	return 0
}

// deadline is when f's target must be back: its bound after f's end, or
// the allowance after the end of a later fault that holds it back (a
// lasting fault that is not over yet holds it back until it is).
func (s *sim) deadline(f *fault) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := f.start().Add(f.bound)
	if f.lasting() && f.restored.IsZero() {
		d = time.Now().Add(f.bound)
	}
	for _, g := range s.faults[f.n:] {
		a := allowance(f, g)
		if a == 0 {
			continue
		}
		end := g.start()
		if g.lasting() && g.restored.IsZero() {
			end = time.Now()
		}
		if e := end.Add(a); e.After(d) {
			d = e
		}
	}
	return d
}

// lastHolder says what f's deadline counts from.
func (s *sim) lastHolder(f *fault) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	last, what := f.start(), "its end"
	if !f.lasting() {
		what = "its injection"
	}
	for _, g := range s.faults[f.n:] {
		if allowance(f, g) > 0 && g.start().After(last) {
			last, what = g.start(), fmt.Sprintf("the end of fault #%d %s %s", g.n, g.kind, g.target)
		}
	}
	return what
}

// waitWatchers waits (bounded) for every recovery watch to end. The
// watches of the last faults may still run after the restore.
func (s *sim) waitWatchers(bound time.Duration) {
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		pending := 0
		for _, f := range s.faults {
			if !f.watched {
				pending++
			}
		}
		s.mu.Unlock()
		if pending == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
