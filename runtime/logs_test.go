package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"steward/runtime/logshim"
)

// logFiles returns the paths of dir's log files, oldest first.
func logFiles(dir string) ([]string, error) {
	d, err := openLogDir(dir)
	if err != nil {
		return nil, err
	}
	defer d.close()
	names, err := d.files()
	var paths []string
	for _, n := range names {
		paths = append(paths, filepath.Join(dir, n))
	}
	return paths, err
}

// readLog returns the content of dir's log files, oldest first, and how
// many files there were.
func readLog(t *testing.T, dir string) ([]byte, []string) {
	t.Helper()
	paths, err := logFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all, paths
}

// contiguous checks that lines are "n %08d ...." numbered first..last
// with no gap, and returns first and last.
func contiguous(t *testing.T, lines []string) (first, last int) {
	t.Helper()
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "n" || f[2] != strings.Repeat(".", 40) {
			t.Fatalf("line %d mangled: %q", i, l)
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatalf("line %d: %q", i, l)
		}
		if i == 0 {
			first = n
		} else if n != last+1 {
			t.Fatalf("gap: line %d is %d after %d", i, n, last)
		}
		last = n
	}
	return first, last
}

func TestLogRotationUnderLoad(t *testing.T) {
	const count, maxBytes, keep = 20000, 16 << 10, 5
	s := helperSpec(t, "counter", "COUNT="+strconv.Itoa(count))
	s.LogMaxBytes, s.LogKeep = maxBytes, keep
	m := start(t, s)
	if es, err := Wait(testCtx(t), m.p); err != nil || es.Code != 0 {
		t.Fatalf("counter: %+v, %v", es, err)
	}
	waitShim(t, m) // EOF: everything written
	all, paths := readLog(t, s.LogDir)
	if len(paths) != keep+1 {
		t.Errorf("%d log files, want %d: %q", len(paths), keep+1, paths)
	}
	for _, p := range paths {
		fi, _ := os.Stat(p)
		if fi.Size() > maxBytes {
			t.Errorf("%s has %d bytes, more than %d", filepath.Base(p), fi.Size(), maxBytes)
		}
		b, _ := os.ReadFile(p)
		if len(b) == 0 || b[len(b)-1] != '\n' {
			t.Errorf("%s does not end at a line boundary", filepath.Base(p))
		}
	}
	lines := strings.Split(strings.TrimSuffix(string(all), "\n"), "\n")
	first, last := contiguous(t, lines)
	if last != count {
		t.Errorf("last line %d, want %d", last, count)
	}
	// About (keep+1)*maxBytes/52 lines are kept: several rotations dropped
	// the oldest ones.
	if first < count/2 {
		t.Errorf("first kept line %d: rotation did not happen often enough", first)
	}
	t.Logf("kept lines %d..%d in %d files", first, last, len(paths))
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTailLines(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"current.log.2":  "1 GET\n2 POST\n3 GET\n",
		"current.log.1":  "4 GET\n5 POST\n",
		"current.log":    "6 GET\n7 POST\n8 GET", // last line not finished yet
		"current.log.x":  "not a log\n",
		"current.log.10": "", // empty and oldest
		"other.log":      "x\n",
	})
	get := regexp.MustCompile(`GET`)
	for _, tc := range []struct {
		n    int
		re   *regexp.Regexp
		want []string
	}{
		{2, nil, []string{"7 POST", "8 GET"}},
		{4, nil, []string{"5 POST", "6 GET", "7 POST", "8 GET"}},
		{0, nil, []string{"1 GET", "2 POST", "3 GET", "4 GET", "5 POST", "6 GET", "7 POST", "8 GET"}},
		{100, nil, []string{"1 GET", "2 POST", "3 GET", "4 GET", "5 POST", "6 GET", "7 POST", "8 GET"}},
		{3, get, []string{"4 GET", "6 GET", "8 GET"}},
		{4, get, []string{"3 GET", "4 GET", "6 GET", "8 GET"}},
		{1, regexp.MustCompile(`POST`), []string{"7 POST"}},
		{5, regexp.MustCompile(`PUT`), nil},
	} {
		got, err := TailLines(dir, tc.n, Grep(tc.re))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("TailLines(%d, %v) = %q, want %q", tc.n, tc.re, got, tc.want)
		}
	}
	if got, err := TailLines(t.TempDir(), 5, nil); err != nil || len(got) != 0 {
		t.Errorf("empty dir: %q, %v", got, err)
	}
	if _, err := TailLines(filepath.Join(dir, "missing"), 5, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
}

// collect reads lines from ch until it has n or the deadline passes.
func collect(t *testing.T, ch lineWriter, n int, timeout time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case l := <-ch:
			got = append(got, l)
		case <-deadline:
			if len(got) > 0 && strings.HasPrefix(got[0], "n ") {
				contiguous(t, got)
			}
			t.Fatalf("got %d of %d lines; first %q; last %q", len(got), n, got[:min(len(got), 3)], got[max(0, len(got)-3):])
		}
	}
	return got
}

func TestFollowAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"current.log.1": "old 1\n", "current.log": "old 2\nold 3\n"})
	r := logshim.NewWriter(dir, 4096, 100) // about 45 rotations, none dropped
	defer r.Close()
	ch := make(lineWriter, 10000)
	d, err := openLogDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	lf, err := newLineFollower(d, 0, Grep(regexp.MustCompile(`^n `)), ch)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lf.run(ctx) }()

	// Lines written in bursts; each burst rotates several times.
	const count = 3000
	var want []string
	var burst bytes.Buffer
	for i := 1; i <= count; i++ {
		l := fmt.Sprintf("n %08d %s", i, strings.Repeat(".", 40))
		want = append(want, l)
		burst.WriteString(l + "\n")
		r.Write([]byte("noise\n"))
		if i%100 == 0 {
			r.Write(burst.Bytes())
			burst.Reset()
		}
	}
	got := collect(t, ch, count, 20*time.Second)
	if len(got) != count {
		contiguous(t, got)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("lines differ")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("run ended with %v", err)
	}
	if paths, _ := logFiles(dir); len(paths) < 10 {
		t.Errorf("only %d files: not enough rotation for the test", len(paths))
	}
}

func TestTailFollow(t *testing.T) {
	dir := t.TempDir()
	ch := make(lineWriter, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	// The log does not exist yet: Follow waits for it to appear.
	go func() { done <- TailFollow(ctx, dir, 2, nil, ch) }()
	r := logshim.NewWriter(dir, 1<<20, 2)
	r.Write([]byte("a\nb\n"))
	if got := collect(t, ch, 2, 10*time.Second); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("got %q", got)
	}
	r.Rotate()
	r.Write([]byte("c\n"))
	r.Close()
	if got := collect(t, ch, 1, 10*time.Second); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("got %q", got)
	}
	cancel()
	<-done

	// Backlog then follow: the last 2 lines, then what comes.
	ch = make(lineWriter, 100)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	d, err := openLogDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	lf, err := newLineFollower(d, 2, nil, ch)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.close()
	if got := collect(t, ch, 2, 10*time.Second); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("backlog %q", got)
	}
	go func() { done <- lf.run(ctx) }()
	r = logshim.NewWriter(dir, 1<<20, 2)
	r.Write([]byte("d\n"))
	r.Close()
	if got := collect(t, ch, 1, 10*time.Second); !slices.Equal(got, []string{"d"}) {
		t.Fatalf("got %q", got)
	}
	cancel()
	<-done
}

// TestFollowMerchant follows a real merchant's log across the shim's
// rotations.
func TestFollowMerchant(t *testing.T) {
	s := helperSpec(t, "merchant", "TICK=1")
	s.LogMaxBytes, s.LogKeep = 256, 50
	ch := make(lineWriter, 10000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- TailFollow(ctx, s.LogDir, -1, Grep(regexp.MustCompile(`^tick `)), ch) }()
	m := start(t, s)
	got := collect(t, ch, 200, 30*time.Second)
	for i, l := range got {
		if l != "tick "+strconv.Itoa(i+1) {
			t.Fatalf("line %d = %q", i, l)
		}
	}
	if err := Stop(testCtx(t), m.p, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if paths, _ := logFiles(s.LogDir); len(paths) < 5 {
		t.Errorf("only %d log files: the shim did not rotate", len(paths))
	}
}

// A line longer than 1 MiB is shown once, cut at 1 MiB and marked (not
// split into several lines, which a filter would see apart), by the tail
// and by a follower alike; the filter is told it was cut.
func TestLongLinesAreCut(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("A", maxLine-3) + "SECRETVALUE tail"
	writeFiles(t, dir, map[string]string{"current.log": "before\n" + long + "\nafter\n"})
	var cuts []bool
	filter := func(line string, cut bool) (string, bool) {
		cuts = append(cuts, cut)
		if cut {
			return fmt.Sprintf("cut line of %d bytes ending %q", len(line), line[len(line)-3:]), true
		}
		return line, true
	}
	got, err := TailLines(dir, 0, filter)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"before", `cut line of 1048576 bytes ending "SEC"`, "after"}
	if !slices.Equal(got, want) || !slices.Equal(cuts, []bool{false, true, false}) {
		t.Errorf("TailLines = %q (cut %v), want %q", got, cuts, want)
	}
	if got, _ := TailLines(dir, 0, nil); len(got) != 3 || !strings.HasSuffix(got[1], CutMark) || len(got[1]) != maxLine+len(CutMark) {
		t.Errorf("without a filter the cut line is not marked: %d lines", len(got))
	}

	// Following: the same line written in pieces.
	ch := make(lineWriter, 10)
	d, err := openLogDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	cuts = nil
	lf, err := newLineFollower(d, 0, filter, ch)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lf.run(ctx) }()
	f, err := os.OpenFile(filepath.Join(dir, "current.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(long); i += 300 << 10 {
		f.WriteString(long[i:min(i+300<<10, len(long))])
	}
	f.WriteString("\nnext\n")
	f.Close()
	for _, w := range []string{`cut line of 1048576 bytes ending "SEC"`, "next"} {
		select {
		case l := <-ch:
			if l != w {
				t.Errorf("followed %q, want %q", l, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no line %q within 10s", w)
		}
	}
	cancel()
	<-done
}
