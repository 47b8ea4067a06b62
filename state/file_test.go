package state

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openFileStore(t testing.TB, dir string) *FileStore {
	t.Helper()
	st, err := OpenFile(dir)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestFileStoreConformance(t *testing.T) {
	testStoreConformance(t, func(t *testing.T) Store { return openFileStore(t, t.TempDir()) })
}

func TestFileStoreReopen(t *testing.T) {
	dir := t.TempDir()
	a := openFileStore(t, dir)
	s := mustLoad(t, a)
	lineage := s.Lineage
	s = fullState(lineage)
	mustSave(t, a, s)
	if err := a.AppendEvent(context.Background(), Event{Merchant: "acme", Action: "start"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := a.Load(context.Background()); err == nil {
		t.Error("Load after Close succeeded")
	}

	b := openFileStore(t, dir)
	got := mustLoad(t, b)
	want := normState(s)
	if got.Lineage != lineage || got.Serial != 1 || !equalJSON(t, normState(got), want) {
		t.Errorf("reopened store Load = %+v; want %+v", got, want)
	}
	if es, err := b.Events(context.Background(), "acme", 0); err != nil || len(es) != 1 {
		t.Errorf("reopened store Events = %v, %v; want one event", es, err)
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}

// A crash while state.json is being replaced leaves a temporary file beside
// the old state.json: Load must ignore it and the next Save clears it away.
func TestFileStoreCrashMidWriteKeepsOldState(t *testing.T) {
	dir := t.TempDir()
	st := openFileStore(t, dir)
	s := mustLoad(t, st)
	s.Revision = "old"
	mustSave(t, st, s)

	stray := filepath.Join(dir, ".state.json.tmp-123456")
	if err := os.WriteFile(stray, []byte(`{"format":1,"serial":2,"lineage":"`+s.Lineage+`","revision":"new","merch`), 0o600); err != nil {
		t.Fatal(err)
	}
	got := mustLoad(t, st)
	if got.Serial != 1 || got.Revision != "old" {
		t.Fatalf("Load with a stray temporary file = serial %d revision %q; want 1 \"old\"", got.Serial, got.Revision)
	}
	got.Revision = "newer"
	mustSave(t, st, got)
	if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stray temporary file still there after Save: %v", err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, tempPattern))
	if len(names) != 0 {
		t.Errorf("temporary files left after Save: %v", names)
	}
}

func TestFileStoreTornEventLine(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openFileStore(t, dir)
	if err := st.AppendEvent(ctx, Event{Merchant: "acme", Action: "start"}, Event{Merchant: "acme", Action: "stop"}); err != nil {
		t.Fatal(err)
	}
	// A writer that died mid-write.
	path := filepath.Join(dir, eventsFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"time":"2026-11-22T03:20:00Z","merchant":"acme","act`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// A fresh store, as after the crash, and the one that was open.
	for _, s := range []*FileStore{openFileStore(t, dir), st} {
		es, err := s.Events(ctx, "", 0)
		if err != nil || len(es) != 2 || es[1].Action != "stop" {
			t.Fatalf("Events with a torn last line = %+v, %v; want the two whole events", es, err)
		}
	}
	if err := openFileStore(t, dir).AppendEvent(ctx, Event{Merchant: "acme", Action: "restart"}); err != nil {
		t.Fatal(err)
	}
	es, err := st.Events(ctx, "", 0)
	if err != nil || len(es) != 3 || es[2].Action != "restart" {
		t.Fatalf("Events after appending past a torn line = %+v, %v; want start, stop, restart", es, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(`"act`+"\n")) || bytes.Count(data, []byte("\n")) != 3 {
		t.Errorf("torn line not cut off before appending:\n%s", data)
	}
}

func TestFileStoreTornEventFileOnlyLine(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, eventsFile), []byte(`{"action":"sta`), 0o600); err != nil {
		t.Fatal(err)
	}
	st := openFileStore(t, dir)
	if es, err := st.Events(ctx, "", 0); err != nil || len(es) != 0 {
		t.Fatalf("Events of a file holding only a torn line = %v, %v; want none", es, err)
	}
	if err := st.AppendEvent(ctx, Event{Action: "start"}); err != nil {
		t.Fatal(err)
	}
	if es, err := st.Events(ctx, "", 0); err != nil || len(es) != 1 || es[0].Action != "start" {
		t.Fatalf("Events = %v, %v; want the one appended event", es, err)
	}
}

func TestFileStoreCorruptEventLine(t *testing.T) {
	dir := t.TempDir()
	content := `{"action":"start"}` + "\n" + "not json\n" + `{"action":"stop"}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, eventsFile), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := openFileStore(t, dir).Events(context.Background(), "", 0)
	if err == nil || !strings.Contains(err.Error(), eventsFile+":2:") {
		t.Fatalf("Events with a corrupt complete line: %v; want an error naming line 2", err)
	}
}

func TestFileStoreEventTooLarge(t *testing.T) {
	st := openFileStore(t, t.TempDir())
	err := st.AppendEvent(context.Background(), Event{Action: "start", Error: strings.Repeat("x", maxEventLine)})
	if err == nil {
		t.Fatal("AppendEvent of an event larger than the line limit succeeded")
	}
}

func TestFileStoreNewerFormat(t *testing.T) {
	dir := t.TempDir()
	content := fmt.Sprintf(`{"format":%d,"serial":4,"lineage":"x","merchants":{}}`, FormatVersion+1)
	path := filepath.Join(dir, stateFile)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	st := openFileStore(t, dir)
	_, err := st.Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Load of a newer format: %v; want an error saying it is newer and naming the file", err)
	}
	s := New("x")
	s.Serial = 4
	if err := st.Save(context.Background(), s); err == nil {
		t.Fatal("Save over a newer format succeeded")
	}
	if data, _ := os.ReadFile(path); string(data) != content {
		t.Errorf("Save over a newer format rewrote state.json:\n%s", data)
	}
}

func TestFileStoreCorruptState(t *testing.T) {
	for name, content := range map[string]string{
		"truncated":   `{"format":1,"serial":3,"lin`,
		"no format":   `{"serial":3,"lineage":"x"}`,
		"no lineage":  `{"format":1,"serial":3}`,
		"nil record":  `{"format":1,"serial":3,"lineage":"x","merchants":{"acme":null}}`,
		"wrong key":   `{"format":1,"serial":3,"lineage":"x","merchants":{"acme":{"id":"bolt"}}}`,
		"trailing":    `{"format":1,"serial":3,"lineage":"x"} {}`,
		"empty file":  ``,
		"json null":   `null`,
		"wrong types": `{"format":"1","serial":3,"lineage":"x"}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if s, err := openFileStore(t, dir).Load(context.Background()); err == nil {
				t.Fatalf("Load of %q = %+v; want an error", content, s)
			}
		})
	}
}

// Two FileStore values on one directory in one process exclude each other:
// flock locks belong to open file descriptions, not to processes.
func TestFileStoreLockTwoStoresOneProcess(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := openFileStore(t, dir), openFileStore(t, dir)
	unlock, err := a.Lock(ctx, "steward run", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Lock(ctx, "steward apply", 0)
	checkLockError(t, err, os.Getpid(), "steward run")
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Errorf("second Unlock: %v; want nil", err)
	}
	unlockB, err := b.Lock(ctx, "steward apply", 0)
	if err != nil {
		t.Fatalf("Lock after the other store unlocked: %v", err)
	}
	_, err = a.Lock(ctx, "steward run", 0)
	checkLockError(t, err, os.Getpid(), "steward apply")

	// Close releases locks still held.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := unlockB(); err != nil {
		t.Errorf("Unlock after Close: %v; want nil", err)
	}
	unlock, err = a.Lock(ctx, "steward run", 0)
	if err != nil {
		t.Fatalf("Lock after the holder's store was closed: %v", err)
	}
	unlock()
}

// A lock file left by a process that died names it, but does not block.
func TestFileStoreStaleLockFile(t *testing.T) {
	dir := t.TempDir()
	stale := `{"pid":999999999,"who":"steward run","since":"2026-11-22T03:20:00Z"}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, lockFile), []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}
	a, b := openFileStore(t, dir), openFileStore(t, dir)
	unlock, err := a.Lock(context.Background(), "steward apply", 0)
	if err != nil {
		t.Fatalf("Lock with a stale lock file: %v", err)
	}
	defer unlock()
	_, err = b.Lock(context.Background(), "other", 0)
	checkLockError(t, err, os.Getpid(), "steward apply")
}

// Concurrent Saves through separate FileStore values (as from separate
// processes: no shared mutex) against one serial: exactly one wins.
func TestFileStoreConcurrentSaveManyStores(t *testing.T) {
	dir := t.TempDir()
	mustSave(t, openFileStore(t, dir), mustLoad(t, openFileStore(t, dir)))
	const n = 16
	stores := make([]*FileStore, n)
	states := make([]*State, n)
	for i := range n {
		stores[i] = openFileStore(t, dir)
		states[i] = mustLoad(t, stores[i])
		states[i].Revision = fmt.Sprint("writer-", i)
	}
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = stores[i].Save(context.Background(), states[i])
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		if err == nil {
			wins++
		} else if !errors.Is(err, ErrStale) {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if got := mustLoad(t, openFileStore(t, dir)); wins != 1 || got.Serial != 2 {
		t.Errorf("%d writers won, serial %d; want 1 winner and serial 2", wins, got.Serial)
	}
}

func TestFileStorePermissions(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "a", "state")
	st := openFileStore(t, dir)
	mustSave(t, st, mustLoad(t, st))
	if err := st.AppendEvent(ctx, Event{Action: "start"}); err != nil {
		t.Fatal(err)
	}
	unlock, err := st.Lock(ctx, "test", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	for name, want := range map[string]os.FileMode{
		"":            os.ModeDir | 0o700,
		stateFile:     0o600,
		stateLockFile: 0o600,
		eventsFile:    0o600,
		lockFile:      0o600,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v; want %v", filepath.Join(dir, name), fi.Mode(), want)
		}
	}
}

func TestOpenFileErrors(t *testing.T) {
	if _, err := OpenFile(""); err == nil {
		t.Error("OpenFile(\"\") succeeded")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(file); err == nil {
		t.Error("OpenFile of a regular file succeeded")
	}
}

// lockHelperEnv makes the test binary, run as a child, hold the writer lock
// of the directory it names until its stdin closes, then exit without
// unlocking. It prints "locked" when it holds the lock.
const lockHelperEnv = "STEWARD_STATE_LOCK_HELPER_DIR"

func TestLockHelperProcess(t *testing.T) {
	dir := os.Getenv(lockHelperEnv)
	if dir == "" {
		t.Skip("helper process for TestFileStoreLockAcrossProcesses")
	}
	st, err := OpenFile(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	if _, err := st.Lock(context.Background(), "lock helper", 0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0) // the kernel drops the flock; the lock file still names this process
}

// startLockHolder runs the test binary as a child holding the lock of dir.
// Closing the returned writer makes the child exit.
func startLockHolder(t *testing.T, dir string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLockHelperProcess$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "locked" {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			t.Fatalf("lock helper exited before taking the lock: %s", stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("lock helper did not take the lock within a minute")
	}
	return cmd, stdin
}

func TestFileStoreLockAcrossProcesses(t *testing.T) {
	ctx := context.Background()

	t.Run("ChildExits", func(t *testing.T) {
		dir := t.TempDir()
		cmd, stdin := startLockHolder(t, dir)
		st := openFileStore(t, dir)
		_, err := st.Lock(ctx, "steward apply", 0)
		checkLockError(t, err, cmd.Process.Pid, "lock helper")

		stdin.Close()
		unlock, err := st.Lock(ctx, "steward apply", time.Minute)
		if err != nil {
			t.Fatalf("Lock after the child exited: %v", err)
		}
		defer unlock()
		if err := cmd.Wait(); err != nil {
			t.Errorf("lock helper: %v", err)
		}
		var info lockInfo
		data, _ := os.ReadFile(filepath.Join(dir, lockFile))
		if err := json.Unmarshal(data, &info); err != nil || info.PID != os.Getpid() || info.Who != "steward apply" {
			t.Errorf("lock file after taking over = %q (%v); want this process", data, err)
		}
	})

	t.Run("ChildKilled", func(t *testing.T) {
		dir := t.TempDir()
		cmd, _ := startLockHolder(t, dir)
		st := openFileStore(t, dir)
		_, err := st.Lock(ctx, "steward apply", 0)
		checkLockError(t, err, cmd.Process.Pid, "lock helper")

		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait() // a reaped process has closed its files
		unlock, err := st.Lock(ctx, "steward apply", 0)
		if err != nil {
			t.Fatalf("Lock after the holder was killed: %v", err)
		}
		unlock()
	})
}
