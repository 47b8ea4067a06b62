package main

import (
	"os/exec"
	"strings"
	"testing"
)

// steward starts one log shim per merchant start, so the program must stay
// cheap to start: statically linked (no cgo, hence no dynamic loader and no
// libc initialisation) and small. Packages that bring cgo in (net and
// os/user with the cgo resolver and NSS) must not creep into its imports.
func TestStaysFreeOfCgoAndNetwork(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		switch pkg {
		case "net", "os/user", "runtime/cgo", "net/http", "plugin":
			t.Errorf("steward-logshim depends on %s, which makes every merchant start slower; keep it out of steward/runtime/logshim", pkg)
		}
	}
}
