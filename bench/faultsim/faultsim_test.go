package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"steward/internal/pgtest"
)

// lineWriter sends what is written to t.Log, a line at a time.
type lineWriter struct {
	t   *testing.T
	mu  sync.Mutex
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.t.Log(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

// simulateForTest runs the simulator with args, without the restart block
// when the steward under test does not know it yet (said in the log).
func simulateForTest(t *testing.T, args ...string) (*result, string) {
	t.Helper()
	pgtest.Server(t) // skipped without PostgreSQL, failed under CI
	seed := time.Now().UnixNano()
	if s := os.Getenv("FAULTSIM_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("FAULTSIM_SEED: %v", err)
		}
	}
	args = append(args, "-seed", strconv.FormatInt(seed, 10))
	if k := os.Getenv("FAULTSIM_KINDS"); k != "" {
		args = append(args, "-kinds", k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, block := range []bool{true, false} {
		c, err := parseFlags(append(args, "-restart-block="+strconv.FormatBool(block)), &lineWriter{t: t})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		res, err := simulate(ctx, c, &out, &lineWriter{t: t})
		if block && errors.Is(err, errRestartBlockRefused) {
			t.Log("this steward refuses the fleet-wide restart block: running without it (steward's default backoff; faultsim leaves merchants alone whose backoff would outgrow 5s)")
			continue
		}
		if err != nil {
			t.Fatalf("faultsim (seed %d): %v", seed, err)
		}
		return res, out.String()
	}
	panic("unreachable")
}

// TestFaultsim runs the fault simulator against a scratch fleet: at least
// 300 faults of every kind within a bounded time, then every check.
// consultSources opens every Go source file of the module, so that go
// test's cache, which knows only the files a test opens, runs the fault
// simulator again when steward's code changed: it builds steward itself.
func consultSources(t *testing.T) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		switch {
		case err != nil:
			return nil
		case d.IsDir() && p != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "bin"):
			return filepath.SkipDir
		case !d.IsDir() && strings.HasSuffix(p, ".go"):
			if f, err := os.Open(p); err == nil {
				f.Close()
			}
		}
		return nil
	})
}

func TestFaultsim(t *testing.T) {
	consultSources(t)
	if testing.Short() {
		t.Skip("the fault simulator runs for minutes")
	}
	const want = 300
	res, report := simulateForTest(t, "-faults", strconv.Itoa(want), "-duration", "150s", "-interval", "100ms", "-fleet-gap", "6s")
	t.Log("\n" + report)
	if len(res.faults) < want {
		t.Errorf("injected %d faults within 150s, want at least %d", len(res.faults), want)
	}
	if len(res.violations) > 0 {
		t.Errorf("%d violations (see the report above):\n  %s", len(res.violations), strings.Join(res.violations, "\n  "))
	}
	if res.acked == 0 {
		t.Error("no write was acknowledged")
	}
	kinds := map[kind]bool{}
	for _, f := range res.faults {
		kinds[f.kind] = true
	}
	for k := range numKinds {
		if !kinds[k] && k != kDiskFull {
			t.Errorf("no fault of kind %s was injected", k)
		}
	}
}

// TestFaultsimGit runs a shorter simulation with the specs in a git
// repository: bad commits and version pushes are commits fetched by the
// daemon (poll, and POST /v1/sync as a webhook would), and the daemon is
// killed mid-rollout and mid-apply.
func TestFaultsimGit(t *testing.T) {
	consultSources(t)
	if testing.Short() {
		t.Skip("the fault simulator runs for minutes")
	}
	res, report := simulateForTest(t, "-source", "git", "-duration", "40s", "-interval", "200ms", "-fleet-gap", "5s",
		"-kinds", "bad-spec,daemon-kill-rollout,daemon-kill-apply,merchant-kill,db-cut")
	t.Log("\n" + report)
	if len(res.violations) > 0 {
		t.Errorf("%d violations (see the report above):\n  %s", len(res.violations), strings.Join(res.violations, "\n  "))
	}
	n := map[kind]int{}
	for _, f := range res.faults {
		n[f.kind]++
	}
	if n[kBadSpec] < 2 || n[kDaemonRollout]+n[kDaemonApply] < 2 {
		t.Errorf("%d bad commits and %d daemon kills mid-rollout or mid-apply in 40s, want at least 2 each", n[kBadSpec], n[kDaemonRollout]+n[kDaemonApply])
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name  string
		stat  string
		state byte
		ppid  int
		start uint64
		err   bool
	}{
		{"plain", "1234 (invoicing) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 1000000 200", 'S', 1, 98765, false},
		{"command with spaces and parens", "77 (a (b) c) T 5 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0", 'T', 5, 42, false},
		{"zombie", "9 (x) Z 3 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 7 0 0", 'Z', 3, 7, false},
		{"no parenthesis", "9 x Z 3", 0, 0, 0, true},
		{"short", "9 (x) S 1 2 3", 0, 0, 0, true},
		{"bad start time", "9 (x) S 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 zz 0 0", 0, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, ppid, start, err := parseStat([]byte(tt.stat))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if err == nil && (st != tt.state || ppid != tt.ppid || start != tt.start) {
				t.Errorf("got state %c ppid %d start %d, want %c %d %d", st, ppid, start, tt.state, tt.ppid, tt.start)
			}
		})
	}
}

// TestInspectSelf checks the /proc reading against this very process.
func TestInspectSelf(t *testing.T) {
	p, ok := inspect(os.Getpid())
	if !ok {
		t.Fatal("inspect of this process failed")
	}
	wd, _ := os.Getwd()
	if p.ppid != os.Getppid() || p.cwd != wd || p.start == 0 || len(p.argv) == 0 || p.argv[0] != os.Args[0] {
		t.Errorf("inspect = %+v; want ppid %d, cwd %s, argv[0] %s", p, os.Getppid(), wd, os.Args[0])
	}
	if !alive(p) {
		t.Error("alive(self) = false")
	}
	if other := (proc{pid: p.pid, start: p.start + 1}); alive(other) {
		t.Error("alive with another start time = true: a reused pid would pass for the process")
	}
}

func TestClassify(t *testing.T) {
	l := fleetLayout{runRoot: "/x/run", shimBin: "/x/bin/steward-logshim", steward: "/x/bin/steward"}
	ps := []proc{
		{pid: 10, state: 'S', cwd: "/x/run/merchants/m01/work", argv: []string{"bin/invoicing", "--port=20001"}},
		{pid: 11, state: 'S', cwd: "/", argv: []string{"/x/bin/steward-logshim", "-dir", "/x/run/merchants/m01/logs", "-max", "1", "-keep", "5"}},
		{pid: 12, state: 'S', cwd: "/x/run/merchants/m02/work", argv: []string{"bin/invoicing", "migrate", "up"}},
		{pid: 13, state: 'S', cwd: "/", argv: []string{"/x/bin/steward", "__logshim", "-dir", "/x/run/merchants/m02/logs"}},
		{pid: 14, state: 'Z', cwd: "", argv: nil},
		{pid: 15, state: 'S', cwd: "/x/run/merchants/m03/work/sub", argv: []string{"sh"}},
		{pid: 16, state: 'S', cwd: "/", argv: []string{"/other/steward-logshim", "-dir", "/x/run/merchants/m01/logs"}},
		{pid: 17, state: 'S', cwd: "/", argv: []string{"/x/bin/steward-logshim", "-dir", "/x/run/merchants/m01/logs/../../m02/logs"}},
		{pid: 18, state: 'S', cwd: "/x/run/merchants/m04/logs", argv: []string{"cat"}},
	}
	fp := l.classify(ps)
	pids := func(ps []proc) string { return fmt.Sprint(len(ps), ps) }
	if got := fp.merchants["m01"]; len(got) != 1 || got[0].pid != 10 {
		t.Errorf("m01 processes = %s", pids(got))
	}
	if got := fp.shims["m01"]; len(got) != 1 || got[0].pid != 11 {
		t.Errorf("m01 shims = %s (pid 16 is another install's shim, 17 a -dir that is not m01's log dir)", pids(got))
	}
	if _, ok := fp.server("m02"); ok {
		t.Error("m02's migration counted as its server")
	}
	if got := fp.shims["m02"]; len(got) != 1 || got[0].pid != 13 {
		t.Errorf("m02 shims = %s (steward __logshim)", pids(got))
	}
	if got := fp.merchants["m03"]; len(got) != 1 {
		t.Errorf("m03 processes = %s (a cwd below the work dir counts)", pids(got))
	}
	if got := fp.merchants["m04"]; len(got) != 0 {
		t.Errorf("m04 processes = %s (a cwd in the log dir is not the work dir)", pids(got))
	}
}

func TestBackoffDelay(t *testing.T) {
	tests := []struct {
		b        backoff
		failures int
		want     time.Duration
	}{
		{blockBackoff, 1, 0},
		{blockBackoff, 2, 110 * time.Millisecond},
		{blockBackoff, 3, 220 * time.Millisecond},
		{blockBackoff, 6, 1760 * time.Millisecond},
		{blockBackoff, 7, 2 * time.Second},
		{blockBackoff, 50, 2 * time.Second},
		{defaultBackoff, 2, 1100 * time.Millisecond},
		{defaultBackoff, 4, 4400 * time.Millisecond},
		{defaultBackoff, 5, 8800 * time.Millisecond},
		{defaultBackoff, 40, 5 * time.Minute},
	}
	for _, tt := range tests {
		if got := tt.b.delay(tt.failures); got != tt.want {
			t.Errorf("%+v.delay(%d) = %s, want %s", tt.b, tt.failures, got, tt.want)
		}
	}
}

func TestMayKillFollowsBackoff(t *testing.T) {
	s := &sim{policy: defaultBackoff, deaths: map[string]*deathCount{}}
	n := 0
	for s.mayKill("m01", time.Second) {
		s.died("m01", time.Second)
		if n++; n > 20 {
			t.Fatal("mayKill never refuses under the default backoff")
		}
	}
	// 1st death: no wait; then 1.1s, 2.2s, 4.4s; the 5th would wait 8.8s.
	if n != 4 {
		t.Errorf("%d fast deaths allowed, want 4", n)
	}
	if !s.mayKill("m01", 11*time.Minute) {
		t.Error("a process up longer than reset_after starts its count again")
	}
	if !s.mayKill("m02", time.Second) {
		t.Error("another merchant's count is its own")
	}
	s.policy = blockBackoff
	for range 50 {
		if !s.mayKill("m03", time.Second) {
			t.Fatal("with the restart block every death's backoff stays within 2s")
		}
		s.died("m03", time.Second)
	}
}

func TestExpected(t *testing.T) {
	s := &sim{}
	halted := map[string]*rollout{"1.1.0": {Package: "invoicing", Version: "1.1.0", Halted: true, Reason: "canary m01 failed"}}
	tests := []struct {
		name     string
		rec      *record
		rollouts map[string]*rollout
		want     string
	}{
		{"no record", nil, nil, "1.1.0"},
		{"on the channel's version", &record{Current: instance{Version: "1.1.0"}}, halted, "1.1.0"},
		{"behind, rollout going on", &record{Current: instance{Version: "1.0.0"}}, nil, "1.1.0"},
		{"behind, rollout halted", &record{Current: instance{Version: "1.0.0"}}, halted, "1.0.0"},
		{"failed here", &record{Current: instance{Version: "1.0.0"}, BadVersions: []string{"1.1.0"}}, nil, "1.0.0"},
		{"failed here, current bad too: newest good", &record{Current: instance{Version: "1.2.0"}, GoodVersions: []string{"1.0.0", "1.0.5"}, BadVersions: []string{"1.1.0", "1.2.0"}}, nil, "1.0.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := s.expected("1.1.0", tt.rec, tt.rollouts); got != tt.want {
				t.Errorf("expected = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args []string
		err  string
	}{
		{[]string{"-duration", "1m"}, ""},
		{[]string{"-faults", "10", "-kinds", "db-cut,merchant-kill"}, ""},
		{nil, "give -duration or -faults"},
		{[]string{"-faults", "1", "-kinds", "db-cut,nope"}, `unknown fault kind "nope"`},
		{[]string{"-faults", "1", "-source", "svn"}, "-source must be dir or git"},
		{[]string{"-faults", "1", "-merchants", "0"}, "-merchants must be between 1 and 99"},
		{[]string{"-faults", "1", "extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		c, err := parseFlags(tt.args, &bytes.Buffer{})
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%q: %v", tt.args, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: err = %v, want one saying %q", tt.args, err, tt.err)
		case tt.err == "" && c.seed == 0:
			t.Errorf("%q: no seed chosen", tt.args)
		}
	}
	c, _ := parseFlags([]string{"-faults", "1"}, &bytes.Buffer{})
	if len(c.kinds) != int(numKinds) || !c.restartBlock || c.merchants != 8 {
		t.Errorf("defaults: %d kinds, restart block %v, %d merchants", len(c.kinds), c.restartBlock, c.merchants)
	}
}

func TestSummarize(t *testing.T) {
	faults := []*fault{
		{kind: kDBCut, watched: true, recovered: true, took: 100 * time.Millisecond},
		{kind: kMerchantKill, watched: true, recovered: true, took: 3 * time.Second, lost: 2},
		{kind: kMerchantKill, watched: true, recovered: true, took: time.Second},
		{kind: kMerchantKill, watched: true, recovered: false, dup: 1},
		{kind: kMerchantKill},
	}
	rows, total := summarize(faults)
	if len(rows) != 2 || rows[0].kind != "merchant-kill" || rows[1].kind != "db-cut" {
		t.Fatalf("rows %+v: want merchant-kill then db-cut (the table's order)", rows)
	}
	mk := rows[0]
	if mk.injected != 4 || mk.recovered != 2 || mk.notBack != 1 || mk.lost != 2 || mk.dup != 1 || mk.p50 != time.Second || mk.max != 3*time.Second {
		t.Errorf("merchant-kill row %+v", mk)
	}
	if total.injected != 5 || total.recovered != 3 || total.notBack != 1 || total.lost != 2 || total.dup != 1 || total.max != 3*time.Second {
		t.Errorf("total %+v", total)
	}
}

func TestBlameAttributesToLastFaultOfTheMerchant(t *testing.T) {
	t0 := time.Now()
	s := &sim{}
	s.faults = []*fault{
		{n: 1, kind: kDBCut, target: "m01", at: t0},
		{n: 2, kind: kMerchantKill, target: "m02", at: t0.Add(time.Second)},
		{n: 3, kind: kDaemonKill, target: "daemon", at: t0.Add(2 * time.Second)},
		{n: 4, kind: kMerchantKill, target: "m01", at: t0.Add(4 * time.Second)},
	}
	s.blame(ack{merchant: "m01", at: t0.Add(1500 * time.Millisecond)}, true)
	s.blame(ack{merchant: "m02", at: t0.Add(3 * time.Second)}, true)
	s.blame(ack{merchant: "m01", at: t0.Add(-time.Second)}, false)
	if s.faults[0].lost != 1 || s.faults[2].lost != 1 || s.faults[1].lost != 0 || s.faults[3].lost != 0 {
		t.Errorf("lost by fault: %d %d %d %d, want 1 0 1 0", s.faults[0].lost, s.faults[1].lost, s.faults[2].lost, s.faults[3].lost)
	}
	if s.unblamedDup != 1 {
		t.Errorf("a duplicate before any fault: unblamed %d, want 1", s.unblamedDup)
	}
}

func TestCheckEvents(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	work := filepath.Join(run, "merchants", "m01", "work")
	os.MkdirAll(work, 0o755)
	// A live process in m01's work dir, as a merchant would be.
	cmd := exec.Command("sleep", "60")
	cmd.Dir = work
	if err := startChild(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); waitChild(cmd) })
	waitFor(t, func() bool { p, ok := inspect(cmd.Process.Pid); return ok && p.cwd == work })
	pid := strconv.Itoa(cmd.Process.Pid)
	later := time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano)
	lines := []string{
		`{"time":"2026-01-01T00:00:00Z","merchant":"m01","action":"start","reason":"process not running","result":"ok"}`,
		`{"time":"2026-01-01T00:00:01Z","merchant":"m01","action":"exited","result":"observed","pid":1}`,
		`{"time":"2026-01-01T00:00:02Z","action":"database up","reason":"database db is up"}`,
		`{"time":"2026-01-01T00:00:03Z","merchant":"m01","act`,
		// An exit recorded for the live process: made up.
		`{"time":"` + later + `","merchant":"m01","action":"exited","reason":"process exited","result":"observed","pid":` + pid + `}`,
		// An exit recorded before the live process started: its pid was reused.
		`{"time":"2000-01-01T00:00:00Z","merchant":"m01","action":"exited","reason":"process exited","result":"observed","pid":` + pid + `}`,
	}
	os.WriteFile(filepath.Join(dir, "events.jsonl"), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	s := &sim{stateDir: dir, logw: &bytes.Buffer{}, layout: fleetLayout{runRoot: run}}
	s.checkEvents()
	want := []string{
		"events.jsonl:4: not a whole JSON event",
		"events.jsonl:5: m01's pid " + pid + " is recorded as exited",
		"1 history events have no reason; the first: " + dir + "/events.jsonl:2",
		"1 history events have no result; the first: " + dir + "/events.jsonl:3",
	}
	if len(s.violations) != len(want) {
		t.Fatalf("violations:\n  %s\nwant %d", strings.Join(s.violations, "\n  "), len(want))
	}
	for i, w := range want {
		if !strings.Contains(s.violations[i], w) {
			t.Errorf("violation %d = %q, want it to say %q", i, s.violations[i], w)
		}
	}
}

// waitFor polls cond (a condition of another process) for up to 10s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMerchantHistoryFoldsRepeats(t *testing.T) {
	dir := t.TempDir()
	lines := []string{
		`{"time":"2026-01-01T00:00:00Z","merchant":"m01","action":"start","version":"1.0.0","reason":"process not running","result":"ok","pid":5}`,
		`{"time":"2026-01-01T00:00:01Z","merchant":"m02","action":"start","reason":"other merchant","result":"ok"}`,
		`{"time":"2026-01-01T00:00:02Z","merchant":"m01","action":"start","version":"1.0.0","reason":"process not running","result":"error","error":"schema mismatch"}`,
		`{"time":"2026-01-01T00:00:04Z","merchant":"m01","action":"start","version":"1.0.0","reason":"process not running","result":"error","error":"schema mismatch"}`,
		`{"time":"2026-01-01T00:00:06Z","merchant":"m01","action":"start","version":"1.0.0","reason":"process not running","result":"error","error":"schema mismatch"}`,
	}
	os.WriteFile(filepath.Join(dir, "events.jsonl"), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	s := &sim{stateDir: dir}
	got := s.merchantHistory("m01", 10)
	want := []string{
		"00:00:00.000 start 1.0.0 [ok] process not running (pid 5)",
		"00:00:02.000 start 1.0.0 [error] process not running: schema mismatch (and 2 times more, until 00:00:06.000)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("history:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestPostInvoice(t *testing.T) {
	answer := func(code int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/invoices"
	}
	c := &http.Client{Timeout: 2 * time.Second}
	tests := []struct {
		name string
		url  string
		id   int64
		why  string
	}{
		{"acknowledged", answer(201, `{"id":7,"merchant":"m01","amount_cents":42}`), 7, ""},
		{"another merchant on the port", answer(201, `{"id":7,"merchant":"other","amount_cents":42}`), 0, `answered by another merchant's process ("other")`},
		{"another amount", answer(201, `{"id":7,"merchant":"m01","amount_cents":43}`), 0, "a 201 that is not the invoice written"},
		{"refused by the app", answer(503, `database unavailable`), 0, "status 503"},
		{"nothing listening", "http://127.0.0.1:1/invoices", 0, "refused (nothing listening)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, why := postInvoice(context.Background(), c, tt.url, "m01", 42)
			if id != tt.id || !strings.HasPrefix(why, tt.why) || (tt.why == "" && why != "") {
				t.Errorf("postInvoice = %d, %q; want %d, %q", id, why, tt.id, tt.why)
			}
		})
	}
}

func TestNotBackViolationsByTarget(t *testing.T) {
	s := &sim{logw: &bytes.Buffer{}}
	for i, target := range []string{"m02", "m01", "m02", "daemon", "m02"} {
		s.faults = append(s.faults, &fault{n: i + 1, kind: kDBCut, target: target})
	}
	s.faults[3].kind = kDaemonKill
	for _, i := range []int{0, 2, 3, 4} {
		f := s.faults[i]
		s.notBack(f, fmt.Sprintf("fault #%d %s %s: not back", f.n, f.kind, f.target))
	}
	s.notBackViolations()
	want := []string{
		"fault #4 daemon-kill daemon: not back",
		"fault #1 db-cut m02: not back; and 2 later faults of m02 not back either: #3 db-cut, #5 db-cut",
	}
	if strings.Join(s.violations, "\n") != strings.Join(want, "\n") {
		t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(s.violations, "\n"), strings.Join(want, "\n"))
	}
	if rows, total := summarize(s.faults); total.notBack != 4 || rows[0].notBack != 1 {
		t.Errorf("summary: %d not back in all, %d of daemon-kill; want 4 and 1", total.notBack, rows[0].notBack)
	}
}

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestReportGolden renders the report of a made-up run and compares it
// with testdata/report.golden (go test ./bench/faultsim -run ReportGolden -update).
func TestReportGolden(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &sim{
		cfg:         config{seed: 42, merchants: 2, source: "dir", restartBlock: true, recoverBound: 30 * time.Second, converge: 2 * time.Minute, faults: 5},
		policy:      blockBackoff,
		stateDir:    "/scratch/state",
		injectStart: t0,
		injectEnd:   t0.Add(75 * time.Second),
		history:     []string{"1.0.0", "1.2.0", "1.1.0"},
		daemons:     3,
		skipped:     map[kind]string{kDiskFull: "not root: cannot mount a tmpfs for the state directory"},
		writes:      newWriteLog(),
		notes:       []string{"#3 daemon-kill-apply: steward apply exited exit status 1 before it was killed; see apply.log"},
		violations:  []string{"m02: status says failed, healthy false (last error \"schema mismatch\")"},
		histories:   map[string][]string{"m02": {"03:05:00.000 start 1.0.0 [error] process not running: schema mismatch (and 3 times more, until 03:05:06.000)"}},
	}
	s.faults = []*fault{
		{n: 1, kind: kMerchantKill, target: "m01", watched: true, recovered: true, took: 1200 * time.Millisecond},
		{n: 2, kind: kMerchantKill, target: "m02", watched: true, recovered: true, took: 300 * time.Millisecond, lost: 1},
		{n: 3, kind: kDaemonApply, target: "daemon", watched: true, recovered: true, took: 1100 * time.Millisecond},
		{n: 4, kind: kDBCut, target: "m02", watched: true, failure: "fault #4 db-cut m02: not back"},
		{n: 5, kind: kAPIFlood, target: "api", watched: true, recovered: true, took: 80 * time.Millisecond},
	}
	s.unblamedDup = 1
	for i := range 3 {
		s.writes.add(ack{merchant: "m01", amount: int64(i + 1), id: int64(i + 1)})
	}
	s.writes.fail("m02", "refused (nothing listening)")
	s.writes.fail("m02", "refused (nothing listening)")
	s.writes.fail("m01", "status 503")
	var out bytes.Buffer
	s.out = &out
	s.report(8500*time.Millisecond, false)
	golden := filepath.Join("testdata", "report.golden")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if out.String() != string(want) {
		t.Errorf("report differs from %s (run with -update after checking the diff):\n%s", golden, out.String())
	}
}

func TestPickCoversEveryKindOfAGroup(t *testing.T) {
	c, _ := parseFlags([]string{"-faults", "1", "-kinds", "daemon-kill,daemon-kill-rollout,daemon-kill-apply,db-cut", "-seed", "7"}, &bytes.Buffer{})
	s := &sim{cfg: c, rng: mrand.New(mrand.NewPCG(7, 7)), skipped: map[kind]string{}}
	seen := map[kind]int{}
	for len(s.faults) < 3 {
		k, ok := s.pick(func(k kind) bool { return k.disruptsDaemon() })
		if !ok {
			t.Fatal("nothing picked")
		}
		seen[k]++
		s.faults = append(s.faults, &fault{n: len(s.faults) + 1, kind: k})
	}
	if len(seen) != 3 {
		t.Errorf("three daemon faults picked %v, want one of each kind", seen)
	}
}
