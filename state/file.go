package state

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"steward/internal/atomicfile"
	"steward/reconcile"
)

// FormatVersion is the version of the file backend's layout.
const FormatVersion = 2

// Names of the files and directories a FileStore keeps in its directory.
const (
	formatFile    = "format"
	lineageFile   = "lineage"
	keyFile       = "key"
	revisionFile  = "revision"
	merchantsDir  = "merchants"
	rolloutsDir   = "rollouts"
	databasesDir  = "databases"
	recordsLock   = "records.lock"
	eventsFile    = "events.jsonl"
	hostLeaseFile = "lock"
	tempPrefix    = atomicfile.TempPrefix
	// v1File is the single-document state of format 1, read until the
	// first write migrates it.
	v1File = "state.json"
)

// maxEventLine bounds one serialised event. AppendEvent refuses larger
// events so that Events can always read back what was written.
const maxEventLine = 1 << 20

// maxRecord bounds one stored record file.
const maxRecord = 4 << 20

// FileStore is the embedded Store: files in one directory on local disk,
// one file per record. It is safe for concurrent use by goroutines and by
// several processes sharing the directory.
type FileStore struct {
	dir string

	// stripes serialise writes of one record within this process; recLock
	// (an open records.lock) carries open-file-description byte-range locks
	// that serialise them across processes.
	stripes [64]sync.Mutex
	recMu   sync.Mutex
	recLock *os.File

	revMu  sync.Mutex
	rev    uint64 // the revision counter, once read
	revOK  bool
	metaMu sync.Mutex // lineage, key, format, migration

	eventsMu sync.Mutex // serialises AppendEvent; guards events
	events   *os.File   // events.jsonl opened for appending, or nil

	mu     sync.Mutex // guards the fields below
	closed bool
	locks  map[*heldLock]struct{}
}

var _ Store = (*FileStore)(nil)

// OpenFile opens the file store in dir, creating dir with mode 0700 when it
// is missing. It takes no lock and reads nothing yet.
func OpenFile(dir string) (*FileStore, error) {
	if dir == "" {
		return nil, errors.New("state: no directory given for the file store")
	}
	// Parents are ordinary directories (they often hold the runtime root,
	// which merchants running as another user must traverse); only the state
	// directory itself is private.
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(dir)), 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("state: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("state: %s is not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		// Made readable by an older steward (or by hand): the state holds
		// the fingerprint key and, with a git source, the specs. Closed
		// when this user may; a reader that may not still reads.
		_ = os.Chmod(dir, 0o700)
	}
	return &FileStore{dir: dir, locks: map[*heldLock]struct{}{}}, nil
}

// Dir returns the directory the store keeps its files in.
func (st *FileStore) Dir() string { return st.dir }

func (st *FileStore) path(name ...string) string {
	return filepath.Join(append([]string{st.dir}, name...)...)
}

func (st *FileStore) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return ErrClosed
	}
	return nil
}

// validName reports whether name can be a record's file name: the
// characters merchant ids, database names and rollout keys are made of.
func validName(name string) error {
	if name == "" || len(name) > 200 || name[0] == '.' {
		return fmt.Errorf("state: %q is not a valid record name", name)
	}
	for _, r := range name {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-_.@+", r)) {
			return fmt.Errorf("state: %q is not a valid record name", name)
		}
	}
	return nil
}

func leaseFile(scope string) (string, error) {
	if scope == HostScope || scope == "" {
		return hostLeaseFile, nil
	}
	if err := validName(scope); err != nil {
		return "", err
	}
	return "lease-" + scope, nil
}

// readFormat reports the layout of the directory: 2, 1 (a state.json and
// no format file), or 0 (never written).
func (st *FileStore) readFormat() (int, error) {
	b, err := os.ReadFile(st.path(formatFile))
	if err == nil {
		v, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if perr != nil || v < 2 {
			return 0, fmt.Errorf("state: %s: not a format version", st.path(formatFile))
		}
		if v > FormatVersion {
			return 0, fmt.Errorf("state: %s: format %d is newer than this build of steward understands (%d); upgrade steward", st.dir, v, FormatVersion)
		}
		return v, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("state: %w", err)
	}
	if _, err := os.Stat(st.path(v1File)); err == nil {
		return 1, nil
	}
	return 0, nil
}

// Load implements Store. It reads a format 1 state.json as it is, without
// writing: the first write migrates it.
func (st *FileStore) Load(ctx context.Context) (*Snapshot, error) {
	if err := st.check(ctx); err != nil {
		return nil, err
	}
	format, err := st.readFormat()
	if err != nil {
		return nil, err
	}
	if format == 1 {
		return st.loadV1()
	}
	s := NewSnapshot()
	if s.Lineage, err = st.readSmall(lineageFile); err != nil {
		return nil, err
	}
	if k, err := st.readSmall(keyFile); err != nil {
		return nil, err
	} else if k != "" {
		if s.Key, err = hex.DecodeString(k); err != nil || len(s.Key) < 16 {
			return nil, fmt.Errorf("state: %s is not a key", st.path(keyFile))
		}
	}
	if err := loadDir(ctx, st.path(merchantsDir), s.Merchants, func(id string, r *reconcile.Record) error {
		if r.ID != id {
			return fmt.Errorf("holds merchant %q", r.ID)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := loadDir(ctx, st.path(rolloutsDir), s.Rollouts, func(key string, ro *reconcile.Rollout) error {
		if ro.Key() != key {
			return fmt.Errorf("holds rollout %q", ro.Key())
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := loadDir(ctx, st.path(databasesDir), s.Databases, func(name string, d *Database) error {
		if d.Name != name {
			return fmt.Errorf("holds database %q", d.Name)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	s.Revision = st.revisionOf(s)
	return s, nil
}

// revisionOf is the revision counter: the stored counter, or the highest
// record revision when that is higher (a counter write lost in a crash).
func (st *FileStore) revisionOf(s *Snapshot) uint64 {
	rev, _ := st.readCounter()
	for _, r := range s.Merchants {
		rev = max(rev, r.Rev)
	}
	for _, r := range s.Rollouts {
		rev = max(rev, r.Rev)
	}
	return rev
}

// readSmall reads a small metadata file; "" when it does not exist.
func (st *FileStore) readSmall(name string) (string, error) {
	b, err := os.ReadFile(st.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("state: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// loadDir reads every NAME.json of dir into m, in parallel, checking each
// with ok (which gets the name the file is stored under).
func loadDir[T any](ctx context.Context, dir string, m map[string]*T, ok func(string, *T) error) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	var names []string
	for _, e := range ents {
		if name, isRec := strings.CutSuffix(e.Name(), ".json"); isRec && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, name)
		}
	}
	vals := make([]*T, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0) * 4)
	for i, name := range names {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			v, err := readJSON[T](filepath.Join(dir, name+".json"))
			if err != nil {
				return err
			}
			if v == nil {
				return nil // removed meanwhile
			}
			if err := ok(name, v); err != nil {
				return fmt.Errorf("state: %s: %w", filepath.Join(dir, name+".json"), err)
			}
			vals[i] = v
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, name := range names {
		if vals[i] != nil {
			m[name] = vals[i]
		}
	}
	return nil
}

// readJSON reads one record file; nil when it does not exist.
func readJSON[T any](p string) (*T, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if len(b) > maxRecord {
		return nil, fmt.Errorf("state: %s is larger than %d bytes", p, maxRecord)
	}
	v := new(T)
	if err := decodeStrict(b, v); err != nil {
		return nil, fmt.Errorf("state: %s: %w", p, err)
	}
	return v, nil
}

// decodeStrict decodes one JSON object and nothing after it.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the record")
	}
	if t, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after the record (%v)", t)
	}
	return nil
}

// Merchant implements Store.
func (st *FileStore) Merchant(ctx context.Context, id string) (*reconcile.Record, error) {
	if err := st.check(ctx); err != nil {
		return nil, err
	}
	if err := validName(id); err != nil {
		return nil, err
	}
	format, err := st.readFormat()
	if err != nil {
		return nil, err
	}
	if format == 1 {
		s, err := st.loadV1()
		if err != nil {
			return nil, err
		}
		return s.Merchants[id], nil
	}
	r, err := readJSON[reconcile.Record](st.path(merchantsDir, id+".json"))
	if err != nil || r == nil {
		return nil, err
	}
	if r.ID != id {
		return nil, fmt.Errorf("state: %s holds merchant %q", st.path(merchantsDir, id+".json"), r.ID)
	}
	return r, nil
}

// PutMerchant implements Store.
func (st *FileStore) PutMerchant(ctx context.Context, r *reconcile.Record) error {
	if r == nil {
		return errors.New("state: PutMerchant of a nil record")
	}
	return put(ctx, st, merchantsDir, r.ID, "merchant "+r.ID, r, &r.Rev)
}

// PutRollout implements Store.
func (st *FileStore) PutRollout(ctx context.Context, ro *reconcile.Rollout) error {
	if ro == nil {
		return errors.New("state: PutRollout of a nil record")
	}
	return put(ctx, st, rolloutsDir, ro.Key(), "rollout "+ro.Key(), ro, &ro.Rev)
}

// DeleteMerchant implements Store.
func (st *FileStore) DeleteMerchant(ctx context.Context, id string, rev uint64) error {
	return del[reconcile.Record](ctx, st, merchantsDir, id, "merchant "+id, rev, func(r *reconcile.Record) uint64 { return r.Rev })
}

// DeleteRollout implements Store.
func (st *FileStore) DeleteRollout(ctx context.Context, key string, rev uint64) error {
	return del[reconcile.Rollout](ctx, st, rolloutsDir, key, "rollout "+key, rev, func(r *reconcile.Rollout) uint64 { return r.Rev })
}

// PutDatabase implements Store.
func (st *FileStore) PutDatabase(ctx context.Context, d *Database) error {
	if err := st.check(ctx); err != nil {
		return err
	}
	if d == nil {
		return errors.New("state: PutDatabase of a nil record")
	}
	if err := validName(d.Name); err != nil {
		return err
	}
	if err := st.prepareWrite(ctx); err != nil {
		return err
	}
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	unlock, err := st.lockRecord(ctx, databasesDir+"/"+d.Name)
	if err != nil {
		return err
	}
	defer unlock()
	if old, err := os.ReadFile(st.path(databasesDir, d.Name+".json")); err == nil && bytes.Equal(bytes.TrimSpace(old), b) {
		return nil
	}
	if err := writeAtomic(st.path(databasesDir), d.Name+".json", append(b, '\n')); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// beginRecordWrite checks that st may write record dir/name now, takes
// the record's lock and returns its release and the record file's path.
func (st *FileStore) beginRecordWrite(ctx context.Context, dir, name string) (unlock func(), path string, err error) {
	if err := st.check(ctx); err != nil {
		return nil, "", err
	}
	if err := validName(name); err != nil {
		return nil, "", err
	}
	if err := st.prepareWrite(ctx); err != nil {
		return nil, "", err
	}
	unlock, err = st.lockRecord(ctx, dir+"/"+name)
	if err != nil {
		return nil, "", err
	}
	return unlock, st.path(dir, name+".json"), nil
}

// put is the compare-and-swap write of one record file. rev points at the
// record's Rev field: it is compared with the stored revision, and set to
// the new revision after a write.
func put[T any](ctx context.Context, st *FileStore, dir, name, what string, rec *T, rev *uint64) error {
	unlock, p, err := st.beginRecordWrite(ctx, dir, name)
	if err != nil {
		return err
	}
	defer unlock()
	stored, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: %w", err)
	}
	var storedRev uint64
	if stored != nil {
		var h struct {
			Rev uint64 `json:"rev"`
		}
		if err := json.Unmarshal(stored, &h); err != nil {
			return fmt.Errorf("state: %s: %w", p, err)
		}
		storedRev = h.Rev
	}
	if *rev != storedRev || (stored == nil && *rev != 0) {
		return &StaleError{What: what, Have: *rev, Stored: storedRev}
	}
	want, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if stored != nil && bytes.Equal(bytes.TrimSpace(stored), want) {
		return nil // a no-op save changes nothing
	}
	next, err := st.nextRevision(storedRev)
	if err != nil {
		return err
	}
	old := *rev
	*rev = next
	data, err := json.Marshal(rec)
	*rev = old
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := writeAtomic(st.path(dir), name+".json", append(data, '\n')); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	*rev = next
	return nil
}

// del removes one record file if its stored revision is rev.
func del[T any](ctx context.Context, st *FileStore, dir, name, what string, rev uint64, revOf func(*T) uint64) error {
	unlock, p, err := st.beginRecordWrite(ctx, dir, name)
	if err != nil {
		return err
	}
	defer unlock()
	stored, err := readJSON[T](p)
	if err != nil {
		return err
	}
	if stored == nil {
		if rev != 0 {
			return &StaleError{What: what, Have: rev}
		}
		return nil
	}
	if s := revOf(stored); s != rev {
		return &StaleError{What: what, Have: rev, Stored: s}
	}
	// The counter moves past the deleted revision for good, so that a
	// record made again under the same name never reuses a revision.
	if _, err := st.nextRevision(rev); err != nil {
		return err
	}
	if err := st.syncCounter(); err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := syncDir(st.path(dir)); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// prepareWrite makes the directory a format 2 store before the first
// write: it migrates a format 1 state.json, and writes the format and
// lineage files.
func (st *FileStore) prepareWrite(ctx context.Context) error {
	st.metaMu.Lock()
	defer st.metaMu.Unlock()
	if _, err := os.Stat(st.path(formatFile)); err == nil {
		_, err := st.readFormat()
		return err
	}
	// Only one process prepares: whole-file lock on records.lock.
	unlock, err := st.lockRange(ctx, 0, 0)
	if err != nil {
		return err
	}
	defer unlock()
	format, err := st.readFormat()
	if err != nil || format == 2 {
		return err
	}
	if format == 1 {
		if err := st.migrateV1(); err != nil {
			return err
		}
	}
	for _, d := range []string{merchantsDir, rolloutsDir, databasesDir} {
		if err := os.MkdirAll(st.path(d), 0o700); err != nil {
			return fmt.Errorf("state: %w", err)
		}
	}
	if l, err := st.readSmall(lineageFile); err != nil {
		return err
	} else if l == "" {
		if err := writeAtomic(st.dir, lineageFile, []byte(newLineage()+"\n")); err != nil {
			return fmt.Errorf("state: %w", err)
		}
	}
	if err := writeAtomic(st.dir, formatFile, []byte(strconv.Itoa(FormatVersion)+"\n")); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// Key implements Store.
func (st *FileStore) Key(ctx context.Context) ([]byte, error) {
	if err := st.check(ctx); err != nil {
		return nil, err
	}
	if err := st.prepareWrite(ctx); err != nil {
		return nil, err
	}
	st.metaMu.Lock()
	defer st.metaMu.Unlock()
	unlock, err := st.lockRange(ctx, 0, 0)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if k, err := st.readSmall(keyFile); err != nil {
		return nil, err
	} else if k != "" {
		key, err := hex.DecodeString(k)
		if err != nil || len(key) < 16 {
			return nil, fmt.Errorf("state: %s is not a key", st.path(keyFile))
		}
		return key, nil
	}
	key := make([]byte, 32)
	rand.Read(key) // never fails; see crypto/rand.Read
	if err := writeAtomic(st.dir, keyFile, []byte(hex.EncodeToString(key)+"\n")); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return key, nil
}

// readCounter reads the revision counter file (0 when missing or torn).
func (st *FileStore) readCounter() (uint64, error) {
	s, err := st.readSmall(revisionFile)
	if err != nil || s == "" {
		return 0, err
	}
	v, _ := strconv.ParseUint(s, 10, 64)
	return v, nil
}

// nextRevision takes the next revision, higher than the counter and than
// floor (a stored record's revision). The counter file is written without
// fsync: after a crash the records' own revisions restore it (see Load).
func (st *FileStore) nextRevision(floor uint64) (uint64, error) {
	st.revMu.Lock()
	defer st.revMu.Unlock()
	if !st.revOK {
		s := NewSnapshot()
		_ = loadDir(context.Background(), st.path(merchantsDir), s.Merchants, func(string, *reconcile.Record) error { return nil })
		_ = loadDir(context.Background(), st.path(rolloutsDir), s.Rollouts, func(string, *reconcile.Rollout) error { return nil })
		st.rev, st.revOK = st.revisionOf(s), true
	} else if c, _ := st.readCounter(); c > st.rev {
		st.rev = c // another process wrote meanwhile
	}
	if st.rev == ^uint64(0) {
		return 0, errors.New("state: the revision counter cannot be incremented")
	}
	st.rev = max(st.rev, floor) + 1
	if err := writeQuick(st.dir, revisionFile, []byte(strconv.FormatUint(st.rev, 10)+"\n")); err != nil {
		return 0, fmt.Errorf("state: %w", err)
	}
	return st.rev, nil
}

// syncCounter makes the counter file durable.
func (st *FileStore) syncCounter() error {
	f, err := os.Open(st.path(revisionFile))
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return syncDir(st.dir)
}

// writeQuick replaces dir/name with data through a temporary file and a
// rename, without fsync: a crash may lose it, never tear it.
func writeQuick(dir, name string, data []byte) error {
	return atomicfile.WriteFile(filepath.Join(dir, name), data, 0o600, false)
}

// lockRecord takes the write lock of one record: a stripe mutex within the
// process and a byte-range lock on records.lock across processes.
func (st *FileStore) lockRecord(ctx context.Context, key string) (func(), error) {
	h := fnv.New64a()
	h.Write([]byte(key))
	sum := h.Sum64()
	m := &st.stripes[sum%uint64(len(st.stripes))]
	m.Lock()
	// Offsets 1.. are records; a lock of the whole file (offset 0, length
	// 0) excludes them all during a migration.
	unlock, err := st.lockRange(ctx, 1+int64(sum%(1<<30)), 1)
	if err != nil {
		m.Unlock()
		return nil, err
	}
	return func() { unlock(); m.Unlock() }, nil
}

// newLineage returns a random version 4 UUID.
func newLineage() string {
	var b [16]byte
	rand.Read(b[:]) // never fails; see crypto/rand.Read
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// writeAtomic replaces dir/name with data durably: a crash at any point
// leaves either the old or the new file.
func writeAtomic(dir, name string, data []byte) error {
	return atomicfile.WriteFile(filepath.Join(dir, name), data, 0o600, true)
}

func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

// AppendEvent implements Store. Each event is one JSON line; the batch is
// written with one write under an flock on events.jsonl and then synced.
// A torn line left by a crashed writer is cut off before appending.
func (st *FileStore) AppendEvent(ctx context.Context, events ...Event) error {
	if err := st.check(ctx); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	var buf bytes.Buffer
	for i := range events {
		b, err := json.Marshal(&events[i])
		if err != nil {
			return fmt.Errorf("state: event %d: %w", i, err)
		}
		if len(b) >= maxEventLine {
			return fmt.Errorf("state: event %d is %d bytes, more than the limit of %d", i, len(b), maxEventLine)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}

	st.eventsMu.Lock()
	defer st.eventsMu.Unlock()
	f, err := st.eventsForAppend()
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := flockShort(ctx, f); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer unflock(f)
	if err := cutTornTail(f); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// eventsForAppend opens events.jsonl once per store. Called with eventsMu held.
func (st *FileStore) eventsForAppend() (*os.File, error) {
	if st.events != nil {
		return st.events, nil
	}
	f, err := os.OpenFile(st.path(eventsFile), os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	// The file may have just been created: make its directory entry durable.
	if err := syncDir(st.dir); err != nil {
		f.Close()
		return nil, err
	}
	st.events = f
	return f, nil
}

// cutTornTail truncates f after its last newline when the last line is
// incomplete. Only a writer that died mid-write leaves one: every append is
// whole lines, and the caller holds the events flock.
func cutTornTail(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size == 0 {
		return nil
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	// Search backwards for the end of the last complete line.
	buf := make([]byte, 32<<10)
	end := size
	for end > 0 {
		n := min(int64(len(buf)), end)
		chunk := buf[:n]
		if _, err := f.ReadAt(chunk, end-n); err != nil && err != io.EOF {
			return err
		}
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			return f.Truncate(end - n + int64(i) + 1)
		}
		end -= n
	}
	return f.Truncate(0)
}

// Events implements Store. It streams events.jsonl; an incomplete last line
// (a torn write, or one still being written) is skipped. A complete line
// that does not decode is an error, unless a merchant is given and the line
// does not mention it.
func (st *FileStore) Events(ctx context.Context, merchant string, limit int) ([]Event, error) {
	if err := st.check(ctx); err != nil {
		return nil, err
	}
	out := []Event{}
	f, err := os.Open(st.path(eventsFile))
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	defer f.Close()

	// A line cannot belong to merchant unless it holds its id: skip the
	// others without decoding them.
	var needle []byte
	if plainID(merchant) {
		needle = []byte(merchant)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxEventLine+1)
	sc.Split(completeLines)
	for line := 1; sc.Scan(); line++ {
		if line%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		b := sc.Bytes()
		if len(bytes.TrimSpace(b)) == 0 || needle != nil && !bytes.Contains(b, needle) {
			continue
		}
		var e Event
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("state: %s:%d: %w", f.Name(), line, err)
		}
		if merchant != "" && e.Merchant != merchant {
			continue
		}
		out = append(out, e)
		if limit > 0 && len(out) >= 2*limit {
			out = append(out[:0], out[len(out)-limit:]...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("state: %s: %w", f.Name(), err)
	}
	if limit > 0 && len(out) > limit {
		out = append(out[:0], out[len(out)-limit:]...)
	}
	return out, nil
}

// plainID reports whether id is non-empty and made only of characters that
// JSON encoders write as themselves, so that its encoding contains it.
func plainID(id string) bool {
	for _, r := range id {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return id != ""
}

// completeLines is a bufio.SplitFunc returning newline-terminated lines
// without the newline and dropping an unterminated tail.
func completeLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), nil, nil
	}
	return 0, nil, nil
}

// lockInfo is the content of the lock file: who holds the writer lock.
// It is informational; the flock is what excludes.
type lockInfo struct {
	PID   int       `json:"pid"`
	Who   string    `json:"who,omitempty"`
	Since time.Time `json:"since"`
}

// heldLock is one writer lock taken through Lock.
type heldLock struct {
	f    *os.File
	once sync.Once
	err  error
}

func (h *heldLock) release() error {
	h.once.Do(func() {
		// Clear the holder first so that nobody reads a released lock as held.
		h.err = errors.Join(h.f.Truncate(0), unflock(h.f), h.f.Close())
	})
	return h.err
}

// Lease implements Store with flock(2) on the scope's lease file ("lock"
// for HostScope, "lease-SCOPE" for others), which also holds a lockInfo
// naming the holder. A lock file left by a dead process does not
// block: the kernel released its flock. Each call opens its own descriptor,
// so two Lock calls exclude each other even within one process. The
// descriptor is close-on-exec, so child processes never inherit the lock.
// Calling release more than once returns the first call's result.
func (st *FileStore) Lease(ctx context.Context, scope, who string, wait time.Duration) (func() error, error) {
	if err := st.check(ctx); err != nil {
		return nil, err
	}
	name, err := leaseFile(scope)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(st.path(name), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	ok, err := flockWait(ctx, f, max(wait, 0))
	if err != nil || !ok {
		f.Close()
		holder := st.holder(name)
		if err != nil {
			return nil, fmt.Errorf("%w (%w)", holder, err)
		}
		return nil, holder
	}

	info, _ := json.Marshal(lockInfo{PID: os.Getpid(), Who: who, Since: time.Now().UTC().Truncate(time.Second)})
	info = append(info, '\n')
	// Write over the old content, then cut it to length: a reader never sees
	// an empty file while the lock is held.
	if _, err := f.WriteAt(info, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := f.Truncate(int64(len(info))); err != nil {
		f.Close()
		return nil, fmt.Errorf("state: %w", err)
	}

	h := &heldLock{f: f}
	st.mu.Lock()
	if st.closed { // Close ran while this call was taking the lock
		st.mu.Unlock()
		return nil, errors.Join(ErrClosed, h.release())
	}
	st.locks[h] = struct{}{}
	st.mu.Unlock()
	return func() error {
		st.mu.Lock()
		delete(st.locks, h)
		st.mu.Unlock()
		return h.release()
	}, nil
}

// holder reads the lock file to describe who holds the lock. The holder
// writes who it is right after it takes the lock: a file still without it
// is read again for a moment.
func (st *FileStore) holder(name string) *LockError {
	for deadline := time.Now().Add(500 * time.Millisecond); ; {
		if info, ok := st.readLockInfo(name); ok || time.Now().After(deadline) {
			return &LockError{PID: info.PID, Who: info.Who, Since: info.Since}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (st *FileStore) readLockInfo(name string) (lockInfo, bool) {
	var info lockInfo
	f, err := os.Open(st.path(name))
	if err != nil {
		return info, false
	}
	defer f.Close()
	// Decode reads one value and ignores anything after it.
	err = json.NewDecoder(io.LimitReader(f, 64<<10)).Decode(&info)
	return info, err == nil && info.PID != 0
}

// Close implements Store. It releases writer locks still held through st.
func (st *FileStore) Close() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	held := st.locks
	st.locks = map[*heldLock]struct{}{}
	st.mu.Unlock()

	var errs []error
	for h := range held {
		errs = append(errs, h.release())
	}
	st.eventsMu.Lock()
	if st.events != nil {
		errs = append(errs, st.events.Close())
		st.events = nil
	}
	st.eventsMu.Unlock()
	st.recMu.Lock()
	if st.recLock != nil {
		errs = append(errs, st.recLock.Close())
		st.recLock = nil
	}
	st.recMu.Unlock()
	return errors.Join(errs...)
}
