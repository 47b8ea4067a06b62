// Package api is the daemon's HTTP API and its client.
//
//	GET  /v1/status                      the status document (as `steward status -o json`)
//	GET  /v1/access                      {"token_required", "write"}: what the caller's credentials allow
//	GET  /v1/plan                        the plan the daemon would apply now
//	POST /v1/apply                       apply the plan made at {"serial", "revision", "digest"}; progress streams as JSON lines
//	POST /v1/sync                        reload the specs now (git: fetch first); usable as a git webhook
//	GET  /v1/merchants/ID/history?n=N    the merchant's last N events (default 50, at most 10000), newest last:
//	                                     {"merchant", "events"}, as `steward history -o json`
//	GET  /v1/merchants/ID/logs?n=N&grep=RE&follow=1
//	                                     the last N lines of its log (default 50) matching RE (RE2 syntax,
//	                                     at most 1024 bytes), as text/plain; with follow=1 new lines follow
//	                                     until the client goes (token)
//	POST /v1/merchants/ID/restart        restart one merchant; answers when it serves again (token)
//	POST /v1/merchants/ID/suspend        leave one merchant exactly as it is (token)
//	POST /v1/merchants/ID/resume         hand it back to the reconcile loop (token)
//	POST /v1/merchants/ID/rollback       body {"to": "1.2.0"} or none (the previous good version), and
//	                                     "restore_backup": true to restore the backup taken while it ran;
//	                                     answers {"merchant", "version"} once it serves that version (token)
//	GET  /v1/events[?merchant=ID]        server-sent events, see below
//	GET  /metrics                        Prometheus metrics
//	GET  /, /merchants/ID, /assets/...   the dashboard, when Server.UI is set (package api/dashboard)
//
// # Event stream
//
// GET /v1/events is a text/event-stream for browsers (EventSource) and
// scripts (curl -N). Each event is one "event:" line and one "data:" line
// of compact JSON:
//
//	event: status    the whole status document: first at once, then whenever it
//	                 changes (changes closer together than 250ms are folded into one)
//	event: history   one recorded event (the objects of the history document),
//	                 as it is recorded; with ?merchant=ID only that merchant's
//
// Comment lines (": keep-alive") come every 15 seconds. A client that falls
// 64 events behind is disconnected and should reconnect (EventSource does,
// after the stream's "retry" of 2 seconds) and start from the fresh
// document it is sent.
//
// # Authorisation
//
// When the host config sets api.token, writes and log reads need
// "Authorization: Bearer TOKEN" (401 otherwise): logs may hold customer
// data. Status, plan, history and the event stream stay open, but a reader
// without the token gets spec_error cut to its first line
// ("file:line:col: error: summary"), never the spec lines it quotes.
// /v1/sync also accepts a GitHub-style X-Hub-Signature-256 HMAC of the body
// when a webhook secret is configured; a request that carries a signature
// that does not verify is refused even if it also has a token. Writes a
// browser sends from another origin are refused (403).
//
// # Input and limits
//
// Merchant ids in paths are checked (1 to 63 lower-case letters, digits
// and '-', not starting with '-') before anything is looked up: 400
// otherwise. Request bodies are bounded (Limits.MaxBody, default 1 MiB,
// the host config's limits.api_body_size: 413 beyond), and a JSON body's
// nesting is checked before it is decoded (Limits.MaxJSONDepth: 400
// beyond); unknown fields and trailing data are refused.
//
// Server.Serve bounds what clients can take of the daemon: headers must
// arrive within ReadHeaderTimeout and the whole request within
// ReadTimeout, each write of an answer within WriteTimeout (streams get a
// new deadline per event), idle kept-alive connections close after
// IdleTimeout, and at most MaxConns connections are served at once (a
// quarter of the soft RLIMIT_NOFILE, at most 256, by default), so that
// clients that send slowly or never finish cannot take the descriptors the
// daemon needs for its processes, probes and state. At the cap a new
// connection closes the one that has waited longest without a request in
// progress, so that such clients cannot keep others out either. At most MaxStreams
// event streams and log follows are open at once (503 beyond).
//
// Errors answer {"error": "..."}: 400 bad input, 401 token needed, 404
// unknown merchant (ErrNotFound), 409 stale plan (ErrStale), 413 body too
// large, 422 refused in the merchant's present state (ErrRefused).
package api
