package engine

import (
	"context"
	"fmt"
	"reflect"
	"slices"

	"steward/reconcile"
	"steward/router"
	"steward/spec"
)

// Routing: with a router, every merchant whose specs give it domains or a
// path prefix is routed to its routed instance, or answers the
// maintenance page (503 with Retry-After) while it cannot serve: held for
// its database, crash-looping, failed, suspended or stopped. The route is
// brought up to date after everything that may change it (an action, a
// reconcile, a database's reachability); the router coalesces the changes
// into few reloads. A change of instance moves the route explicitly, and
// waits until the new routing is live (see gateChain).

// routed reports whether m is routed: a router is configured and the specs
// give it a domain or a path prefix.
func (e *Engine) routed(m *spec.Merchant) bool {
	return e.Router != nil && m != nil && (len(m.Domains) > 0 || m.PathPrefix != "")
}

// beside reports whether m's instances are replaced beside each other (a
// new one on the merchant's second port, then the traffic moves): a routed
// merchant without a fixed port.
func (e *Engine) beside(m *spec.Merchant) bool { return e.routed(m) && m.Port == 0 }

// routeFor is merchant id's route as its record says now.
func (e *Engine) routeFor(d Desired, id string) (router.Route, bool) {
	var m *spec.Merchant
	if d.Fleet != nil {
		m = d.Fleet.Merchants[id]
	}
	if !e.routed(m) {
		return router.Route{}, false
	}
	rt := router.Route{Merchant: id, Domains: slices.Clone(m.Domains), PathPrefix: m.PathPrefix}
	rec := e.Record(id)
	if rec == nil {
		rt.Maintenance, rt.Reason = true, "This service is starting."
		return rt, true
	}
	inst := rec.Current
	if c := rec.Candidate; c != nil && c.Routed {
		inst = *c
	}
	if inst.Running() {
		rt.Upstream = inst.Port
	}
	e.mu.RLock()
	db := e.dbObs[m.Database]
	e.mu.RUnlock()
	dbDown := m.Database != "" && m.OnDatabaseDown != spec.OnDBDownIgnore && db == reconcile.DBDown
	switch {
	case rec.Suspended:
		rt.Maintenance, rt.Reason = true, "This service is down for maintenance."
	case dbDown:
		rt.Maintenance, rt.Reason = true, "This service is waiting for its database."
	case rec.Phase == reconcile.PhaseCrashLoop, rec.Phase == reconcile.PhaseFailed:
		rt.Maintenance, rt.Reason = true, "This service is having trouble starting."
	case rec.Phase == reconcile.PhaseHeld:
		rt.Maintenance, rt.Reason = true, "This service is waiting for its database."
	case !inst.Running():
		rt.Maintenance, rt.Reason = true, "This service is stopped."
	}
	return rt, true
}

// syncRoute brings merchant id's route up to date (a no-op without a
// router, or when it did not change). It does not wait for the reload.
func (e *Engine) syncRoute(d Desired, id string) {
	if e.Router == nil {
		return
	}
	rt, ok := e.routeFor(d, id)
	e.mu.Lock()
	last, had := e.routes[id]
	switch {
	case !ok && !had:
		e.mu.Unlock()
		return
	case !ok:
		delete(e.routes, id)
		e.mu.Unlock()
		e.Router.Delete(id)
		return
	case had && reflect.DeepEqual(last, rt):
		e.mu.Unlock()
		return
	}
	e.routes[id] = rt
	e.mu.Unlock()
	if err := e.Router.Put(rt); err != nil {
		e.Log.Error("the merchant's route is refused", "merchant", id, "err", err)
	}
}

// SyncRoutes brings every merchant's route up to date: the specs' and the
// records' merchants (a removed one loses its route).
func (e *Engine) SyncRoutes(d Desired) {
	if e.Router == nil {
		return
	}
	ids := map[string]bool{}
	e.mu.RLock()
	for id := range e.recs {
		ids[id] = true
	}
	for id := range e.routes {
		ids[id] = true
	}
	e.mu.RUnlock()
	if d.Fleet != nil {
		for id := range d.Fleet.Merchants {
			ids[id] = true
		}
	}
	// The whole table at once: routes put one by one could be applied
	// part way (the router applies as soon as it is told of a change), and
	// nginx would answer 404 for the merchants not put yet.
	routes := map[string]router.Route{}
	table := make([]router.Route, 0, len(ids))
	for id := range ids {
		if rt, ok := e.routeFor(d, id); ok {
			routes[id] = rt
			table = append(table, rt)
		}
	}
	e.mu.RLock()
	same := reflect.DeepEqual(routes, e.routes)
	e.mu.RUnlock()
	if same {
		return // nothing to render again (every resync calls this)
	}
	if err := e.Router.Set(table); err != nil {
		// A route is refused: the others go in one by one.
		e.Log.Error("the routing table is refused; applying the routes one by one", "err", err)
		for id := range ids {
			e.syncRoute(d, id)
		}
		return
	}
	e.mu.Lock()
	e.routes = routes
	e.mu.Unlock()
}

// Routes is every route the fleet needs now, sorted by merchant: the
// specs' routed merchants, as their records say.
func (e *Engine) Routes(d Desired) []router.Route {
	if e.Router == nil || d.Fleet == nil {
		return nil
	}
	ids := make([]string, 0, len(d.Fleet.Merchants))
	for id := range d.Fleet.Merchants {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var out []router.Route
	for _, id := range ids {
		if rt, ok := e.routeFor(d, id); ok {
			out = append(out, rt)
		}
	}
	return out
}

// RouteDrifter is a Router that can tell, reading only, whether applying
// routes would change what it serves (router.Router can).
type RouteDrifter interface {
	Drift(ctx context.Context, routes []router.Route) (string, error)
}

// routingDrift says why the routing would change ("" when it is live, or
// without a router that can tell).
func (e *Engine) routingDrift(ctx context.Context, d Desired) string {
	rd, ok := e.Router.(RouteDrifter)
	if !ok {
		return ""
	}
	routes := e.Routes(d)
	why, err := rd.Drift(ctx, routes)
	if err != nil {
		return err.Error()
	}
	if why == "" {
		return ""
	}
	n := len(routes)
	if n == 1 {
		return why + " (1 merchant routed)"
	}
	return fmt.Sprintf("%s (%d merchants routed)", why, n)
}

// routeTo moves the merchant's traffic to port and waits until the new
// routing is live.
func (o *op) routeTo(ctx context.Context, port int) error {
	rt, ok := o.e.routeFor(o.d, o.m.ID)
	if !ok {
		return nil
	}
	rt.Upstream, rt.Maintenance, rt.Reason = port, false, ""
	o.e.mu.Lock()
	o.e.routes[o.m.ID] = rt
	o.e.mu.Unlock()
	if err := o.e.Router.Put(rt); err != nil {
		return err
	}
	return o.e.Router.Sync(ctx)
}
