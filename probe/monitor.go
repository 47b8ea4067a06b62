package probe

import (
	"container/heap"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// Defaults for Target fields left zero (the same as the fleet spec's).
const (
	DefaultInterval = 5 * time.Second
	DefaultTimeout  = 2 * time.Second
	DefaultFailures = 3
)

// Target is one merchant process to probe periodically.
type Target struct {
	ID   string
	Port int
	// HTTP is the health path to GET; "" probes with a TCP connect only.
	// A TCP probe cannot see a stopped (SIGSTOPped) or wedged process: the
	// kernel completes the handshake from the listen backlog. Only an HTTP
	// probe, which waits for an answer, times out on such a process.
	HTTP string
	// Status is the HTTP status expected; 0 accepts any 2xx.
	Status int
	// Interval between probes (before jitter) and Timeout of one probe;
	// zero means DefaultInterval and DefaultTimeout.
	Interval, Timeout time.Duration
	// Failures is how many consecutive failed probes make the target
	// unhealthy (zero means DefaultFailures).
	Failures int
	// StartGrace is how long after a new Generation failed probes do not
	// count. The first successful probe ends the grace early.
	StartGrace time.Duration
	// Generation changes whenever the process is replaced; a new value
	// resets the target's counters and starts a fresh StartGrace.
	Generation uint64
}

func (t Target) withDefaults() Target {
	if t.Interval <= 0 {
		t.Interval = DefaultInterval
	}
	if t.Timeout <= 0 {
		t.Timeout = DefaultTimeout
	}
	if t.Failures <= 0 {
		t.Failures = DefaultFailures
	}
	return t
}

// Result is the outcome of one probe.
type Result struct {
	ID         string
	Generation uint64
	// Healthy reports whether this probe succeeded. A target is declared
	// unhealthy (OnUnhealthy) only when ConsecutiveFailures reaches its
	// Failures threshold.
	Healthy bool
	// ConsecutiveFailures counts failed probes in a row of this
	// Generation, not counting those inside StartGrace.
	ConsecutiveFailures int
	// Grace is set when the probe failed inside StartGrace and was not
	// counted.
	Grace bool
	// Err is why the probe failed (nil when Healthy).
	Err     error
	At      time.Time
	Latency time.Duration
}

// MonitorOptions configures a Monitor. Every field is optional.
type MonitorOptions struct {
	// MaxConcurrent bounds the probes in flight (default 64).
	MaxConcurrent int
	// Jitter spreads each interval uniformly over
	// [Interval*(1-Jitter), Interval*(1+Jitter)] (default 0.1; negative
	// means none), so that targets added together do not stay in step.
	Jitter float64
	// Now is the clock for due times, grace and results (default
	// time.Now). Run waits on a real timer for the durations it computes
	// from Now, so a clock that does not advance with real time suits
	// tests of the policy, not of Run.
	Now func() time.Time
	// Rand returns a number in [0, 1); it draws the jitter and each new
	// target's first delay (a fraction of its Interval). Default
	// math/rand/v2.Float64. It is called with the Monitor's lock held.
	Rand func() float64
	// OnUnhealthy is called once when a target's ConsecutiveFailures
	// reaches its threshold, and not again until a probe succeeds or the
	// Generation changes.
	OnUnhealthy func(Result)
	// OnResult, if set, is called with every probe's result.
	//
	// Callbacks run on probe workers, outside the Monitor's lock (they may
	// call Set, Remove and Health). For one target they are called in
	// order and never concurrently; for different targets they may be.
	OnResult func(Result)
}

// Monitor probes many targets periodically at little cost: one scheduler
// goroutine keeps a min-heap of due times under a single timer, and a fixed
// pool of MaxConcurrent workers runs the probes through one Prober. There is
// no goroutine or ticker per target.
//
// Each target is probed over its own kept connection (a Session), closed
// when the target is removed, when its Generation changes, and when Run
// returns (a Session also drops it by itself when the port changes).
//
// Probes of a target are due at a fixed rate (each due time is the previous
// one plus a jittered Interval, not counted from when the last probe ended;
// a probe may start up to a tenth of the Interval, at most 500ms, early, so
// that probes due close together share one wake-up),
// so a hung target is declared unhealthy within about
// Interval*Failures + Timeout. A target is never probed twice at once: when a
// probe outlasts the Interval, the next one starts as soon as it ends.
type Monitor struct {
	probe  func(ctx context.Context, s *Session, t Target) error
	prober *Prober
	opts   MonitorOptions
	wake   chan struct{}

	mu      sync.Mutex
	targets map[string]*entry
	due     dueHeap
	running bool
}

// entry is one target's schedule and health state.
type entry struct {
	t      Target
	health health
	next   time.Time
	// index is the entry's position in the heap, or -1 while a probe of
	// it is in flight (or it was removed).
	index int
	// busy is set while a probe of the entry is in flight.
	busy bool
	// epoch counts generations set, so that a probe of a replaced
	// generation is dropped.
	epoch uint64
	// sess keeps the target's connection between probes. Only the worker
	// probing the entry (busy) uses it; otherwise it is closed under mu.
	sess *Session
}

// closeSession drops e's kept connection. Called with m.mu held while e is
// not busy, or by the worker that holds it busy.
func (e *entry) closeSession() {
	if e.sess != nil {
		e.sess.Close()
	}
}

// health is the per-target policy: thresholds, grace and notify-once. It
// does no I/O and reads no clock, so tests drive it with exact times.
type health struct {
	gen        uint64
	graceUntil time.Time
	// graced is set until the first success of the generation or the end
	// of the grace period.
	graced   bool
	fails    int
	notified bool
	last     Result
	has      bool
}

// reset starts a new generation at now.
func (h *health) reset(t Target, now time.Time) {
	*h = health{gen: t.Generation, graceUntil: now.Add(t.StartGrace), graced: t.StartGrace > 0}
}

// observe records one probe of t that ended at "at" and reports its result
// and whether the target just became unhealthy.
func (h *health) observe(t Target, err error, at time.Time, latency time.Duration) (Result, bool) {
	r := Result{ID: t.ID, Generation: h.gen, At: at, Latency: latency, Err: err}
	fire := false
	switch {
	case err == nil:
		r.Healthy = true
		h.fails, h.notified, h.graced = 0, false, false
	case h.graced && at.Before(h.graceUntil):
		r.Grace = true
	default:
		h.graced = false
		h.fails++
		if h.fails >= t.Failures && !h.notified {
			h.notified, fire = true, true
		}
	}
	r.ConsecutiveFailures = h.fails
	h.last, h.has = r, true
	return r, fire
}

// NewMonitor returns a Monitor that probes through p. Targets may be set
// before or while Run runs.
func NewMonitor(p *Prober, opts MonitorOptions) *Monitor {
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 64
	}
	if opts.Jitter == 0 {
		opts.Jitter = 0.1
	}
	if opts.Jitter < 0 {
		opts.Jitter = 0
	}
	if opts.Jitter > 1 {
		opts.Jitter = 1
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	return &Monitor{
		probe: func(ctx context.Context, s *Session, t Target) error {
			return s.Probe(ctx, t.Port, t.HTTP, t.Status, t.Timeout)
		},
		prober:  p,
		opts:    opts,
		wake:    make(chan struct{}, 1),
		targets: map[string]*entry{},
	}
}

// jittered returns d spread by the jitter fraction. Called with m.mu held.
func (m *Monitor) jittered(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (1 + m.opts.Jitter*(2*m.opts.Rand()-1)))
}

// firstDelay spreads the first probe of a new generation over its Interval.
// Called with m.mu held.
func (m *Monitor) firstDelay(t Target) time.Duration {
	return time.Duration(m.opts.Rand() * float64(t.Interval))
}

func (m *Monitor) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Set adds a target or updates it. A new Generation resets its counters,
// forgets its last result and starts a fresh StartGrace; the same
// Generation keeps them and only changes how it is probed.
func (m *Monitor) Set(t Target) {
	t = t.withDefaults()
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Now()
	e := m.targets[t.ID]
	if e == nil {
		e = &entry{t: t, index: -1}
		e.health.reset(t, now)
		e.next = now.Add(m.firstDelay(t))
		m.targets[t.ID] = e
		heap.Push(&m.due, e)
		m.poke()
		return
	}
	newGen := e.t.Generation != t.Generation
	e.t = t
	if newGen {
		e.epoch++
		e.health.reset(t, now)
	}
	if e.busy {
		// The worker reschedules it when its probe ends, drops that
		// probe's result when the generation changed, and then closes the
		// old process's connection.
		return
	}
	if newGen {
		e.closeSession() // the connection was to the replaced process
	}
	switch {
	case newGen:
		e.next = now.Add(m.firstDelay(t))
	case e.next.Sub(now) > t.Interval:
		e.next = now.Add(m.firstDelay(t))
	default:
		return
	}
	heap.Fix(&m.due, e.index)
	m.poke()
}

// Remove stops probing id. A probe in flight ends without a result.
func (m *Monitor) Remove(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.targets[id]
	if e == nil {
		return
	}
	delete(m.targets, id)
	if e.index >= 0 {
		heap.Remove(&m.due, e.index)
	}
	if !e.busy {
		e.closeSession()
	}
}

// Health returns id's last result. ok is false for an unknown target and
// until the current Generation has been probed once.
func (m *Monitor) Health(id string) (Result, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.targets[id]
	if e == nil || !e.health.has {
		return Result{}, false
	}
	return e.health.last, true
}

// job is one probe handed to a worker.
type job struct {
	e     *entry
	t     Target
	due   time.Time
	epoch uint64
}

// Run probes the targets until ctx ends, then waits for the probes in flight
// (they are cancelled) and returns nil. It may run only once at a time.
func (m *Monitor) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("probe: Monitor is already running")
	}
	m.running = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.running = false
		m.mu.Unlock()
	}()

	jobs := make(chan job)
	var wg sync.WaitGroup
	for range m.opts.MaxConcurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				m.work(ctx, j)
			}
		}()
	}
	defer func() {
		// Kept connections are not kept while nothing probes.
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, e := range m.targets {
			e.closeSession()
		}
	}()
	defer wg.Wait()
	defer close(jobs)

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		j, wait, ok := m.nextJob()
		if ok {
			select {
			case jobs <- j:
				continue
			case <-ctx.Done():
				m.requeue(j.e, j.due)
				return nil
			}
		}
		if wait >= 0 {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-m.wake:
		}
	}
}

// nextJob pops the earliest target when it is due; otherwise it returns how
// long until it is (-1 when there are no targets).
func (m *Monitor) nextJob() (job, time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.due) == 0 {
		return job{}, -1, false
	}
	e := m.due[0]
	now := m.opts.Now()
	if wait := e.next.Sub(now); wait > slack(e.t.Interval) {
		return job{}, wait - slack(e.t.Interval)/2, false
	}
	heap.Pop(&m.due)
	e.busy = true
	return job{e: e, t: e.t, due: e.next, epoch: e.epoch}, 0, true
}

// slack is how early a probe due within interval may start, so that probes
// due close together run in one wake-up of the monitor instead of one each
// (at hundreds of targets, waking threads for each probe cost more than the
// probes). It is a tenth of the interval, at most 500ms. It delays no
// detection: a probe starts early, never late, and the next one is still
// due a full jittered interval after this one's due time.
func slack(interval time.Duration) time.Duration {
	return min(interval/10, 500*time.Millisecond)
}

// requeue puts e back on the heap with its due time, when Run stops before
// its probe ran or ended.
func (m *Monitor) requeue(e *entry, due time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.busy = false
	if m.targets[e.t.ID] == e {
		e.next = due
		heap.Push(&m.due, e)
	}
}

// work runs one probe and records its result.
func (m *Monitor) work(ctx context.Context, j job) {
	if j.e.sess == nil {
		j.e.sess = m.prober.NewSession()
	}
	start := m.opts.Now()
	err := m.probe(ctx, j.e.sess, j.t)
	end := m.opts.Now()
	if ctx.Err() != nil {
		// Shutting down: the probe was cancelled, not failed. Keep the
		// target scheduled for the next Run.
		m.requeue(j.e, j.due)
		return
	}

	m.mu.Lock()
	var (
		r      Result
		fire   bool
		record = m.targets[j.t.ID] == j.e && j.e.epoch == j.epoch
	)
	if record {
		r, fire = j.e.health.observe(j.e.t, err, end, end.Sub(start))
	}
	m.mu.Unlock()

	if record {
		if m.opts.OnResult != nil {
			m.opts.OnResult(r)
		}
		if fire && m.opts.OnUnhealthy != nil {
			m.opts.OnUnhealthy(r)
		}
	}

	// Reschedule only after the callbacks, so that one target's callbacks
	// never overlap.
	m.mu.Lock()
	defer m.mu.Unlock()
	e := j.e
	e.busy = false
	if m.targets[e.t.ID] != e {
		e.closeSession()
		return // removed
	}
	now := m.opts.Now()
	if e.epoch != j.epoch {
		e.closeSession() // the connection was to the replaced process
	}
	if e.epoch != j.epoch {
		e.next = now.Add(m.firstDelay(e.t))
	} else {
		e.next = j.due.Add(m.jittered(e.t.Interval))
		if e.next.Before(now) {
			e.next = now
		}
	}
	heap.Push(&m.due, e)
	m.poke()
}

// dueHeap orders entries by their next due time.
type dueHeap []*entry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *dueHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*h = old[:len(old)-1]
	return e
}
