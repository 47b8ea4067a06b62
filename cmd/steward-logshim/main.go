// Command steward-logshim writes one merchant's output to its log files,
// rotating them by size. steward starts one per merchant, in the merchant's
// own session, reading the merchant's stdout and stderr from a pipe; it
// exits when every process holding the pipe's write end has exited.
//
//	steward-logshim -dir LOGDIR -max BYTES -keep N
//
// It is a separate, small program so that starting it costs a few
// milliseconds of CPU and a few megabytes of memory: the steward binary can
// run the same shim (steward __logshim) when this one is missing, but
// starting all of steward for it costs several times as much, once per
// merchant. See package steward/runtime/logshim for the behaviour.
package main

import (
	"os"

	"steward/runtime/logshim"
)

func main() {
	os.Exit(logshim.Run(os.Args[1:], os.Stdin))
}
