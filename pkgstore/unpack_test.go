package pkgstore

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestUnpackRefuses(t *testing.T) {
	file := func(name string) entry { return entry{name: name, body: "x"} }
	tests := []struct {
		name    string
		entries []entry
		limits  limits
		entry   string // the entry the error must name
		reason  string // a substring of the reason
	}{
		{"absolute path", []entry{file("/etc/passwd")}, limits{}, "/etc/passwd", "absolute path"},
		{"dotdot", []entry{file("../evil")}, limits{}, "../evil", `".." component`},
		{"dotdot inside", []entry{file("a/../../evil")}, limits{}, "a/../../evil", `".." component`},
		{"dotdot harmless", []entry{file("a/../b")}, limits{}, "a/../b", `".." component`},
		{"backslash", []entry{file(`a\..\b`)}, limits{}, `a\..\b`, "backslash"},
		{"symlink absolute", []entry{{name: "l", typ: tar.TypeSymlink, link: "/etc"}}, limits{}, "l", "is absolute"},
		{"symlink escapes", []entry{{name: "l", typ: tar.TypeSymlink, link: "../outside"}}, limits{}, "l", "escapes the release root"},
		{"symlink escapes from subdir", []entry{{name: "a/b/l", typ: tar.TypeSymlink, link: "../../../x"}}, limits{}, "a/b/l", "escapes the release root"},
		{"symlink inner dotdot", []entry{
			{name: "a", typ: tar.TypeSymlink, link: "."},
			{name: "l", typ: tar.TypeSymlink, link: "a/../x"},
		}, limits{}, "l", `".." may only lead`},
		{"symlink empty", []entry{{name: "l", typ: tar.TypeSymlink, link: ""}}, limits{}, "l", "is empty"},
		{"write through symlink", []entry{
			{name: "l", typ: tar.TypeSymlink, link: "."},
			file("l/f"),
		}, limits{}, "l/f", `parent "l" is a symlink`},
		{"symlink then dir through it", []entry{
			{name: "d", typ: tar.TypeSymlink, link: "sub"},
			{name: "d/x/", typ: tar.TypeDir},
		}, limits{}, "d/x/", `parent "d" is a symlink`},
		{"entry beneath file", []entry{file("f"), file("f/g")}, limits{}, "f/g", `parent "f" is a file`},
		{"hardlink escapes", []entry{{name: "h", typ: tar.TypeLink, link: "../x"}}, limits{}, "h", `".." component`},
		{"hardlink absolute", []entry{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}, limits{}, "h", "absolute path"},
		{"hardlink to missing", []entry{{name: "h", typ: tar.TypeLink, link: "nothere"}}, limits{}, "h", "not a regular file earlier"},
		{"hardlink to symlink", []entry{
			{name: "l", typ: tar.TypeSymlink, link: "f"},
			{name: "h", typ: tar.TypeLink, link: "l"},
		}, limits{}, "h", "not a regular file earlier"},
		{"hardlink to dir", []entry{
			{name: "d/", typ: tar.TypeDir},
			{name: "h", typ: tar.TypeLink, link: "d"},
		}, limits{}, "h", "not a regular file earlier"},
		{"char device", []entry{{name: "dev", typ: tar.TypeChar}}, limits{}, "dev", "device"},
		{"block device", []entry{{name: "dev", typ: tar.TypeBlock}}, limits{}, "dev", "device"},
		{"fifo", []entry{{name: "p", typ: tar.TypeFifo}}, limits{}, "p", "fifo"},
		{"duplicate file", []entry{file("f"), file("f")}, limits{}, "f", "duplicate"},
		{"file over dir", []entry{{name: "d/", typ: tar.TypeDir}, file("d")}, limits{}, "d", "duplicate"},
		{"root as file", []entry{file(".")}, limits{}, ".", "release root"},
		{"too many files", []entry{file("a"), file("b"), file("c"), file("d")}, limits{MaxFiles: 3}, "d", "more than 3 entries"},
		{"too many bytes", []entry{
			{name: "a", body: "0123456789"},
			{name: "b", body: "0123456789"},
		}, limits{MaxBytes: 15}, "b", "exceeds the limit of 15 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			root := filepath.Join(parent, "root")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			data := makeTarGz(t, tt.entries)
			err := unpack(context.Background(), bytes.NewReader(data), root, tt.limits)
			var ue *UnsafeEntryError
			if !errors.As(err, &ue) {
				t.Fatalf("unpack error = %v, want an *UnsafeEntryError", err)
			}
			if ue.Entry != tt.entry || !strings.Contains(ue.Reason, tt.reason) {
				t.Errorf("error = %v, want entry %q and reason containing %q", err, tt.entry, tt.reason)
			}
			if !strings.Contains(err.Error(), strconv.Quote(tt.entry)) {
				t.Errorf("error %q does not name the entry %q", err, tt.entry)
			}
			if !errors.Is(err, ErrBadPackage) {
				t.Errorf("error does not match ErrBadPackage")
			}
			if got := listTree(t, parent); !slices.Equal(got[:1], []string{"root"}) || !allUnder(got, "root") {
				t.Errorf("something was written outside the root: %q", got)
			}
		})
	}
}

func allUnder(paths []string, dir string) bool {
	for _, p := range paths {
		if p != dir && !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			return false
		}
	}
	return true
}

func TestUnpackAccepts(t *testing.T) {
	entries := []entry{
		{name: "./", typ: tar.TypeDir},
		{name: "bin/app", body: "#!/bin/sh\n", mode: 0o4755}, // setuid is dropped
		{name: "bin/", typ: tar.TypeDir},                     // a duplicate dir is fine
		{name: "bin/alias", typ: tar.TypeSymlink, link: "app"},
		{name: "lib/deep/x", typ: tar.TypeSymlink, link: "../../bin/app"},
		{name: "lib/self", typ: tar.TypeSymlink, link: "./"},
		{name: "lib/hard", typ: tar.TypeLink, link: "bin/app"},
		{typ: tar.TypeXGlobalHeader, body: "git archive"},
		{name: "./share/doc.txt", body: "doc", mode: 0o600},
	}
	root := t.TempDir()
	t.Cleanup(func() { _ = removeAllWritable(root) })
	if err := unpack(context.Background(), bytes.NewReader(makeTarGz(t, entries)), root, limits{}); err != nil {
		t.Fatal(err)
	}
	if err := makeReadOnly(root); err != nil {
		t.Fatal(err)
	}
	want := []string{"bin", "bin/alias", "bin/app", "lib", "lib/deep", "lib/deep/x", "lib/hard", "lib/self", "share", "share/doc.txt"}
	if got := listTree(t, root); !slices.Equal(got, want) {
		t.Errorf("tree = %q, want %q", got, want)
	}
	modes := map[string]os.FileMode{
		".":             os.ModeDir | 0o555,
		"bin":           os.ModeDir | 0o555,
		"lib/deep":      os.ModeDir | 0o555,
		"bin/app":       0o555,
		"share/doc.txt": 0o444,
		"bin/alias":     os.ModeSymlink,
	}
	for p, want := range modes {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		got := fi.Mode()
		if want&os.ModeSymlink != 0 {
			got &= os.ModeType
		}
		if got != want {
			t.Errorf("mode of %s = %v, want %v", p, got, want)
		}
	}
	b, err := os.ReadFile(filepath.Join(root, "lib/deep/x"))
	if err != nil || string(b) != "#!/bin/sh\n" {
		t.Errorf("lib/deep/x reads %q, %v", b, err)
	}
}

func TestUnpackCorrupt(t *testing.T) {
	good := makeTarGz(t, appEntries(goodManifest))
	for name, data := range map[string][]byte{
		"not gzip":  []byte("plain text"),
		"truncated": good[:len(good)/2],
		"empty":     nil,
	} {
		t.Run(name, func(t *testing.T) {
			err := unpack(context.Background(), bytes.NewReader(data), t.TempDir(), limits{})
			if err == nil || !errors.Is(err, ErrBadPackage) {
				t.Errorf("unpack = %v, want a bad package error", err)
			}
		})
	}
}

func TestUnpackCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	data := makeTarGz(t, appEntries(goodManifest))
	err := unpack(ctx, ctxReader{ctx, bytes.NewReader(data)}, t.TempDir(), limits{})
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrBadPackage) {
		t.Errorf("unpack = %v, want context.Canceled and not a bad package", err)
	}
}

func TestCheckSymlinkTarget(t *testing.T) {
	tests := []struct {
		link, target string
		ok           bool
	}{
		{"a", "b", true},
		{"a", ".", true},
		{"a", "./b/./c", true},
		{"a", "..", false},
		{"d/a", "..", true},
		{"d/a", "../..", false},
		{"d/e/a", "../../x/y", true},
		{"d/e/a", "../x/../y", false},
		{"d/a", "x/..", false},
		{"a", "/abs", false},
		{"a", "", false},
	}
	for _, tt := range tests {
		err := checkSymlinkTarget(tt.link, tt.target)
		if (err == nil) != tt.ok {
			t.Errorf("checkSymlinkTarget(%q, %q) = %v, want ok=%v", tt.link, tt.target, err, tt.ok)
		}
	}
}
