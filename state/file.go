package state

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Names of the files a FileStore keeps in its directory.
const (
	stateFile     = "state.json"
	stateLockFile = "state.json.lock"
	eventsFile    = "events.jsonl"
	lockFile      = "lock"
	tempPattern   = ".state.json.tmp-*"
)

// maxEventLine bounds one serialised event. AppendEvent refuses larger
// events so that Events can always read back what was written.
const maxEventLine = 1 << 20

// FileStore is the embedded Store: files in one directory on local disk.
// It is safe for concurrent use by goroutines and by several processes
// sharing the directory.
type FileStore struct {
	dir string

	saveMu sync.Mutex // serialises Save within this process

	eventsMu sync.Mutex // serialises AppendEvent; guards events
	events   *os.File   // events.jsonl opened for appending, or nil

	mu      sync.Mutex // guards the fields below
	closed  bool
	lineage string // generated for a store that was never saved
	locks   map[*heldLock]struct{}
}

var _ Store = (*FileStore)(nil)

var errClosed = errors.New("state: store is closed")

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
	return &FileStore{dir: dir, locks: map[*heldLock]struct{}{}}, nil
}

// Dir returns the directory the store keeps its files in.
func (st *FileStore) Dir() string { return st.dir }

func (st *FileStore) path(name string) string { return filepath.Join(st.dir, name) }

func (st *FileStore) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return errClosed
	}
	return nil
}

// freshLineage returns the lineage of a never-saved store, the same one for
// every Load through this FileStore until a Save persists one.
func (st *FileStore) freshLineage() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.lineage == "" {
		st.lineage = newLineage()
	}
	return st.lineage
}

// Load implements Store.
func (st *FileStore) Load(ctx context.Context) (*State, error) {
	if err := st.check(ctx); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(st.path(stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return New(st.freshLineage()), nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	s, err := decodeState(data)
	if err != nil {
		return nil, fmt.Errorf("state: %s: %w", st.path(stateFile), err)
	}
	return s, nil
}

// storedHeader is the part of state.json that Save checks against.
type storedHeader struct {
	Format  int    `json:"format"`
	Serial  uint64 `json:"serial"`
	Lineage string `json:"lineage"`
}

// readHeader reads the stored serial and lineage; ok is false when nothing
// was ever saved.
func (st *FileStore) readHeader() (h storedHeader, ok bool, err error) {
	f, err := os.Open(st.path(stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return h, false, nil
	}
	if err != nil {
		return h, false, err
	}
	defer f.Close()
	// The header fields come first in what Save writes, so the decoder
	// stops after a few tokens instead of parsing every merchant.
	if h, err = decodeHeader(bufio.NewReaderSize(f, 4096)); err != nil {
		return h, false, fmt.Errorf("%s: %w", st.path(stateFile), err)
	}
	if h.Format > FormatVersion {
		return h, false, fmt.Errorf("%s: format %d is newer than this build of steward understands (%d); upgrade steward", st.path(stateFile), h.Format, FormatVersion)
	}
	return h, true, nil
}

// decodeHeader reads format, serial and lineage from a state document,
// skipping other values, and stops as soon as it has all three.
func decodeHeader(r io.Reader) (h storedHeader, err error) {
	dec := json.NewDecoder(r)
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return h, fmt.Errorf("not a state document")
	}
	seen := 0
	for dec.More() && seen < 3 {
		t, err := dec.Token()
		if err != nil {
			return h, err
		}
		key, _ := t.(string)
		switch key {
		case "format":
			err, seen = dec.Decode(&h.Format), seen+1
		case "serial":
			err, seen = dec.Decode(&h.Serial), seen+1
		case "lineage":
			err, seen = dec.Decode(&h.Lineage), seen+1
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return h, err
		}
	}
	return h, nil
}

// Save implements Store. The serial is checked against state.json on disk
// under an flock on state.json.lock, so savers in other processes are
// excluded as well as other goroutines.
func (st *FileStore) Save(ctx context.Context, s *State) error {
	if s == nil {
		return errors.New("state: Save of a nil state")
	}
	if err := st.check(ctx); err != nil {
		return err
	}
	if err := checkRecords(s); err != nil {
		return fmt.Errorf("state: refusing to save: %w", err)
	}

	st.saveMu.Lock()
	defer st.saveMu.Unlock()
	lf, err := os.OpenFile(st.path(stateLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer lf.Close() // also releases the flock
	if err := flockShort(ctx, lf); err != nil {
		return fmt.Errorf("state: %w", err)
	}

	stored, exists, err := st.readHeader()
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if s.Serial != stored.Serial {
		return staleError(s.Serial, stored.Serial)
	}
	if exists && s.Lineage != stored.Lineage {
		return fmt.Errorf("%w: its lineage %q is not the stored lineage %q; it belongs to another state history", ErrStale, s.Lineage, stored.Lineage)
	}

	if stored.Serial == ^uint64(0) {
		return fmt.Errorf("state: serial %d cannot be incremented", stored.Serial)
	}
	c := *s
	c.Format = FormatVersion
	c.Serial = stored.Serial + 1
	if c.Lineage == "" {
		c.Lineage = st.freshLineage()
	}
	if c.Merchants == nil {
		c.Merchants = map[string]*Merchant{}
	}
	if c.Databases == nil {
		c.Databases = map[string]*Database{}
	}
	if c.Rollouts == nil {
		c.Rollouts = map[string]*Rollout{}
	}
	data, err := json.Marshal(&c)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	data = append(data, '\n')
	st.removeTemps()
	if err := writeAtomic(st.dir, stateFile, data); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	*s = c
	return nil
}

// removeTemps removes temporary files left by a saver that crashed. It runs
// under the save flock, when no other saver can be writing one.
func (st *FileStore) removeTemps() {
	names, _ := filepath.Glob(filepath.Join(st.dir, tempPattern))
	for _, n := range names {
		os.Remove(n)
	}
}

// writeAtomic replaces dir/name with data: it writes a temporary file in dir,
// syncs it, renames it over name and syncs dir. A crash at any point leaves
// either the old or the new file.
func writeAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, tempPattern) // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

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

// Lock implements Store with flock(2) on the file "lock", which also holds a
// lockInfo naming the holder. A lock file left by a dead process does not
// block: the kernel released its flock. Each call opens its own descriptor,
// so two Lock calls exclude each other even within one process. The
// descriptor is close-on-exec, so child processes never inherit the lock.
// Calling Unlock more than once returns the first call's result.
func (st *FileStore) Lock(ctx context.Context, who string, wait time.Duration) (func() error, error) {
	if err := st.check(ctx); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(st.path(lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	ok, err := flockWait(ctx, f, max(wait, 0))
	if err != nil || !ok {
		f.Close()
		holder := st.holder()
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
		return nil, errors.Join(errClosed, h.release())
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

// holder reads the lock file to describe who holds the lock.
func (st *FileStore) holder() *LockError {
	f, err := os.Open(st.path(lockFile))
	if err != nil {
		return &LockError{}
	}
	defer f.Close()
	var info lockInfo
	// Decode reads one value and ignores anything after it.
	if err := json.NewDecoder(io.LimitReader(f, 64<<10)).Decode(&info); err != nil {
		return &LockError{}
	}
	return &LockError{PID: info.PID, Who: info.Who, Since: info.Since}
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
	return errors.Join(errs...)
}
