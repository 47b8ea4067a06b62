// Package dbadmin is what steward does to merchant databases: create them
// (Ensure), read their schema version (SchemaVersion), serialise migrations
// with an advisory lock (Lock), and back them up and restore them with
// pg_dump and pg_restore (Dump, ListBackups, Prune, Restore).
//
// Each merchant has its own database on a PostgreSQL server. Functions that
// create databases take the server's DSN (which names some database on the
// server, such as postgres); the others take the merchant's DATABASE_URL.
// Both URL and key=value DSNs are accepted, as lib/pq reads them.
//
// Every function bounds its work by its context, and connect_timeout
// (ConnectTimeout, or less when the context ends sooner) is added to every
// DSN that lacks one. DSNs are secrets: no error contains a password (every
// message passes through dsn.Redact, and the DSN's password is removed
// even outside a DSN), and pg_dump and pg_restore get the connection through
// PG* environment variables, never on their command line. Errors wrap
// context.Canceled or context.DeadlineExceeded when the context ended the
// work, and nothing else of the driver's.
package dbadmin
