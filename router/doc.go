// Package router makes nginx route every merchant by its domains (and/or a
// path prefix) to the port of its routed instance, checks every change
// with nginx before it takes effect, and tells when a change is live, so
// that an instance can be replaced without a failed request.
//
// # Modes
//
// Managed: steward runs its own nginx. Config.Prefix holds everything of
// it: nginx.conf (the whole configuration, rendered by steward), nginx.pid,
// master.json (the master's pid and start time), logs/error.log, temp/,
// pages/ (maintenance pages) and control.sock. nginx runs with "daemon on",
// in its own session, so it outlives steward like the merchants. When
// steward runs as root, nginx's master runs as root and its workers as
// Config.User (nginx creates temp/'s directories owned by that user; the
// prefix must be traversable by it, which Ensure checks); otherwise there
// is no user directive and everything runs as steward's user.
//
// System: steward owns Config.IncludeFile, which the operator's nginx.conf
// includes inside its http block, plus a pages directory; it runs
// Config.TestCommand and Config.ReloadCommand and never signals the
// operator's nginx itself.
//
// # Rendering
//
// Render turns []Route into the configuration, deterministically (sorted
// by merchant and domain; the same routes give the same bytes). Names are
// validated, never escaped (CheckMerchant, CheckDomain, CheckPathPrefix):
// nothing a spec says can add nginx syntax. Per merchant: an upstream
// 127.0.0.1:PORT with HTTP/1.1 keepalive (the Connection header cleared
// unless the client upgrades, idle connections closed after 4 s, before
// common application servers close them); a server for its domains; a
// location "= /prefix" and "^~ /prefix/" on the default server for its
// path prefix (the path passed on unchanged); Host, X-Real-IP,
// X-Forwarded-For and X-Forwarded-Proto set; proxy timeouts from Config.
// The default server answers 404 to unknown hosts. A merchant in
// maintenance (Route.Maintenance, or no Upstream) answers 503 with
// Retry-After and its maintenance page (an html/template: the embedded
// default, or Config.MaintenancePage, with the route's Reason); nginx's
// own 502 and 504 (the instance refuses connections or does not answer,
// as between a crash and its restart) become the same 503 page. An
// application's own error answers pass through unchanged.
//
// Every rendering ends with a control server, on Config.Control (a unix
// socket by default, or a loopback port), whose /__steward/generation
// answers the generation of the configuration (a hash of the rest of it)
// and the pid of the worker that answered. It is how the router knows
// which configuration nginx serves.
//
// # Applying
//
// Apply renders; when the result equals the live file and nginx serves
// its generation, nothing happens. Otherwise the candidate is written
// beside the live file and tested (managed: nginx -t -p PREFIX -c
// CANDIDATE; system: the candidate is renamed over the live file, the test
// command runs, and the previous file is renamed back if it fails), the
// candidate is renamed over the live file (atomically), maintenance pages
// are written, and nginx reloads (managed: SIGHUP to the recorded master,
// or a start when none runs). Apply returns once the control server
// answers the new generation and every worker of the replaced
// configuration has stopped accepting connections: nginx's master starts
// the new workers and only about 100 ms later tells the old ones to stop
// accepting, and a worker retitles itself "worker process is shutting
// down" right before it closes its listening sockets. A live file that no
// test passed (steward killed in the middle) is tested before any reload.
// A refused candidate returns a *TestError with the test's output and
// leaves the live file and nginx as they were. Status keeps the record:
// generation, reloads, starts, the last error and when.
//
// Run applies the table kept by Set (whole table), Put and Delete (one
// merchant) at once when idle and at most every Config.MinInterval, so a
// rollout of hundreds of merchants reloads a few times; Sync returns once
// every change made before it is live, or the error of the apply that
// covered it. Run also restarts a managed nginx that died (checked every
// Config.CheckInterval).
//
// # Supervision
//
// Ensure adopts the nginx that nginx.pid names only if it is an nginx
// master leading its own session, running Config.Binary with this
// prefix's nginx.conf; from then on it is known by pid and start time,
// and nothing is signalled whose start time differs. Otherwise it starts
// one. Workers of a master that was killed keep serving and keep the
// listening sockets; Ensure finds them (the killed master's session,
// nginx's executable and title, started after it), sends them SIGQUIT so
// that they close their listening sockets and finish their requests, and
// SIGKILL after 5 s. Stop stops master and workers by their recorded
// identities.
//
// # Zero-downtime switch
//
// To replace a merchant's instance: start the new one on another port and
// health-gate it; Put the route with the new port; Sync; Drain the old
// port; stop the old instance. Drain returns once no TCP connection to or
// from 127.0.0.1:PORT is left (from /proc/net/tcp and tcp6) and the
// workers that were shutting down when it was called have exited (or 5 s
// have passed without any connection to the port): such a worker may
// still hold a request whose headers are arriving, which it will send to
// the old port. Drain counts every connection to the port, so close kept
// connections of your own (health probes) first.
//
// # nginx versions
//
// nginx 1.19.5 or later (-e for the startup error log); upstream
// keepalive_timeout needs 1.15.3, worker_shutdown_timeout 1.11.11.
// Debian bookworm's nginx-light or nginx (1.22) fits. Linux only: /proc
// is read for processes and connections.
package router
