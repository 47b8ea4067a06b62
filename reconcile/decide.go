package reconcile

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"steward/spec"
)

// Input is everything the planner decides from. The planner reads it and
// never changes it: records it would change are cloned.
type Input struct {
	// Fleet is the desired state; nil means none is known (nothing is
	// deleted then).
	Fleet *spec.Fleet
	// Ports is the range merchant ports are assigned from.
	Ports spec.PortRange
	// Reserved are ports steward itself listens on (API, router), by use.
	Reserved map[int]string
	// Records and Rollouts are the stored records, by merchant id and by
	// rollout key.
	Records  map[string]*Record
	Rollouts map[string]*Rollout
	Obs      Observation
	Policy   RestartPolicy
	// Router says a router sends traffic to the merchants: a routed
	// merchant (domains or a path prefix, no fixed port) gets a second
	// port, where a new instance starts beside the old one.
	Router bool
	// Key keys the fingerprints of sensitive settings.
	Key []byte
	// Jitter in [0, 1) places a restart delay within the policy's spread.
	Jitter float64
	// Redact hides secret values in the texts the planner writes.
	Redact func(string) string
}

// Decision is what the planner decides for one merchant.
type Decision struct {
	// Action is what to do; nil when the merchant is converged.
	Action *Action
	// Record is the merchant's record as the observation alone leaves it
	// (a death noted, a pin ended, a port assigned), to be saved before
	// acting; nil when the observation changes nothing.
	Record *Record
	// Notes are observations worth recording in the history.
	Notes []Note
}

// Note is an observation for the history ("exited").
type Note struct {
	Action  string
	Reason  string
	PID     int
	Version string
}

// Decide decides for merchant id alone, as the daemon reconciles merchants
// one at a time: its version change waits for the rollout gate (canaries
// first, at most max_parallel in flight).
func Decide(in Input, id string) Decision {
	return in.decide(id, &lazyPorts{in: &in}, false)
}

// Diff plans the whole fleet, as apply carries it out: deletes and stops
// first, then starts and restarts, then version changes rollout by rollout
// in waves (canaries, then max_parallel at a time).
func Diff(in Input) *Plan {
	p := &Plan{Serial: in.serial(), CreatedAt: in.Obs.Now}
	if in.Fleet != nil {
		p.Revision = in.Fleet.Revision
	}
	ports := &lazyPorts{in: &in}
	ids := map[string]bool{}
	for id := range in.Records {
		ids[id] = true
	}
	if in.Fleet != nil {
		for id := range in.Fleet.Merchants {
			ids[id] = true
		}
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Strings(sorted)
	var first, rest []Action
	// Removed merchants first: they free ports.
	for _, id := range sorted {
		if in.Fleet != nil && in.Fleet.Merchants[id] != nil {
			continue
		}
		if d := in.decide(id, ports, true); d.Action != nil {
			if d.Action.Kind == Delete {
				first = append(first, *d.Action)
			} else {
				rest = append(rest, *d.Action)
			}
		}
	}
	if in.Fleet != nil {
		for _, id := range sorted {
			if in.Fleet.Merchants[id] == nil {
				continue
			}
			if d := in.decide(id, ports, true); d.Action != nil {
				if d.Action.Kind == Stop {
					first = append(first, *d.Action)
				} else {
					rest = append(rest, *d.Action)
				}
			}
		}
		assignWaves(in, rest)
	}
	p.Actions = append(first, rest...)
	return p
}

// serial is the highest record revision: the state's revision counter as
// far as the records show it.
func (in *Input) serial() uint64 {
	var s uint64
	for _, r := range in.Records {
		s = max(s, r.Rev)
	}
	for _, r := range in.Rollouts {
		s = max(s, r.Rev)
	}
	return s
}

func (in *Input) redact(s string) string {
	if in.Redact == nil {
		return s
	}
	return in.Redact(s)
}

func (in *Input) now() time.Time { return in.Obs.Now }

// dbState is the reachability of m's database as far as it matters: a
// merchant without one, or with on_database_down = "ignore", sees it up.
func (in *Input) dbState(m *spec.Merchant) DBState {
	if m.Database == "" || m.OnDatabaseDown == spec.OnDBDownIgnore {
		return DBUp
	}
	return in.Obs.Databases[m.Database]
}

func dbWhy(m *spec.Merchant, s DBState) string {
	if s == DBDown {
		return fmt.Sprintf("database %s is down", m.Database)
	}
	return fmt.Sprintf("waiting for the first check of database %s", m.Database)
}

func (in *Input) decide(id string, ports *lazyPorts, fleetWide bool) Decision {
	var m *spec.Merchant
	if in.Fleet != nil {
		m = in.Fleet.Merchants[id]
	}
	rec := in.Records[id]
	obs := in.Obs.Merchants[id]
	switch {
	case m == nil && rec == nil:
		return Decision{}
	case m == nil:
		return in.decideRemoved(rec, obs)
	case rec == nil:
		return Decision{Action: in.decideNew(m, ports)}
	}
	r := rec.Clone()
	var d Decision
	changed := false
	deadPID := 0
	if !r.Suspended {
		db := in.dbState(m)
		if r.Current.Running() && obs.Current == Dead {
			pid, v := r.Current.PID, r.Current.Version
			deadPID = pid
			held := db != DBUp && m.OnDatabaseDown == spec.OnDBDownHold
			loop := r.NoteExit(in.Policy, obs.ExitedAt, in.now(), in.Jitter, held)
			reason := fmt.Sprintf("process %d found dead", pid)
			if obs.ExitHow != "" {
				reason = fmt.Sprintf("process %d %s", pid, obs.ExitHow)
			}
			switch {
			case held:
				reason += "; held while " + dbWhy(m, db)
			case loop:
				reason += fmt.Sprintf("; crash loop: %d fast failures, next attempt at %s", r.Failures, r.NextAttempt.UTC().Format(time.RFC3339))
			}
			d.Notes = append(d.Notes, Note{Action: "exited", Reason: reason, PID: pid, Version: v})
			changed = true
		}
		if r.Candidate != nil && obs.Candidate == Dead && r.Change == nil {
			r.NoteCandidateExit()
			changed = true
		}
		if r.Pin != nil && r.Pin.ForSpec != m.Version {
			d.Notes = append(d.Notes, Note{Action: "unpin", Reason: fmt.Sprintf("the specs ask for %s now: the rollback pin to %s ends", in.redact(m.Version), in.redact(r.Pin.Version)), Version: r.Current.Version})
			r.Pin = nil
			changed = true
		}
		if r.forgetOldBadVersions(m.Version) {
			changed = true
		}
		if in.Router && r.AltPort == 0 && m.Port == 0 && (len(m.Domains) > 0 || m.PathPrefix != "") {
			if p, ok := ports.get().assignAlt(r); ok {
				r.AltPort = p
				changed = true
			}
		}
	}
	if changed {
		d.Record = r
	}
	d.Action = in.decideExisting(m, r, obs, ports, fleetWide, deadPID)
	if d.Action != nil {
		d.Action.Rev = rec.Rev
	}
	return d
}

func (in *Input) decideRemoved(rec *Record, obs MerchantObs) Decision {
	a := &Action{Merchant: rec.ID, Before: in.snapshot(rec, obs), Rev: rec.Rev}
	if rec.Suspended {
		a.Kind, a.Reason = Hold, "removed from specs, but suspended: resume it to let it be deleted"
	} else {
		a.Kind, a.Reason = Delete, "removed from specs (its database is kept)"
	}
	return Decision{Action: a}
}

func (in *Input) decideNew(m *spec.Merchant, ports *lazyPorts) *Action {
	after := &Snapshot{Package: m.Package, Version: in.redact(m.Version), Database: m.Database}
	port, why := ports.get().assign(m)
	after.Port = port
	if why != "" {
		return &Action{Kind: Hold, Merchant: m.ID, Reason: why, After: after, Class: Stalled}
	}
	if why := in.Obs.Missing[RolloutKey(m.Package, m.Version)]; why != "" {
		return &Action{Kind: Hold, Merchant: m.ID, Reason: in.redact(fmt.Sprintf("new merchant cannot start: %s", why)), After: after, Class: Stalled}
	}
	if s := in.dbState(m); s != DBUp {
		return &Action{Kind: Hold, Merchant: m.ID, Reason: "new merchant waits: " + dbWhy(m, s), After: after, ForDatabase: true, Class: Waiting}
	}
	return &Action{Kind: Create, Merchant: m.ID, Reason: in.redact(fmt.Sprintf("new merchant (%s %s, %s)", m.Package, m.Version, versionFrom(m))), After: after}
}

func (in *Input) decideExisting(m *spec.Merchant, r *Record, obs MerchantObs, ports *lazyPorts, fleetWide bool, deadPID int) *Action {
	before := in.snapshot(r, obs)
	after := &Snapshot{Package: m.Package, Version: in.redact(r.Current.Version), Port: r.Port, Database: m.Database}
	hold := func(reason string, class Class) *Action {
		return &Action{Kind: Hold, Merchant: m.ID, Reason: reason, Before: before, After: after, Class: class}
	}
	if r.Suspended {
		return hold(fmt.Sprintf("suspended: steward leaves it exactly as it is until \"steward resume %s\"", m.ID), "")
	}
	if obs.Current == Unknown {
		return hold(fmt.Sprintf("cannot tell whether process %d runs (reading /proc failed); nothing is done until it can", r.Current.PID), Transient)
	}
	alive := obs.Current == Alive
	db := in.dbState(m)
	dbBlocked := db != DBUp
	dbHold := func(what string) *Action {
		a := hold(what+" waits: "+dbWhy(m, db), Waiting)
		a.ForDatabase = true
		return a
	}
	if c := r.Change; c != nil {
		after.Version = in.redact(c.To)
		if dbBlocked {
			return dbHold(fmt.Sprintf("the interrupted change %s → %s", in.redact(c.From), in.redact(c.To)))
		}
		what, verb := "change", "finish"
		if c.Undo {
			verb = "undo"
		}
		if c.Kind.IsVersionChange() {
			what = fmt.Sprintf("change %s → %s", in.redact(c.From), in.redact(c.To))
		}
		return &Action{Kind: c.Kind, Merchant: m.ID, Resume: true, Rollout: c.Rollout, Canary: c.Canary, Before: before, After: after,
			Reason: fmt.Sprintf("%s the interrupted %s (last step done: %s)", verb, what, c.Step)}
	}
	if dbBlocked {
		if alive && db == DBDown && m.OnDatabaseDown == spec.OnDBDownStop {
			return &Action{Kind: Stop, Merchant: m.ID, Reason: fmt.Sprintf("database %s is down (on_database_down = stop)", m.Database), Before: before, After: after}
		}
		if !alive {
			a := hold(dbWhy(m, db), Waiting)
			a.ForDatabase = true
			return a
		}
	}
	if m.Port != 0 && m.Port != r.Port {
		after.Port = m.Port
		if owner := ports.get().owner(m.Port); owner != "" && owner != m.ID {
			return hold(fmt.Sprintf("port %d is in use by %s; choose another port", m.Port, owner), Stalled)
		}
	}

	// The version policy.
	gate := GateVerdict{Allow: true}
	cur := r.Current.Version
	if cur != "" && m.Version != cur {
		if fleetWide {
			gate = in.haltedGate(m, m.Version)
		} else {
			gate = Gate(in.Fleet, in.Records, in.Rollouts, m, m.Version)
		}
	}
	target, targetWhy := Target(m, r, gate)
	after.Version = in.redact(target)
	if cur != "" && target != cur {
		if why := in.Obs.Missing[RolloutKey(m.Package, target)]; why != "" {
			return hold(in.redact(fmt.Sprintf("cannot change to %s: %s", target, why)), Stalled)
		}
		if alive && dbBlocked {
			return dbHold(fmt.Sprintf("the change to %s", in.redact(target)))
		}
		kind := Upgrade
		if spec.CompareVersions(target, cur) < 0 {
			kind = Rollback
		}
		from := versionFrom(m)
		a := &Action{Kind: kind, Merchant: m.ID, Before: before, After: after}
		if pinned := r.Pin != nil && r.Pin.ForSpec == m.Version; target == m.Version && !pinned {
			a.Rollout, a.Canary = gate.Rollout, gate.Canary
		} else {
			from = "the version policy: " + targetWhy
		}
		reason := fmt.Sprintf("version %s → %s (%s)", cur, target, from)
		if s := obs.Schema; s != nil {
			if need, ok := in.Obs.Needs[RolloutKey(m.Package, target)]; ok && need != *s {
				how := "migrate"
				if need < *s {
					how = "down migration"
				}
				reason += fmt.Sprintf(", schema %d → %d (%s)", *s, need, how)
			}
		}
		a.Reason = in.redact(reason)
		return a
	}

	if alive && obs.Unhealthy != "" {
		if dbBlocked {
			return dbHold("the restart of an unhealthy process")
		}
		return &Action{Kind: Restart, Merchant: m.ID, Reason: in.redact(obs.Unhealthy), Unhealthy: true, Before: before, After: after}
	}

	var why []string
	if after.Port != r.Port {
		why = append(why, fmt.Sprintf("port %d → %d", r.Port, after.Port))
	}
	if len(r.Applied) > 0 {
		why = append(why, settingChanges(r.Applied, Fingerprints(in.Fleet, m, in.Key))...)
	} else if !alive {
		why = append(why, "never started successfully yet")
	}
	if len(why) > 0 {
		if alive {
			if dbBlocked {
				return dbHold("the restart for " + strings.Join(why, ", "))
			}
			return &Action{Kind: Restart, Merchant: m.ID, Reason: in.redact(strings.Join(why, ", ")), Before: before, After: after}
		}
		return &Action{Kind: Start, Merchant: m.ID, Reason: in.redact(strings.Join(why, ", ")), Before: before, After: after}
	}

	if alive {
		if s := obs.Schema; s != nil {
			if need, ok := in.Obs.Needs[RolloutKey(m.Package, cur)]; ok && need != *s {
				return hold(fmt.Sprintf("schema drift: database %s is at schema %d, but %s %s needs %d (changed by hand?); steward leaves it as it is",
					m.DBName, *s, m.Package, in.redact(cur), need), Stalled)
			}
		}
		if targetWhy != "" {
			return hold(in.redact(targetWhy), targetClass(m, r, gate))
		}
		return nil
	}
	if in.now().Before(r.NextAttempt) {
		a := hold(fmt.Sprintf("crash loop: %d fast failures, next attempt in %s", r.Failures, r.NextAttempt.Sub(in.now()).Round(time.Second)), "")
		a.NotBefore = r.NextAttempt
		return a
	}
	reason := "process not running"
	switch {
	case deadPID != 0:
		reason = fmt.Sprintf("process %d not running", deadPID)
	case r.Phase == PhaseStopped:
		reason = "stopped; the specs want it running"
	}
	if targetWhy != "" {
		reason += "; it starts " + target + ": " + targetWhy
	}
	return &Action{Kind: Start, Merchant: m.ID, Reason: in.redact(reason), Before: before, After: after}
}

// targetClass is the class of the hold of a merchant the version policy
// keeps off its specs' version: a person must act on a halted rollout or a
// version that failed on it (Stalled); a closed rollout gate opens by
// itself (Waiting); a pin is wanted ("").
func targetClass(m *spec.Merchant, r *Record, gate GateVerdict) Class {
	switch {
	case r.Pin != nil && r.Pin.ForSpec == m.Version:
		return ""
	case gate.Halted || slices.Contains(r.BadVersions, m.Version):
		return Stalled
	case !gate.Allow:
		return Waiting
	}
	return ""
}

// haltedGate is the fleet-wide plan's gate: every merchant may change
// unless the rollout halted (apply orders the changes in waves).
func (in *Input) haltedGate(m *spec.Merchant, version string) GateVerdict {
	v := Gate(in.Fleet, in.Records, in.Rollouts, m, version)
	if !v.Halted {
		v.Allow, v.Reason = true, ""
	}
	return v
}

// snapshot describes rec as it is, for people.
func (in *Input) snapshot(rec *Record, obs MerchantObs) *Snapshot {
	s := &Snapshot{Package: rec.Package, Version: in.redact(rec.Current.Version), Port: rec.Port, Database: rec.Applied["database"]}
	if obs.Current == Alive {
		s.PID = rec.Current.PID
	}
	return s
}

// assignWaves orders each rollout's version changes: interrupted changes
// first, then merchants in id order; the first `canary` (less those that
// passed already) form wave 0, then waves of max_parallel.
func assignWaves(in Input, actions []Action) {
	groups := map[string][]int{}
	for i, a := range actions {
		if a.Kind.IsVersionChange() && a.Rollout != "" {
			groups[a.Rollout] = append(groups[a.Rollout], i)
		}
	}
	for key, idx := range groups {
		first := actions[idx[0]]
		r := RolloutSettings(in.Fleet, first.After.Package)
		succeeded := 0
		if ro := in.Rollouts[key]; ro != nil {
			succeeded = len(ro.Succeeded)
		}
		canaries := max(r.Canary-succeeded, 0)
		sort.SliceStable(idx, func(a, b int) bool {
			x, y := actions[idx[a]], actions[idx[b]]
			if x.Resume != y.Resume {
				return x.Resume
			}
			return x.Merchant < y.Merchant
		})
		for n, i := range idx {
			switch {
			case actions[i].Resume:
				actions[i].Wave = 0
			case n < canaries:
				actions[i].Wave, actions[i].Canary = 0, true
			default:
				actions[i].Wave, actions[i].Canary = 1+(n-canaries)/r.MaxParallel, false
			}
		}
	}
}

// Fingerprints returns one entry per launch-relevant setting of m. Two
// merchants with equal fingerprints are launched identically, except for
// the package version, which is compared on its own. Sensitive values are
// keyed digests. Routing settings (domains, path prefix) are not launch
// settings: changing them never restarts a process.
func Fingerprints(fl *spec.Fleet, m *spec.Merchant, key []byte) map[string]string {
	fp := map[string]string{
		"package":  m.Package,
		"database": m.Database,
		"db_name":  m.DBName,
	}
	if m.Database != "" && fl != nil {
		if db := fl.Databases[m.Database]; db != nil {
			fp["database.dsn"] = db.DSN.FingerprintWith(key)
		}
	}
	if m.Port != 0 {
		fp["port"] = strconv.Itoa(m.Port)
	}
	for k, v := range m.Env {
		fp["env."+k] = v.FingerprintWith(key)
	}
	return fp
}

// settingChanges explains the difference between applied and desired
// fingerprints, for example "env.LOCALE changed, env.DEBUG added".
func settingChanges(applied, desired map[string]string) []string {
	var out []string
	for k, v := range desired {
		old, ok := applied[k]
		switch {
		case k == "port":
			// The port is compared against the recorded port instead.
		case !ok:
			out = append(out, k+" added")
		case old != v && !sameDigest(old, v):
			out = append(out, k+" changed")
		}
	}
	for k := range applied {
		if _, ok := desired[k]; !ok && k != "port" {
			out = append(out, k+" removed")
		}
	}
	sort.Strings(out)
	return out
}

// sameDigest reports whether two fingerprints are digests of different
// kinds (a record written before keyed digests): not evidence of a change.
func sameDigest(a, b string) bool {
	return strings.HasPrefix(a, "sha256:") && strings.HasPrefix(b, "hmac:")
}

// lazyPorts builds the port book only when a decision needs it.
type lazyPorts struct {
	in   *Input
	book *portBook
}

func (l *lazyPorts) get() *portBook {
	if l.book == nil {
		l.book = newPortBook(l.in)
	}
	return l.book
}

// portBook tracks which ports are taken while a plan assigns new ones.
type portBook struct {
	rng   spec.PortRange
	taken map[int]string // port -> merchant id, or what else holds it
	busy  map[int]bool
	next  int
}

func newPortBook(in *Input) *portBook {
	b := &portBook{rng: in.Ports, taken: map[int]string{}, busy: in.Obs.BusyPorts, next: in.Ports.Low}
	for p, what := range in.Reserved {
		b.taken[p] = what
	}
	for id, rec := range in.Records {
		for _, p := range []int{rec.Port, rec.AltPort} {
			if p != 0 {
				b.taken[p] = "merchant " + id
			}
		}
	}
	if in.Fleet != nil {
		for id, m := range in.Fleet.Merchants {
			if m.Port != 0 {
				if _, ok := b.taken[m.Port]; !ok {
					b.taken[m.Port] = "merchant " + id
				}
			}
		}
	}
	return b
}

// owner is what holds port, "" when it is free.
func (b *portBook) owner(port int) string {
	if o, ok := b.taken[port]; ok {
		return strings.TrimPrefix(o, "merchant ")
	}
	return ""
}

// assign returns the port a new merchant gets, or why it cannot have one:
// its fixed port (a foreign process holding it is refused when the
// merchant starts, naming the process), else the lowest free port of the
// range that nothing listens on.
func (b *portBook) assign(m *spec.Merchant) (int, string) {
	if m.Port != 0 {
		if owner := b.taken[m.Port]; owner != "" && owner != "merchant "+m.ID {
			return m.Port, fmt.Sprintf("port %d is in use by %s; choose another port", m.Port, owner)
		}
		b.taken[m.Port] = "merchant " + m.ID
		return m.Port, ""
	}
	if p, ok := b.free("merchant " + m.ID); ok {
		return p, ""
	}
	return 0, fmt.Sprintf("no free port left in the runtime range %s", b.rng)
}

// assignAlt returns a second port for rec, when one is free.
func (b *portBook) assignAlt(rec *Record) (int, bool) { return b.free("merchant " + rec.ID) }

func (b *portBook) free(holder string) (int, bool) {
	for ; b.next != 0 && b.next <= b.rng.High; b.next++ {
		if _, ok := b.taken[b.next]; !ok && !b.busy[b.next] {
			p := b.next
			b.taken[p] = holder
			b.next++
			return p, true
		}
	}
	return 0, false
}
