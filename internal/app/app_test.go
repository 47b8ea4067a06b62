package app

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestShimArgv(t *testing.T) {
	tests := []struct {
		name  string
		setup func(dir string) // what sits next to steward
		want  func(dir, exe string) []string
	}{
		{"no steward-logshim: steward itself", func(string) {},
			func(_, exe string) []string { return []string{exe, "__logshim"} }},
		{"steward-logshim next to steward", func(dir string) { os.WriteFile(filepath.Join(dir, LogShimName), []byte("x"), 0o755) },
			func(dir, _ string) []string { return []string{filepath.Join(dir, LogShimName)} }},
		{"not executable: ignored", func(dir string) { os.WriteFile(filepath.Join(dir, LogShimName), []byte("x"), 0o644) },
			func(_, exe string) []string { return []string{exe, "__logshim"} }},
		{"a directory: ignored", func(dir string) { os.Mkdir(filepath.Join(dir, LogShimName), 0o755) },
			func(_, exe string) []string { return []string{exe, "__logshim"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			exe := filepath.Join(dir, "steward")
			tt.setup(dir)
			if got, want := ShimArgv(exe), tt.want(dir, exe); !slices.Equal(got, want) {
				t.Errorf("ShimArgv = %q, want %q", got, want)
			}
		})
	}
}
