package main

import "context"

func notYet(name string) func(context.Context, *env, []string) int {
	return func(_ context.Context, e *env, _ []string) int {
		return e.errorf("steward %s is not available in this build yet", name)
	}
}

var (
	cmdApply    = notYet("apply")
	cmdRun      = notYet("run")
	cmdStatus   = notYet("status")
	cmdHistory  = notYet("history")
	cmdLogs     = notYet("logs")
	cmdRestart  = notYet("restart")
	cmdSuspend  = notYet("suspend")
	cmdResume   = notYet("resume")
	cmdRollback = notYet("rollback")
)
