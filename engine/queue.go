package engine

import (
	"sync"
	"time"
)

// Queue is a work queue of merchant ids with the guarantees the daemon
// relies on:
//
//   - a key is queued at most once, however often it is added while it
//     waits (bursts coalesce);
//   - a key is handed to at most one worker at a time: a key added while it
//     is being processed is queued again only when Done is called;
//   - keys come out in the order they were first added (FIFO);
//   - AddAfter delays a key; AddRateLimited delays it by a per-key
//     exponential backoff that Forget resets.
type Queue struct {
	mu         sync.Mutex
	cond       *sync.Cond
	order      []string
	dirty      map[string]bool
	processing map[string]bool
	waiting    map[string]Timer
	waitUntil  map[string]time.Time
	failures   map[string]int
	shutdown   bool

	// BaseDelay and MaxDelay bound AddRateLimited's backoff.
	BaseDelay, MaxDelay time.Duration
	clock               Clock
}

// Clock is the time a Queue's delays run on.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface{ Stop() bool }

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// NewQueue returns an empty queue on the real clock.
func NewQueue() *Queue { return NewQueueWithClock(realClock{}) }

// NewQueueWithClock returns an empty queue whose delays run on c.
func NewQueueWithClock(c Clock) *Queue {
	q := &Queue{dirty: map[string]bool{}, processing: map[string]bool{}, waiting: map[string]Timer{},
		waitUntil: map[string]time.Time{}, failures: map[string]int{}, BaseDelay: time.Second, MaxDelay: 5 * time.Minute, clock: c}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add queues key now.
func (q *Queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *Queue) addLocked(key string) {
	if q.shutdown || q.dirty[key] {
		return
	}
	q.dirty[key] = true
	if q.processing[key] {
		return
	}
	q.order = append(q.order, key)
	q.cond.Signal()
}

// AddAfter queues key once d has passed. An earlier pending AddAfter for
// the same key wins; a later one is ignored.
func (q *Queue) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	at := q.clock.Now().Add(d)
	if t, ok := q.waiting[key]; ok {
		if !q.waitUntil[key].After(at) {
			return
		}
		t.Stop()
	}
	q.waitUntil[key] = at
	q.waiting[key] = q.clock.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.waitUntil[key].Equal(at) {
			delete(q.waiting, key)
			delete(q.waitUntil, key)
		}
		q.addLocked(key)
	})
}

// AddRateLimited queues key after its backoff (BaseDelay doubling per
// failure, up to MaxDelay) and counts a failure.
func (q *Queue) AddRateLimited(key string) {
	q.mu.Lock()
	n := q.failures[key]
	q.failures[key] = n + 1
	d := q.BaseDelay
	for i := 0; i < n && d < q.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, q.MaxDelay)
	q.mu.Unlock()
	q.AddAfter(key, d)
}

// Forget resets key's backoff.
func (q *Queue) Forget(key string) {
	q.mu.Lock()
	delete(q.failures, key)
	q.mu.Unlock()
}

// Get blocks until a key is ready or the queue is shut down (ok false).
// The caller must call Done(key) when finished with it.
func (q *Queue) Get() (key string, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) == 0 && !q.shutdown {
		q.cond.Wait()
	}
	if len(q.order) == 0 {
		return "", false
	}
	key, q.order = q.order[0], q.order[1:]
	q.processing[key] = true
	delete(q.dirty, key)
	return key, true
}

// Done marks key finished; if it was added meanwhile it is queued again.
func (q *Queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if q.dirty[key] {
		q.order = append(q.order, key)
		q.cond.Signal()
	}
}

// Len is the number of keys ready to be handed out.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}

// ShutDown makes every Get return ok=false at once: keys still queued are
// dropped and delayed ones cancelled. Keys being processed finish normally.
func (q *Queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdown = true
	q.order = nil
	for k, t := range q.waiting {
		t.Stop()
		delete(q.waiting, k)
	}
	q.cond.Broadcast()
}
