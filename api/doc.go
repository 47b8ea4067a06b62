// Package api is the daemon's HTTP API and its client.
//
//	GET  /v1/status                 the status document (as `steward status -o json`)
//	GET  /v1/plan                   the plan the daemon would apply now
//	POST /v1/apply                  apply the plan made at {"serial", "revision"}; progress streams as JSON lines
//	POST /v1/sync                   reload the specs now (git: fetch first); usable as a git webhook
//	POST /v1/merchants/ID/restart   restart one merchant
//	POST /v1/merchants/ID/suspend   leave one merchant exactly as it is
//	POST /v1/merchants/ID/resume    hand it back to the reconcile loop
//	GET  /metrics                   Prometheus metrics
//
// Writes need "Authorization: Bearer TOKEN" when a token is configured.
// /v1/sync also accepts a GitHub-style X-Hub-Signature-256 HMAC of the body
// when a webhook secret is configured; a request that carries a signature
// that does not verify is refused even if it also has a token.
package api
