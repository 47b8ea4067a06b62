package reconcile

import (
	"strings"
	"testing"

	"steward/spec"
	"steward/state"
)

// TestGateOne covers the daemon's one-merchant-at-a-time rollout gate:
// canaries first, then at most max_parallel changing at once, nothing
// after a halt.
func TestGateOne(t *testing.T) {
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
	d := Desired{Fleet: fl, Ports: spec.PortRange{Low: 8100, High: 8199}}
	newState := func(mod func(st *state.State)) *state.State {
		st := state.New("l")
		for i, id := range []string{"a", "b", "c", "d"} {
			r := applied(fl, id, 100+i, 8100+i)
			r.Version = "1.0.0" // edge wants 1.1.0
			st.Merchants[id] = r
		}
		if mod != nil {
			mod(st)
		}
		return st
	}
	upgrading := func(ids ...string) func(*state.State) {
		return func(st *state.State) {
			for _, id := range ids {
				st.Merchants[id].Version, st.Merchants[id].UpgradeFrom = "1.1.0", "1.0.0"
			}
		}
	}
	passed := func(n int, extra func(*state.State)) func(*state.State) {
		return func(st *state.State) {
			ro := &state.Rollout{Package: "invoicing", Version: "1.1.0"}
			for _, id := range []string{"a", "b", "c", "d"}[:n] {
				ro.Succeeded = append(ro.Succeeded, id)
				st.Merchants[id].Version = "1.1.0"
			}
			st.Rollouts[state.RolloutKey("invoicing", "1.1.0")] = ro
			if extra != nil {
				extra(st)
			}
		}
	}
	tests := []struct {
		name string
		st   *state.State
		id   string
		want string // "go" or a fragment of the hold reason
	}{
		{"the first merchant is the canary", newState(nil), "a", "go"},
		{"others wait for the canary", newState(nil), "b", "waiting for the canary"},
		{"while the canary is changing nobody else goes", newState(upgrading("a")), "b", "waiting for the canary"},
		{"after the canary two may change", newState(passed(1, nil)), "b", "go"},
		{"a third waits for a slot", newState(passed(1, upgrading("b", "c"))), "d", "waiting for a rollout slot: 2 of 2"},
		{"an interrupted change always finishes", newState(passed(1, upgrading("b", "c", "d"))), "d", "go"},
		{"a halted rollout holds everyone", newState(func(st *state.State) {
			st.Rollouts[state.RolloutKey("invoicing", "1.1.0")] = &state.Rollout{Package: "invoicing", Version: "1.1.0", Halted: true, Reason: "canary a failed"}
		}), "b", "halted: canary a failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Observed{Now: now, State: tt.st, Running: map[string]bool{tt.id: true}}
			a, ok := DiffOne(d, o, tt.id)
			if !ok {
				t.Fatal("no action")
			}
			switch {
			case tt.want == "go" && a.Kind != Upgrade:
				t.Errorf("got %s: %s, want the upgrade to go", a.Kind, a.Reason)
			case tt.want != "go" && (a.Kind != Hold || !strings.Contains(a.Reason, tt.want)):
				t.Errorf("got %s: %s, want a hold with %q", a.Kind, a.Reason, tt.want)
			}
		})
	}
}
