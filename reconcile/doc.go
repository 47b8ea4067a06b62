// Package reconcile is steward's planner: the pure half of the core. It
// decides, from the desired state (a validated spec.Fleet), the stored
// records and one read-only Observation, what to do about each merchant.
// It does no I/O, reads no clock (Observation.Now is the time) and starts
// no goroutine, so every decision is tested exactly; a structural test
// keeps it that way.
//
// It owns:
//
//   - the per-merchant Record (applied settings, current and candidate
//     instances, restart state, good and bad versions, the rollback Pin,
//     a Change in progress with its Step) and the Rollout record, which
//     package state stores;
//   - the Observation (what /proc, the database checks and the health
//     monitor said), which the engine's Observer builds;
//   - Decide (one merchant, as the daemon works) and Diff (the whole fleet,
//     as plan and apply show it), which return typed Actions, each with a
//     Reason for people, and the record changes the observation alone
//     implies (a death noted, a pin ended);
//   - the version policy (Target): the one place that says which version a
//     merchant runs; every start goes through it;
//   - the one rollout gate (Gate): canaries, then max_parallel in flight,
//     nothing after a halt;
//   - the restart policy (RestartPolicy, jitter passed in), the Phases and
//     their transitions (the Note* methods of Record), and the error
//     Classes the loop acts on: stalled (a person must act), waiting (a
//     dependency), transient (back off and retry).
//
// Nothing here prints or renders: the CLI and the API render plans.
package reconcile
