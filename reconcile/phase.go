package reconcile

import (
	"slices"
	"time"
)

// Phase is where a merchant is in its life, as steward last left it. The
// transitions below are the only code that sets it.
type Phase string

// Phases. Status shows them as merchant states (an exited merchant that is
// due to start again shows as stopped).
const (
	PhaseRunning   Phase = "running"
	PhaseStarting  Phase = "starting"
	PhaseStopped   Phase = "stopped"
	PhaseExited    Phase = "exited" // died; due to be started again
	PhaseCrashLoop Phase = "crashloop"
	PhaseHeld      Phase = "held" // waiting on its database
	PhaseFailed    Phase = "failed"
)

// NoteExit records that the process of inst died at exitedAt (now when
// unknown) and schedules the next start by the restart policy; jitter in
// [0, 1) spreads the delay (see RestartPolicy.Delay). It reports whether
// the merchant now backs off (crash loop). A death while the merchant is
// held for its database does not count towards the crash loop.
func (r *Record) NoteExit(p RestartPolicy, exitedAt, now time.Time, jitter float64, held bool) (crashLoop bool) {
	if exitedAt.IsZero() {
		exitedAt = now
	}
	started := r.Current.StartedAt
	r.Current.PID, r.Current.StartTime, r.Current.Routed = 0, 0, false
	r.Died = true
	r.ExitedAt = exitedAt
	if held {
		r.Phase = PhaseHeld
		r.NextAttempt = time.Time{}
		return false
	}
	if !started.IsZero() && exitedAt.Sub(started) >= p.ResetAfter {
		r.Failures = 0
	}
	r.Failures++
	delay := p.Delay(r.Failures, jitter)
	r.NextAttempt = exitedAt.Add(delay)
	if delay > 0 {
		r.Phase = PhaseCrashLoop
		return true
	}
	r.Phase = PhaseExited
	return false
}

// NoteCandidateExit records that the candidate instance died.
func (r *Record) NoteCandidateExit() { r.Candidate = nil }

// NoteStarted records a process started (or adopted) as the merchant's
// current instance, launched with applied settings from spec revision.
// A start after the process died counts as a restart.
func (r *Record) NoteStarted(inst Instance, applied map[string]string, revision string) {
	r.Current = inst
	r.Applied = applied
	r.Revision = revision
	r.Phase = PhaseStarting
	r.NextAttempt = time.Time{}
	if r.Died {
		r.Restarts++
	}
	r.Died = false
}

// NoteCandidate records a candidate instance started beside (or in place
// of) the current one.
func (r *Record) NoteCandidate(inst Instance) {
	c := inst
	r.Candidate = &c
}

// Promote makes the candidate the current instance: it passed its gate.
// The replaced instance's settings give way to applied.
func (r *Record) Promote(applied map[string]string, revision string) {
	if r.Candidate == nil {
		return
	}
	r.Current = *r.Candidate
	r.Candidate = nil
	r.Applied = applied
	r.Revision = revision
	r.Phase = PhaseRunning
	r.NextAttempt = time.Time{}
	if r.Died {
		r.Restarts++
	}
	r.Died = false
}

// NoteReady records that the current instance answers. version is marked
// good unless a change is still gating it.
func (r *Record) NoteReady() {
	r.Phase = PhaseRunning
	if r.Change == nil && r.Current.Version != "" {
		r.markGood(r.Current.Version)
	}
}

// NoteGood records that version passed its gate on this merchant.
func (r *Record) NoteGood(version string) { r.markGood(version) }

// NoteBad records that version failed its gate on this merchant.
func (r *Record) NoteBad(version string) { r.markBad(version) }

// NoteStopped records that steward stopped the current instance on
// purpose (not a death: no restart is counted).
func (r *Record) NoteStopped(now time.Time) {
	r.Current.PID, r.Current.StartTime, r.Current.Routed = 0, 0, false
	r.Phase = PhaseStopped
	r.Died = false
	r.ExitedAt = now
}

// NoteHeld records that the merchant, which has no process, waits for its
// database.
func (r *Record) NoteHeld() {
	if !r.Current.Running() {
		r.Phase = PhaseHeld
	}
}

// NoteFailed records an action that failed, and its class.
func (r *Record) NoteFailed(msg string, class Class) {
	r.LastError, r.ErrorClass = msg, class
	if !r.Current.Running() && class == Stalled {
		r.Phase = PhaseFailed
	}
}

// NoteSucceeded clears the last error after an action that succeeded.
func (r *Record) NoteSucceeded() { r.LastError, r.ErrorClass = "", "" }

// forgetOldBadVersions drops the bad marks of versions the specs no longer
// ask for: a spec change to another version ends them, and asking for a
// version again tries it again.
func (r *Record) forgetOldBadVersions(specVersion string) bool {
	n := len(r.BadVersions)
	r.BadVersions = slices.DeleteFunc(r.BadVersions, func(v string) bool { return v != specVersion })
	if len(r.BadVersions) == 0 {
		r.BadVersions = nil
	}
	return len(r.BadVersions) != n
}
