package probe

import "time"

// WithConnectTimeout returns dsn (URL or key=value form) with
// connect_timeout set to timeout in whole seconds (rounded up, at least 1)
// unless dsn already sets one. Errors never quote dsn.
func WithConnectTimeout(dsn string, timeout time.Duration) (string, error) {
	return withConnectTimeout(dsn, timeout)
}

// RedactError returns err's text with every DSN (RedactDSN) and the
// password of dsn removed, as an error that does not wrap err, so that the
// original text cannot be reached through errors.Unwrap. It returns nil for
// a nil err.
func RedactError(err error, dsn string) error {
	return redactError(err, dsn)
}
