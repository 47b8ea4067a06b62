package reconcile

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"steward/spec"
)

// Secrets the generated fleets carry; no plan may show them.
const (
	secretPW  = "pw-Zq81xT"
	secretEnv = "key-Hh27Lw"
)

// genWorld draws a fleet, records, rollouts and an observation.
func genWorld(t *rapid.T) Input {
	n := rapid.IntRange(1, 10).Draw(t, "merchants")
	canary := rapid.IntRange(0, 2).Draw(t, "canary")
	parallel := rapid.IntRange(1, 3).Draw(t, "max_parallel")
	var b strings.Builder
	fmt.Fprintf(&b, `database "db-east" { dsn = "postgres://u:%s@east/postgres" }
database "db-west" { dsn = "postgres://u:%s@west/postgres" }
package "invoicing" {
  source = "/pkgs"
  channel "stable" { version = "1.0.0" }
  channel "edge"   { version = "1.1.0" }
}
rollout {
  canary       = %d
  max_parallel = %d
}
`, secretPW, secretPW, canary, parallel)
	fixed := map[int]bool{}
	for i := range n {
		fmt.Fprintf(&b, "merchant \"m%02d\" {\n  package = \"invoicing\"\n", i)
		switch rapid.IntRange(0, 2).Draw(t, "versioning") {
		case 0:
			b.WriteString("  channel = \"stable\"\n")
		case 1:
			b.WriteString("  channel = \"edge\"\n")
		default:
			fmt.Fprintf(&b, "  version = %q\n", rapid.SampledFrom([]string{"0.9.0", "1.0.0", "1.1.0"}).Draw(t, "pin"))
		}
		fmt.Fprintf(&b, "  database = %q\n", rapid.SampledFrom([]string{"db-east", "db-west"}).Draw(t, "db"))
		if rapid.Bool().Draw(t, "fixed port") {
			p := rapid.IntRange(8100, 8139).Draw(t, "port")
			if !fixed[p] {
				fixed[p] = true
				fmt.Fprintf(&b, "  port = %d\n", p)
			}
		}
		if rapid.Bool().Draw(t, "secret env") {
			fmt.Fprintf(&b, "  env = { API_KEY = %q }\n  sensitive = [\"API_KEY\"]\n", secretEnv)
		}
		if rapid.Bool().Draw(t, "on_database_down stop") {
			b.WriteString("  on_database_down = \"stop\"\n")
		}
		b.WriteString("}\n")
	}
	fl, _, diags := spec.Load([]spec.Source{{Name: "fleet.hcl", Dir: "/specs", Bytes: []byte(b.String())}}, spec.Options{Ports: spec.PortRange{Low: 8100, High: 8199}})
	if diags.HasErrors() {
		t.Fatalf("generated fleet does not load: %s\n%s", diags, b.String())
	}
	in := Input{Fleet: fl, Ports: spec.PortRange{Low: 8100, High: 8199}, Records: map[string]*Record{}, Rollouts: map[string]*Rollout{},
		Policy: DefaultRestartPolicy, Key: testKey, Jitter: rapid.Float64Range(0, 0.999).Draw(t, "jitter"),
		Reserved: map[int]string{8199: "steward's API"},
		Redact: func(s string) string {
			return strings.NewReplacer(secretPW, spec.Redacted, secretEnv, spec.Redacted).Replace(s)
		},
		Obs: Observation{Now: now, Merchants: map[string]MerchantObs{}, Databases: map[string]DBState{}, BusyPorts: map[int]bool{}}}
	for _, db := range []string{"db-east", "db-west"} {
		if s := rapid.SampledFrom([]DBState{DBUp, DBUp, DBDown, DBUnknown}).Draw(t, "db state"); s != DBUnknown {
			in.Obs.Databases[db] = s
		}
	}
	for p := 8100; p < 8199; p++ {
		if rapid.IntRange(0, 20).Draw(t, "busy") == 0 {
			in.Obs.BusyPorts[p] = true
		}
	}
	versions := []string{"0.9.0", "1.0.0", "1.1.0"}
	usedPorts := map[int]bool{}
	for i := range n + 2 {
		id := fmt.Sprintf("m%02d", i)
		if !rapid.Bool().Draw(t, "has record") {
			continue
		}
		port := 8140 + i
		if m := fl.Merchants[id]; m != nil && m.Port != 0 && !usedPorts[m.Port] {
			port = m.Port
		}
		usedPorts[port] = true
		r := &Record{ID: id, Rev: uint64(rapid.IntRange(1, 50).Draw(t, "rev")), Package: "invoicing", Port: port,
			Current: Instance{Port: port, Version: rapid.SampledFrom(versions).Draw(t, "current"), StartedAt: now.Add(-time.Hour)}}
		if m := fl.Merchants[id]; m != nil {
			r.Applied = Fingerprints(fl, m, testKey)
		}
		mo := MerchantObs{}
		switch rapid.IntRange(0, 3).Draw(t, "process") {
		case 1:
			r.Current.PID, r.Current.StartTime, mo.Current = 1000+i, 7, Alive
		case 2:
			r.Current.PID, r.Current.StartTime, mo.Current = 1000+i, 7, Dead
		case 3:
			r.Current.PID, r.Current.StartTime, mo.Current = 1000+i, 7, Unknown
		}
		r.GoodVersions = []string{r.Current.Version}
		if rapid.IntRange(0, 4).Draw(t, "bad") == 0 {
			r.BadVersions = []string{rapid.SampledFrom(versions).Draw(t, "bad version")}
		}
		if rapid.IntRange(0, 5).Draw(t, "suspended") == 0 {
			r.Suspended = true
		}
		if rapid.IntRange(0, 5).Draw(t, "pinned") == 0 {
			if m := fl.Merchants[id]; m != nil {
				r.Pin = &Pin{Version: rapid.SampledFrom(versions).Draw(t, "pin version"), ForSpec: m.Version}
			}
		}
		if rapid.IntRange(0, 4).Draw(t, "changing") == 0 {
			to := rapid.SampledFrom(versions).Draw(t, "change to")
			r.Change = &Change{Kind: Upgrade, From: r.Current.Version, To: to, Rollout: RolloutKey("invoicing", to), Step: StepStarted}
		}
		if rapid.IntRange(0, 4).Draw(t, "unhealthy") == 0 && mo.Current == Alive {
			mo.Unhealthy = "health: timed out " + secretEnv // a reason may quote anything
		}
		in.Records[id] = r
		in.Obs.Merchants[id] = mo
	}
	for _, v := range versions {
		if rapid.IntRange(0, 3).Draw(t, "rollout") == 0 {
			ro := &Rollout{Package: "invoicing", Version: v, Halted: rapid.Bool().Draw(t, "halted"), Reason: "canary failed"}
			in.Rollouts[ro.Key()] = ro
		}
	}
	return in
}

// dbBlocked reports whether merchant id's database keeps it from starting.
func dbBlocked(in Input, id string) bool {
	m := in.Fleet.Merchants[id]
	return m != nil && m.Database != "" && m.OnDatabaseDown != spec.OnDBDownIgnore && in.Obs.Databases[m.Database] != DBUp
}

func checkSafety(t *rapid.T, in Input, acts []Action, fleetWide bool) {
	seen := map[string]bool{}
	ports := map[int]string{}
	for id, r := range in.Records {
		for _, p := range []int{r.Port, r.AltPort} {
			if p != 0 {
				ports[p] = id
			}
		}
	}
	for _, a := range acts {
		if seen[a.Merchant] {
			t.Fatalf("two actions for %s", a.Merchant)
		}
		seen[a.Merchant] = true
		obs := in.Obs.Merchants[a.Merchant]
		rec := in.Records[a.Merchant]
		starts := a.Kind == Create || a.Kind == Start
		// Never a second process: nothing starts a merchant that runs, or
		// of which /proc could not say whether it runs.
		if starts && (obs.Current == Alive || obs.Current == Unknown) {
			t.Fatalf("%s %s while its process is %s", a.Kind, a.Merchant, obs.Current)
		}
		if rec != nil && rec.Suspended && a.Kind.IsChange() {
			t.Fatalf("%s of suspended %s", a.Kind, a.Merchant)
		}
		// Never a start (or a change that stops a process) while the
		// database is down or unchecked.
		if dbBlocked(in, a.Merchant) && a.Kind.IsChange() && a.Kind != Stop && a.Kind != Delete {
			t.Fatalf("%s of %s while its database is %s", a.Kind, a.Merchant, in.Obs.Databases[in.Fleet.Merchants[a.Merchant].Database])
		}
		// Never a version change past a halted rollout.
		if a.Kind.IsVersionChange() && !a.Resume && a.After != nil {
			if ro := in.Rollouts[RolloutKey("invoicing", a.After.Version)]; ro != nil && ro.Halted && a.Rollout != "" {
				t.Fatalf("%s of %s to %s past its halted rollout", a.Kind, a.Merchant, a.After.Version)
			}
			if rec != nil && contains(rec.BadVersions, a.After.Version) && (rec.Pin == nil || rec.Pin.Version != a.After.Version) {
				t.Fatalf("%s of %s to %s, which failed on it", a.Kind, a.Merchant, a.After.Version)
			}
		}
		// Never two merchants on one port.
		if a.Kind == Create && a.After != nil {
			p := a.After.Port
			if owner, ok := ports[p]; ok && owner != a.Merchant {
				t.Fatalf("%s created on port %d, which %s has", a.Merchant, p, owner)
			}
			if _, ok := in.Reserved[p]; ok {
				t.Fatalf("%s created on the reserved port %d", a.Merchant, p)
			}
			if m := in.Fleet.Merchants[a.Merchant]; in.Obs.BusyPorts[p] && m.Port == 0 {
				t.Fatalf("%s assigned the busy port %d", a.Merchant, p)
			}
			if fleetWide {
				// One plan assigns distinct ports; the daemon's decisions
				// are made one at a time, each reserving its port.
				ports[p] = a.Merchant
			}
		}
		// Secrets never in a plan.
		for _, s := range []string{a.Reason, snap(a.Before), snap(a.After)} {
			if strings.Contains(s, secretPW) || strings.Contains(s, secretEnv) {
				t.Fatalf("a plan field of %s shows a secret: %q", a.Merchant, s)
			}
		}
	}
}

func snap(s *Snapshot) string {
	if s == nil {
		return ""
	}
	return fmt.Sprintf("%+v", *s)
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func TestPropDiffIsSafe(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genWorld(t)
		p := Diff(in)
		checkSafety(t, in, p.Actions, true)
	})
}

// TestPropDecideIsSafe checks the daemon's one-merchant decisions, and
// that they never let more merchants change than max_parallel (beyond the
// changes already in flight) or start a change before the canaries.
func TestPropDecideIsSafe(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genWorld(t)
		var acts []Action
		for id := range in.Records {
			if d := Decide(in, id); d.Action != nil {
				acts = append(acts, *d.Action)
			}
		}
		for id := range in.Fleet.Merchants {
			if in.Records[id] == nil {
				if d := Decide(in, id); d.Action != nil {
					acts = append(acts, *d.Action)
				}
			}
		}
		checkSafety(t, in, acts, false)
		r := RolloutSettings(in.Fleet, "invoicing")
		for _, v := range []string{"0.9.0", "1.0.0", "1.1.0"} {
			key := RolloutKey("invoicing", v)
			inflight := 0
			for _, rec := range in.Records {
				if rec.Change != nil && rec.Change.Rollout == key && !rec.Change.Undo {
					inflight++
				}
			}
			started := 0
			for _, a := range acts {
				if a.Kind.IsVersionChange() && !a.Resume && a.Rollout == key {
					started++
				}
			}
			succeeded := 0
			if ro := in.Rollouts[key]; ro != nil {
				succeeded = len(ro.Succeeded)
			}
			limit := r.MaxParallel
			if c := r.Canary - succeeded; c > 0 {
				limit = c
			}
			// Each decision is made alone; together they may go one over a
			// limit only in the sense that each would be allowed on its own
			// (the engine takes the gate and records the change in one step).
			if started > 0 && inflight >= limit {
				t.Fatalf("%d changes to %s started with %d already in flight (limit %d)", started, v, inflight, limit)
			}
		}
	})
}

// TestPropDecideLeavesInputAlone checks purity: the planner changes none
// of its input's records.
func TestPropDecideLeavesInputAlone(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genWorld(t)
		before := map[string]string{}
		for id, r := range in.Records {
			before[id] = fmt.Sprintf("%+v %+v %+v %+v", *r, r.Change, r.Pin, r.Candidate)
		}
		Diff(in)
		for id := range in.Records {
			Decide(in, id)
		}
		for id, r := range in.Records {
			if after := fmt.Sprintf("%+v %+v %+v %+v", *r, r.Change, r.Pin, r.Candidate); after != before[id] {
				t.Fatalf("the planner changed %s's record:\n%s\n%s", id, before[id], after)
			}
		}
	})
}
