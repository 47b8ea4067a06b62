package main

import "context"

func notYet(name string) func(context.Context, *env, []string) int {
	return func(_ context.Context, e *env, _ []string) int {
		return e.errorf("steward %s is not available in this build yet", name)
	}
}

var (
	cmdRollback = notYet("rollback")
)
