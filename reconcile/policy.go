package reconcile

import (
	"fmt"
	"slices"
	"time"

	"steward/spec"
)

// RestartPolicy decides how soon a merchant whose process died starts
// again. A process that had been up for at least ResetAfter is restarted
// at once and its failure count starts over. Each fast failure (a process
// that died sooner) counts; the first is restarted at once, later ones
// after Initial doubling up to Max, spread by ±Spread so that merchants
// that failed together do not all start again in the same instant.
type RestartPolicy struct {
	Initial    time.Duration
	Max        time.Duration
	ResetAfter time.Duration
	// Spread is the jitter fraction (0.1 = ±10%).
	Spread float64
}

// DefaultRestartPolicy backs off from 1s to 5m and forgives after 10m up.
var DefaultRestartPolicy = RestartPolicy{Initial: time.Second, Max: 5 * time.Minute, ResetAfter: 10 * time.Minute, Spread: 0.1}

// Delay is the wait before the next start after failures consecutive fast
// failures. jitter in [0, 1) picks where in the spread it lands (0.5: none).
func (p RestartPolicy) Delay(failures int, jitter float64) time.Duration {
	if failures <= 1 || p.Initial <= 0 {
		return 0
	}
	d := p.Initial
	for i := 2; i < failures && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	if p.Spread > 0 {
		d += time.Duration(float64(d) * p.Spread * (2*jitter - 1))
	}
	return min(max(d, 0), p.Max)
}

// Target is the version merchant m must run now, by the one version policy
// every start and change goes through, and why when it is not the specs'
// version:
//
//   - a "steward rollback" pin for the version the specs ask for wins;
//   - a new merchant starts the specs' version;
//   - a version that failed on this merchant is never launched again: it
//     stays on its last good version until the specs ask for another;
//   - a halted rollout, or one whose gate is closed to this merchant now,
//     keeps it on its last good version;
//   - otherwise the specs' version.
//
// gate is the rollout gate's verdict for m changing to its specs' version
// (see Gate); it is consulted only when the versions differ.
func Target(m *spec.Merchant, rec *Record, gate GateVerdict) (version, why string) {
	if rec != nil && rec.Pin != nil && rec.Pin.ForSpec == m.Version {
		return rec.Pin.Version, fmt.Sprintf("pinned to %s by steward rollback while the specs ask for %s", rec.Pin.Version, m.Version)
	}
	if rec == nil || rec.Current.Version == "" || rec.Current.Version == m.Version {
		if rec != nil && rec.Current.Version == m.Version && slices.Contains(rec.BadVersions, m.Version) {
			// It runs the bad version (a resumed change that failed and had
			// nothing to return to): the only version it has.
			return m.Version, ""
		}
		return m.Version, ""
	}
	last := rec.lastGood()
	switch {
	case slices.Contains(rec.BadVersions, m.Version):
		return last, fmt.Sprintf("version %s failed on this merchant (see its history); it stays on %s until the specs ask for another version", m.Version, last)
	case gate.Halted:
		return last, gate.Reason
	case !gate.Allow:
		return last, gate.Reason
	}
	return m.Version, ""
}

// versionFrom says where the specs' version comes from.
func versionFrom(m *spec.Merchant) string {
	if m.Channel != "" {
		return "channel " + m.Channel
	}
	return "pinned"
}

// PolicyOf is the restart policy of a fleet: DefaultRestartPolicy with the
// fleet's restart block applied.
func PolicyOf(fl *spec.Fleet) RestartPolicy {
	p := DefaultRestartPolicy
	if fl == nil {
		return p
	}
	if r := fl.Restart; r.Initial > 0 || r.Max > 0 || r.ResetAfter > 0 {
		p.Initial, p.Max, p.ResetAfter = r.Initial, r.Max, r.ResetAfter
	}
	return p
}
