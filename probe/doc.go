// Package probe checks whether merchant processes and their databases
// answer.
//
// Prober checks a merchant once: an HTTP GET of a health path expecting a
// status, or a plain TCP connect. One Prober, with one shared HTTP client,
// serves every merchant.
//
// Monitor probes many merchants periodically: one scheduler goroutine with a
// min-heap of due times and a single timer, a bounded pool of workers, and a
// per-target policy (failure threshold, start grace, generation) that calls
// OnUnhealthy once per unhealthy spell. HTTP probes time out on a stopped or
// wedged process; TCP probes cannot see one (the kernel accepts into the
// listen backlog), so prefer an HTTP health path.
package probe
