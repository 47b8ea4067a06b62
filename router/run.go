package router

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Health is the router's record, for status and metrics.
type Health struct {
	// Mode is Managed or System.
	Mode Mode `json:"mode"`
	// Running (managed) is whether steward's nginx master runs; PID is its
	// pid then.
	Running bool `json:"running"`
	PID     int  `json:"pid,omitempty"`
	// Generation identifies the routing nginx last loaded through steward.
	Generation string `json:"generation,omitempty"`
	// Routes is how many merchants that routing routes.
	Routes int `json:"routes"`
	// Reloads counts reloads; Starts counts nginx starts (managed);
	// LastReload is the time of the last of either.
	Reloads    int       `json:"reloads"`
	Starts     int       `json:"starts"`
	LastReload time.Time `json:"last_reload,omitzero"`
	// Failing is true while the latest attempt to apply routes failed: the
	// routing before it is still in force.
	Failing bool `json:"failing"`
	// Failures counts failed attempts; LastError is the latest one (kept
	// after later successes), with nginx's output when nginx refused.
	Failures    int       `json:"failures"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Status returns the health record. Running and PID are looked up now.
func (r *Router) Status() Health {
	r.mu.Lock()
	h := r.health
	r.mu.Unlock()
	if r.cfg.Mode == Managed {
		m, ok := r.findMaster()
		h.Running = ok
		h.PID = 0
		if ok {
			h.PID = m.PID
		}
	}
	return h
}

// Set replaces the whole routing table that Run applies: latest wins. The
// table is checked first (merchant ids, domains and path prefixes, no
// domain or prefix claimed twice, no merchant listed twice); when a route
// is refused the table stays as it was and the error names every problem.
func (r *Router) Set(routes []Route) error {
	t := newTable()
	var errs []error
	for _, rt := range routes {
		if _, dup := t.routes[rt.Merchant]; dup {
			errs = append(errs, fmt.Errorf("merchant %s: listed twice", rt.Merchant))
			continue
		}
		if err := t.put(rt, r.defaultServer()); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("router: routing table refused, the previous one stays: %w", errors.Join(errs...))
	}
	r.mu.Lock()
	r.table = t
	r.changedLocked()
	r.mu.Unlock()
	return nil
}

// Put sets one merchant's route in the table Run applies, leaving the
// others as they are: what concurrent workers switching single merchants
// call. A route that is invalid or claims another merchant's domain or
// path prefix is refused and changes nothing.
func (r *Router) Put(rt Route) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.table.put(rt, r.defaultServer()); err != nil {
		return fmt.Errorf("router: route refused: %w", err)
	}
	r.changedLocked()
	return nil
}

// Delete removes a merchant's route from the table Run applies.
func (r *Router) Delete(merchant string) {
	r.mu.Lock()
	r.table.delete(merchant)
	r.changedLocked()
	r.mu.Unlock()
}

// Routes returns the table Run applies, sorted by merchant.
func (r *Router) Routes() []Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.table.list()
}

func (r *Router) changedLocked() {
	r.seq++
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Sync returns once every change made by Set, Put and Delete before the
// call is live: applied, reloaded and served by nginx (see Apply). It
// returns the error of the apply that covered them, if it failed, or
// ctx's error. Run must be running.
func (r *Router) Sync(ctx context.Context) error {
	r.mu.Lock()
	want := r.seq
	for r.done < want {
		ch := r.doneCh
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
		r.mu.Lock()
	}
	err := r.doneErr
	r.mu.Unlock()
	return err
}

// Run applies the table that Set, Put and Delete change until ctx ends:
// at once when it has been idle, then at most every MinInterval, so that a
// burst of changes (a rollout of hundreds of merchants) makes a few
// reloads. A failed apply is retried every CheckInterval and at the next
// change. In managed mode it first makes sure nginx runs (Ensure) and then
// checks every CheckInterval, restarting nginx when it died. Run returns
// nil when ctx ends.
func (r *Router) Run(ctx context.Context) error {
	if r.cfg.Mode == Managed {
		r.Ensure(ctx) // failures are in Status and the log; checked again below
	}
	check := time.NewTicker(r.cfg.CheckInterval)
	defer check.Stop()
	var last time.Time
	failed := false
	for {
		r.mu.Lock()
		pending := r.seq > r.done
		r.mu.Unlock()
		if pending {
			if wait := r.cfg.MinInterval - time.Since(last); !last.IsZero() && wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
			}
			failed = r.applyTable(ctx) != nil
			last = time.Now()
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-check.C:
			if failed {
				failed = r.applyTable(ctx) != nil
				last = time.Now()
			} else if r.cfg.Mode == Managed {
				if _, ok := r.findMaster(); !ok {
					r.log.Warn("nginx is not running; starting it")
					r.Ensure(ctx)
				}
			}
		}
	}
}

// applyTable applies the current table and publishes the outcome to Sync.
func (r *Router) applyTable(ctx context.Context) error {
	r.mu.Lock()
	seq := r.seq
	routes := r.table.list()
	r.mu.Unlock()
	_, err := r.Apply(ctx, routes)
	if ctx.Err() != nil {
		return err // shutting down: Sync callers see their own ctx end
	}
	r.mu.Lock()
	r.done, r.doneErr = seq, err
	close(r.doneCh)
	r.doneCh = make(chan struct{})
	r.mu.Unlock()
	return err
}
