package reconcile

import (
	"strings"
	"testing"

	"steward/spec"
)

// decision is Decide's action for one merchant, in brief ("" when none)
// and the version it would run.
func decision(t *testing.T, in Input, id string) (string, string) {
	t.Helper()
	d := Decide(in, id)
	if d.Action == nil {
		return "", ""
	}
	v := ""
	if d.Action.After != nil {
		v = d.Action.After.Version
	}
	return string(d.Action.Kind) + ": " + d.Action.Reason, v
}

// TestVersionPolicy covers the defects where versions and holds were
// decided in the wrong places: every start launches the version the
// policy holds for the merchant now.
func TestVersionPolicy(t *testing.T) {
	edge := `merchant "acme" {
  package  = "invoicing"
  channel  = "edge"
  database = "db-east"
}`
	fl := loadFleet(t, edge)
	onOld := func(mod func(r *Record)) *Record {
		r := applied(fl, "acme", 1234, 8100)
		r.Current.Version, r.GoodVersions = "1.0.0", []string{"1.0.0"}
		if mod != nil {
			mod(r)
		}
		return r
	}
	halted := &Rollout{Package: "invoicing", Version: "1.1.0", Halted: true, Reason: "canary bravo failed: unhealthy"}
	for _, tc := range []struct {
		name        string
		w           world
		wantKind    string
		wantVersion string
	}{
		{"a merchant that crashed while its rollout is halted is started on its last good version",
			world{records: []*Record{onOld(nil)}, rollouts: []*Rollout{halted}}, "start", "1.0.0"},
		{"a running merchant of a halted rollout is held, not upgraded",
			world{records: []*Record{onOld(nil)}, running: []string{"acme"}, rollouts: []*Rollout{halted}}, "hold", "1.0.0"},
		{"a merchant whose version failed here is started on its last good version after a crash",
			world{records: []*Record{onOld(func(r *Record) { r.BadVersions = []string{"1.1.0"} })}}, "start", "1.0.0"},
		{"a merchant pinned by steward rollback is started on the pin after a crash",
			world{records: []*Record{onOld(func(r *Record) {
				r.Current.Version, r.GoodVersions = "0.9.0", []string{"0.9.0", "1.0.0"}
				r.Pin = &Pin{Version: "0.9.0", ForSpec: "1.1.0"}
			})}}, "start", "0.9.0"},
		{"a settings change waits while the database is down: the healthy process is not stopped",
			world{records: []*Record{onOld(func(r *Record) { r.Current.Version = "1.1.0"; r.Applied["env.X"] = "1" })}, running: []string{"acme"}, dbDown: []string{"db-east"}}, "hold", "1.1.0"},
		{"a settings change waits while the database was not checked yet",
			world{records: []*Record{onOld(func(r *Record) { r.Current.Version = "1.1.0"; r.Applied["database.dsn"] = "hmac:other" })}, running: []string{"acme"}, dbUnseen: []string{"db-east"}}, "hold", "1.1.0"},
		{"a version change waits while the database is down",
			world{records: []*Record{onOld(nil)}, running: []string{"acme"}, dbDown: []string{"db-east"}}, "hold", "1.1.0"},
		{"an unhealthy restart waits while the database is down",
			world{records: []*Record{onOld(func(r *Record) { r.Current.Version = "1.1.0" })}, running: []string{"acme"}, unhealthy: []string{"acme"}, dbDown: []string{"db-east"}}, "hold", "1.1.0"},
		{"an unhealthy process is restarted when its database is up",
			world{records: []*Record{onOld(func(r *Record) { r.Current.Version = "1.1.0" })}, running: []string{"acme"}, unhealthy: []string{"acme"}}, "restart", "1.1.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := input(fl, tc.w)
			kind, version := decision(t, in, "acme")
			if !strings.HasPrefix(kind, tc.wantKind) {
				t.Fatalf("decision %q, want a %s", kind, tc.wantKind)
			}
			if version != tc.wantVersion {
				t.Errorf("%s of version %s, want %s", kind, version, tc.wantVersion)
			}
		})
	}
}

// TestTarget is the version policy on its own.
func TestTarget(t *testing.T) {
	fl := loadFleet(t, `merchant "acme" {
  package = "invoicing"
  channel = "edge"
}`)
	m := fl.Merchants["acme"]
	allow, wait := GateVerdict{Allow: true}, GateVerdict{Reason: "waiting for the canary"}
	stop := GateVerdict{Halted: true, Reason: "rollout halted"}
	rec := func(cur string, mod func(r *Record)) *Record {
		r := &Record{ID: "acme", Current: Instance{Version: cur}, GoodVersions: []string{cur}}
		if mod != nil {
			mod(r)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		rec  *Record
		gate GateVerdict
		want string
	}{
		{"a new merchant starts the specs' version", nil, wait, "1.1.0"},
		{"an open gate lets it change", rec("1.0.0", nil), allow, "1.1.0"},
		{"a closed gate keeps it", rec("1.0.0", nil), wait, "1.0.0"},
		{"a halted rollout keeps it", rec("1.0.0", nil), stop, "1.0.0"},
		{"a bad version is never launched", rec("1.0.0", func(r *Record) { r.BadVersions = []string{"1.1.0"} }), allow, "1.0.0"},
		{"a bad current version falls back to the newest good one", rec("1.2.0", func(r *Record) {
			r.GoodVersions, r.BadVersions = []string{"0.9.0", "1.0.0"}, []string{"1.2.0", "1.1.0"}
		}), allow, "1.0.0"},
		{"the pin wins", rec("1.1.0", func(r *Record) { r.Pin = &Pin{Version: "0.9.0", ForSpec: "1.1.0"} }), allow, "0.9.0"},
		{"a pin for another spec version is over", rec("0.9.0", func(r *Record) { r.Pin = &Pin{Version: "0.9.0", ForSpec: "1.0.0"} }), allow, "1.1.0"},
	} {
		if got, _ := Target(m, tc.rec, tc.gate); got != tc.want {
			t.Errorf("%s: Target = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestGate covers the one rollout gate: canaries first, then at most
// max_parallel changing at once, nothing after a halt.
func TestGate(t *testing.T) {
	var ms []string
	for _, id := range []string{"a", "b", "c", "d"} {
		ms = append(ms, `merchant "`+id+`" {
  package = "invoicing"
  channel = "edge"
}`)
	}
	fl := loadFleet(t, append(ms, `rollout {
  canary       = 1
  max_parallel = 2
}`)...)
	records := func(mod func(map[string]*Record)) map[string]*Record {
		out := map[string]*Record{}
		for i, id := range []string{"a", "b", "c", "d"} {
			r := applied(fl, id, 100+i, 8100+i)
			r.Current.Version = "1.0.0" // edge wants 1.1.0
			out[id] = r
		}
		if mod != nil {
			mod(out)
		}
		return out
	}
	changing := func(ids ...string) func(map[string]*Record) {
		return func(rs map[string]*Record) {
			for _, id := range ids {
				rs[id].Change = &Change{Kind: Upgrade, From: "1.0.0", To: "1.1.0", Rollout: "invoicing@1.1.0"}
			}
		}
	}
	passed := func(n int) map[string]*Rollout {
		ro := &Rollout{Package: "invoicing", Version: "1.1.0"}
		ro.Succeeded = []string{"a", "b", "c", "d"}[:n]
		return map[string]*Rollout{ro.Key(): ro}
	}
	for _, tc := range []struct {
		name     string
		recs     map[string]*Record
		rollouts map[string]*Rollout
		id       string
		allow    bool
		reason   string
	}{
		{"the first merchant is the canary", records(nil), nil, "a", true, ""},
		{"the others wait for the canary", records(nil), nil, "b", false, "waiting for the canary"},
		{"while the canary changes, nobody else starts", records(changing("a")), nil, "b", false, "waiting for the canary"},
		{"the canary in flight may go on", records(changing("a")), nil, "a", true, ""},
		{"after the canary passed, slots open", records(nil), passed(1), "b", true, ""},
		{"two in flight fill max_parallel 2", records(changing("b", "c")), passed(1), "d", false, "waiting for a rollout slot"},
		{"a halted rollout lets nobody through", records(nil), map[string]*Rollout{"invoicing@1.1.0": {Package: "invoicing", Version: "1.1.0", Halted: true, Reason: "canary a failed"}}, "b", false, "halted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Gate(fl, tc.recs, tc.rollouts, fl.Merchants[tc.id], "1.1.0")
			if v.Allow != tc.allow || !strings.Contains(v.Reason, tc.reason) {
				t.Errorf("Gate(%s) = %+v; want allow %v, reason with %q", tc.id, v, tc.allow, tc.reason)
			}
		})
	}
}

// TestRolloutHalts covers the halting rule: a canary's failure, or
// max_failures failures later on.
func TestRolloutHalts(t *testing.T) {
	fl := loadFleet(t, `rollout {
  canary       = 1
  max_parallel = 2
  max_failures = 2
}`)
	ro := &Rollout{Package: "invoicing", Version: "1.1.0"}
	if ro.NoteGateResult(fl, "a", false, "", now) || len(ro.Succeeded) != 1 {
		t.Fatalf("a success halted or was not counted: %+v", ro)
	}
	if ro.NoteGateResult(fl, "b", false, "unhealthy", now) {
		t.Fatal("one failure of two allowed halted the rollout")
	}
	if !ro.NoteGateResult(fl, "c", false, "unhealthy", now) || !strings.Contains(ro.Reason, "2 merchants failed") {
		t.Fatalf("the second failure did not halt: %+v", ro)
	}
	canary := &Rollout{Package: "invoicing", Version: "1.2.0"}
	if !canary.NoteGateResult(fl, "a", true, "unhealthy", now) || !strings.Contains(canary.Reason, "canary a failed") {
		t.Fatalf("a canary's failure did not halt: %+v", canary)
	}
	_ = spec.DefaultRollout
}
