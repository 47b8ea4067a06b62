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

	"steward/reconcile"
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

func mustLoad(t *testing.T, st Store) *Snapshot {
	t.Helper()
	s, err := st.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

func mustPut(t *testing.T, st Store, r *reconcile.Record) {
	t.Helper()
	if err := st.PutMerchant(context.Background(), r); err != nil {
		t.Fatalf("PutMerchant: %v", err)
	}
}

func checkLockError(t *testing.T, err error, pid int, who string) {
	t.Helper()
	var le *LockError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v; want a *LockError", err)
	}
	if le.PID != pid || le.Who != who {
		t.Errorf("LockError names pid %d (%q); want %d (%q)", le.PID, le.Who, pid, who)
	}
	if !strings.Contains(err.Error(), fmt.Sprint(pid)) {
		t.Errorf("LockError text %q does not name pid %d", err, pid)
	}
}

// A crash while a record is being replaced leaves a temporary file beside
// the old record: Load ignores it and the record is the old one.
func TestFileStoreCrashMidWriteKeepsOldRecord(t *testing.T) {
	dir := t.TempDir()
	st := openFileStore(t, dir)
	r := &reconcile.Record{ID: "acme", Port: 1}
	mustPut(t, st, r)
	stray := filepath.Join(dir, merchantsDir, ".tmp-acme.json-123456")
	if err := os.WriteFile(stray, []byte(`{"id":"acme","port":2,"re`), 0o600); err != nil {
		t.Fatal(err)
	}
	got := mustLoad(t, openFileStore(t, dir))
	if len(got.Merchants) != 1 || got.Merchants["acme"].Port != 1 {
		t.Fatalf("Load with a stray temporary file = %+v; want the old record", got.Merchants)
	}
}

// A lost write of the revision counter (it is not fsynced) is restored
// from the records' revisions: no revision is ever handed out twice.
func TestFileStoreCounterRestoredFromRecords(t *testing.T) {
	dir := t.TempDir()
	st := openFileStore(t, dir)
	r := &reconcile.Record{ID: "acme", Port: 1}
	mustPut(t, st, r)
	r.Port = 2
	mustPut(t, st, r)
	if err := os.WriteFile(filepath.Join(dir, revisionFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	st2 := openFileStore(t, dir)
	if got := mustLoad(t, st2).Revision; got != r.Rev {
		t.Errorf("revision after losing the counter = %d, want %d", got, r.Rev)
	}
	b := &reconcile.Record{ID: "bluebird"}
	mustPut(t, st2, b)
	if b.Rev <= r.Rev {
		t.Errorf("a new write got revision %d, not above %d", b.Rev, r.Rev)
	}
}

// A format 1 state.json is read as it is, and the first write migrates
// it: an upgrade that was in flight becomes a change that can be resumed.
func TestFileStoreMigratesFormat1(t *testing.T) {
	dir := t.TempDir()
	v1 := `{"format":1,"serial":12,"lineage":"11111111-2222-4333-8444-555555555555","revision":"sha256:x",
"merchants":{"acme":{"id":"acme","package":"invoicing","version":"1.1.0","port":8101,"pid":4242,"start_time":77,"phase":"starting","upgrade_from":"1.0.0","good_versions":["1.0.0"],"override":"1.0.0","override_for":"1.1.0","restarts":2},
"bluebird":{"id":"bluebird","package":"invoicing","version":"1.0.0","port":8102,"phase":"crashloop","failures":3,"next_attempt":"2026-11-22T12:00:00Z","restarts":0}},
"databases":{"db-east":{"name":"db-east","up":false,"last_error":"refused"}},
"rollouts":{"invoicing@1.1.0":{"package":"invoicing","version":"1.1.0","failed":["acme"],"halted":true,"reason":"canary acme failed"}}}`
	if err := os.WriteFile(filepath.Join(dir, v1File), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	st := openFileStore(t, dir)
	check := func(s *Snapshot) {
		t.Helper()
		acme := s.Merchants["acme"]
		if s.Lineage != "11111111-2222-4333-8444-555555555555" || acme == nil || acme.Change == nil || acme.Change.From != "1.0.0" || acme.Change.To != "1.1.0" ||
			acme.Candidate == nil || acme.Candidate.PID != 4242 || acme.Current.Version != "1.0.0" || acme.Pin == nil || acme.Pin.Version != "1.0.0" || acme.Restarts != 2 {
			t.Errorf("migrated acme = %+v", acme)
		}
		if b := s.Merchants["bluebird"]; b == nil || b.Failures != 3 || b.Current.Version != "1.0.0" || b.Phase != reconcile.PhaseCrashLoop {
			t.Errorf("migrated bluebird = %+v", b)
		}
		if ro := s.Rollouts["invoicing@1.1.0"]; ro == nil || !ro.Halted || ro.Failed[0] != "acme" {
			t.Errorf("migrated rollout = %+v", ro)
		}
		if d := s.Databases["db-east"]; d == nil || d.Up {
			t.Errorf("migrated database = %+v", d)
		}
	}
	before := mustLoad(t, st)
	check(before)
	if _, err := os.Stat(filepath.Join(dir, formatFile)); err == nil {
		t.Fatal("Load wrote the format file: reading must never write")
	}
	b := before.Merchants["bluebird"]
	b.Restarts = 1
	mustPut(t, st, b)
	after := mustLoad(t, openFileStore(t, dir))
	check(after)
	if after.Merchants["bluebird"].Restarts != 1 || after.Revision <= 12 {
		t.Errorf("after the first write: bluebird %+v, revision %d", after.Merchants["bluebird"], after.Revision)
	}
	if _, err := os.Stat(filepath.Join(dir, v1File+".v1")); err != nil {
		t.Errorf("the format 1 document was not kept: %v", err)
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
	if err := os.WriteFile(filepath.Join(dir, formatFile), []byte(fmt.Sprintf("%d\n", FormatVersion+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	st := openFileStore(t, dir)
	_, err := st.Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Load of a newer format: %v; want an error saying it is newer and naming the directory", err)
	}
	if err := st.PutMerchant(context.Background(), &reconcile.Record{ID: "acme"}); err == nil {
		t.Fatal("a write over a newer format succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, merchantsDir, "acme.json")); err == nil {
		t.Error("a write over a newer format wrote a record")
	}
}

func TestFileStoreCorruptRecords(t *testing.T) {
	for name, tc := range map[string]struct{ file, content string }{
		"truncated record":    {"merchants/acme.json", `{"id":"acme","po`},
		"wrong id":            {"merchants/acme.json", `{"id":"bolt"}`},
		"trailing data":       {"merchants/acme.json", `{"id":"acme"} {}`},
		"wrong types":         {"merchants/acme.json", `{"id":"acme","port":"8101"}`},
		"json null":           {"merchants/acme.json", `null`},
		"wrong rollout key":   {"rollouts/invoicing@1.0.0.json", `{"package":"invoicing","version":"2.0.0"}`},
		"wrong database":      {"databases/db-east.json", `{"name":"db-west"}`},
		"bad key":             {"key", "zz"},
		"bad format":          {"format", "two"},
		"format 1 no lineage": {"state.json", `{"format":1,"serial":3}`},
		"format 1 nil record": {"state.json", `{"format":1,"serial":3,"lineage":"x","merchants":{"acme":null}}`},
		"format 1 wrong key":  {"state.json", `{"format":1,"serial":3,"lineage":"x","merchants":{"acme":{"id":"bolt"}}}`},
		"format 1 truncated":  {"state.json", `{"format":1,"serial":3,"lin`},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, tc.file)
			os.MkdirAll(filepath.Dir(p), 0o700)
			if !strings.HasPrefix(tc.file, "state.json") && tc.file != "format" {
				os.WriteFile(filepath.Join(dir, formatFile), []byte("2\n"), 0o600)
			}
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if s, err := openFileStore(t, dir).Load(context.Background()); err == nil {
				t.Fatalf("Load with %s = %+v; want an error", tc.file, s)
			} else if !strings.Contains(err.Error(), dir) {
				t.Errorf("the error %q does not name the file", err)
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
	unlock, err := a.Lease(ctx, HostScope, "steward run", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Lease(ctx, HostScope, "steward apply", 0)
	checkLockError(t, err, os.Getpid(), "steward run")
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Errorf("second Unlock: %v; want nil", err)
	}
	unlockB, err := b.Lease(ctx, HostScope, "steward apply", 0)
	if err != nil {
		t.Fatalf("Lock after the other store unlocked: %v", err)
	}
	_, err = a.Lease(ctx, HostScope, "steward run", 0)
	checkLockError(t, err, os.Getpid(), "steward apply")

	// Close releases locks still held.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := unlockB(); err != nil {
		t.Errorf("Unlock after Close: %v; want nil", err)
	}
	unlock, err = a.Lease(ctx, HostScope, "steward run", 0)
	if err != nil {
		t.Fatalf("Lock after the holder's store was closed: %v", err)
	}
	unlock()
}

// A lock file left by a process that died names it, but does not block.
func TestFileStoreStaleLockFile(t *testing.T) {
	dir := t.TempDir()
	stale := `{"pid":999999999,"who":"steward run","since":"2026-11-22T03:20:00Z"}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, hostLeaseFile), []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}
	a, b := openFileStore(t, dir), openFileStore(t, dir)
	unlock, err := a.Lease(context.Background(), HostScope, "steward apply", 0)
	if err != nil {
		t.Fatalf("Lock with a stale lock file: %v", err)
	}
	defer unlock()
	_, err = b.Lease(context.Background(), HostScope, "other", 0)
	checkLockError(t, err, os.Getpid(), "steward apply")
}

// Concurrent writes of one record through separate FileStore values (as
// from separate processes: no shared mutex) from one revision: exactly one
// wins.
func TestFileStoreConcurrentPutManyStores(t *testing.T) {
	dir := t.TempDir()
	first := &reconcile.Record{ID: "acme"}
	mustPut(t, openFileStore(t, dir), first)
	const n = 16
	stores := make([]*FileStore, n)
	recs := make([]*reconcile.Record, n)
	for i := range n {
		stores[i] = openFileStore(t, dir)
		recs[i] = mustLoad(t, stores[i]).Merchants["acme"]
		recs[i].Port = 100 + i
	}
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = stores[i].PutMerchant(context.Background(), recs[i])
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
	if wins != 1 {
		t.Errorf("%d writers won; want 1", wins)
	}
}

func TestFileStorePermissions(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "a", "state")
	st := openFileStore(t, dir)
	mustPut(t, st, &reconcile.Record{ID: "acme"})
	if _, err := st.Key(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.AppendEvent(ctx, Event{Action: "start"}); err != nil {
		t.Fatal(err)
	}
	unlock, err := st.Lease(ctx, HostScope, "test", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	for name, want := range map[string]os.FileMode{
		"":                    os.ModeDir | 0o700,
		merchantsDir:          os.ModeDir | 0o700,
		"merchants/acme.json": 0o600,
		keyFile:               0o600,
		lineageFile:           0o600,
		recordsLock:           0o600,
		eventsFile:            0o600,
		hostLeaseFile:         0o600,
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
	if _, err := st.Lease(context.Background(), HostScope, "lock helper", 0); err != nil {
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
		_, err := st.Lease(ctx, HostScope, "steward apply", 0)
		checkLockError(t, err, cmd.Process.Pid, "lock helper")

		stdin.Close()
		unlock, err := st.Lease(ctx, HostScope, "steward apply", time.Minute)
		if err != nil {
			t.Fatalf("Lock after the child exited: %v", err)
		}
		defer unlock()
		if err := cmd.Wait(); err != nil {
			t.Errorf("lock helper: %v", err)
		}
		var info lockInfo
		data, _ := os.ReadFile(filepath.Join(dir, hostLeaseFile))
		if err := json.Unmarshal(data, &info); err != nil || info.PID != os.Getpid() || info.Who != "steward apply" {
			t.Errorf("lock file after taking over = %q (%v); want this process", data, err)
		}
	})

	t.Run("ChildKilled", func(t *testing.T) {
		dir := t.TempDir()
		cmd, _ := startLockHolder(t, dir)
		st := openFileStore(t, dir)
		_, err := st.Lease(ctx, HostScope, "steward apply", 0)
		checkLockError(t, err, cmd.Process.Pid, "lock helper")

		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait() // a reaped process has closed its files
		unlock, err := st.Lease(ctx, HostScope, "steward apply", 0)
		if err != nil {
			t.Fatalf("Lock after the holder was killed: %v", err)
		}
		unlock()
	})
}
