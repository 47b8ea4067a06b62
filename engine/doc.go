// Package engine is the impure half of steward's core: it carries out what
// the planner (package reconcile) decides, against the machine, and
// records it (package state).
//
//   - The Observer (Engine.Observe) is the only place an observation is
//     built. It only reads: /proc, the records, database checks, health
//     verdicts and installed releases. Plan, status and GET requests go no
//     further, so reading never writes.
//   - The executor (Engine.Execute) carries out one action as an ordered
//     chain of named steps (resolve, install, schema, start, ready, gate,
//     route, commit), recording each step of a version change in the
//     merchant's record so that a steward killed at any point finishes or
//     undoes it on its next start. It decides no policy: the version a
//     merchant runs comes from reconcile.Target, the gate from
//     reconcile.Gate.
//   - The controller (Engine.Reconcile) converges one merchant: observe,
//     decide, save what the observation alone changes, execute. Its error
//     carries a class (reconcile.ClassOf) that says what to do next.
//   - Apply carries out a fleet-wide plan in waves, for `steward apply`.
//   - The operations people ask for by name (Restart, SetSuspended,
//     Rollback, Destroy) are one implementation, used by the CLI directly
//     and through the daemon's API.
//   - The Daemon's event sources (exit watchers, the health monitor, the
//     database watcher, the spec source, the resync timer, the API) only
//     put merchant ids on one work queue; workers reconcile one merchant at
//     a time.
//
// Every record write is a compare-and-swap on that one record; a write
// that fails fails its action visibly (history, status, a metric), and
// history events that cannot be written are kept and retried.
package engine
