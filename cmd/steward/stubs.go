package main

import "context"

func cmdRollback(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("rollback", " MERCHANT", `
Returns a merchant to its previous good version (or to -to VERSION), and
keeps it there until the specs ask for a different version.`)
	configFlag(fs)
	fs.String("to", "", "roll back to `VERSION` instead of the previous good one")
	if _, code, ok := parse(fs, args); !ok {
		return code
	}
	return e.errorf("steward rollback is not available in this build yet; pin the merchant with version = \"X.Y.Z\" and apply")
}
