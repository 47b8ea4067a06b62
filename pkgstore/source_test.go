package pkgstore

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestSourceDir(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"/srv/packages", "/srv/packages", ""},
		{"../packages", "../packages", ""},
		{"file:///srv/packages", "/srv/packages", ""},
		{"file://localhost/srv/packages", "/srv/packages", ""},
		{"file://../packages", "../packages", ""},
		{"file:///srv/my%20packages", "/srv/my packages", ""},
		{"https://example.com/packages", "", `package source https://example.com/packages is an HTTP URL, not a directory`},
		{"https://user:secret@example.com/packages?token=t", "", `package source https://example.com/packages is an HTTP URL`},
		{"ftp://example.com/packages", "", `scheme "ftp" is not supported`},
		{"", "", "empty package source"},
		{"file://", "", "invalid file URL"},
	}
	for _, tt := range tests {
		got, err := SourceDir(tt.in)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("SourceDir(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestAvailableVersions(t *testing.T) {
	src := t.TempDir()
	for _, f := range []string{
		"invoicing-1.0.0.tar.gz", "invoicing-1.0.0.tar.gz.sha256",
		"invoicing-1.10.0.tar.gz", "invoicing-1.2.0.tar.gz",
		"invoicing-tools-1.0.0.tar.gz", // another package
		"invoicing-.tar.gz", "invoicing-1.3.0.zip", "README",
	} {
		if err := os.WriteFile(filepath.Join(src, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := AvailableVersions("file://"+src, "invoicing")
	if want := []string{"1.0.0", "1.2.0", "1.10.0"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("AvailableVersions = %q, %v; want %q", got, err, want)
	}
	if _, err := AvailableVersions(filepath.Join(src, "nothere"), "invoicing"); err == nil {
		t.Error("AvailableVersions of a missing directory succeeded")
	}
}
