package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFile(t *testing.T) {
	for _, durable := range []bool{false, true} {
		dir := t.TempDir()
		p := filepath.Join(dir, "spec.hcl")
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := WriteFile(p, []byte("new"), 0o644, durable); err != nil {
			t.Fatalf("durable=%v: %v", durable, err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != "new" {
			t.Fatalf("durable=%v: read %q, %v; want new", durable, got, err)
		}
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("durable=%v: mode %v, %v; want 0644", durable, fi.Mode(), err)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Fatalf("durable=%v: %d entries left in the directory, want only the file", durable, len(entries))
		}
	}
}

// A write that cannot finish leaves the old file and no temporary file.
func TestWriteFileFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state")
	if err := os.Mkdir(p, 0o755); err != nil { // rename over a non-empty directory fails
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "keep"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o600, true); err == nil {
		t.Fatal("WriteFile over a non-empty directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), TempPrefix) {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(p, "keep")); err != nil {
		t.Fatalf("old content lost: %v", err)
	}
}
