// Package dashboard is the daemon's web page, served by package api at /
// when api.Server.UI is set:
//
//	GET /                    the fleet: merchants per state, the fleet table (filter
//	                         ?state=S&q=TEXT, order ?sort=COLUMN&desc=1), databases
//	                         with their reachability over 24 hours, rollouts
//	GET /merchants/ID        one merchant: its facts, actions, rollout, a chart of
//	                         exits, restarts and unhealthy verdicts, its log, its history
//	GET /assets/NAME         the embedded stylesheet, script and icon
//
// Pages are rendered on the server with html/template from the status
// document and the history (Source), so they are complete without
// JavaScript; the script (assets/app.js) keeps them current through GET
// /v1/events, filters and sorts in the browser, tails the log and sends
// the actions through the API with the write token, which the user enters
// on the page and which is kept in the tab's sessionStorage only. Nothing
// is loaded from anywhere but the daemon (the Content-Security-Policy
// says so), and the pages show only what the API's documents hold for a
// reader without the token: spec_error is cut to its first line.
//
// The chart counts, per time bin, the events whose action is "exited" or
// "restart" (exits and restarts) and those whose action is "unhealthy" or
// whose reason starts with "health" (unhealthy verdicts). A database's
// reachability is drawn from its "database up" and "database down"
// events.
package dashboard
