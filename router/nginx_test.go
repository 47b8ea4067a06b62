package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestRoutingByHost(t *testing.T) {
	r := managed(t, nil)
	a, b, c := newBackend(t, "a", nil), newBackend(t, "b", nil), newBackend(t, "c", nil)
	routes := []Route{
		{Merchant: "acme", Domains: []string{"acme.example.test", "www.acme.example.test"}, Upstream: a.port},
		{Merchant: "bluebird", Domains: []string{"bluebird.example.test", "*.bluebird.example.test"}, PathPrefix: "/bluebird", Upstream: b.port},
	}
	if !mustApply(t, r, routes...) {
		t.Fatal("the first Apply reported no change")
	}
	wantBackend(t, r, "acme.example.test", "/", "a")
	wantBackend(t, r, "www.acme.example.test", "/x?y=1", "a")
	wantBackend(t, r, "bluebird.example.test", "/", "b")
	wantBackend(t, r, "shop.bluebird.example.test", "/", "b")
	wantBackend(t, r, "BlueBird.Example.Test", "/", "b")
	wantBackend(t, r, "unknown.example.test", "/bluebird/cart", "b")
	wantBackend(t, r, "unknown.example.test", "/bluebird", "b")
	wantStatus(t, r, "unknown.example.test", "/bluebirdx", http.StatusNotFound)
	wantStatus(t, r, "unknown.example.test", "/", http.StatusNotFound)
	wantStatus(t, r, "acme.example.test", "/__steward/page/acme", http.StatusNotFound)

	// The backend sees the client's host and the forwarding headers.
	got := get(t, r, http.MethodGet, "acme.example.test", "/").body
	if want := "a host=acme.example.test xff=127.0.0.1 proto=http"; got != want {
		t.Errorf("backend saw %q, want %q", got, want)
	}

	// Adding a merchant routes it; removing one stops routing it.
	routes = append(routes[:1], Route{Merchant: "cobalt", Domains: []string{"cobalt.example.test"}, Upstream: c.port})
	mustApply(t, r, routes...)
	wantBackend(t, r, "cobalt.example.test", "/", "c")
	wantStatus(t, r, "bluebird.example.test", "/", http.StatusNotFound)
	wantStatus(t, r, "unknown.example.test", "/bluebird/", http.StatusNotFound)
	wantBackend(t, r, "acme.example.test", "/", "a")
	if _, err := os.Stat(filepath.Join(r.pages, "bluebird.html")); !os.IsNotExist(err) {
		t.Errorf("the page of a removed merchant is left: %v", err)
	}

	h := r.Status()
	if !h.Running || h.PID == 0 || h.Starts != 1 || h.Reloads != 1 || h.Routes != 2 || h.Failing || h.Generation == "" {
		t.Errorf("status after a start and a reload: %+v", h)
	}
	// Another steward process (a status, the next apply) reports the same
	// record; it looks up whether nginx runs.
	other, err := New(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if o := other.Status(); o.Reloads != h.Reloads || o.Starts != h.Starts || o.Generation != h.Generation || o.Routes != h.Routes || !o.LastReload.Equal(h.LastReload) || !o.Running || o.PID != h.PID {
		t.Errorf("a new Router reports %+v, the one that applied %+v", o, h)
	}
	live, _ := os.ReadFile(r.live)
	if hasUser := bytes.Contains(live, []byte("\nuser ")); hasUser != (os.Geteuid() == 0) {
		t.Errorf("running as uid %d, the configuration has a user directive: %v", os.Geteuid(), hasUser)
	}
	if m, _ := r.findMaster(); os.Geteuid() == 0 {
		for _, w := range workers(m, r.bin) {
			if st, err := os.Stat("/proc/" + fmt.Sprint(w.PID)); err == nil && st.Sys().(*syscall.Stat_t).Uid == 0 {
				t.Errorf("worker %d runs as root", w.PID)
			}
		}
	}

	// Stop ends master and workers, by their recorded pids.
	m, _ := r.findMaster()
	ws := workers(m, r.bin)
	if err := r.Stop(testCtx(t, 15*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(ws, m) {
		if p.alive() {
			t.Errorf("pid %d alive after Stop", p.PID)
		}
	}
	if h := r.Status(); h.Running || h.PID != 0 {
		t.Errorf("status after Stop: %+v", h)
	}
	if err := r.Stop(testCtx(t, 5*time.Second)); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
}

func TestApplyUnchangedDoesNotReload(t *testing.T) {
	r := managed(t, nil)
	a := newBackend(t, "a", nil)
	rt := Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: a.port}
	mustApply(t, r, rt)
	before := r.Status()
	workersBefore := r.activeWorkers(r.master, r.bin)
	if mustApply(t, r, rt) {
		t.Error("applying the same routes again reported a change")
	}
	after := r.Status()
	if after.Reloads != before.Reloads || after.Starts != before.Starts || after.LastReload != before.LastReload {
		t.Errorf("applying the same routes reloaded: before %+v, after %+v", before, after)
	}
	if w := r.activeWorkers(r.master, r.bin); fmt.Sprint(w) != fmt.Sprint(workersBefore) {
		t.Errorf("nginx's workers changed without a change: %v → %v", workersBefore, w)
	}
	// A new reason changes the page only: no reload, the page is new.
	rt.Maintenance, rt.Reason = true, "first"
	mustApply(t, r, rt)
	reloads := r.Status().Reloads
	rt.Reason = "second"
	if !mustApply(t, r, rt) {
		t.Error("a new reason reported no change")
	}
	if r.Status().Reloads != reloads {
		t.Error("a new reason alone reloaded nginx")
	}
	if a := wantStatus(t, r, "acme.example.test", "/", http.StatusServiceUnavailable); !strings.Contains(a.body, "second") {
		t.Errorf("the page does not show the new reason:\n%s", a.body)
	}
}

func TestMaintenanceAndDownUpstream(t *testing.T) {
	r := managed(t, nil)
	a := newBackend(t, "a", nil)
	gone := newBackend(t, "gone", nil)
	gone.close() // its port refuses connections, like an instance between a crash and its restart
	mustApply(t, r,
		Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: a.port, Maintenance: true, Reason: "database <db-east> is down"},
		Route{Merchant: "bluebird", Domains: []string{"bluebird.example.test"}, Upstream: gone.port},
		Route{Merchant: "cobalt", Domains: []string{"cobalt.example.test"}},
		Route{Merchant: "dune", PathPrefix: "/dune", Upstream: gone.port},
		Route{Merchant: "emu", PathPrefix: "/emu", Upstream: a.port, Maintenance: true},
	)
	cases := []struct {
		host, path, method, says string
	}{
		{"acme.example.test", "/", http.MethodGet, "database &lt;db-east&gt; is down"},
		{"acme.example.test", "/invoice", http.MethodPost, "down for maintenance"},
		{"bluebird.example.test", "/", http.MethodGet, "restarting"},
		{"bluebird.example.test", "/pay", http.MethodPost, "restarting"},
		{"cobalt.example.test", "/", http.MethodGet, "restarting"},
		{"other.example.test", "/dune/x", http.MethodGet, "restarting"},
		{"other.example.test", "/emu/x", http.MethodGet, "down for maintenance"},
	}
	for _, c := range cases {
		a := get(t, r, c.method, c.host, c.path)
		if a.status != http.StatusServiceUnavailable {
			t.Errorf("%s %s%s: %d, want 503 (never 502)", c.method, c.host, c.path, a.status)
		}
		if got := a.header.Get("Retry-After"); got != "7" {
			t.Errorf("%s %s%s: Retry-After %q, want 7", c.method, c.host, c.path, got)
		}
		if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("%s %s%s: Content-Type %q", c.method, c.host, c.path, ct)
		}
		if !strings.Contains(a.body, "Temporarily unavailable") || !strings.Contains(a.body, c.says) {
			t.Errorf("%s %s%s: the page does not say %q:\n%s", c.method, c.host, c.path, c.says, a.body)
		}
	}
	// The instance comes back: the same routing serves it again.
	back := newBackend(t, "back", nil)
	mustApply(t, r,
		Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: a.port},
		Route{Merchant: "bluebird", Domains: []string{"bluebird.example.test"}, Upstream: back.port},
	)
	wantBackend(t, r, "acme.example.test", "/", "a")
	wantBackend(t, r, "bluebird.example.test", "/", "back")
	// An application's own 503 passes through unchanged.
	own := newBackend(t, "own", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "own page")
	}))
	mustApply(t, r, Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: own.port})
	if a := wantStatus(t, r, "acme.example.test", "/", http.StatusServiceUnavailable); a.body != "own page" {
		t.Errorf("the application's own 503 was replaced: %q", a.body)
	}
}

func TestFailedCandidateKeepsRouting(t *testing.T) {
	r := managed(t, nil)
	a, b := newBackend(t, "a", nil), newBackend(t, "b", nil)
	good := Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: a.port}
	mustApply(t, r, good)
	live, _ := os.ReadFile(r.live)
	gen := r.Status().Generation

	bad := Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: b.port, inject: "no_such_directive on;"}
	changed, err := r.Apply(testCtx(t, 30*time.Second), []Route{bad})
	var te *TestError
	if !errors.As(err, &te) {
		t.Fatalf("Apply of a refused candidate = %v, want a *TestError", err)
	}
	if changed {
		t.Error("a refused candidate reported a change")
	}
	if !strings.Contains(te.Output, `unknown directive "no_such_directive"`) || !strings.Contains(err.Error(), "previous routing stays in force") {
		t.Errorf("the error does not carry nginx -t's output: %v", err)
	}
	wantBackend(t, r, "acme.example.test", "/", "a")
	if now, _ := os.ReadFile(r.live); !bytes.Equal(now, live) {
		t.Error("the live configuration changed")
	}
	if _, err := os.Stat(r.live + ".candidate"); !os.IsNotExist(err) {
		t.Errorf("the refused candidate is left: %v", err)
	}
	h := r.Status()
	if !h.Failing || h.Failures != 1 || !strings.Contains(h.LastError, "no_such_directive") || h.LastErrorAt.IsZero() || h.Generation != gen {
		t.Errorf("status after a refused candidate: %+v", h)
	}

	// Invalid routes are refused before nginx sees them.
	if _, err := r.Apply(testCtx(t, 10*time.Second), []Route{{Merchant: "acme", Domains: []string{"x;y"}, Upstream: b.port}}); err == nil {
		t.Error("an invalid route was applied")
	}
	wantBackend(t, r, "acme.example.test", "/", "a")

	// The next good change goes through and clears the failure.
	good.Upstream = b.port
	mustApply(t, r, good)
	wantBackend(t, r, "acme.example.test", "/", "b")
	if h := r.Status(); h.Failing || h.Failures != 2 || h.LastError == "" {
		t.Errorf("status after recovering: %+v", h)
	}
}

// A live file that no test has passed (a steward killed while installing
// it) is tested before nginx loads it.
func TestUntestedLiveFileIsTested(t *testing.T) {
	r := managed(t, nil)
	a := newBackend(t, "a", nil)
	rt := Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: a.port, inject: "no_such_directive on;"}
	rd, err := r.render([]Route{rt})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.prepareDirs(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(r.live, rd.conf, 0o644)
	var te *TestError
	if _, err := r.Apply(testCtx(t, 30*time.Second), []Route{rt}); !errors.As(err, &te) {
		t.Fatalf("Apply = %v, want a *TestError", err)
	}
	if err := r.Ensure(testCtx(t, 30*time.Second)); !errors.As(err, &te) {
		t.Fatalf("Ensure = %v, want a *TestError", err)
	}
	if len(masters(r)) != 0 {
		t.Error("nginx was started with a configuration that fails its test")
	}
}

func TestRunCoalescesBursts(t *testing.T) {
	// The control server on a loopback port instead of a unix socket.
	r := managed(t, func(c *Config) { c.Control = "127.0.0.1:" + strconv.Itoa(freePort(t)) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	if err := r.Sync(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	base := r.Status()
	bs := []*backend{newBackend(t, "a", nil), newBackend(t, "b", nil)}
	for i := range 200 {
		if err := r.Put(Route{Merchant: fmt.Sprintf("m%03d", i), Domains: []string{fmt.Sprintf("m%03d.example.test", i)}, Upstream: bs[i%2].port}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Sync(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	h := r.Status()
	if n := h.Reloads + h.Starts - base.Reloads - base.Starts; n < 1 || n > 3 {
		t.Errorf("200 changes in a burst made %d reloads, want 1 to 3", n)
	}
	if h.Routes != 200 {
		t.Errorf("status routes = %d, want 200", h.Routes)
	}
	for _, i := range []int{0, 1, 198, 199} {
		wantBackend(t, r, fmt.Sprintf("m%03d.example.test", i), "/", bs[i%2].name)
	}
	// Changes spread over time reload at most once per MinInterval.
	start, before := time.Now(), r.Status().Reloads
	for i := range 20 {
		if err := r.Put(Route{Merchant: "m000", Domains: []string{"m000.example.test"}, Upstream: bs[i%2].port}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // the pace of a rollout, not synchronisation
	}
	if err := r.Sync(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	n, took := r.Status().Reloads-before, time.Since(start)
	if max := int(took/r.cfg.MinInterval) + 2; n > max {
		t.Errorf("20 changes over %s made %d reloads, want at most %d", took, n, max)
	}
	wantBackend(t, r, "m000.example.test", "/", "b")
	// Deleting routes.
	for i := range 200 {
		r.Delete(fmt.Sprintf("m%03d", i))
	}
	if err := r.Sync(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, r, "m000.example.test", "/", http.StatusNotFound)
}

// Sync returns only once the new routing serves: the first request after
// it reaches the new backend, every time.
func TestSyncReturnsWhenLive(t *testing.T) {
	r := managed(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	bs := []*backend{newBackend(t, "a", nil), newBackend(t, "b", nil)}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	for i := range 10 {
		want := bs[i%2]
		if err := r.Set([]Route{{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: want.port}}); err != nil {
			t.Fatal(err)
		}
		if err := r.Sync(testCtx(t, 30*time.Second)); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			a, err := tryGet(tr, r, http.MethodGet, "acme.example.test", "/")
			if err != nil || a.header.Get("X-Backend") != want.name {
				t.Fatalf("switch %d: right after Sync: %v %d %q, want backend %s", i, err, a.status, a.body, want.name)
			}
		}
	}
	// A refused table: Sync returns the error.
	if err := r.Set([]Route{{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: bs[0].port, inject: "no_such_directive on;"}}); err != nil {
		t.Fatal(err)
	}
	var te *TestError
	if err := r.Sync(testCtx(t, 30*time.Second)); !errors.As(err, &te) {
		t.Errorf("Sync of a refused table = %v, want a *TestError", err)
	}
}

// The zero-downtime switch the engine performs for upgrades and restarts:
// start the new instance on a second port, route to it and Sync, Drain the
// old port, stop the old instance. A request loop through nginx sees no
// failure at all.
func TestSwitchWithoutFailedRequests(t *testing.T) {
	r := managed(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-runDone
	}()
	// Another merchant shares nginx and keeps being served.
	other := newBackend(t, "other", nil)
	if err := r.Put(Route{Merchant: "other", Domains: []string{"other.example.test"}, Upstream: other.port}); err != nil {
		t.Fatal(err)
	}
	slowish := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path == "/slow" {
				time.Sleep(30 * time.Millisecond) // a request in flight during the switch
			}
			w.Header().Set("X-Backend", name)
			fmt.Fprint(w, name+" ")
		})
	}
	cur := newBackend(t, "v0", slowish("v0"))
	if err := r.Put(Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: cur.port}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}

	var total, failures atomic.Int64
	var failMu sync.Mutex
	var failSamples []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host, path := "acme.example.test", "/"
			if c == 1 {
				path = "/slow"
			}
			if c == 3 {
				host = "other.example.test"
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, err := tryGet(tr, r, http.MethodGet, host, path)
				total.Add(1)
				if err == nil && (a.status < 200 || a.status > 299) {
					err = fmt.Errorf("%w: %d %.80q", errNon2xx, a.status, a.body)
				}
				time.Sleep(time.Millisecond) // pace the load: 4 clients, not a flood
				if err != nil {
					failures.Add(1)
					failMu.Lock()
					if len(failSamples) < 5 {
						failSamples = append(failSamples, err.Error())
					}
					failMu.Unlock()
				}
			}
		}()
	}

	const switches = 20
	for i := 1; i <= switches; i++ {
		next := newBackend(t, fmt.Sprintf("v%d", i), slowish(fmt.Sprintf("v%d", i)))
		if err := r.Put(Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: next.port}); err != nil {
			t.Fatal(err)
		}
		if err := r.Sync(testCtx(t, 30*time.Second)); err != nil {
			t.Fatalf("switch %d: %v", i, err)
		}
		if err := r.Drain(testCtx(t, 20*time.Second), cur.port); err != nil {
			t.Fatalf("switch %d: %v", i, err)
		}
		cur.close()
		cur = next
		deadline := time.Now().Add(30 * time.Second)
		for total.Load() < int64(i*2100/switches) { // let traffic run on each instance
			if time.Now().After(deadline) {
				t.Fatalf("switch %d: requests stalled at %d", i, total.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	n, f := total.Load(), failures.Load()
	t.Logf("%d requests during %d switches, %d failed, %d reloads", n, switches, f, r.Status().Reloads)
	if n < 2000 {
		t.Errorf("only %d requests", n)
	}
	if f != 0 {
		t.Errorf("%d of %d requests failed during the switches, for example: %s", f, n, strings.Join(failSamples, "; "))
	}
	wantBackend(t, r, "acme.example.test", "/", fmt.Sprintf("v%d", switches))
}

// Drain waits for a request in flight to the old instance to finish.
func TestDrainWaitsForRequestsInFlight(t *testing.T) {
	r := managed(t, nil)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	old := newBackend(t, "old", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/long" {
			entered <- struct{}{}
			<-release
		}
		fmt.Fprint(w, "old ")
	}))
	next := newBackend(t, "next", nil)
	mustApply(t, r, Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: old.port})
	long := make(chan answer, 1)
	go func() {
		a, err := tryGet(http.DefaultTransport.(*http.Transport).Clone(), r, http.MethodGet, "acme.example.test", "/long")
		if err != nil {
			a.body = err.Error()
		}
		long <- a
	}()
	<-entered
	mustApply(t, r, Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: next.port})
	wantBackend(t, r, "acme.example.test", "/", "next")

	// Bounded: with the request still running, Drain gives up with ctx.
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := r.Drain(short, old.port); err == nil || !strings.Contains(err.Error(), "connections") {
		t.Fatalf("Drain with a request in flight = %v, want a timeout naming what is left", err)
	}
	drained := make(chan error, 1)
	go func() { drained <- r.Drain(testCtx(t, 20*time.Second), old.port) }()
	select {
	case err := <-drained:
		t.Fatalf("Drain returned while a request was in flight: %v", err)
	case <-time.After(100 * time.Millisecond): // Drain is expected to still be waiting
	}
	close(release)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if a := <-long; a.status != http.StatusOK || a.body != "old " {
		t.Errorf("the request in flight during the switch got %d %q", a.status, a.body)
	}
	if n, _ := countConns(old.port); n != 0 {
		t.Errorf("%d connections to the old port after Drain", n)
	}
}

// A client still sending its request headers when the route switches is
// served by a worker of the replaced configuration, which sends it to the
// old instance: Drain waits for that worker.
func TestDrainWaitsForSlowClient(t *testing.T) {
	r := managed(t, nil)
	old, next := newBackend(t, "old", nil), newBackend(t, "next", nil)
	mustApply(t, r, Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: old.port})
	c, err := net.Dial("tcp", r.cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: acme.example.test\r\n"); err != nil {
		t.Fatal(err)
	}
	// The old worker has the connection once it reads these bytes; the
	// switch must not be able to take it away.
	mustApply(t, r, Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: next.port})
	drained := make(chan error, 1)
	go func() { drained <- r.Drain(testCtx(t, 20*time.Second), old.port) }()
	select {
	case err := <-drained:
		t.Fatalf("Drain returned while a worker of the old routing still held a request: %v", err)
	case <-time.After(150 * time.Millisecond): // Drain is expected to still be waiting
	}
	if _, err := io.WriteString(c, "Connection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "old ") {
		t.Errorf("the slow client got %d %q, want 200 from the old instance", resp.StatusCode, body)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

func TestEnsureRestartsKilledNginx(t *testing.T) {
	r := managed(t, nil)
	a := newBackend(t, "a", nil)
	mustApply(t, r, Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: a.port})
	m, ok := r.findMaster()
	if !ok {
		t.Fatal("no master after Apply")
	}
	ws := workers(m, r.bin)
	if len(ws) == 0 {
		t.Fatal("no workers found for the master")
	}
	if err := syscall.Kill(m.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, m, 10*time.Second)
	if h := r.Status(); h.Running {
		t.Errorf("status says running after the master was killed: %+v", h)
	}
	if err := r.Ensure(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	m2, ok := r.findMaster()
	if !ok || m2 == m {
		t.Fatalf("Ensure did not start a new master: %v %v", m2, ok)
	}
	for _, w := range ws {
		waitGone(t, w, 10*time.Second) // the workers the killed master left were stopped
	}
	wantBackend(t, r, "acme.example.test", "/", "a")
	if h := r.Status(); !h.Running || h.PID != m2.PID || h.Starts != 2 {
		t.Errorf("status after the restart: %+v", h)
	}
	if got := masters(r); len(got) != 1 {
		t.Errorf("masters running: %v", got)
	}
}

func TestRunRestartsKilledNginx(t *testing.T) {
	r := managed(t, func(c *Config) { c.CheckInterval = 50 * time.Millisecond })
	a := newBackend(t, "a", nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	if err := r.Set([]Route{{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: a.port}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	m, _ := r.findMaster()
	syscall.Kill(m.PID, syscall.SIGKILL)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m2, ok := r.findMaster(); ok && m2 != m {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not restart the killed nginx")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantBackend(t, r, "acme.example.test", "/", "a")
}

func TestEnsureAdoptsRunningNginx(t *testing.T) {
	r := managed(t, nil)
	a := newBackend(t, "a", nil)
	mustApply(t, r, Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: a.port})
	m, _ := r.findMaster()
	base := r.Status() // the record on disk, which r2 starts from

	// A new steward with the same configuration adopts it.
	r2, err := New(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Ensure(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if h := r2.Status(); !h.Running || h.PID != m.PID || h.Starts != base.Starts {
		t.Errorf("the second router did not adopt pid %d: %+v", m.PID, h)
	}
	if got := masters(r); len(got) != 1 {
		t.Errorf("masters running after adoption: %v", got)
	}
	// It routes through the adopted nginx without restarting it.
	b := newBackend(t, "b", nil)
	mustApply(t, r2, Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: b.port})
	wantBackend(t, r2, "acme.example.test", "/", "b")
	if h := r2.Status(); h.PID != m.PID || h.Starts != base.Starts || h.Reloads != base.Reloads+1 {
		t.Errorf("after applying through the adopted nginx: %+v", h)
	}

	// A pid file naming another process is not trusted.
	os.WriteFile(r.pidFile(), []byte(fmt.Sprint(os.Getpid())), 0o644)
	r3, _ := New(r.cfg)
	if _, ok := r3.findMaster(); ok {
		t.Error("a pid file naming a process that is not steward's nginx was trusted")
	}
}

// System mode: steward owns an include file of an nginx it does not run.
func TestSystemMode(t *testing.T) {
	bin := requireNginx(t)
	dir := testPrefix(t)
	os.MkdirAll(filepath.Join(dir, "logs"), 0o755)
	os.MkdirAll(filepath.Join(dir, "temp"), 0o755)
	include := filepath.Join(dir, "conf.d", "steward.conf")
	os.MkdirAll(filepath.Dir(include), 0o755)
	conf := filepath.Join(dir, "nginx.conf")
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	user := ""
	if os.Geteuid() == 0 {
		user = "user nobody nogroup;"
	}
	// The operator's nginx.conf, with its own server besides steward's.
	os.WriteFile(conf, []byte(fmt.Sprintf(`daemon on;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
%[2]s
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/temp/body;
    proxy_temp_path %[1]s/temp/proxy;
    fastcgi_temp_path %[1]s/temp/fastcgi;
    uwsgi_temp_path %[1]s/temp/uwsgi;
    scgi_temp_path %[1]s/temp/scgi;
    server { listen %[3]s; server_name operator.example.test; return 200 "operator\n"; }
    include %[4]s;
}
`, dir, user, listen, include)), 0o644)
	// The include must exist for nginx to start.
	os.WriteFile(include, nil, 0o644)
	nginxArgs := []string{"-p", dir + "/", "-c", conf, "-e", filepath.Join(dir, "logs", "error.log")}
	r, err := New(Config{Mode: System, Binary: bin, Listen: listen, IncludeFile: include, RetryAfter: 9,
		TestCommand:   append([]string{bin, "-t", "-q"}, nginxArgs...),
		ReloadCommand: append([]string{bin, "-s", "reload"}, nginxArgs...),
		Logger:        testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := r.run(testCtx(t, 10*time.Second), append([]string{bin}, nginxArgs...)); err != nil {
		t.Fatalf("starting the operator's nginx: %v %s", err, out)
	}
	t.Cleanup(func() {
		r.run(context.Background(), append([]string{bin, "-s", "quit"}, nginxArgs...))
	})
	a, b := newBackend(t, "a", nil), newBackend(t, "b", nil)
	mustApply(t, r,
		Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: a.port},
		Route{Merchant: "bluebird", Domains: []string{"bluebird.example.test"}, Maintenance: true, Reason: "suspended"},
		Route{Merchant: "cobalt", PathPrefix: "/cobalt", Upstream: b.port},
	)
	if os.Getenv("DEBUGSYS") != "" {
		inc, _ := os.ReadFile(include)
		t.Logf("include:\n%s", inc)
		out, _ := exec.Command("sh", "-c", "ps -eo pid,ppid,sid,cmd | grep [n]ginx; curl -sv -H 'Host: acme.example.test' http://"+listen+"/ 2>&1; cat "+dir+"/logs/error.log").CombinedOutput()
		t.Logf("%s", out)
	}
	wantBackend(t, r, "acme.example.test", "/", "a")
	wantBackend(t, r, "x.example.test", "/cobalt/", "b")
	if a := wantStatus(t, r, "bluebird.example.test", "/", http.StatusServiceUnavailable); a.header.Get("Retry-After") != "9" || !strings.Contains(a.body, "suspended") {
		t.Errorf("maintenance answer: %v %q", a.header, a.body)
	}
	if a := wantStatus(t, r, "operator.example.test", "/", http.StatusOK); a.body != "operator\n" {
		t.Errorf("the operator's own server: %q", a.body)
	}
	if _, err := os.Stat(filepath.Join(dir, "conf.d", "steward-pages", "bluebird.html")); err != nil {
		t.Errorf("maintenance page: %v", err)
	}
	if mustApply(t, r,
		Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: a.port},
		Route{Merchant: "bluebird", Domains: []string{"bluebird.example.test"}, Maintenance: true, Reason: "suspended"},
		Route{Merchant: "cobalt", PathPrefix: "/cobalt", Upstream: b.port},
	) {
		t.Error("the same routes again reported a change")
	}
	if h := r.Status(); h.Reloads != 1 || h.Routes != 3 || h.Failing {
		t.Errorf("status: %+v", h)
	}
	live, _ := os.ReadFile(include)

	// A candidate that fails the test: the previous include is put back.
	_, err = r.Apply(testCtx(t, 30*time.Second), []Route{{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: b.port, inject: "no_such_directive on;"}})
	var te *TestError
	if !errors.As(err, &te) || !strings.Contains(te.Output, "no_such_directive") {
		t.Fatalf("Apply of a refused candidate = %v, want a *TestError with nginx's output", err)
	}
	if now, _ := os.ReadFile(include); !bytes.Equal(now, live) {
		t.Error("the include was not put back after the failed test")
	}
	for _, f := range []string{include + ".candidate", include + ".previous"} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s is left: %v", f, err)
		}
	}
	wantBackend(t, r, "acme.example.test", "/", "a")
	if h := r.Status(); !h.Failing || !strings.Contains(h.LastError, "no_such_directive") {
		t.Errorf("status after the refused candidate: %+v", h)
	}

	// A test command that fails for its own reasons refuses too.
	r.cfg.TestCommand = []string{"/bin/sh", "-c", "echo 'operator config broken' >&2; exit 1"}
	_, err = r.Apply(testCtx(t, 30*time.Second), []Route{{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: b.port}})
	if !errors.As(err, &te) || !strings.Contains(te.Output, "operator config broken") {
		t.Fatalf("Apply with a failing test command = %v", err)
	}
	if now, _ := os.ReadFile(include); !bytes.Equal(now, live) {
		t.Error("the include was not put back after the failed test command")
	}
	wantBackend(t, r, "acme.example.test", "/", "a")

	// Drain finds the operator's master through the control server.
	r.cfg.TestCommand = append([]string{bin, "-t", "-q"}, nginxArgs...)
	mustApply(t, r, Route{Merchant: "acme", Domains: []string{"acme.example.test"}, Upstream: b.port})
	wantBackend(t, r, "acme.example.test", "/", "b")
	if err := r.Drain(testCtx(t, 20*time.Second), a.port); err != nil {
		t.Fatal(err)
	}
	if m, ok := r.masterProc(testCtx(t, 5*time.Second)); !ok || !strings.HasPrefix(cmdline(m.PID), "nginx: master process") {
		t.Errorf("the operator's master was not found: %v %v", m, ok)
	}
}

// Long domains (up to the 253 bytes of a DNS name) and thousands of them
// pass nginx's test: nginx's defaults refuse a name of 50 bytes.
func TestLongAndManyDomains(t *testing.T) {
	r := managed(t, nil)
	a := newBackend(t, "a", nil)
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 56) + ".test"
	routes := []Route{{Merchant: "acme", Domains: []string{long}, Upstream: a.port}}
	for i := range 3000 {
		routes = append(routes, Route{Merchant: fmt.Sprintf("m%04d", i), Domains: []string{fmt.Sprintf("shop-%04d.merchants.example.test", i)}, Upstream: a.port})
	}
	if len(long) != 253 {
		t.Fatalf("the long domain has %d bytes", len(long))
	}
	mustApply(t, r, routes...)
	wantBackend(t, r, long, "/", "a")
	wantBackend(t, r, "shop-2999.merchants.example.test", "/", "a")
}

// A listen address another process holds is refused before nginx starts,
// naming the setting and the holder, instead of nginx retrying its bind.
func TestStartRefusesAListenAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := managed(t, func(c *Config) { c.Listen = ln.Addr().String() })
	start := time.Now()
	err = r.Ensure(testCtx(t, 30*time.Second))
	if err == nil {
		t.Fatal("nginx started on a listen address in use")
	}
	for _, want := range []string{"router.nginx.listen", ln.Addr().String(), fmt.Sprintf("pid %d", os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the refusal took %s", took)
	}
}

func TestTCPAddr(t *testing.T) {
	for in, want := range map[string]string{
		"8080": ":8080", "127.0.0.1:8080": "127.0.0.1:8080", "*:80": ":80", "[::1]:80": "[::1]:80",
		"unix:/run/x.sock": "", "": "",
	} {
		if got := tcpAddr(in); got != want {
			t.Errorf("tcpAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
