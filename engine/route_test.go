package engine

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

	"steward/router"
	"steward/spec"
)

// recordingRouter records what the engine tells the router.
type recordingRouter struct {
	mu   sync.Mutex
	puts int
	sets [][]router.Route
}

func (r *recordingRouter) Put(router.Route) error { r.mu.Lock(); r.puts++; r.mu.Unlock(); return nil }
func (r *recordingRouter) Delete(string)          {}
func (r *recordingRouter) Set(rs []router.Route) error {
	r.mu.Lock()
	r.sets = append(r.sets, rs)
	r.mu.Unlock()
	return nil
}
func (r *recordingRouter) Sync(context.Context) error       { return nil }
func (r *recordingRouter) Drain(context.Context, int) error { return nil }

// SyncRoutes hands the router the whole table in one piece: routes put one
// by one could be applied part way, and nginx would answer 404 for the
// merchants not put yet (at every apply's and every daemon's start).
func TestSyncRoutesSetsTheWholeTableAtOnce(t *testing.T) {
	rr := &recordingRouter{}
	e := &Engine{Router: rr, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	e.init()
	fl := &spec.Fleet{Merchants: map[string]*spec.Merchant{}}
	for _, id := range []string{"m1", "m2", "m3"} {
		fl.Merchants[id] = &spec.Merchant{ID: id, Domains: []string{id + ".shop.test"}}
	}
	e.SyncRoutes(Desired{Fleet: fl})
	if rr.puts != 0 || len(rr.sets) != 1 || len(rr.sets[0]) != 3 {
		t.Fatalf("SyncRoutes made %d puts and sets %v; want one set of 3 routes", rr.puts, rr.sets)
	}
	// A resync that changes nothing hands the router nothing to render.
	e.SyncRoutes(Desired{Fleet: fl})
	if rr.puts != 0 || len(rr.sets) != 1 {
		t.Errorf("a second SyncRoutes with the same routes made %d puts and %d sets; want none", rr.puts, len(rr.sets)-1)
	}
}
