package engine

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"steward/reconcile"
	"steward/spec"
	"steward/state"
)

// waitUntil polls cond (for state the daemon's goroutines change) until it
// holds, bounded.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type countingHealth struct {
	mu      sync.Mutex
	watched map[string]uint64
}

func (h *countingHealth) Watch(id string, gen uint64, port int, path string, _ spec.Health) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.watched[id] = gen
}
func (h *countingHealth) Forget(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.watched, id)
}
func (h *countingHealth) gen(id string) (uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g, ok := h.watched[id]
	return g, ok
}

type unhealthyCounter struct {
	countingMetrics
	unhealthy atomic.Int32
}

func (m *unhealthyCounter) Unhealthy(string) { m.unhealthy.Add(1) }

// startDaemon runs a daemon over the rig until the test ends.
func startDaemon(t *testing.T, r *rig) (*Daemon, *countingHealth) {
	t.Helper()
	h := &countingHealth{watched: map[string]uint64{}}
	dm := &Daemon{Engine: r.e, Workers: 2, Resync: time.Hour, Health: h,
		Source: func(context.Context) (Desired, error) { return r.d, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { dm.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return dm, h
}

// The daemon restarts a merchant whose process died, because its exit
// watcher queued it; the history says how it ended.
func TestDaemonRestartsADeadMerchant(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	startDaemon(t, r)
	waitUntil(t, "acme running", func() bool { rec := r.e.Record("acme"); return rec != nil && rec.Phase == reconcile.PhaseRunning })
	pid := r.record("acme").Current.PID
	r.rt.kill(pid)
	waitUntil(t, "acme restarted", func() bool { rec := r.e.Record("acme"); return rec.Current.Running() && rec.Current.PID != pid })
	if rec := r.record("acme"); rec.Restarts != 1 {
		t.Errorf("restarts %d, want 1", rec.Restarts)
	}
	r.e.FlushEvents(bg)
	es, _ := r.store.Events(bg, "acme", 0)
	i := slices.IndexFunc(es, func(e state.Event) bool { return e.Action == "exited" })
	if i < 0 || es[i].Reason == "" || es[i].Result != "observed" {
		t.Fatalf("no exit in the history: %+v", es)
	}
	if r.metrics.exits != 1 {
		t.Errorf("exits counted %d, want 1", r.metrics.exits)
	}
}

// A merchant reported unhealthy is restarted and counted in the metric.
func TestDaemonRestartsAnUnhealthyMerchant(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	m := &unhealthyCounter{}
	r.e.Metrics = m
	dm, h := startDaemon(t, r)
	waitUntil(t, "acme watched", func() bool { _, ok := h.gen("acme"); return ok })
	pid := r.record("acme").Current.PID
	gen, _ := h.gen("acme")
	dm.MarkUnhealthy("acme", gen+100, "stale generation") // an older process's verdict
	dm.MarkUnhealthy("acme", gen, "health: HTTP 500, 3 times in a row")
	waitUntil(t, "acme replaced", func() bool { rec := r.e.Record("acme"); return rec.Current.Running() && rec.Current.PID != pid })
	if m.unhealthy.Load() != 1 {
		t.Errorf("steward_merchant_unhealthy_total counted %d, want 1", m.unhealthy.Load())
	}
}

// Loads of the specs never run at once: the resync, a spec change and
// POST /v1/sync may all ask at the same time (run with -race).
func TestDaemonLoadsNeverOverlap(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	var inside, most atomic.Int32
	dm := &Daemon{Engine: r.e, Workers: 1, Resync: time.Hour, Source: func(context.Context) (Desired, error) {
		n := inside.Add(1)
		defer inside.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(time.Millisecond) // widen the window an overlap would need
		return r.d, nil
	}}
	dm.Init()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				dm.SyncNow(context.Background())
			}
		})
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d loads ran at once", most.Load())
	}
}

// A bad spec keeps the last good desired state and is reported.
func TestDaemonKeepsTheLastGoodSpecs(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	bad := false
	dm := &Daemon{Engine: r.e, Workers: 1, Resync: time.Hour, Source: func(context.Context) (Desired, error) {
		if bad {
			return Desired{}, errors.New("fleet.hcl:3,1: Unclosed configuration block")
		}
		return r.d, nil
	}}
	dm.Init()
	dm.SyncNow(bg)
	bad = true
	rev, err := dm.SyncNow(bg)
	if err == nil || rev != r.d.Fleet.Revision || dm.Desired() == nil || dm.Desired().Fleet.Revision != r.d.Fleet.Revision {
		t.Fatalf("after a bad load: revision %q, error %v", rev, err)
	}
}

// A rollback pin survives a crash: the merchant is started on the pinned
// version, not the specs'.
func TestRollbackPinSurvivesACrash(t *testing.T) {
	r := newRig(t, "1.0.0", "acme")
	r.converge("acme")
	r.setFleet("1.1.0", "acme")
	r.converge("acme")
	if err := r.e.Rollback(bg, r.d, "acme", "1.0.0", false, nil); err != nil {
		t.Fatal(err)
	}
	if rec := r.record("acme"); rec.Current.Version != "1.0.0" || rec.Pin == nil || r.rt.schema["acme"] != 1 {
		t.Fatalf("after the rollback: %+v, schema %d", rec, r.rt.schema["acme"])
	}
	r.rt.kill(r.record("acme").Current.PID)
	if err := r.e.Load(bg, true); err != nil { // and steward restarted
		t.Fatal(err)
	}
	r.converge("acme")
	if rec := r.record("acme"); rec.Current.Version != "1.0.0" || rec.Pin == nil || r.rt.schema["acme"] != 1 {
		t.Fatalf("the crash lost the pin: %+v, schema %d", rec, r.rt.schema["acme"])
	}
	// A change of the version in the specs ends it.
	r.setFleet("1.2.0", "acme")
	r.converge("acme")
	if rec := r.record("acme"); rec.Pin != nil || rec.Current.Version != "1.2.0" {
		t.Fatalf("the pin outlived a spec change: %+v", rec)
	}
}
