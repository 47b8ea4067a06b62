package reconcile

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"steward/spec"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

var testKey = []byte("0123456789abcdef")

const fleetBase = `
database "db-east" { dsn = "postgres://u:pw@east/postgres" }
database "db-west" { dsn = "postgres://u:pw@west/postgres" }
package "invoicing" {
  source = "/pkgs"
  channel "stable" { version = "1.0.0" }
  channel "edge"   { version = "1.1.0" }
}
`

func loadFleet(t testing.TB, files ...string) *spec.Fleet {
	t.Helper()
	srcs := []spec.Source{{Name: "base.hcl", Dir: "/specs", Bytes: []byte(fleetBase)}}
	for i, f := range files {
		srcs = append(srcs, spec.Source{Name: "m" + string(rune('a'+i)) + ".hcl", Dir: "/specs", Bytes: []byte(f)})
	}
	fl, _, diags := spec.Load(srcs, spec.Options{Ports: spec.PortRange{Low: 8100, High: 8199}})
	if diags.HasErrors() {
		t.Fatalf("fleet does not load: %s", diags)
	}
	return fl
}

// applied is the record steward would have written after starting id on
// its specs' version.
func applied(fl *spec.Fleet, id string, pid, port int) *Record {
	m := fl.Merchants[id]
	return &Record{ID: id, Rev: 3, Package: m.Package, Port: port, Current: Instance{PID: pid, StartTime: 1, Port: port, Version: m.Version, StartedAt: now.Add(-time.Hour)},
		Applied: Fingerprints(fl, m, testKey), Phase: PhaseRunning, GoodVersions: []string{m.Version}}
}

// world is what the planner sees: records, which run, which databases
// are down (the others are up).
type world struct {
	records   []*Record
	running   []string
	dbDown    []string
	dbUnseen  []string
	rollouts  []*Rollout
	unhealthy []string
}

func input(fl *spec.Fleet, w world) Input {
	in := Input{Fleet: fl, Ports: spec.PortRange{Low: 8100, High: 8199}, Records: map[string]*Record{}, Rollouts: map[string]*Rollout{},
		Policy: DefaultRestartPolicy, Key: testKey, Jitter: 0.5,
		Obs: Observation{Now: now, Merchants: map[string]MerchantObs{}, Databases: map[string]DBState{}}}
	for name := range fl.Databases {
		in.Obs.Databases[name] = DBUp
	}
	for _, r := range w.records {
		in.Records[r.ID] = r
		mo := MerchantObs{}
		if r.Current.Running() {
			mo.Current = Dead
		}
		in.Obs.Merchants[r.ID] = mo
	}
	for _, id := range w.running {
		mo := in.Obs.Merchants[id]
		mo.Current = Alive
		in.Obs.Merchants[id] = mo
	}
	for _, id := range w.unhealthy {
		mo := in.Obs.Merchants[id]
		mo.Unhealthy = "health: GET /health timed out, 3 times in a row"
		in.Obs.Merchants[id] = mo
	}
	for _, db := range w.dbDown {
		in.Obs.Databases[db] = DBDown
	}
	for _, db := range w.dbUnseen {
		delete(in.Obs.Databases, db)
	}
	for _, ro := range w.rollouts {
		in.Rollouts[ro.Key()] = ro
	}
	return in
}

func brief(p *Plan) []string {
	var out []string
	for _, a := range p.Actions {
		s := string(a.Kind) + " " + a.Merchant + ": " + a.Reason
		if a.After != nil && a.After.Port != 0 && a.Kind == Create {
			s += " @" + strconv.Itoa(a.After.Port)
		}
		out = append(out, s)
	}
	return out
}

func TestDiff(t *testing.T) {
	acme := `merchant "acme" {
  package = "invoicing"
  channel = "stable"
  database = "db-east"
  env = { LOCALE = "zh_CN" }
}`
	acmeDE := strings.Replace(acme, "zh_CN", "de_DE", 1)
	acmeEdge := strings.Replace(acme, `channel = "stable"`, `channel = "edge"`, 1)
	acmePinned := strings.Replace(acme, `channel = "stable"`, `version = "0.9.0"`, 1)
	acmeStop := strings.Replace(acme, `env =`, "on_database_down = \"stop\"\n  env =", 1)
	bravo := `merchant "bravo" {
  package = "invoicing"
  version = "1.0.0"
  database = "db-west"
  port = 8150
}`
	bravoOnAcmePort := strings.Replace(bravo, "8150", "8100", 1)
	fl := loadFleet(t, acme)
	rec := func(f *spec.Fleet, id string) *Record { return applied(f, id, 1234, 8100) }
	with := func(r *Record, mod func(r *Record)) *Record { mod(r); return r }

	tests := []struct {
		name  string
		fleet *spec.Fleet
		world world
		want  []string
	}{
		{"empty state creates every merchant with assigned and fixed ports", loadFleet(t, acme, bravo), world{},
			[]string{"create acme: new merchant (invoicing 1.0.0, channel stable) @8100", "create bravo: new merchant (invoicing 1.0.0, pinned) @8150"}},
		{"converged running merchant needs nothing", fl, world{records: []*Record{rec(fl, "acme")}, running: []string{"acme"}}, nil},
		{"dead process is started", fl, world{records: []*Record{rec(fl, "acme")}},
			[]string{"start acme: process 1234 not running"}},
		{"env change restarts", loadFleet(t, acmeDE), world{records: []*Record{rec(fl, "acme")}, running: []string{"acme"}},
			[]string{"restart acme: env.LOCALE changed"}},
		{"env change on a dead process starts it with the new env", loadFleet(t, acmeDE), world{records: []*Record{rec(fl, "acme")}},
			[]string{"start acme: env.LOCALE changed"}},
		{"removed merchant is deleted", loadFleet(t, bravo), world{records: []*Record{rec(fl, "acme"), applied(loadFleet(t, bravo), "bravo", 99, 8150)}, running: []string{"acme", "bravo"}},
			[]string{"delete acme: removed from specs (its database is kept)"}},
		{"channel bump upgrades", loadFleet(t, acmeEdge), world{records: []*Record{rec(fl, "acme")}, running: []string{"acme"}},
			[]string{"upgrade acme: version 1.0.0 → 1.1.0 (channel edge)"}},
		{"pin to an older version rolls back", loadFleet(t, acmePinned), world{records: []*Record{rec(fl, "acme")}, running: []string{"acme"}},
			[]string{"rollback acme: version 1.0.0 → 0.9.0 (pinned)"}},
		{"a version that failed its gate is held", loadFleet(t, acmeEdge), world{records: []*Record{with(rec(fl, "acme"), func(r *Record) { r.BadVersions = []string{"1.1.0"} })}, running: []string{"acme"}},
			[]string{"hold acme: version 1.1.0 failed on this merchant (see its history); it stays on 1.0.0 until the specs ask for another version"}},
		{"new merchant waits for its database", fl, world{dbDown: []string{"db-east"}},
			[]string{"hold acme: new merchant waits: database db-east is down"}},
		{"new merchant waits for its database's first check", fl, world{dbUnseen: []string{"db-east"}},
			[]string{"hold acme: new merchant waits: waiting for the first check of database db-east"}},
		{"running merchant is left alone while its database is down", fl, world{records: []*Record{rec(fl, "acme")}, running: []string{"acme"}, dbDown: []string{"db-east"}}, nil},
		{"dead merchant is held while its database is down", fl, world{records: []*Record{rec(fl, "acme")}, dbDown: []string{"db-east"}},
			[]string{"hold acme: database db-east is down"}},
		{"on_database_down = stop stops it", loadFleet(t, acmeStop), world{records: []*Record{rec(loadFleet(t, acmeStop), "acme")}, running: []string{"acme"}, dbDown: []string{"db-east"}},
			[]string{"stop acme: database db-east is down (on_database_down = stop)"}},
		{"crash loop backoff holds until the next attempt", fl, world{records: []*Record{with(rec(fl, "acme"), func(r *Record) {
			r.Current.PID, r.Failures, r.NextAttempt, r.Phase = 0, 4, now.Add(4*time.Second), PhaseCrashLoop
		})}}, []string{"hold acme: crash loop: 4 fast failures, next attempt in 4s"}},
		{"backoff over starts again", fl, world{records: []*Record{with(rec(fl, "acme"), func(r *Record) {
			r.Current.PID, r.Failures, r.NextAttempt, r.Phase = 0, 4, now.Add(-time.Second), PhaseCrashLoop
		})}}, []string{"start acme: process not running"}},
		{"suspended merchant is held with why", loadFleet(t, acmeDE), world{records: []*Record{with(rec(fl, "acme"), func(r *Record) { r.Suspended = true })}},
			[]string{`hold acme: suspended: steward leaves it exactly as it is until "steward resume acme"`}},
		{"a merchant pinned by steward rollback is held with why", loadFleet(t, acmeEdge), world{records: []*Record{with(rec(fl, "acme"), func(r *Record) {
			r.Pin = &Pin{Version: "1.0.0", ForSpec: "1.1.0"}
		})}, running: []string{"acme"}},
			[]string{"hold acme: pinned to 1.0.0 by steward rollback while the specs ask for 1.1.0"}},
		{"a pin ends when the specs ask for another version", loadFleet(t, acmeEdge), world{records: []*Record{with(rec(fl, "acme"), func(r *Record) {
			r.Pin = &Pin{Version: "1.0.0", ForSpec: "0.9.0"}
		})}, running: []string{"acme"}},
			[]string{"upgrade acme: version 1.0.0 → 1.1.0 (channel edge)"}},
		{"fixed port held by another merchant is refused", loadFleet(t, acme, bravoOnAcmePort), world{records: []*Record{rec(fl, "acme")}, running: []string{"acme"}},
			[]string{"hold bravo: port 8100 is in use by merchant acme; choose another port"}},
		{"an interrupted change is finished first", loadFleet(t, acmeEdge), world{records: []*Record{with(rec(fl, "acme"), func(r *Record) {
			r.Change = &Change{Kind: Upgrade, From: "1.0.0", To: "1.1.0", Step: StepStarted, Rollout: "invoicing@1.1.0"}
			r.Candidate = &Instance{PID: 4321, StartTime: 2, Port: 8100, Version: "1.1.0"}
			r.Current.PID = 0
		})}}, []string{"upgrade acme: finish the interrupted change 1.0.0 → 1.1.0 (last step done: started)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := input(tt.fleet, tt.world)
			p := Diff(in)
			if got := brief(p); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("plan:\n got  %q\n want %q", got, tt.want)
			}
			if p.Revision != tt.fleet.Revision {
				t.Errorf("plan revision %q", p.Revision)
			}
			for _, a := range p.Actions {
				if r := in.Records[a.Merchant]; r != nil && a.Rev != r.Rev {
					t.Errorf("%s planned against revision %d, the record is at %d", a.Merchant, a.Rev, r.Rev)
				}
			}
		})
	}
}

func TestDiffSecretChangeRestartsWithoutRevealing(t *testing.T) {
	old := loadFleet(t, `merchant "acme" {
  package = "invoicing"
  version = "1.0.0"
  env = { API_KEY = "old-secret" }
  sensitive = ["API_KEY"]
}`)
	nw := loadFleet(t, `merchant "acme" {
  package = "invoicing"
  version = "1.0.0"
  env = { API_KEY = "new-secret" }
  sensitive = ["API_KEY"]
}`)
	r := applied(old, "acme", 5, 8100)
	for k, v := range r.Applied {
		if strings.Contains(v, "secret") {
			t.Fatalf("applied fingerprint %s reveals the secret: %q", k, v)
		}
	}
	if got := brief(Diff(input(nw, world{records: []*Record{r}, running: []string{"acme"}}))); !reflect.DeepEqual(got, []string{"restart acme: env.API_KEY changed"}) {
		t.Fatalf("plan = %q", got)
	}
	// Another key gives other fingerprints: they are keyed, not plain hashes.
	if Fingerprints(old, old.Merchants["acme"], []byte("another key 0123"))["env.API_KEY"] == r.Applied["env.API_KEY"] {
		t.Error("fingerprints do not depend on the key")
	}
}

func TestDiffFileOrderDoesNotMatter(t *testing.T) {
	var files []string
	for _, id := range []string{"delta", "alpha", "charlie", "bravo", "echo"} {
		files = append(files, `merchant "`+id+`" {
  package = "invoicing"
  channel = "stable"
}`)
	}
	rev := make([]string, len(files))
	for i := range files {
		rev[i] = files[len(files)-1-i]
	}
	load := func(fs []string) *spec.Fleet {
		srcs := []spec.Source{{Name: "base.hcl", Dir: "/", Bytes: []byte(fleetBase)}}
		for _, f := range fs {
			id := strings.Split(f, `"`)[1]
			srcs = append([]spec.Source{{Name: id + ".hcl", Dir: "/", Bytes: []byte(f)}}, srcs...)
		}
		fl, _, diags := spec.Load(srcs, spec.Options{Ports: spec.PortRange{Low: 8100, High: 8199}})
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return fl
	}
	a, b := Diff(input(load(files), world{})), Diff(input(load(rev), world{}))
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("plans differ with file order:\n%v\n%v", brief(a), brief(b))
	}
	if len(a.Actions) != 5 || a.Actions[0].Merchant != "alpha" || a.Actions[0].After.Port != 8100 {
		t.Fatalf("unexpected plan %v", brief(a))
	}
}

func TestDiffSkipsBusyPorts(t *testing.T) {
	fl := loadFleet(t, `merchant "acme" {
  package = "invoicing"
  channel = "stable"
}`, `merchant "bravo" {
  package = "invoicing"
  channel = "stable"
}`)
	in := input(fl, world{})
	in.Obs.BusyPorts = map[int]bool{8100: true, 8102: true}
	in.Reserved = map[int]string{8101: "steward's API"}
	if got, want := brief(Diff(in)), []string{"create acme: new merchant (invoicing 1.0.0, channel stable) @8103", "create bravo: new merchant (invoicing 1.0.0, channel stable) @8104"}; !reflect.DeepEqual(got, want) {
		t.Errorf("plan = %q, want %q", got, want)
	}
}

func TestRestartPolicy(t *testing.T) {
	p := DefaultRestartPolicy
	p.Spread = 0
	for _, tt := range []struct {
		failures int
		want     time.Duration
	}{{0, 0}, {1, 0}, {2, time.Second}, {3, 2 * time.Second}, {4, 4 * time.Second}, {10, 256 * time.Second}, {11, 5 * time.Minute}, {100, 5 * time.Minute}} {
		if got := p.Delay(tt.failures, 0.9); got != tt.want {
			t.Errorf("Delay(%d) = %s, want %s", tt.failures, got, tt.want)
		}
	}
	j := DefaultRestartPolicy
	for _, tt := range []struct {
		jitter float64
		want   time.Duration
	}{{0, 3600 * time.Millisecond}, {0.5, 4 * time.Second}, {0.75, 4200 * time.Millisecond}} {
		if got := j.Delay(4, tt.jitter); got != tt.want {
			t.Errorf("Delay(4) with jitter %v = %s, want %s (±10%%)", tt.jitter, got, tt.want)
		}
	}
	if got := j.Delay(100, 0.99); got != 5*time.Minute {
		t.Errorf("jitter pushes the delay over the cap: %s", got)
	}
	rec := &Record{Current: Instance{PID: 4, StartedAt: now}}
	if rec.NoteExit(p, now.Add(time.Second), now.Add(time.Second), 0.5, false) || rec.Failures != 1 || !rec.NextAttempt.Equal(now.Add(time.Second)) || rec.Current.PID != 0 || !rec.Died {
		t.Fatalf("first fast failure: %+v", rec)
	}
	rec.Current.StartedAt = now.Add(2 * time.Second)
	if !rec.NoteExit(p, now.Add(3*time.Second), now.Add(3*time.Second), 0.5, false) || rec.Phase != PhaseCrashLoop || !rec.NextAttempt.Equal(now.Add(4*time.Second)) {
		t.Fatalf("second fast failure: %+v", rec)
	}
	rec.Current.StartedAt = now
	if rec.NoteExit(p, now.Add(11*time.Minute), now.Add(11*time.Minute), 0.5, false) || rec.Failures != 1 {
		t.Fatalf("failure after a long run should reset the count: %+v", rec)
	}
	held := &Record{Current: Instance{PID: 4, StartedAt: now}, Failures: 3}
	if held.NoteExit(p, now, now, 0.5, true) || held.Phase != PhaseHeld || held.Failures != 3 {
		t.Fatalf("a death while held counts: %+v", held)
	}
	n := &Record{Died: true, Restarts: 2}
	n.NoteStarted(Instance{PID: 9}, nil, "rev")
	if n.Restarts != 3 || n.Died || n.Phase != PhaseStarting {
		t.Fatalf("a start after a death is a restart: %+v", n)
	}
}
