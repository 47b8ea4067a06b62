package reconcile

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPlannerIsPure fails when the planner imports anything that does I/O,
// reads the clock or starts goroutines, or any steward package but spec:
// the planner decides from its input alone, so that every decision can be
// tested exactly.
func TestPlannerIsPure(t *testing.T) {
	allowed := map[string]bool{
		"steward/spec": true,
		// The standard library's non-I/O packages.
		"cmp": true, "crypto/sha256": true, "encoding/hex": true, "errors": true, "fmt": true, "maps": true,
		"slices": true, "sort": true, "strconv": true, "strings": true, "time": true,
	}
	forbiddenCalls := []string{"time.Now", "time.Since", "time.Until", "time.Sleep", "time.After", "time.NewTimer", "time.NewTicker", "time.Tick", "time.AfterFunc"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[p] {
				t.Errorf("%s imports %s: the planner may import spec and the standard library's non-I/O packages only", name, p)
			}
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, call := range forbiddenCalls {
			if strings.Contains(string(src), call) {
				t.Errorf("%s calls %s: the planner reads no clock (Observation.Now is the time)", name, call)
			}
		}
		if strings.Contains(string(src), "go func") || strings.Contains(string(src), "\tgo ") {
			t.Errorf("%s starts a goroutine", name)
		}
	}
}
