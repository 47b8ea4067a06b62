package runtime

import (
	"io"

	"steward/runtime/logshim"
)

// RunLogShim is the log shim's main (package logshim's Run); it returns the
// exit code. args are the arguments after Runtime.ShimArgv (see ShimArgs):
// -dir DIR -max BYTES -keep N. It copies stdin to DIR/current.log, rotating
// by size at line boundaries, until EOF, that is until the merchant process
// and every child that inherited its stdout or stderr have exited.
func RunLogShim(args []string, stdin io.Reader) int { return logshim.Run(args, stdin) }

// ShimArgs returns the arguments Start appends to Runtime.ShimArgv, and
// RunLogShim parses: -dir DIR -max BYTES -keep N.
func ShimArgs(logDir string, maxBytes int64, keep int) []string {
	return logshim.Args(logDir, maxBytes, keep)
}

// lockRotation takes a log directory's rotation lock (see
// logshim.LockRotation).
func lockRotation(dir string, how int) (unlock func()) { return logshim.LockRotation(dir, how) }
