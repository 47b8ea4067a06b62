package reconcile

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"steward/spec"
	"steward/state"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

const fleetBase = `
database "db-east" { dsn = "postgres://u:pw@east/postgres" }
database "db-west" { dsn = "postgres://u:pw@west/postgres" }
package "invoicing" {
  source = "/pkgs"
  channel "stable" { version = "1.0.0" }
  channel "edge"   { version = "1.1.0" }
}
`

func loadFleet(t *testing.T, files ...string) *spec.Fleet {
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

// applied returns the record steward would have written after starting m.
func applied(fl *spec.Fleet, id string, pid, port int) *state.Merchant {
	m := fl.Merchants[id]
	return &state.Merchant{ID: id, Package: m.Package, Version: m.Version, Port: port, PID: pid, StartTime: 1,
		Applied: Fingerprints(fl, m), Phase: PhaseRunning}
}

type world struct {
	records []*state.Merchant
	running []string
	dbDown  []string
}

func observe(w world) Observed {
	st := state.New("lineage-1")
	st.Serial = 7
	o := Observed{Now: now, State: st, Running: map[string]bool{}, DatabaseDown: map[string]bool{}}
	for _, r := range w.records {
		st.Merchants[r.ID] = r
	}
	for _, id := range w.running {
		o.Running[id] = true
	}
	for _, db := range w.dbDown {
		o.DatabaseDown[db] = true
	}
	return o
}

func brief(p *Plan) []string {
	var out []string
	for _, a := range p.Actions {
		s := string(a.Kind) + " " + a.Merchant + ": " + a.Reason
		if a.After != nil && a.After.Port != 0 && (a.Kind == Create) {
			s += " @" + itoa(a.After.Port)
		}
		out = append(out, s)
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

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
	rec := func(f *spec.Fleet, id string) *state.Merchant { return applied(f, id, 1234, 8100) }

	tests := []struct {
		name  string
		fleet *spec.Fleet
		world world
		want  []string
	}{
		{"empty state creates every merchant with assigned and fixed ports", loadFleet(t, acme, bravo), world{},
			[]string{"create acme: new merchant (invoicing 1.0.0, channel stable) @8100", "create bravo: new merchant (invoicing 1.0.0, pinned) @8150"}},
		{"converged running merchant needs nothing", fl, world{records: []*state.Merchant{rec(fl, "acme")}, running: []string{"acme"}}, nil},
		{"dead process is started", fl, world{records: []*state.Merchant{rec(fl, "acme")}},
			[]string{"start acme: process 1234 not running"}},
		{"env change restarts", loadFleet(t, acmeDE), world{records: []*state.Merchant{rec(fl, "acme")}, running: []string{"acme"}},
			[]string{"restart acme: env.LOCALE changed"}},
		{"env change on a dead process starts it with the new env", loadFleet(t, acmeDE), world{records: []*state.Merchant{rec(fl, "acme")}},
			[]string{"start acme: env.LOCALE changed"}},
		{"removed merchant is deleted", loadFleet(t, bravo), world{records: []*state.Merchant{rec(fl, "acme"), applied(loadFleet(t, bravo), "bravo", 99, 8150)}, running: []string{"acme", "bravo"}},
			[]string{"delete acme: removed from specs"}},
		{"channel bump upgrades", loadFleet(t, acmeEdge), world{records: []*state.Merchant{rec(fl, "acme")}, running: []string{"acme"}},
			[]string{"upgrade acme: version 1.0.0 → 1.1.0 (channel edge)"}},
		{"pin to an older version rolls back", loadFleet(t, acmePinned), world{records: []*state.Merchant{rec(fl, "acme")}, running: []string{"acme"}},
			[]string{"rollback acme: version 1.0.0 → 0.9.0 (pinned)"}},
		{"a version that failed its gate is held", loadFleet(t, acmeEdge), world{records: []*state.Merchant{func() *state.Merchant {
			r := rec(fl, "acme")
			r.BadVersions = []string{"1.1.0"}
			return r
		}()}, running: []string{"acme"}},
			[]string{"hold acme: version 1.1.0 failed on this merchant (see its history); staying on 1.0.0 until the spec asks for another version"}},
		{"new merchant waits for its database", fl, world{dbDown: []string{"db-east"}},
			[]string{"hold acme: new merchant waits: database db-east is down"}},
		{"running merchant is left alone while its database is down", fl, world{records: []*state.Merchant{rec(fl, "acme")}, running: []string{"acme"}, dbDown: []string{"db-east"}}, nil},
		{"dead merchant is held while its database is down", fl, world{records: []*state.Merchant{rec(fl, "acme")}, dbDown: []string{"db-east"}},
			[]string{"hold acme: database db-east is down"}},
		{"on_database_down = stop stops it", loadFleet(t, acmeStop), world{records: []*state.Merchant{rec(loadFleet(t, acmeStop), "acme")}, running: []string{"acme"}, dbDown: []string{"db-east"}},
			[]string{"stop acme: database db-east is down (on_database_down = stop)"}},
		{"crash loop backoff holds until the next attempt", fl, world{records: []*state.Merchant{func() *state.Merchant {
			r := rec(fl, "acme")
			r.Failures, r.NextAttempt = 4, now.Add(4*time.Second)
			return r
		}()}}, []string{"hold acme: crash loop: 4 fast failures, next attempt in 4s"}},
		{"backoff over starts again", fl, world{records: []*state.Merchant{func() *state.Merchant {
			r := rec(fl, "acme")
			r.Failures, r.NextAttempt = 4, now.Add(-time.Second)
			return r
		}()}}, []string{"start acme: process 1234 not running"}},
		{"suspended merchant is left alone", loadFleet(t, acmeDE), world{records: []*state.Merchant{func() *state.Merchant {
			r := rec(fl, "acme")
			r.Suspended = true
			return r
		}()}}, nil},
		{"fixed port held by another merchant is refused", loadFleet(t, acme, bravoOnAcmePort), world{records: []*state.Merchant{rec(fl, "acme")}, running: []string{"acme"}},
			[]string{"hold bravo: port 8100 is in use by merchant acme; choose another port"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Diff(Desired{Fleet: tt.fleet, Ports: spec.PortRange{Low: 8100, High: 8199}}, observe(tt.world))
			if got := brief(p); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("plan:\n got  %q\n want %q", got, tt.want)
			}
			if p.Serial != 7 || p.Lineage != "lineage-1" || p.Revision != tt.fleet.Revision {
				t.Errorf("plan identity = %d %q %q", p.Serial, p.Lineage, p.Revision)
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
	p := Diff(Desired{Fleet: nw, Ports: spec.PortRange{Low: 8100, High: 8199}}, observe(world{records: []*state.Merchant{r}, running: []string{"acme"}}))
	if got := brief(p); !reflect.DeepEqual(got, []string{"restart acme: env.API_KEY changed"}) {
		t.Fatalf("plan = %q", got)
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
	// Same names, different order: name files by content, not position.
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
	a := Diff(Desired{Fleet: load(files), Ports: spec.PortRange{Low: 8100, High: 8199}}, observe(world{}))
	b := Diff(Desired{Fleet: load(rev), Ports: spec.PortRange{Low: 8100, High: 8199}}, observe(world{}))
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("plans differ with file order:\n%v\n%v", brief(a), brief(b))
	}
	if len(a.Actions) != 5 || a.Actions[0].Merchant != "alpha" || a.Actions[0].After.Port != 8100 {
		t.Fatalf("unexpected plan %v", brief(a))
	}
}

func TestRestartPolicy(t *testing.T) {
	p := DefaultRestartPolicy
	for _, tt := range []struct {
		failures int
		want     time.Duration
	}{{0, 0}, {1, 0}, {2, time.Second}, {3, 2 * time.Second}, {4, 4 * time.Second}, {10, 256 * time.Second}, {11, 5 * time.Minute}, {100, 5 * time.Minute}} {
		if got := p.Delay(tt.failures); got != tt.want {
			t.Errorf("Delay(%d) = %s, want %s", tt.failures, got, tt.want)
		}
	}
	rec := &state.Merchant{StartedAt: now, PID: 4}
	if p.NoteExit(rec, now.Add(time.Second), now.Add(time.Second)) || rec.Failures != 1 || !rec.NextAttempt.Equal(now.Add(time.Second)) || rec.PID != 0 {
		t.Fatalf("first fast failure: %+v", rec)
	}
	rec.StartedAt = now.Add(2 * time.Second)
	if !p.NoteExit(rec, now.Add(3*time.Second), now.Add(3*time.Second)) || rec.Phase != PhaseCrashLoop || !rec.NextAttempt.Equal(now.Add(4*time.Second)) {
		t.Fatalf("second fast failure: %+v", rec)
	}
	rec.StartedAt = now
	if p.NoteExit(rec, now.Add(11*time.Minute), now.Add(11*time.Minute)) || rec.Failures != 1 {
		t.Fatalf("failure after a long run should reset the count: %+v", rec)
	}
}
