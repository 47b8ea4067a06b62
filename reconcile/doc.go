// Package reconcile turns desired state (a validated spec.Fleet) and observed
// state (state records checked against live processes and databases) into a
// Plan, and carries plans out.
//
// Diff is a pure function of Desired, Observed and the time passed in
// Observed.Now: it does no I/O and never reads the clock, so every decision
// can be tested exactly. A Plan is an ordered list of typed Actions, each
// with the merchant it concerns, the before and after it moves between, and
// a Reason for people. The Reason explains; it never drives a decision.
//
// Nothing in this package prints. Rendering belongs to the CLI, which is told
// about progress through the Hooks interface.
package reconcile
