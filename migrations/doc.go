// Package migrations holds the SQL migrations of the PostgreSQL state
// backend, embedded into the binary. The backend applies them in order and
// records the applied version in the database.
package migrations
