package source

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"steward/internal/gittest"
	"steward/spec"
)

// TestMain lets the test binary be the fetch process (see FetchCommand).
func TestMain(m *testing.M) {
	if os.Getenv("STEWARD_TEST_FETCH_PROCESS") == "1" {
		os.Exit(RunFetchProcess(os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// A fetch runs in a process of its own, which is killed when it takes more
// memory than allowed: a commit of a huge file of zeros (which a push of
// a few hundred kilobytes carries) is refused without the memory being
// this process's, and the last good commit stays.
func TestFetchProcessBoundsMemory(t *testing.T) {
	t.Setenv("STEWARD_TEST_FETCH_PROCESS", "1")
	r := gittest.New(t)
	good := r.Commit("specs", map[string]string{"merchants/east.hcl": "merchant \"acme\" {}\n"})
	g := NewGit(spec.GitConfig{URL: r.Path, Dir: "merchants"}, filepath.Join(t.TempDir(), "git"),
		GitOptions{Timeout: 60 * time.Second, FetchCommand: []string{os.Args[0]}, FetchMemory: 64 << 20})
	if snap := load(t, g); snap.Revision != good {
		t.Fatalf("revision %s, want %s (fetched by the fetch process)", snap.Revision, good)
	}

	zeros := filepath.Join(t.TempDir(), "zeros")
	f, err := os.Create(zeros)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(200 << 20); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	f.Close()
	big := r.BlobOfFile(zeros)
	tree := r.RawTree(
		gittest.RawEntry{Mode: "100644", Name: "big.bin", Hash: big},
		gittest.RawEntry{Mode: "40000", Name: "merchants", Hash: r.TreeOf(good, "merchants")},
	)
	r.CommitTree(tree, "a huge file")

	_, err = g.Sync(t.Context())
	if err == nil || !strings.Contains(err.Error(), "limits.git_fetch_memory") {
		t.Fatalf("Sync of a commit of a 200 MB file with a 64 MB fetch memory: %v; want the memory limit named", err)
	}
	if packs, _ := filepath.Glob(filepath.Join(g.repoDir(), "objects", "pack", "tmp_*")); len(packs) > 0 {
		t.Errorf("the killed fetch left %v", packs)
	}
	snap, err := g.Load(t.Context())
	if err != nil || snap.Revision != good {
		t.Fatalf("after the refused fetch Load = %v, %v; want the last good commit %s", snap, err, good)
	}
}
