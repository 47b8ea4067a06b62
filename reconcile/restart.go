package reconcile

import (
	"time"

	"steward/state"
)

// RestartPolicy decides how soon a merchant whose process died is started
// again. A process that had been up for at least ResetAfter is restarted at
// once and its failure count starts over. Each fast failure (a process that
// died sooner) increments the count; the first is restarted at once, later
// ones after Initial doubling up to Max.
type RestartPolicy struct {
	Initial    time.Duration
	Max        time.Duration
	ResetAfter time.Duration
}

// DefaultRestartPolicy backs off from 1s to 5m and forgives after 10m up.
var DefaultRestartPolicy = RestartPolicy{Initial: time.Second, Max: 5 * time.Minute, ResetAfter: 10 * time.Minute}

// Delay is the wait before the next start after failures consecutive fast
// failures.
func (p RestartPolicy) Delay(failures int) time.Duration {
	if failures <= 1 {
		return 0
	}
	d := p.Initial
	for i := 2; i < failures; i++ {
		d *= 2
		if d >= p.Max {
			return p.Max
		}
	}
	return min(d, p.Max)
}

// NoteExit records in rec that its process was found dead at now (exitedAt
// is when it died, if known, else now), and schedules the next attempt.
// It returns true when the merchant is now in a crash loop (backing off).
func (p RestartPolicy) NoteExit(rec *state.Merchant, exitedAt, now time.Time) bool {
	if exitedAt.IsZero() {
		exitedAt = now
	}
	if !rec.StartedAt.IsZero() && exitedAt.Sub(rec.StartedAt) >= p.ResetAfter {
		rec.Failures = 0
	}
	rec.Failures++
	rec.Died = true
	rec.ExitedAt = exitedAt
	rec.PID, rec.StartTime = 0, 0
	delay := p.Delay(rec.Failures)
	rec.NextAttempt = exitedAt.Add(delay)
	if delay > 0 {
		rec.Phase = PhaseCrashLoop
		return true
	}
	rec.Phase = PhaseExited
	return false
}

// Merchant phases as shown in status.
const (
	PhaseRunning  = "running"
	PhaseStarting = "starting"
	PhaseStopped  = "stopped"
	// PhaseExited is a process that died and is due to be started again.
	PhaseExited    = "exited"
	PhaseCrashLoop = "crashloop"
	PhaseHeld      = "held"
	PhaseSuspended = "suspended"
	PhaseFailed    = "failed"
)
