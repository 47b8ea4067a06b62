//go:build tools

// This file pins dependencies that packages in this module are about to use,
// so that `go mod tidy` keeps them while the code that imports them lands.
package steward

import (
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/go-git/go-git/v5"
	_ "github.com/hashicorp/hcl/v2"
	_ "github.com/lib/pq"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/zclconf/go-cty/cty"
	_ "golang.org/x/sys/unix"
)
