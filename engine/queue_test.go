package engine

import (
	"sync"
	"testing"
	"time"
)

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

func TestQueueNeverHandsOutAKeyTwiceAtOnce(t *testing.T) {
	q := NewQueue()
	q.Add("a")
	k, _ := q.Get()
	q.Add("a") // while processing
	if q.Len() != 0 {
		t.Fatal("a key being processed was queued again before Done")
	}
	q.Done(k)
	if q.Len() != 1 {
		t.Fatal("a key added during processing was not requeued by Done")
	}

	// Many workers, many adds: no key is ever processed concurrently.
	q = NewQueue()
	var mu sync.Mutex
	busy := map[string]bool{}
	processed := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k, ok := q.Get()
				if !ok {
					return
				}
				mu.Lock()
				if busy[k] {
					t.Errorf("key %s processed twice at once", k)
				}
				busy[k] = true
				processed++
				mu.Unlock()
				mu.Lock()
				busy[k] = false
				mu.Unlock()
				q.Done(k)
			}
		}()
	}
	for i := range 2000 {
		q.Add(string(rune('a' + i%5)))
	}
	deadline := time.Now().Add(5 * time.Second)
	for q.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // bounded drain wait; no event to wait on
	}
	q.ShutDown()
	wg.Wait()
	if processed == 0 || processed > 2000 {
		t.Fatalf("processed %d", processed)
	}
}

func TestQueueAddAfterAndRateLimit(t *testing.T) {
	q := NewQueue()
	q.BaseDelay, q.MaxDelay = 10*time.Millisecond, 40*time.Millisecond
	start := time.Now()
	q.AddAfter("late", time.Hour)
	q.AddAfter("late", 20*time.Millisecond) // earlier wins
	k, ok := q.Get()
	if !ok || k != "late" || time.Since(start) < 20*time.Millisecond {
		t.Fatalf("AddAfter: %q %v after %s", k, ok, time.Since(start))
	}
	q.Done(k)
	if q.Len() != 0 {
		t.Fatal("the superseded AddAfter fired too")
	}
	for i, want := range []time.Duration{10, 20, 40, 40} {
		start := time.Now()
		q.AddRateLimited("x")
		k, _ := q.Get()
		q.Done(k)
		if got := time.Since(start); got < want*time.Millisecond {
			t.Errorf("failure %d: requeued after %s, want at least %dms", i+1, got, want)
		}
	}
	q.Forget("x")
	if q.failures["x"] != 0 {
		t.Error("Forget did not reset the backoff")
	}
}

func TestQueueShutDownReleasesWaiters(t *testing.T) {
	q := NewQueue()
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
}
