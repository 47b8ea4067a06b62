package logshim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriterLineBoundaries(t *testing.T) {
	dir := t.TempDir()
	r := NewWriter(dir, 20, 2)
	// A line split across writes is never split across files; a line longer
	// than the limit goes whole into one file.
	for _, chunk := range []string{"aaaa\nbbbb\ncc", "cc\n", "dddddddddddddddddddddddddddddd\neeee\n", "ffff\ngggg\n", "hh", "hh\n"} {
		r.Write([]byte(chunk))
	}
	r.Close()
	files := map[string]string{}
	for _, name := range []string{"current.log", "current.log.1", "current.log.2", "current.log.3"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			files[name] = string(b)
		}
	}
	want := map[string]string{
		"current.log.2": "aaaa\nbbbb\ncccc\n",
		"current.log.1": "dddddddddddddddddddddddddddddd\n",
		"current.log":   "eeee\nffff\ngggg\nhhhh\n", // exactly the limit
	}
	for name, w := range want {
		if files[name] != w {
			t.Errorf("%s = %q, want %q", name, files[name], w)
		}
	}
	if _, ok := files["current.log.3"]; ok {
		t.Errorf("current.log.3 kept with keep=2")
	}

	// keep 0: no rotated files, current.log restarts.
	dir0 := t.TempDir()
	r0 := NewWriter(dir0, 10, 0)
	r0.Write([]byte("12345678\nabcdefgh\n"))
	r0.Close()
	if b, _ := os.ReadFile(filepath.Join(dir0, LogFile)); string(b) != "abcdefgh\n" {
		t.Errorf("keep 0: current.log = %q", b)
	}
	if ents, _ := os.ReadDir(dir0); len(ents) != 2 { // current.log and the rotation lock
		t.Errorf("keep 0: %d files, want current.log and %s", len(ents), rotateLock)
	}

	// A restarted shim appends to the existing file and counts its size.
	r2 := NewWriter(dir, 20, 2)
	r2.Write([]byte("iiii\njjjjjjjjjjjjjjjj\n"))
	r2.Close()
	if b, _ := os.ReadFile(filepath.Join(dir, LogFile)); string(b) != "jjjjjjjjjjjjjjjj\n" {
		t.Errorf("after restart: current.log = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, LogFile+".1")); string(b) != "iiii\n" {
		t.Errorf("after restart: current.log.1 = %q", b)
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	in := strings.NewReader("one\ntwo\nthree\n")
	if code := Run(Args(dir, 4, 1), in); code != 0 {
		t.Fatalf("Run: exit %d", code)
	}
	cur, _ := os.ReadFile(filepath.Join(dir, LogFile))
	old, _ := os.ReadFile(filepath.Join(dir, LogFile+".1"))
	if string(cur) != "three\n" || string(old) != "two\n" {
		t.Errorf("current.log %q, current.log.1 %q; want \"three\\n\" and \"two\\n\" (keep 1 drops \"one\")", cur, old)
	}
	for _, args := range [][]string{nil, {"-dir", dir, "extra"}, {"-max", "x", "-dir", dir}} {
		if code := Run(args, strings.NewReader("")); code != 2 {
			t.Errorf("Run(%q): exit %d, want 2", args, code)
		}
	}
}
