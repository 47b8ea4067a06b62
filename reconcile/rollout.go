package reconcile

import (
	"fmt"
	"sort"

	"steward/spec"
	"steward/state"
)

// A rollout moves every merchant that wants one package version onto it:
// first `canary` merchants, then waves of `max_parallel`. A canary that
// fails its health gate halts the rollout, and so do max_failures failures
// (at least one) in later waves. A halted rollout leaves the remaining
// merchants on their version until the specs ask for another version.

// rolloutSettings is the rollout block that applies to pkg.
func rolloutSettings(fl *spec.Fleet, pkg string) spec.Rollout {
	r := fl.Rollout
	if p := fl.Packages[pkg]; p != nil && p.Rollout != nil {
		r = *p.Rollout
	}
	if r.MaxParallel < 1 {
		r.MaxParallel = 1
	}
	return r
}

// HaltAfter is the number of failures that halts a rollout.
func HaltAfter(r spec.Rollout) int { return max(r.MaxFailures, 1) }

func rolloutKey(a Action) string {
	pkg := ""
	if a.After != nil {
		pkg = a.After.Package
	}
	return state.RolloutKey(pkg, a.After.Version)
}

// gateRollouts assigns waves to the version changes among actions and
// turns the ones a halted rollout blocks into holds.
func gateRollouts(d Desired, st *state.State, actions []Action) []Action {
	groups := map[string][]int{}
	for i, a := range actions {
		if a.Kind == Upgrade || a.Kind == Rollback {
			k := rolloutKey(a)
			groups[k] = append(groups[k], i)
		}
	}
	for key, idx := range groups {
		first := actions[idx[0]]
		r := rolloutSettings(d.Fleet, first.After.Package)
		ro := st.Rollouts[key]
		if ro != nil && ro.Halted {
			for _, i := range idx {
				actions[i] = haltedHold(actions[i], ro)
			}
			continue
		}
		succeeded := 0
		if ro != nil {
			succeeded = len(ro.Succeeded)
		}
		canaries := max(r.Canary-succeeded, 0)
		// Interrupted changes finish first, then merchants in id order.
		sort.SliceStable(idx, func(a, b int) bool { return actions[idx[a]].Merchant < actions[idx[b]].Merchant })
		for n, i := range idx {
			actions[i].Rollout = key
			if n >= canaries {
				actions[i].Wave = 1 + (n-canaries)/r.MaxParallel
			}
		}
	}
	return actions
}

func haltedHold(a Action, ro *state.Rollout) Action {
	return Action{Kind: Hold, Merchant: a.Merchant, Before: a.Before, After: a.After, Rollout: state.RolloutKey(ro.Package, ro.Version),
		Reason: fmt.Sprintf("rollout of %s %s halted: %s; change the version in the specs (or pin this merchant) to go on", ro.Package, ro.Version, ro.Reason)}
}

// gateOne decides whether one merchant's version change may start now, as
// the daemon reconciles merchants one at a time: canaries go first, then
// at most max_parallel merchants change at once.
func gateOne(d Desired, st *state.State, a Action) Action {
	key := rolloutKey(a)
	a.Rollout = key
	ro := st.Rollouts[key]
	if ro != nil && ro.Halted {
		return haltedHold(a, ro)
	}
	rec := st.Merchants[a.Merchant]
	if rec != nil && rec.UpgradeFrom != "" && rec.Version == a.After.Version {
		return a // an interrupted change always finishes
	}
	r := rolloutSettings(d.Fleet, a.After.Package)
	succeeded := 0
	if ro != nil {
		succeeded = len(ro.Succeeded)
	}
	// Who else wants this version, and who is changing right now?
	var pending []string
	inflight := 0
	for id, m := range d.Fleet.Merchants {
		other := st.Merchants[id]
		if other == nil || m.Package != a.After.Package || WantedVersion(m, other) != a.After.Version {
			continue
		}
		if other.UpgradeFrom != "" && other.Version == a.After.Version {
			inflight++
			continue
		}
		if other.Version != a.After.Version && !contains(other.BadVersions, a.After.Version) {
			pending = append(pending, id)
		}
	}
	sort.Strings(pending)
	if canaries := r.Canary - succeeded; canaries > 0 {
		pos := sort.SearchStrings(pending, a.Merchant)
		if pos >= canaries-inflight || inflight >= canaries {
			return Action{Kind: Hold, Merchant: a.Merchant, Before: a.Before, After: a.After, Rollout: key,
				Reason: fmt.Sprintf("waiting for the canary of %s %s (%d of %d passed)", a.After.Package, a.After.Version, succeeded, r.Canary)}
		}
		return a
	}
	if inflight >= r.MaxParallel {
		return Action{Kind: Hold, Merchant: a.Merchant, Before: a.Before, After: a.After, Rollout: key,
			Reason: fmt.Sprintf("waiting for a rollout slot: %d of %d merchants are changing to %s", inflight, r.MaxParallel, a.After.Version)}
	}
	a.Wave = 1
	return a
}
