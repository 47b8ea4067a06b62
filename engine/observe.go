package engine

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"time"

	"steward/internal/dsn"
	"steward/pkgstore"
	"steward/reconcile"
	"steward/spec"
)

// ObserveOptions say where an observation's facts come from beyond /proc
// and the records.
type ObserveOptions struct {
	// Databases gives a database's reachability as a watcher decided it;
	// when nil, each database is checked once, now, with CheckDB.
	Databases func(name string) reconcile.DBState
	// CheckDB checks one database server once (a connect and a query).
	CheckDB func(ctx context.Context, dsn string, timeout time.Duration) error
	// Unhealthy says why merchant id's process p failed its health checks
	// past the threshold, "" when it did not.
	Unhealthy func(id string, p Proc) string
	// Exited says when and how an exit watcher saw merchant id's process p
	// exit (zero time: not seen).
	Exited func(id string, p Proc) (at time.Time, how string)
	// Schema reads merchants' schema versions with the releases' queries
	// (never by running a package's command) where their database is up.
	Schema bool
}

// Observe builds the planner's observation of merchants ids (every
// merchant in the records and the specs when ids is nil). It only reads:
// /proc, the records, database checks, health verdicts, installed
// releases; it installs nothing and runs no package command.
func (e *Engine) Observe(ctx context.Context, d Desired, ids []string, opts ObserveOptions) reconcile.Observation {
	e.init()
	obs := reconcile.Observation{Now: e.Now(), Merchants: map[string]reconcile.MerchantObs{}, Databases: map[string]reconcile.DBState{}, Needs: map[string]int64{}, Missing: map[string]string{}}
	var recs map[string]*reconcile.Record
	if ids != nil {
		// One merchant of hundreds (the daemon's reconcile): copying every
		// record would make a resync cost the square of the fleet.
		recs = e.records(ids)
	} else {
		recs, _, _ = e.Snapshot()
	}
	if ids == nil {
		seen := map[string]bool{}
		for id := range recs {
			seen[id] = true
		}
		if d.Fleet != nil {
			for id := range d.Fleet.Merchants {
				seen[id] = true
			}
		}
		for id := range seen {
			ids = append(ids, id)
		}
	}
	if d.Fleet != nil {
		obs.Databases = e.observeDatabases(ctx, d.Fleet, opts)
		e.mu.Lock()
		for name, s := range obs.Databases {
			e.dbObs[name] = s
		}
		e.mu.Unlock()
	}
	needPorts := false
	for _, id := range ids {
		rec := recs[id]
		if rec == nil {
			if d.Fleet != nil && d.Fleet.Merchants[id] != nil {
				needPorts = true
			}
			continue
		}
		mo := reconcile.MerchantObs{Schema: rec.Schema}
		mo.Current = e.liveness(rec.Current)
		if rec.Candidate != nil {
			mo.Candidate = e.liveness(*rec.Candidate)
		}
		p := procOf(rec.Current)
		if mo.Current == reconcile.Dead && opts.Exited != nil {
			mo.ExitedAt, mo.ExitHow = opts.Exited(id, p)
		}
		if mo.Current == reconcile.Alive && opts.Unhealthy != nil {
			mo.Unhealthy = opts.Unhealthy(id, p)
		}
		obs.Merchants[id] = mo
	}
	if d.Fleet != nil {
		e.observeReleases(ctx, d, ids, recs, &obs, opts)
	}
	if needPorts {
		obs.BusyPorts = map[int]bool{}
		for p := d.Ports.Low; p <= d.Ports.High && p > 0; p++ {
			if !e.Runtime.PortFree(p) {
				obs.BusyPorts[p] = true
			}
		}
	}
	return obs
}

// liveness is what /proc says of inst's process.
func (e *Engine) liveness(inst reconcile.Instance) reconcile.Liveness {
	if !inst.Running() {
		return reconcile.NoProcess
	}
	l, _ := e.check(procOf(inst))
	return l
}

// observeDatabases gives every database of fl its reachability.
func (e *Engine) observeDatabases(ctx context.Context, fl *spec.Fleet, opts ObserveOptions) map[string]reconcile.DBState {
	out := map[string]reconcile.DBState{}
	if opts.Databases != nil {
		for name := range fl.Databases {
			out[name] = opts.Databases(name)
		}
		return out
	}
	if opts.CheckDB == nil {
		for name := range fl.Databases {
			out[name] = reconcile.DBUp
		}
		return out
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, db := range fl.Databases {
		wg.Go(func() {
			s := reconcile.DBUp
			if err := opts.CheckDB(ctx, db.DSN.Reveal(), db.CheckTimeout); err != nil {
				s = reconcile.DBDown
			}
			mu.Lock()
			out[name] = s
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// observeReleases notes the schema versions the installed releases of the
// merchants' current and wanted versions need, and, with opts.Schema, the
// schema versions their databases are at (read by query only).
func (e *Engine) observeReleases(ctx context.Context, d Desired, ids []string, recs map[string]*reconcile.Record, obs *reconcile.Observation, opts ObserveOptions) {
	type job struct {
		id  string
		url string
		q   string
	}
	var jobs []job
	// One look at each release for the whole observation: reading a
	// manifest parses it, and hundreds of merchants share a few releases.
	type peeked struct {
		mf  *pkgstore.Manifest
		err error
	}
	peeks := map[[3]string]peeked{}
	peek := func(source, name, version string) (*pkgstore.Manifest, error) {
		k := [3]string{source, name, version}
		if p, ok := peeks[k]; ok {
			return p.mf, p.err
		}
		mf, err := e.Packages.Peek(ctx, source, name, version)
		peeks[k] = peeked{mf, err}
		return mf, err
	}
	for _, id := range ids {
		m := d.Fleet.Merchants[id]
		rec := recs[id]
		if m == nil {
			continue
		}
		var query string
		pkg := d.Fleet.Packages[m.Package]
		for _, v := range []string{m.Version, currentVersion(rec)} {
			key := reconcile.RolloutKey(m.Package, v)
			if v == "" || pkg == nil {
				continue
			}
			mf, err := peek(pkg.Source, m.Package, v)
			if err != nil && errors.Is(err, fs.ErrNotExist) && !strings.HasPrefix(pkg.Source, "http://") && !strings.HasPrefix(pkg.Source, "https://") {
				obs.Missing[key] = strings.TrimSuffix(err.Error(), ": "+fs.ErrNotExist.Error())
			}
			if err != nil || mf == nil || mf.Schema == nil {
				continue
			}
			obs.Needs[key] = mf.Schema.Version
			if v == currentVersion(rec) {
				query = mf.Schema.Query
			}
		}
		db := d.Fleet.Databases[m.Database]
		if !opts.Schema || rec == nil || query == "" || db == nil || e.Databases == nil || obs.Databases[m.Database] != reconcile.DBUp {
			continue
		}
		jobs = append(jobs, job{id, dsn.WithDatabase(db.DSN.Reveal(), m.DBName), query})
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, j := range jobs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			v, err := e.Databases.SchemaVersion(ctx, j.url, j.q)
			if err != nil {
				return
			}
			mu.Lock()
			mo := obs.Merchants[j.id]
			mo.Schema = &v
			obs.Merchants[j.id] = mo
			mu.Unlock()
		})
	}
	wg.Wait()
}

func currentVersion(rec *reconcile.Record) string {
	if rec == nil {
		return ""
	}
	return rec.Current.Version
}

// Input is the planner's input for d and obs over the engine's records.
// The maps are copies: the planner may read them while the engine writes.
func (e *Engine) Input(d Desired, obs reconcile.Observation) reconcile.Input {
	recs, rollouts, _ := e.Snapshot()
	return e.input(d, obs, recs, rollouts)
}

func (e *Engine) input(d Desired, obs reconcile.Observation, recs map[string]*reconcile.Record, rollouts map[string]*reconcile.Rollout) reconcile.Input {
	e.mu.RLock()
	key := e.key
	e.mu.RUnlock()
	return reconcile.Input{Fleet: d.Fleet, Ports: d.Ports, Reserved: d.Reserved, Records: recs, Rollouts: rollouts, Obs: obs,
		Policy: reconcile.PolicyOf(d.Fleet), Router: e.Router != nil, Key: key, Jitter: e.Jitter(), Redact: d.Redact}
}

// Plan is the fleet-wide plan for d now, as plan and apply show it.
func (e *Engine) Plan(ctx context.Context, d Desired, opts ObserveOptions) *reconcile.Plan {
	obs := e.Observe(ctx, d, nil, opts)
	p := reconcile.Diff(e.Input(d, obs))
	p.Lineage = e.Lineage()
	if e.Router != nil {
		p.Routing = e.routingDrift(ctx, d)
	}
	return p
}
