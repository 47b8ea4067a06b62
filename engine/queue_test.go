package engine

import (
	"sort"
	"sync"
	"testing"
	"time"
)

// fakeClock runs AfterFunc callbacks when Advance passes their time.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock and runs (in this goroutine, in time order) the
// callbacks that became due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	var rest []*fakeTimer
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			due = append(due, t)
		default:
			rest = append(rest, t)
		}
	}
	c.timers = rest
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}

func newFakeQueue() (*Queue, *fakeClock) {
	c := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return NewQueueWithClock(c), c
}

func TestQueueCoalescesAndKeepsOrder(t *testing.T) {
	q := NewQueue()
	for _, k := range []string{"a", "b", "a", "c", "b", "a"} {
		q.Add(k)
	}
	if q.Len() != 3 {
		t.Fatalf("Len = %d, want 3", q.Len())
	}
	for _, want := range []string{"a", "b", "c"} {
		k, ok := q.Get()
		if !ok || k != want {
			t.Fatalf("Get = %q %v, want %q", k, ok, want)
		}
		q.Done(k)
	}
}

// A key added while it is processed is not handed out until Done, and
// however often it was added meanwhile, it runs once more.
func TestQueueNeverHandsOutAKeyTwiceAtOnce(t *testing.T) {
	q := NewQueue()
	q.Add("a")
	q.Add("b")
	k, _ := q.Get()
	for range 3 {
		q.Add("a") // while processing
	}
	if k2, _ := q.Get(); k2 != "b" {
		t.Fatalf("Get = %q while a is processed; want b, the only other key", k2)
	}
	if q.Len() != 0 {
		t.Fatal("a key being processed was queued again before Done")
	}
	q.Done(k)
	if q.Len() != 1 {
		t.Fatalf("Len = %d after Done; the adds during processing coalesce into one", q.Len())
	}
	if k3, _ := q.Get(); k3 != "a" {
		t.Fatalf("Get = %q, want a again", k3)
	}
	q.Done("a")
	q.Done("b")
	if q.Len() != 0 {
		t.Fatalf("Len = %d, want 0", q.Len())
	}
}

func TestQueueAddAfter(t *testing.T) {
	q, c := newFakeQueue()
	q.AddAfter("late", time.Hour)
	q.AddAfter("late", 20*time.Millisecond) // the earlier wins
	c.Advance(19 * time.Millisecond)
	if q.Len() != 0 {
		t.Fatal("a key came out before its delay")
	}
	c.Advance(time.Millisecond)
	if q.Len() != 1 {
		t.Fatal("a key did not come out after its delay")
	}
	k, _ := q.Get()
	q.Done(k)
	c.Advance(2 * time.Hour)
	if q.Len() != 0 {
		t.Fatal("the superseded AddAfter fired too")
	}
	q.AddAfter("x", 0)
	if q.Len() != 1 {
		t.Fatal("AddAfter with no delay did not add at once")
	}
}

func TestQueueRateLimitBacksOffExactly(t *testing.T) {
	q, c := newFakeQueue()
	q.BaseDelay, q.MaxDelay = 10*time.Millisecond, 40*time.Millisecond
	for i, want := range []time.Duration{10, 20, 40, 40} {
		q.AddRateLimited("x")
		c.Advance(want*time.Millisecond - time.Nanosecond)
		if q.Len() != 0 {
			t.Fatalf("failure %d: requeued before %dms", i+1, want)
		}
		c.Advance(time.Nanosecond)
		if q.Len() != 1 {
			t.Fatalf("failure %d: not requeued after %dms", i+1, want)
		}
		k, _ := q.Get()
		q.Done(k)
	}
	q.Forget("x")
	q.AddRateLimited("x")
	c.Advance(10 * time.Millisecond)
	if q.Len() != 1 {
		t.Fatal("Forget did not reset the backoff")
	}
}

func TestQueueShutDownReleasesWaiters(t *testing.T) {
	q, c := newFakeQueue()
	q.AddAfter("later", time.Second)
	done := make(chan bool)
	go func() {
		_, ok := q.Get()
		done <- ok
	}()
	q.ShutDown()
	select {
	case ok := <-done:
		if ok {
			t.Fatal("Get returned a key after ShutDown")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Get did not return after ShutDown")
	}
	c.Advance(time.Hour)
	if q.Len() != 0 {
		t.Fatal("a delayed key came out after ShutDown")
	}
}
