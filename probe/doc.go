// Package probe checks whether merchant processes and their databases
// answer.
//
// Prober checks a merchant once: an HTTP GET of a health path expecting a
// status, or a plain TCP connect. A Session probes one merchant repeatedly
// over a kept connection. Requests are written and answers read directly on
// the socket (http.ReadResponse parses them), without net/http's client.
//
// Monitor probes many merchants periodically: one scheduler goroutine with a
// min-heap of due times and a single timer, a bounded pool of workers, a
// Session per target, and a per-target policy (failure threshold, start
// grace, generation) that calls OnUnhealthy once per unhealthy spell.
// Probes due close together start in one wake-up (up to a tenth of the
// interval early), which is what keeps hundreds of targets cheap. HTTP probes time out on a stopped or
// wedged process; TCP probes cannot see one (the kernel accepts into the
// listen backlog), so prefer an HTTP health path.
//
// DBWatcher watches a few database servers, one goroutine each, with
// hysteresis (DownAfter failures, UpAfter successes) and flap damping, and
// calls OnChange on each transition. CheckDB is one check: a fresh
// connection (never a pooled one), ping and SELECT 1, bounded by a timeout
// at the socket level. DSNs are secrets: they are never logged, and every
// error text passes through package internal/dsn.
package probe
