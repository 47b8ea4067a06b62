// Package spec reads steward's two kinds of HCL files: the host config
// (steward.hcl: where specs come from, where state lives, runtime, API,
// daemon, router and limits settings) and the fleet specs (merchant,
// database, package, rollout, defaults, backup and restart blocks). It
// parses, validates and applies defaults; what the settings do is up to
// the packages that use them (a router's nginx, the restart backoff, a
// merchant's domains and path prefix are routing and policy, not parsing).
//
// Every problem is reported as an hcl.Diagnostic with the file, line and
// column it concerns, and all problems are reported at once: callers get the
// full hcl.Diagnostics, never a flattened string. A fleet that has any error
// diagnostic must not be acted upon.
//
// Every file is checked against Limits before HCL parses it (CheckSource):
// a file over the size limit or nested deeper than the depth limit is
// refused with a diagnostic naming the file, the limit and the host config
// setting that raises it, so that no input can exhaust the parser's stack
// or memory. Files are read with ReadFile, which refuses anything but a
// regular file and reads at most the size limit.
//
// Secrets never leave this package in the clear by accident: database DSNs
// and sensitive env values are held as Secret, whose String, GoString,
// MarshalJSON and LogValue all redact. Values produced by the env() function
// are sensitive automatically; env keys listed in a merchant's `sensitive`
// attribute are too. Code that must use the real value calls Secret.Reveal.
//
// Secrecy follows the value, not the attribute. A value from env() that
// lands in a plain field (version, channel, db_name, stop_grace, a health
// path, ...) marks that field in Merchant.SensitiveFields (and
// Package.SensitiveFields); (*Fleet).Redactor and (*Host).Redactor know
// every secret value of what was loaded (env() values and defaults, DSNs and
// their passwords, sensitive env values, each merchant's DATABASE_URL, the
// API token and webhook secret, git credentials) and replace it wherever it
// appears in a text. The diagnostics Load and LoadHost return are already
// passed through them. Source lines shown beside diagnostics go through a
// Redactor and SnippetLineSafe, which keeps out lines that may hold a secret
// nobody knows (a file that did not parse). Fingerprints of secrets are
// keyed (Secret.FingerprintWith): the key is random and kept with the state.
// The API token and webhook secret are DeferredSecrets, evaluated when the
// API is served or called, so that commands that only read work while the
// variable they come from is unset.
package spec
