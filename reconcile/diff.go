package reconcile

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"steward/spec"
	"steward/state"
)

// Desired is the state the specs ask for.
type Desired struct {
	Fleet *spec.Fleet
	// Ports is the range ports are assigned from.
	Ports spec.PortRange
}

// Observed is what steward found: its records, checked against the machine.
type Observed struct {
	// Now is the time the observation was made; Diff reads no clock.
	Now time.Time
	// State is the loaded state; its records are not modified by Diff.
	State *state.State
	// Running reports, per merchant id, whether the recorded process is
	// alive (pid and start time both match). Absent means not running.
	Running map[string]bool
	// DatabaseDown lists databases known to be unreachable. A database that
	// is absent is treated as up.
	DatabaseDown map[string]bool
	// DatabaseUnknown lists databases whose first check has not decided
	// yet; merchants on them are not started until it has.
	DatabaseUnknown map[string]bool
	// Schema is each merchant's database schema version, where it was read.
	Schema map[string]int64
	// Needs is the schema version releases need, by "package@version",
	// where known.
	Needs map[string]int64
	// Unhealthy holds, per running merchant that failed its health checks
	// past the threshold, why (for example "health: GET /health timed out
	// 3 times (2s)").
	Unhealthy map[string]string
}

// Fingerprints returns one entry per launch-relevant setting of m. Two
// merchants with equal fingerprints are launched identically, except for
// the package version, which is compared on its own. Sensitive values are
// represented by a salted digest.
func Fingerprints(fl *spec.Fleet, m *spec.Merchant) map[string]string {
	fp := map[string]string{
		"package":  m.Package,
		"database": m.Database,
		"db_name":  m.DBName,
	}
	if m.Database != "" {
		if db := fl.Databases[m.Database]; db != nil {
			fp["database.dsn"] = db.DSN.Fingerprint()
		}
	}
	if m.Port != 0 {
		fp["port"] = strconv.Itoa(m.Port)
	}
	for k, v := range m.Env {
		fp["env."+k] = v.Fingerprint()
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
		case old != v:
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

// WantedVersion is the version m should run: the spec's, unless "steward
// rollback" overrode it while the spec still asks for the same version.
func WantedVersion(m *spec.Merchant, rec *state.Merchant) string {
	if rec != nil && rec.Override != "" && rec.OverrideFor == m.Version {
		return rec.Override
	}
	return m.Version
}

func versionFrom(m *spec.Merchant) string {
	if m.Channel != "" {
		return "channel " + m.Channel
	}
	return "pinned"
}

// Diff computes the plan that converges observed onto desired. It is pure.
func Diff(d Desired, o Observed) *Plan {
	st := o.State
	if st == nil {
		st = state.New("")
	}
	p := &Plan{Format: PlanFormat, Lineage: st.Lineage, Serial: st.Serial, CreatedAt: o.Now}
	if d.Fleet != nil {
		p.Revision = d.Fleet.Revision
	}
	ports := &lazyPorts{d: d, st: st}
	var first, rest []Action
	// Removed merchants first: they free ports.
	for _, id := range sortedIDs(st.Merchants) {
		if d.Fleet != nil && d.Fleet.Merchants[id] != nil {
			continue
		}
		if a, ok := diffRemoved(o, st.Merchants[id]); ok {
			if a.Kind == Delete {
				first = append(first, a)
			} else {
				rest = append(rest, a)
			}
		}
	}
	if d.Fleet != nil {
		for _, id := range d.Fleet.MerchantIDs() {
			if a, ok := diffMerchant(d, o, st, ports, d.Fleet.Merchants[id]); ok {
				if a.Kind == Stop {
					first = append(first, a)
				} else {
					rest = append(rest, a)
				}
			}
		}
	}
	if d.Fleet != nil {
		rest = gateRollouts(d, st, rest)
	}
	p.Actions = append(first, rest...)
	return p
}

// DiffOne computes the action for one merchant, or ok=false when it is
// converged. It costs O(1) unless the merchant needs a port assigned.
func DiffOne(d Desired, o Observed, id string) (a Action, ok bool) {
	st := o.State
	if st == nil {
		st = state.New("")
	}
	var m *spec.Merchant
	if d.Fleet != nil {
		m = d.Fleet.Merchants[id]
	}
	if m == nil {
		if rec := st.Merchants[id]; rec != nil {
			return diffRemoved(o, rec)
		}
		return Action{}, false
	}
	a, ok = diffMerchant(d, o, st, &lazyPorts{d: d, st: st}, m)
	if ok && (a.Kind == Upgrade || a.Kind == Rollback) {
		a = gateOne(d, st, a)
	}
	return a, ok
}

func diffRemoved(o Observed, rec *state.Merchant) (Action, bool) {
	if rec.Suspended {
		return Action{Kind: Hold, Merchant: rec.ID, Reason: "removed from specs, but suspended: resume it to let it be deleted", Before: snapshotOf(rec, o)}, true
	}
	return Action{Kind: Delete, Merchant: rec.ID, Reason: "removed from specs", Before: snapshotOf(rec, o)}, true
}

// lazyPorts builds the port book only when a decision needs it.
type lazyPorts struct {
	d    Desired
	st   *state.State
	book *portBook
}

func (l *lazyPorts) get() *portBook {
	if l.book == nil {
		l.book = newPortBook(l.d, l.st)
	}
	return l.book
}

func (l *lazyPorts) assign(m *spec.Merchant) (int, string) { return l.get().assign(m) }
func (l *lazyPorts) owner(port int) string                 { return l.get().owner(port) }

func diffMerchant(d Desired, o Observed, st *state.State, ports *lazyPorts, m *spec.Merchant) (Action, bool) {
	fl := d.Fleet
	rec := st.Merchants[m.ID]
	running := o.Running[m.ID]
	after := &Snapshot{Package: m.Package, Version: m.Version, Database: m.Database}
	dbDown := m.Database != "" && o.DatabaseDown[m.Database] && m.OnDatabaseDown != spec.OnDBDownIgnore

	if rec == nil {
		port, why := ports.assign(m)
		after.Port = port
		if why != "" {
			return Action{Kind: Hold, Merchant: m.ID, Reason: why, After: after}, true
		}
		if dbDown {
			return Action{Kind: Hold, Merchant: m.ID, Reason: fmt.Sprintf("new merchant waits: database %s is down", m.Database), After: after, ForDatabase: true}, true
		}
		if m.Database != "" && o.DatabaseUnknown[m.Database] && m.OnDatabaseDown != spec.OnDBDownIgnore {
			return Action{Kind: Hold, Merchant: m.ID, Reason: fmt.Sprintf("new merchant waits for the first check of database %s", m.Database), After: after, ForDatabase: true}, true
		}
		return Action{Kind: Create, Merchant: m.ID, Reason: fmt.Sprintf("new merchant (%s %s, %s)", m.Package, m.Version, versionFrom(m)), After: after}, true
	}
	before := snapshotOf(rec, o)
	if rec.Suspended {
		return Action{}, false
	}
	after.Port = rec.Port
	if m.Port != 0 && m.Port != rec.Port {
		after.Port = m.Port
		if owner := ports.owner(m.Port); owner != "" && owner != m.ID {
			return Action{Kind: Hold, Merchant: m.ID, Reason: fmt.Sprintf("port %d is in use by merchant %s; choose another port", m.Port, owner), Before: before, After: after}, true
		}
	}
	if !running && !dbDown && m.Database != "" && o.DatabaseUnknown[m.Database] && m.OnDatabaseDown != spec.OnDBDownIgnore {
		return Action{Kind: Hold, Merchant: m.ID, Reason: fmt.Sprintf("waiting for the first check of database %s", m.Database), Before: before, After: after, ForDatabase: true}, true
	}
	if dbDown {
		if running && m.OnDatabaseDown == spec.OnDBDownStop {
			return Action{Kind: Stop, Merchant: m.ID, Reason: fmt.Sprintf("database %s is down (on_database_down = stop)", m.Database), Before: before, After: after}, true
		}
		if !running {
			return Action{Kind: Hold, Merchant: m.ID, Reason: fmt.Sprintf("database %s is down", m.Database), Before: before, After: after, ForDatabase: true}, true
		}
	}
	want, from := WantedVersion(m, rec), versionFrom(m)
	if want != m.Version {
		from = "steward rollback"
	}
	after.Version = want
	if rec.UpgradeFrom != "" && rec.Version == want {
		return Action{Kind: Upgrade, Merchant: m.ID, Reason: fmt.Sprintf("finish the interrupted change %s → %s: health gate not passed yet", rec.UpgradeFrom, want), Before: before, After: after}, true
	}
	if want != rec.Version && rec.Version != "" {
		if contains(rec.BadVersions, want) {
			return Action{Kind: Hold, Merchant: m.ID, Reason: fmt.Sprintf("version %s failed on this merchant (see its history); staying on %s until the spec asks for another version", want, rec.Version), Before: before, After: after}, true
		}
		kind := Upgrade
		if spec.CompareVersions(want, rec.Version) < 0 {
			kind = Rollback
		}
		reason := fmt.Sprintf("version %s → %s (%s)", rec.Version, want, from)
		if cur, ok := o.Schema[m.ID]; ok {
			if need, ok := o.Needs[state.RolloutKey(m.Package, want)]; ok && need != cur {
				how := "migrate"
				if need < cur {
					how = "down migration"
				}
				reason += fmt.Sprintf(", schema %d → %d (%s)", cur, need, how)
			}
		}
		return Action{Kind: kind, Merchant: m.ID, Reason: reason, Before: before, After: after}, true
	}
	if why := o.Unhealthy[m.ID]; running && why != "" {
		return Action{Kind: Restart, Merchant: m.ID, Reason: why, Unhealthy: true, Before: before, After: after}, true
	}
	var why []string
	if after.Port != rec.Port {
		why = append(why, fmt.Sprintf("port %d → %d", rec.Port, after.Port))
	}
	if len(rec.Applied) > 0 {
		why = append(why, settingChanges(rec.Applied, Fingerprints(fl, m))...)
	} else if !running {
		why = append(why, "never started successfully yet")
	}
	if len(why) > 0 {
		kind := Restart
		if !running {
			kind = Start
		}
		return Action{Kind: kind, Merchant: m.ID, Reason: strings.Join(why, ", "), Before: before, After: after}, true
	}
	if running {
		if cur, ok := o.Schema[m.ID]; ok {
			if need, ok := o.Needs[state.RolloutKey(m.Package, rec.Version)]; ok && need != cur {
				return Action{Kind: Hold, Merchant: m.ID, Before: before, After: after, Reason: fmt.Sprintf(
					"schema drift: database %s is at schema %d, but %s %s needs %d (changed by hand?); steward leaves it as it is", m.DBName, cur, m.Package, rec.Version, need)}, true
			}
		}
		return Action{}, false
	}
	if o.Now.Before(rec.NextAttempt) {
		return Action{Kind: Hold, Merchant: m.ID, NotBefore: rec.NextAttempt,
			Reason: fmt.Sprintf("crash loop: %d fast failures, next attempt in %s", rec.Failures, rec.NextAttempt.Sub(o.Now).Round(time.Second)), Before: before, After: after}, true
	}
	reason := "process not running"
	if rec.PID != 0 {
		reason = fmt.Sprintf("process %d not running", rec.PID)
	}
	return Action{Kind: Start, Merchant: m.ID, Reason: reason, Before: before, After: after}, true
}

func snapshotOf(rec *state.Merchant, o Observed) *Snapshot {
	s := &Snapshot{Package: rec.Package, Version: rec.Version, Port: rec.Port}
	if db, ok := rec.Applied["database"]; ok {
		s.Database = db
	}
	if o.Running[rec.ID] {
		s.PID = rec.PID
	}
	return s
}

func sortedIDs(m map[string]*state.Merchant) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// portBook tracks which ports are taken while a plan assigns new ones.
type portBook struct {
	rng   spec.PortRange
	taken map[int]string // port -> merchant id
	next  int
}

func newPortBook(d Desired, st *state.State) *portBook {
	b := &portBook{rng: d.Ports, taken: map[int]string{}, next: d.Ports.Low}
	for id, rec := range st.Merchants {
		if rec.Port != 0 {
			b.taken[rec.Port] = id
		}
	}
	if d.Fleet != nil {
		for id, m := range d.Fleet.Merchants {
			if m.Port != 0 {
				if _, ok := b.taken[m.Port]; !ok {
					b.taken[m.Port] = id
				}
			}
		}
	}
	return b
}

func (b *portBook) owner(port int) string { return b.taken[port] }

// assign returns the port a new merchant gets, or a reason it cannot have one.
func (b *portBook) assign(m *spec.Merchant) (int, string) {
	if m.Port != 0 {
		if owner := b.taken[m.Port]; owner != "" && owner != m.ID {
			return m.Port, fmt.Sprintf("port %d is in use by merchant %s; choose another port", m.Port, owner)
		}
		b.taken[m.Port] = m.ID
		return m.Port, ""
	}
	for ; b.next <= b.rng.High && b.next != 0; b.next++ {
		if _, ok := b.taken[b.next]; !ok {
			p := b.next
			b.taken[p] = m.ID
			b.next++
			return p, ""
		}
	}
	return 0, fmt.Sprintf("no free port left in the runtime range %s", b.rng)
}
