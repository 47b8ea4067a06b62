package main

import (
	"context"
	"fmt"
	goruntime "runtime"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "0.1.0-dev"

func cmdVersion(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("version", "", "Prints steward's version and the Go version it was built with.")
	if _, code, ok := parse(fs, args); !ok {
		return code
	}
	fmt.Fprintf(e.stdout, "steward %s (%s %s/%s)\n", version, goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
	return exitOK
}
