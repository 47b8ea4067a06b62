package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	pgdsn "steward/internal/dsn"
	"strings"
	"sync"
	"testing"
	"time"

	"steward/internal/pgtest"
	"steward/internal/tcpproxy"
)

const secret = "s3cret"

// proxied returns a proxy in front of the test server and a URL DSN through
// it that carries a password (ignored by trust authentication).
func proxied(t *testing.T) (*tcpproxy.Proxy, string) {
	t.Helper()
	base := pgtest.Server(t)
	if !pgdsn.IsURL(base) {
		t.Skip("STEWARD_TEST_PG is not a URL; the proxy tests need one")
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	u.Host = p.Addr()
	u.User = url.UserPassword(u.User.Username(), secret)
	return p, u.String()
}

func noSecret(t *testing.T, what, s string) {
	t.Helper()
	if strings.Contains(s, secret) {
		t.Errorf("%s reveals the password: %s", what, s)
	}
}

func TestCheckDB(t *testing.T) {
	p, dsn := proxied(t)
	u, _ := url.Parse(dsn)
	host, port, _ := net.SplitHostPort(u.Host)
	kv := fmt.Sprintf("host=%s port=%s user=%s password='%s' dbname=%s sslmode=disable",
		host, port, u.User.Username(), secret, strings.TrimPrefix(u.Path, "/"))

	for name, dsn := range map[string]string{"url": dsn, "key=value": kv} {
		lat, err := CheckDB(context.Background(), dsn, 2*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if lat <= 0 || lat > 2*time.Second {
			t.Errorf("%s: latency %s", name, lat)
		}
	}

	p.Cut()
	start := time.Now()
	_, err := CheckDB(context.Background(), dsn, 2*time.Second)
	if err == nil {
		t.Fatal("check through a cut proxy succeeded")
	}
	t.Logf("cut: %v after %s", err, time.Since(start).Round(time.Millisecond))
	noSecret(t, "error", err.Error())

	// A server that accepts but never answers is bounded by the timeout,
	// not by lib/pq's whole-second connect_timeout.
	p.Blackhole()
	for name, dsn := range map[string]string{"url": dsn, "key=value": kv} {
		const timeout = 300 * time.Millisecond
		start := time.Now()
		_, err := CheckDB(context.Background(), dsn, timeout)
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "timed out") {
			t.Fatalf("%s: blackholed check: %v, want a timeout", name, err)
		}
		if took > timeout+300*time.Millisecond {
			t.Errorf("%s: blackholed check took %s, timeout %s", name, took, timeout)
		}
		t.Logf("%s blackholed: %v after %s", name, err, took.Round(time.Millisecond))
		noSecret(t, "error", err.Error())
	}

	for _, bad := range []string{"postgres://u:" + secret + "@db:port/x", "host=db password='" + secret} {
		_, err := CheckDB(context.Background(), bad, time.Second)
		if err == nil {
			t.Fatalf("CheckDB(%q) succeeded", bad)
		}
		noSecret(t, "error", err.Error())
	}
}

func TestDBTargetNeverPrintsDSN(t *testing.T) {
	tg := DBTarget{Name: "db-east", DSN: "postgres://u:" + secret + "@db/x"}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		noSecret(t, f, fmt.Sprintf(f, tg))
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "db", tg)
	noSecret(t, "slog", buf.String())
	if !strings.Contains(buf.String(), "db-east") {
		t.Errorf("slog output lacks the name: %s", buf.String())
	}
}

func TestDBHysteresis(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	fail := errors.New("connection refused")
	const ok, ko = true, false
	type step struct {
		ok      bool
		up      bool // after the step (when checked)
		checked bool
		change  bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first success is up at once", []step{{ok, true, true, true}, {ok, true, true, false}}},
		{"never up: down after DownAfter failures", []step{
			{ko, false, false, false}, {ko, false, false, false}, {ko, false, true, true}, {ko, false, true, false}}},
		{"up needs UpAfter successes after a down", []step{
			{ok, true, true, true},
			{ko, true, true, false}, {ko, true, true, false}, {ko, false, true, true},
			{ok, false, true, false}, {ok, true, true, true}}},
		{"a success breaks a failure run", []step{
			{ok, true, true, true},
			{ko, true, true, false}, {ko, true, true, false}, {ok, true, true, false},
			{ko, true, true, false}, {ko, true, true, false}, {ko, false, true, true}}},
		{"a failure breaks a success run", []step{
			{ko, false, false, false}, {ko, false, false, false}, {ko, false, true, true},
			{ok, false, true, false}, {ko, false, true, false}, {ok, false, true, false}, {ok, true, true, true}}},
	}
	tg := DBTarget{Name: "db", Interval: time.Second, DownAfter: 3, UpAfter: 2}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := dbHealth{st: DBStatus{Name: "db"}}
			for i, s := range tt.steps {
				var err error
				if !s.ok {
					err = fail
				}
				now := t0.Add(time.Duration(i) * time.Second)
				changed := h.observe(tg, time.Millisecond, err, now)
				st := h.st
				if changed != s.change || st.Checked != s.checked || (st.Checked && st.Up != s.up) {
					t.Fatalf("step %d: changed=%v checked=%v up=%v, want %v %v %v", i, changed, st.Checked, st.Up, s.change, s.checked, s.up)
				}
				if changed && !st.Since.Equal(now) {
					t.Fatalf("step %d: Since %s, want %s", i, st.Since, now)
				}
				if (st.LastError != "") == s.ok {
					t.Fatalf("step %d: LastError %q", i, st.LastError)
				}
			}
		})
	}
}

func TestDBFlapDamping(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	tg := DBTarget{Name: "db", Interval: time.Second, DownAfter: 1, UpAfter: 1}
	h := dbHealth{st: DBStatus{Name: "db"}}
	now := t0
	check := func(ok bool) bool {
		now = now.Add(time.Second)
		var err error
		if !ok {
			err = errors.New("refused")
		}
		return h.observe(tg, 0, err, now)
	}
	// successes needed to come up after each down, flapping fast
	need := func() int {
		if !check(false) || h.st.Up {
			t.Fatal("did not go down")
		}
		for n := 1; ; n++ {
			if check(true) {
				return n
			}
			if n > 100 {
				t.Fatal("never came up")
			}
		}
	}
	check(true) // first determination
	if n := need(); n != 1 {
		t.Fatalf("first outage: up after %d successes, want 1 (no recovery before)", n)
	}
	var got []int
	for range 6 {
		got = append(got, need())
	}
	if want := []int{2, 4, 8, 16, 16, 16}; !slices.Equal(got, want) {
		t.Fatalf("successes needed while flapping: %v, want %v", got, want)
	}
	// Up for the whole window: the damping resets.
	for range flapWindowIntervals {
		check(true)
	}
	if n := need(); n != 1 {
		t.Fatalf("after a stable window: up after %d successes, want 1", n)
	}
}

// changes records a DBWatcher's OnChange calls.
type changes struct {
	mu  sync.Mutex
	all []DBStatus
	ch  chan DBStatus
}

func newChanges() *changes { return &changes{ch: make(chan DBStatus, 256)} }

func (c *changes) on(s DBStatus) {
	c.mu.Lock()
	c.all = append(c.all, s)
	c.mu.Unlock()
	select {
	case c.ch <- s:
	default:
	}
}

func (c *changes) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.all)
}

// wait waits (at most d) for a change of name to up.
func (c *changes) wait(t *testing.T, name string, up bool, d time.Duration) DBStatus {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case s := <-c.ch:
			if s.Name == name && s.Up == up && s.Checked {
				return s
			}
		case <-deadline:
			t.Fatalf("%s did not turn up=%v within %s", name, up, d)
		}
	}
}

// until waits (at most d), change by change, for w's status to satisfy ok.
func (c *changes) until(t *testing.T, w *DBWatcher, d time.Duration, ok func([]DBStatus) bool) {
	t.Helper()
	deadline := time.After(d)
	for !ok(w.Status()) {
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatalf("status not reached within %s: %+v", d, w.Status())
		}
	}
}

func checkStatusSecretFree(t *testing.T, w *DBWatcher) {
	t.Helper()
	for _, s := range w.Status() {
		noSecret(t, "status", fmt.Sprintf("%+v", s))
	}
}

func TestDBWatcherCutAndRestore(t *testing.T) {
	p, dsn := proxied(t)
	const (
		interval  = 200 * time.Millisecond
		timeout   = 500 * time.Millisecond
		downAfter = 2
		upAfter   = 2
		margin    = 500 * time.Millisecond
	)
	ch := newChanges()
	w := NewDBWatcher(DBWatcherOptions{OnChange: ch.on})
	w.Set([]DBTarget{{Name: "db-east", DSN: dsn, Interval: interval, Timeout: timeout, DownAfter: downAfter, UpAfter: upAfter}})
	if st := w.Status(); len(st) != 1 || st[0].Checked {
		t.Fatalf("status before Run: %+v", st)
	}
	start := time.Now()
	runUntilEnd(t, w.Run)
	ch.wait(t, "db-east", true, timeout+margin)
	t.Logf("first determination (up) after %s", time.Since(start).Round(time.Millisecond))

	p.Cut()
	cutAt := time.Now()
	down := ch.wait(t, "db-east", false, 10*time.Second)
	took, budget := time.Since(cutAt), interval*downAfter+timeout
	t.Logf("cut: down after %s (budget %s + %s): %s", took.Round(time.Millisecond), budget, margin, down.LastError)
	if took > budget+margin {
		t.Errorf("down after %s, budget %s + %s", took, budget, margin)
	}
	noSecret(t, "LastError", down.LastError)
	if down.LastError == "" {
		t.Error("down without a LastError")
	}
	checkStatusSecretFree(t, w)

	p.Restore()
	restoredAt := time.Now()
	up := ch.wait(t, "db-east", true, 10*time.Second)
	took, budget = time.Since(restoredAt), interval*upAfter
	t.Logf("restore: up after %s (budget %s + %s)", took.Round(time.Millisecond), budget, margin)
	if took > budget+margin {
		t.Errorf("up after %s, budget %s + %s", took, budget, margin)
	}
	if up.LastError != "" || up.Latency <= 0 {
		t.Errorf("up status %+v", up)
	}
	if n := ch.count(); n != 3 {
		t.Errorf("%d changes, want 3 (up, down, up)", n)
	}
}

func TestDBWatcherBlackhole(t *testing.T) {
	p, dsn := proxied(t)
	const (
		interval  = 400 * time.Millisecond
		timeout   = 300 * time.Millisecond
		downAfter = 2
		margin    = 500 * time.Millisecond
	)
	ch := newChanges()
	w := NewDBWatcher(DBWatcherOptions{OnChange: ch.on})
	w.Set([]DBTarget{{Name: "db-west", DSN: dsn, Interval: interval, Timeout: timeout, DownAfter: downAfter, UpAfter: 1}})
	runUntilEnd(t, w.Run)
	ch.wait(t, "db-west", true, timeout+margin)

	p.Blackhole()
	at := time.Now()
	down := ch.wait(t, "db-west", false, 10*time.Second)
	took, budget := time.Since(at), interval*downAfter+timeout
	t.Logf("blackhole: down after %s (budget %s + %s): %s", took.Round(time.Millisecond), budget, margin, down.LastError)
	if took > budget+margin {
		t.Errorf("down after %s, budget %s + %s", took, budget, margin)
	}
	if !strings.Contains(down.LastError, "timed out") {
		t.Errorf("LastError %q, want a timeout", down.LastError)
	}
	noSecret(t, "LastError", down.LastError)
	p.Restore()
	ch.wait(t, "db-west", true, 10*time.Second)
}

func TestDBWatcherFlapping(t *testing.T) {
	p, dsn := proxied(t)
	const (
		interval = 200 * time.Millisecond
		flap     = 500 * time.Millisecond
		flapFor  = 10 * time.Second
		bound    = 4
	)
	ch := newChanges()
	w := NewDBWatcher(DBWatcherOptions{OnChange: ch.on})
	w.Set([]DBTarget{{Name: "db", DSN: dsn, Interval: interval, Timeout: 500 * time.Millisecond, DownAfter: 3, UpAfter: 2}})
	runUntilEnd(t, w.Run)
	ch.wait(t, "db", true, 2*time.Second)
	before := ch.count()

	tick := time.NewTicker(flap)
	end := time.After(flapFor)
	cut := false
flapping:
	for {
		select {
		case <-tick.C:
			if cut = !cut; cut {
				p.Cut()
			} else {
				p.Restore()
			}
		case <-end:
			break flapping
		}
	}
	tick.Stop()
	p.Restore()
	n := ch.count() - before
	ch.mu.Lock()
	var seq []string
	for _, s := range ch.all[before:] {
		seq = append(seq, fmt.Sprintf("up=%v", s.Up))
		noSecret(t, "LastError", s.LastError)
	}
	ch.mu.Unlock()
	t.Logf("%d transitions in %s of cut/restore every %s: %v", n, flapFor, flap, seq)
	if n > bound {
		t.Errorf("%d transitions while flapping, want at most %d", n, bound)
	}
	// Once stable it comes back, even after damping.
	if st := w.Status(); !st[0].Up {
		ch.wait(t, "db", true, time.Duration(2<<maxFlapPenalty)*interval+time.Second)
	}
	checkStatusSecretFree(t, w)
}

// TestDBWatcherSet checks Set's bookkeeping with a scripted check.
func TestDBWatcherSet(t *testing.T) {
	var mu sync.Mutex
	fail := map[string]bool{"dsn-b": true}
	ch := newChanges()
	w := NewDBWatcher(DBWatcherOptions{OnChange: ch.on})
	w.check = func(ctx context.Context, dsn string, timeout time.Duration) (time.Duration, error) {
		mu.Lock()
		defer mu.Unlock()
		if fail[dsn] {
			return time.Millisecond, errors.New("refused")
		}
		return time.Millisecond, nil
	}
	const iv = 10 * time.Millisecond
	w.Set([]DBTarget{
		{Name: "c", DSN: "dsn-c", Interval: iv},
		{Name: "a", DSN: "dsn-a", Interval: iv},
		{Name: "b", DSN: "dsn-b", Interval: iv, DownAfter: 2},
	})
	runUntilEnd(t, w.Run)
	upDown := func(st []DBStatus) string {
		var b strings.Builder
		for _, s := range st {
			fmt.Fprintf(&b, "%s:%v:%v ", s.Name, s.Checked, s.Up)
		}
		return b.String()
	}
	ch.until(t, w, 5*time.Second, func(st []DBStatus) bool { return upDown(st) == "a:true:true b:true:false c:true:true " })
	st := w.Status()
	if len(st) != 3 || st[0].Name != "a" || st[1].Name != "b" || st[2].Name != "c" {
		t.Fatalf("Status not sorted by name: %+v", st)
	}
	sinceA := st[0].Since

	// a unchanged (new interval only), b dropped, c's DSN changed, d new.
	mu.Lock()
	fail["dsn-c2"] = true
	mu.Unlock()
	w.Set([]DBTarget{
		{Name: "a", DSN: "dsn-a", Interval: 2 * iv},
		{Name: "c", DSN: "dsn-c2", Interval: iv, DownAfter: 1},
		{Name: "d", DSN: "dsn-d", Interval: iv},
	})
	st = w.Status()
	if len(st) != 3 || st[0].Name != "a" || st[1].Name != "c" || st[2].Name != "d" {
		t.Fatalf("Status after Set: %+v", st)
	}
	if !st[0].Checked || !st[0].Up || !st[0].Since.Equal(sinceA) {
		t.Errorf("unchanged target lost its state: %+v", st[0])
	}
	if st[1].Checked || st[2].Checked {
		t.Errorf("changed or new targets start unknown: %+v", st[1:])
	}
	ch.until(t, w, 5*time.Second, func(st []DBStatus) bool { return upDown(st) == "a:true:true c:true:false d:true:true " })
	ch.mu.Lock()
	for _, s := range ch.all {
		if s.Name == "a" && !s.Since.Equal(sinceA) {
			t.Errorf("a changed again: %+v", s)
		}
	}
	ch.mu.Unlock()
}
