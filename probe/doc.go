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
//
// DBWatcher watches a few database servers, one goroutine each, with
// hysteresis (DownAfter failures, UpAfter successes) and flap damping, and
// calls OnChange on each transition. CheckDB is one check: a fresh
// connection (never a pooled one), ping and SELECT 1, bounded by a timeout
// at the socket level. DSNs are secrets: they are never logged, and every
// error text passes through RedactDSN.
package probe
