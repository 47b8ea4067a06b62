package source

import (
	"context"
	"strings"
	"testing"
	"time"

	"steward/internal/gittest"
	"steward/spec"
)

// A spec file in a commit over the size limit fails Load with its path in
// the repository and the limit; the cached commit is not taken for good.
func TestGitRefusesLargeSpecFiles(t *testing.T) {
	r := gittest.New(t)
	r.Commit("Big", map[string]string{
		"merchants/a.hcl":   "merchant \"a\" {}\n",
		"merchants/big.hcl": strings.Repeat("#\n", 600),
	})
	g := NewGit(spec.GitConfig{URL: r.Path, Ref: "main", Dir: "merchants"}, t.TempDir(), GitOptions{Timeout: 20 * time.Second, MaxFileSize: 1000})
	_, err := g.Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), "merchants/big.hcl is 1200 bytes, over the limit of 1000 bytes") {
		t.Fatalf("Load: %v, want the file and the limit named", err)
	}
	r.Commit("Smaller", map[string]string{"merchants/big.hcl": "# fine\n"})
	if _, err := g.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Load(context.Background()); err != nil {
		t.Fatalf("after the fix: %v", err)
	}
}
