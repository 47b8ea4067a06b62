package reconcile

import "errors"

// Class says what the reconcile loop does about an error.
type Class string

const (
	// Stalled: a person must act (a bad spec or package, a port held by a
	// foreign process). Retrying changes nothing: wait for a spec change
	// (and retry rarely, at each resync).
	Stalled Class = "stalled"
	// Waiting: a dependency is not there yet (the database is down or not
	// checked yet). Requeue later, without counting a failure.
	Waiting Class = "waiting"
	// Transient: anything else (a flaky network, a busy machine). Back off
	// and retry.
	Transient Class = "transient"
)

// ClassError is an error with its class.
type ClassError struct {
	Class Class
	Err   error
}

func (e *ClassError) Error() string { return e.Err.Error() }
func (e *ClassError) Unwrap() error { return e.Err }

// WithClass marks err with class c (nil stays nil).
func WithClass(c Class, err error) error {
	if err == nil {
		return nil
	}
	return &ClassError{Class: c, Err: err}
}

// ClassOf is the class of err: the outermost class marked on it, else
// Transient. A nil error has no class.
func ClassOf(err error) Class {
	if err == nil {
		return ""
	}
	var ce *ClassError
	if errors.As(err, &ce) {
		return ce.Class
	}
	return Transient
}
