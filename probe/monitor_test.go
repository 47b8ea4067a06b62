package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthPolicy(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	fail := errors.New("refused")
	type step struct {
		ms    int
		err   error
		fails int
		grace bool
		fire  bool
	}
	tests := []struct {
		name   string
		target Target
		steps  []step
	}{
		{"fires once at the threshold, again only after a recovery",
			Target{ID: "a", Failures: 3},
			[]step{
				{100, fail, 1, false, false},
				{200, fail, 2, false, false},
				{300, fail, 3, false, true},
				{400, fail, 4, false, false},
				{500, fail, 5, false, false},
				{600, nil, 0, false, false},
				{700, fail, 1, false, false},
				{800, fail, 2, false, false},
				{900, fail, 3, false, true},
			}},
		{"a success breaks the run",
			Target{ID: "a", Failures: 2},
			[]step{
				{100, fail, 1, false, false},
				{200, nil, 0, false, false},
				{300, fail, 1, false, false},
				{400, fail, 2, false, true},
			}},
		{"failures inside the grace do not count; the first after it does",
			Target{ID: "a", Failures: 2, StartGrace: time.Second},
			[]step{
				{0, fail, 0, true, false},
				{500, fail, 0, true, false},
				{999, fail, 0, true, false},
				{1000, fail, 1, false, false},
				{1100, fail, 2, false, true},
			}},
		{"a success ends the grace early",
			Target{ID: "a", Failures: 2, StartGrace: time.Second},
			[]step{
				{100, fail, 0, true, false},
				{200, nil, 0, false, false},
				{300, fail, 1, false, false},
				{400, fail, 2, false, true},
			}},
		{"threshold of one",
			Target{ID: "a", Failures: 1},
			[]step{
				{100, fail, 1, false, true},
				{200, fail, 2, false, false},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h health
			h.reset(tt.target, t0)
			for _, s := range tt.steps {
				r, fire := h.observe(tt.target, s.err, at(s.ms), time.Millisecond)
				if r.ConsecutiveFailures != s.fails || r.Grace != s.grace || fire != s.fire || r.Healthy != (s.err == nil) {
					t.Fatalf("at +%dms: got fails=%d grace=%v fire=%v healthy=%v, want fails=%d grace=%v fire=%v",
						s.ms, r.ConsecutiveFailures, r.Grace, fire, r.Healthy, s.fails, s.grace, s.fire)
				}
				if !r.At.Equal(at(s.ms)) || r.ID != "a" {
					t.Fatalf("result %+v", r)
				}
			}
		})
	}
}

func TestHealthPolicyNewGenerationResets(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	tg := Target{ID: "a", Failures: 2, Generation: 1}
	var h health
	h.reset(tg, t0)
	fail := errors.New("refused")
	h.observe(tg, fail, t0, 0)
	if _, fire := h.observe(tg, fail, t0.Add(time.Second), 0); !fire {
		t.Fatal("generation 1 did not fire")
	}
	tg.Generation, tg.StartGrace = 2, 10*time.Second
	h.reset(tg, t0.Add(2*time.Second))
	r, fire := h.observe(tg, fail, t0.Add(3*time.Second), 0)
	if fire || r.ConsecutiveFailures != 0 || !r.Grace || r.Generation != 2 {
		t.Fatalf("first probe of generation 2: %+v fire=%v", r, fire)
	}
	r, fire = h.observe(tg, fail, t0.Add(12*time.Second), 0)
	if fire || r.ConsecutiveFailures != 1 {
		t.Fatalf("first probe after the grace: %+v fire=%v", r, fire)
	}
	if _, fire = h.observe(tg, fail, t0.Add(13*time.Second), 0); !fire {
		t.Fatal("generation 2 did not fire at its own threshold")
	}
}

// server is a merchant stand-in whose /health answers, fails or hangs.
type server struct {
	mode atomic.Int32 // modeOK, modeHang, mode503
	port int
}

const (
	modeOK int32 = iota
	modeHang
	mode503
)

func newServer(t *testing.T) *server {
	t.Helper()
	s := &server{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch s.mode.Load() {
		case modeHang:
			<-r.Context().Done()
		case mode503:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ok\n"))
		}
	}))
	t.Cleanup(hs.Close)
	s.port = hs.Listener.Addr().(*net.TCPAddr).Port
	return s
}

// recorder collects a Monitor's callbacks on channels.
type recorder struct {
	ctx       context.Context
	results   chan Result
	unhealthy chan Result
}

// options returns monitor options wired to a new recorder, with the jitter
// pinned to the middle (intervals are exact) and first probes at half an
// interval.
func options(t *testing.T) (MonitorOptions, *recorder) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	rec := &recorder{ctx: ctx, results: make(chan Result, 4096), unhealthy: make(chan Result, 64)}
	send := func(ch chan Result) func(Result) {
		return func(r Result) {
			select {
			case ch <- r:
			case <-ctx.Done():
			}
		}
	}
	return MonitorOptions{
		Rand:        func() float64 { return 0.5 },
		OnResult:    send(rec.results),
		OnUnhealthy: send(rec.unhealthy),
	}, rec
}

// runUntilEnd runs run (a Monitor's or DBWatcher's Run) until the test
// ends, and checks that it then returns nil within 5s of its context
// ending.
func runUntilEnd(t *testing.T, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of its context ending")
		}
	})
}

// next waits (at most d) for a result of id that satisfies ok.
func (r *recorder) next(t *testing.T, id string, d time.Duration, ok func(Result) bool) Result {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case res := <-r.results:
			if res.ID == id && ok(res) {
				return res
			}
		case <-deadline:
			t.Fatalf("no matching result for %s within %s", id, d)
		}
	}
}

func healthy(r Result) bool { return r.Healthy }

func TestMonitorDetectsHungHTTPServer(t *testing.T) {
	srv := newServer(t)
	opts, rec := options(t)
	m := NewMonitor(New(), opts)
	const (
		interval = 200 * time.Millisecond
		timeout  = 100 * time.Millisecond
		failures = 3
		margin   = 300 * time.Millisecond
	)
	m.Set(Target{ID: "acme", Port: srv.port, HTTP: "/health", Interval: interval, Timeout: timeout, Failures: failures})
	runUntilEnd(t, m.Run)
	rec.next(t, "acme", 5*time.Second, healthy)

	for round := 1; round <= 2; round++ {
		srv.mode.Store(modeHang)
		hungAt := time.Now()
		var fails []Result
		var fired Result
	wait:
		for {
			select {
			case r := <-rec.results:
				if !r.Healthy {
					fails = append(fails, r)
				}
			case fired = <-rec.unhealthy:
				break wait
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: no OnUnhealthy within 5s of the server hanging", round)
			}
		}
		took := time.Since(hungAt)
		budget := interval*failures + timeout
		t.Logf("round %d: unhealthy after %s (budget %s + margin %s)", round, took.Round(time.Millisecond), budget, margin)
		if took > budget+margin {
			t.Errorf("round %d: declared unhealthy after %s, budget %s + %s", round, took, budget, margin)
		}
		// OnResult runs before OnUnhealthy for the same probe.
		if len(fails) != failures || fired.ConsecutiveFailures != failures {
			t.Fatalf("round %d: OnUnhealthy after %d failed probes (ConsecutiveFailures %d), want exactly %d", round, len(fails), fired.ConsecutiveFailures, failures)
		}
		for i, r := range fails {
			if r.ConsecutiveFailures != i+1 || r.Err == nil || !strings.Contains(r.Err.Error(), "timed out") || r.Latency < timeout {
				t.Errorf("round %d: failure %d: %+v, want a timeout after %s", round, i+1, r, timeout)
			}
		}
		// Still hung: more failures, but no second notification.
		rec.next(t, "acme", 5*time.Second, func(r Result) bool { return r.ConsecutiveFailures >= failures+2 })
		select {
		case r := <-rec.unhealthy:
			t.Fatalf("round %d: OnUnhealthy fired again without a recovery: %+v", round, r)
		default:
		}
		// Recovery re-arms the notification for the next round.
		srv.mode.Store(modeOK)
		rec.next(t, "acme", 5*time.Second, healthy)
		if r, ok := m.Health("acme"); !ok || !r.Healthy {
			t.Fatalf("Health after recovery: %+v %v", r, ok)
		}
	}
}

func TestMonitorHealthyServerNeverFires(t *testing.T) {
	srv := newServer(t)
	opts, rec := options(t)
	opts.Rand = nil // real jitter
	m := NewMonitor(New(), opts)
	for i := range 3 {
		m.Set(Target{ID: fmt.Sprint("m", i), Port: srv.port, HTTP: "/health", Interval: 20 * time.Millisecond, Timeout: time.Second, Failures: 1})
	}
	runUntilEnd(t, m.Run)
	for n := 0; n < 60; n++ {
		select {
		case r := <-rec.results:
			if !r.Healthy || r.Err != nil || r.ConsecutiveFailures != 0 {
				t.Fatalf("unhealthy result from a healthy server: %+v", r)
			}
		case r := <-rec.unhealthy:
			t.Fatalf("OnUnhealthy for a healthy server: %+v", r)
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d results within 5s", n)
		}
	}
}

func TestMonitorStartGrace(t *testing.T) {
	srv := newServer(t)
	srv.mode.Store(mode503)
	opts, rec := options(t)
	m := NewMonitor(New(), opts)
	const grace = 600 * time.Millisecond
	runUntilEnd(t, m.Run)
	setAt := time.Now()
	m.Set(Target{ID: "acme", Port: srv.port, HTTP: "/health", Interval: 50 * time.Millisecond, Timeout: time.Second, Failures: 2, StartGrace: grace})
	graced := 0
	for {
		select {
		case r := <-rec.results:
			if r.Grace {
				graced++
				if r.ConsecutiveFailures != 0 || r.At.Sub(setAt) > grace {
					t.Fatalf("grace result %+v at +%s", r, r.At.Sub(setAt))
				}
			}
			continue
		case r := <-rec.unhealthy:
			if since := r.At.Sub(setAt); since < grace {
				t.Fatalf("OnUnhealthy %s after Set, inside the %s grace", since, grace)
			}
			if graced < 5 {
				t.Fatalf("only %d probes inside a %s grace at a 50ms interval", graced, grace)
			}
			if r.ConsecutiveFailures != 2 || r.Grace {
				t.Fatalf("fired with %+v", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no OnUnhealthy within 5s")
		}
		break
	}
}

func TestMonitorNewGenerationResets(t *testing.T) {
	srv := newServer(t)
	srv.mode.Store(mode503)
	opts, rec := options(t)
	m := NewMonitor(New(), opts)
	tg := Target{ID: "acme", Port: srv.port, HTTP: "/health", Interval: 30 * time.Millisecond, Timeout: time.Second, Failures: 2, Generation: 1}
	m.Set(tg)
	runUntilEnd(t, m.Run)
	waitFire := func(gen uint64) {
		t.Helper()
		select {
		case r := <-rec.unhealthy:
			if r.Generation != gen || r.ConsecutiveFailures != 2 {
				t.Fatalf("fired %+v, want generation %d at 2 failures", r, gen)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("generation %d: no OnUnhealthy within 5s", gen)
		}
	}
	waitFire(1)
	rec.next(t, "acme", 5*time.Second, func(r Result) bool { return r.ConsecutiveFailures >= 5 })

	tg.Generation = 2
	m.Set(tg)
	if r, ok := m.Health("acme"); ok {
		t.Fatalf("Health right after a new generation: %+v, want none", r)
	}
	// Results of generation 1 still queued are drained; the first of
	// generation 2 starts counting afresh.
	r := rec.next(t, "acme", 5*time.Second, func(r Result) bool { return r.Generation == 2 })
	if r.ConsecutiveFailures != 1 {
		t.Fatalf("first result of generation 2: %+v", r)
	}
	waitFire(2)

	srv.mode.Store(modeOK)
	tg.Generation = 3
	m.Set(tg)
	rec.next(t, "acme", 5*time.Second, func(r Result) bool { return r.Generation == 3 && r.Healthy })
	select {
	case r := <-rec.unhealthy:
		t.Fatalf("unexpected OnUnhealthy %+v", r)
	default:
	}
}

func TestMonitorRemove(t *testing.T) {
	srv := newServer(t)
	var gone atomic.Int32
	opts, rec := options(t)
	inner := opts.OnResult
	opts.OnResult = func(r Result) {
		if r.ID == "gone" {
			gone.Add(1)
		}
		inner(r)
	}
	m := NewMonitor(New(), opts)
	for _, id := range []string{"gone", "kept"} {
		m.Set(Target{ID: id, Port: srv.port, HTTP: "/health", Interval: 20 * time.Millisecond, Timeout: time.Second})
	}
	runUntilEnd(t, m.Run)
	rec.next(t, "gone", 5*time.Second, healthy)
	m.Remove("gone")
	if _, ok := m.Health("gone"); ok {
		t.Fatal("Health of a removed target")
	}
	// A result whose callback was already under way may still arrive;
	// after that, none. The kept target's results pace the test.
	for range 3 {
		rec.next(t, "kept", 5*time.Second, healthy)
	}
	gone.Store(0)
	for range 10 {
		rec.next(t, "kept", 5*time.Second, healthy)
	}
	if n := gone.Load(); n != 0 {
		t.Fatalf("%d results of a removed target", n)
	}
}

// TestMonitorRunAgain checks that a probe cut short by the end of Run
// leaves its target scheduled for the next Run.
func TestMonitorRunAgain(t *testing.T) {
	entered := make(chan struct{}, 1)
	var hang atomic.Bool
	hang.Store(true)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-r.Context().Done()
		}
	}))
	t.Cleanup(hs.Close)
	opts, rec := options(t)
	m := NewMonitor(New(), opts)
	m.Set(Target{ID: "acme", Port: hs.Listener.Addr().(*net.TCPAddr).Port, HTTP: "/health", Interval: 20 * time.Millisecond, Timeout: time.Minute})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no probe within 5s")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s while a probe hung")
	}
	if _, ok := m.Health("acme"); ok {
		t.Fatal("a cancelled probe was recorded")
	}

	hang.Store(false)
	runUntilEnd(t, m.Run)
	rec.next(t, "acme", 5*time.Second, healthy)
}

func TestMonitorDetectsStoppedProcess(t *testing.T) {
	pid, port := helperProcess(t)
	opts, rec := options(t)
	m := NewMonitor(New(), opts)
	const (
		interval = 100 * time.Millisecond
		timeout  = 300 * time.Millisecond
		failures = 2
	)
	tg := Target{ID: "acme", Port: port, HTTP: "/health", Interval: interval, Timeout: timeout, Failures: failures, Generation: 1}
	m.Set(tg)
	runUntilEnd(t, m.Run)
	rec.next(t, "acme", 5*time.Second, healthy)

	stop(t, pid)
	stoppedAt := time.Now()
	select {
	case r := <-rec.unhealthy:
		t.Logf("stopped process declared unhealthy after %s: %v", time.Since(stoppedAt).Round(time.Millisecond), r.Err)
		if r.Err == nil || !strings.Contains(r.Err.Error(), "timed out") {
			t.Fatalf("unhealthy with %v, want a timeout", r.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a SIGSTOPped process was not declared unhealthy within 10s")
	}

	if err := syscallCont(pid); err != nil {
		t.Fatal(err)
	}
	tg.Generation = 2
	m.Set(tg)
	rec.next(t, "acme", 5*time.Second, func(r Result) bool { return r.Generation == 2 && r.Healthy })
}

// TestMonitorTCPMissesStoppedProcess documents the limit of TCP probes: the
// kernel completes the handshake of a stopped process from its backlog.
func TestMonitorTCPMissesStoppedProcess(t *testing.T) {
	pid, port := helperProcess(t)
	opts, rec := options(t)
	m := NewMonitor(New(), opts)
	m.Set(Target{ID: "acme", Port: port, Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond, Failures: 1})
	runUntilEnd(t, m.Run)
	rec.next(t, "acme", 5*time.Second, healthy)
	stop(t, pid)
	for range 5 {
		select {
		case <-rec.unhealthy:
			t.Fatal("a TCP probe noticed a stopped process; update Target.HTTP's doc")
		default:
		}
		rec.next(t, "acme", 5*time.Second, healthy)
	}
}

// listeners returns n TCP listeners that accept and close connections,
// served by one goroutine each, and their ports.
func tcpListeners(t testing.TB, n int) []int {
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// httpListeners returns n listeners served by one HTTP server (one port per
// merchant, as in production) and their ports.
func httpListeners(t testing.TB, n int) []int {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })}
	t.Cleanup(func() { srv.Close() })
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// TestMonitor1000Targets checks that 1,000 targets are all probed at their
// interval by a bounded number of goroutines.
func TestMonitor1000Targets(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const n = 1000
	const interval = 250 * time.Millisecond
	ports := tcpListeners(t, 4)
	var mu sync.Mutex
	seen := map[string]int{}
	var total, failed atomic.Int64
	m := NewMonitor(New(), MonitorOptions{OnResult: func(r Result) {
		total.Add(1)
		if !r.Healthy {
			failed.Add(1)
		}
		mu.Lock()
		seen[r.ID]++
		mu.Unlock()
	}})
	for i := range n {
		m.Set(Target{ID: fmt.Sprint("m", i), Port: ports[i%len(ports)], Interval: interval, Timeout: time.Second})
	}
	before := runtime.NumGoroutine()
	runUntilEnd(t, m.Run)
	start := time.Now()
	const want = 8 * n
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	maxG := 0
	for total.Load() < want {
		select {
		case <-tick.C:
			maxG = max(maxG, runtime.NumGoroutine())
		case <-deadline:
			t.Fatalf("only %d probes in 10s", total.Load())
		}
	}
	el := time.Since(start)
	rate := float64(total.Load()) / el.Seconds()
	t.Logf("%d targets: %d probes in %s = %.0f probes/s (scheduled %.0f/s); goroutines %d before Run, at most %d during",
		n, total.Load(), el.Round(time.Millisecond), rate, float64(n)/interval.Seconds(), before, maxG)
	if failed.Load() != 0 {
		t.Errorf("%d failed probes against healthy listeners", failed.Load())
	}
	mu.Lock()
	if len(seen) != n {
		t.Errorf("%d of %d targets probed", len(seen), n)
	}
	mu.Unlock()
	if rate < 0.5*float64(n)/interval.Seconds() {
		t.Errorf("%.0f probes/s, scheduled %.0f/s", rate, float64(n)/interval.Seconds())
	}
	if limit := before + 64 + 16; maxG > limit {
		t.Errorf("%d goroutines while probing 1,000 targets, want at most %d (no goroutine per target)", maxG, limit)
	}
}

// BenchmarkMonitor1000 drives 1,000 targets as fast as the monitor goes (the
// interval is far shorter than a probe round) and reports the cost of one
// probe: wall time, CPU time of the whole process (the listeners included)
// and allocations.
func BenchmarkMonitor1000(b *testing.B) {
	for _, kind := range []string{"http", "tcp"} {
		b.Run(kind, func(b *testing.B) {
			var ports []int
			path := ""
			if kind == "http" {
				ports, path = httpListeners(b, 1000), "/health"
			} else {
				ports = tcpListeners(b, 4)
			}
			var count, failed atomic.Int64
			done := make(chan struct{})
			target := int64(b.N)
			m := NewMonitor(New(), MonitorOptions{OnResult: func(r Result) {
				if !r.Healthy {
					failed.Add(1)
				}
				if count.Add(1) == target {
					close(done)
				}
			}})
			for i := range 1000 {
				m.Set(Target{ID: fmt.Sprint("m", i), Port: ports[i%len(ports)], HTTP: path, Interval: time.Millisecond, Timeout: 5 * time.Second})
			}
			ctx, cancel := context.WithCancel(context.Background())
			ran := make(chan struct{})
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			start := time.Now()
			go func() { m.Run(ctx); close(ran) }()
			<-done
			el := time.Since(start)
			cpu := cpuTime() - cpu0
			b.StopTimer()
			cancel()
			<-ran
			b.ReportMetric(float64(b.N)/el.Seconds(), "probes/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/probe")
			if f := failed.Load(); f != 0 {
				b.Fatalf("%d failed probes", f)
			}
		})
	}
}

// BenchmarkMonitorScheduler measures the monitor's own cost per probe (heap,
// timer, workers, policy, callbacks) with a probe that does no I/O.
func BenchmarkMonitorScheduler(b *testing.B) {
	var count atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	m := NewMonitor(New(), MonitorOptions{OnResult: func(Result) {
		if count.Add(1) == target {
			close(done)
		}
	}})
	m.probe = func(context.Context, *Session, Target) error { return nil }
	for i := range 1000 {
		m.Set(Target{ID: fmt.Sprint("m", i), Port: 1, Interval: time.Microsecond})
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	go func() { m.Run(ctx); close(ran) }()
	<-done
	cpu := cpuTime() - cpu0
	b.StopTimer()
	cancel()
	<-ran
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/probe")
}
