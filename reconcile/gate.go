package reconcile

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"steward/spec"
)

// A rollout moves every merchant whose specs ask for one package version
// onto it: first `canary` merchants, then at most `max_parallel` at a
// time. A canary that fails its health gate halts the rollout, and so do
// max_failures failures (at least one) later on. A halted rollout leaves
// the remaining merchants on their version until the specs ask for
// another version. Gate is the one place this is decided, for the daemon
// (one merchant at a time) and for apply (wave by wave) alike.

// GateVerdict is the rollout gate's answer for one merchant.
type GateVerdict struct {
	// Allow: the merchant may start its change now.
	Allow bool
	// Halted: the rollout is halted; Reason says why.
	Halted bool
	// Canary: the change is in the rollout's canary wave.
	Canary bool
	// Rollout is RolloutKey(package, version).
	Rollout string
	// Reason says why the merchant waits (or why the rollout halted).
	Reason string
}

// RolloutSettings is the rollout block that applies to package pkg.
func RolloutSettings(fl *spec.Fleet, pkg string) spec.Rollout {
	r := fl.Rollout
	if p := fl.Packages[pkg]; p != nil && p.Rollout != nil {
		r = *p.Rollout
	}
	r.MaxParallel = max(r.MaxParallel, 1)
	return r
}

// HaltAfter is the number of failures that halts a rollout.
func HaltAfter(r spec.Rollout) int { return max(r.MaxFailures, 1) }

// Gate decides whether merchant m may start changing to version now:
// canaries first (merchants in id order), then at most max_parallel
// changes in flight; nothing once the rollout halted. A change already in
// flight always may go on.
func Gate(fl *spec.Fleet, records map[string]*Record, rollouts map[string]*Rollout, m *spec.Merchant, version string) GateVerdict {
	key := RolloutKey(m.Package, version)
	v := GateVerdict{Rollout: key}
	ro := rollouts[key]
	if ro != nil && ro.Halted {
		v.Halted = true
		v.Reason = fmt.Sprintf("rollout of %s %s halted: %s; to go on, set the specs to another version and apply (asking for %s again later starts its rollout afresh)", ro.Package, ro.Version, ro.Reason, ro.Version)
		return v
	}
	if rec := records[m.ID]; rec != nil && rec.Change != nil && rec.Change.To == version && rec.Change.Rollout == key {
		v.Allow, v.Canary = true, rec.Change.Canary
		return v
	}
	r := RolloutSettings(fl, m.Package)
	succeeded := 0
	if ro != nil {
		succeeded = len(ro.Succeeded)
	}
	pending, inflight := rolloutMembers(fl, records, m.Package, version)
	if canaries := r.Canary - succeeded; canaries > 0 {
		pos := sort.SearchStrings(pending, m.ID)
		if inflight < canaries && pos < len(pending) && pending[pos] == m.ID && pos < canaries-inflight {
			v.Allow, v.Canary = true, true
			return v
		}
		v.Reason = fmt.Sprintf("waiting for the canary of %s %s (%d of %d passed)", m.Package, version, succeeded, r.Canary)
		return v
	}
	if inflight >= r.MaxParallel {
		v.Reason = fmt.Sprintf("waiting for a rollout slot: %d of %d merchants are changing to %s", inflight, r.MaxParallel, version)
		return v
	}
	v.Allow = true
	return v
}

// rolloutMembers lists, in id order, the merchants that want version of
// pkg and have yet to start changing to it, and counts the changes to it
// in flight. A change in flight holds its slot whatever its merchant's
// specs say now (they may have moved on mid-change), and also while it is
// suspended.
func rolloutMembers(fl *spec.Fleet, records map[string]*Record, pkg, version string) (pending []string, inflight int) {
	key := RolloutKey(pkg, version)
	for _, rec := range records {
		if rec.Change != nil && rec.Change.Rollout == key && !rec.Change.Undo {
			inflight++
		}
	}
	for id, m := range fl.Merchants {
		rec := records[id]
		if rec == nil || m.Package != pkg || m.Version != version || rec.Change != nil || rec.Suspended {
			continue
		}
		if rec.Pin != nil && rec.Pin.ForSpec == m.Version {
			continue
		}
		if rec.Current.Version != "" && rec.Current.Version != version && !slices.Contains(rec.BadVersions, version) {
			pending = append(pending, id)
		}
	}
	sort.Strings(pending)
	return pending, inflight
}

// NoteGateResult records on the rollout ro that merchant id passed (err ==
// nil) or failed its gate, and halts the rollout when the failure is a
// canary's or the failures reach max_failures. It reports whether this
// result halted it.
func (ro *Rollout) NoteGateResult(fl *spec.Fleet, id string, canary bool, failure string, now time.Time) (halted bool) {
	if failure == "" {
		if !slices.Contains(ro.Succeeded, id) {
			ro.Succeeded = append(ro.Succeeded, id)
		}
		return false
	}
	if !slices.Contains(ro.Failed, id) {
		ro.Failed = append(ro.Failed, id)
	}
	if ro.Halted {
		return false
	}
	r := RolloutSettings(fl, ro.Package)
	switch {
	case canary:
		ro.Halted, ro.Reason = true, fmt.Sprintf("canary %s failed: %s", id, failure)
	case len(ro.Failed) >= HaltAfter(r):
		ro.Halted, ro.Reason = true, fmt.Sprintf("%d %s failed (max_failures %d); last: %s: %s", len(ro.Failed), merchantsWord(len(ro.Failed)), r.MaxFailures, id, failure)
	}
	if ro.Halted {
		ro.HaltedAt = now
	}
	return ro.Halted
}

func merchantsWord(n int) string {
	if n == 1 {
		return "merchant"
	}
	return "merchants"
}
