package state

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// benchState returns a state with n merchants filled in as a running fleet.
func benchState(n int) *State {
	s := New("bench")
	at := time.Date(2026, 11, 22, 3, 20, 0, 0, time.UTC)
	for i := range n {
		id := fmt.Sprintf("merchant-%05d", i)
		s.Merchants[id] = &Merchant{
			ID: id, Package: "invoicing", Version: "1.4.2", Port: 8100 + i, PID: 10000 + i, StartTime: uint64(i) * 1000,
			Applied:   map[string]string{"env.LOCALE": "sha256:9f86d081884c7d65", "database": "sha256:2c26b46b68ffc68f", "command": "sha256:fcde2b2edba56bf4"},
			Phase:     "running",
			Restarts:  i % 3,
			StartedAt: at, GoodVersions: []string{"1.4.1", "1.4.2"}, Revision: "3f2c9e1",
		}
	}
	for _, name := range []string{"db-east", "db-west"} {
		s.Databases[name] = &Database{Name: name, Up: true, Since: at, Latency: time.Millisecond}
	}
	return s
}

func BenchmarkSave(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("merchants=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			st := openFileStore(b, dir)
			s := benchState(n)
			ctx := context.Background()
			if err := st.Save(ctx, s); err != nil {
				b.Fatal(err)
			}
			if fi, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
				b.SetBytes(fi.Size())
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := st.Save(ctx, s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkLoad(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("merchants=%d", n), func(b *testing.B) {
			st := openFileStore(b, b.TempDir())
			ctx := context.Background()
			if err := st.Save(ctx, benchState(n)); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := st.Load(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	st := openFileStore(b, b.TempDir())
	ctx := context.Background()
	e := Event{
		Time: time.Date(2026, 11, 22, 3, 20, 0, 0, time.UTC), Merchant: "acme", Action: "restart",
		Reason: "process exited with status 1", Result: "ok", Revision: "3f2c9e1", Version: "1.4.2", PID: 4242,
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := st.AppendEvent(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvents(b *testing.B) {
	st := openFileStore(b, b.TempDir())
	ctx := context.Background()
	batch := make([]Event, 0, 100000)
	for i := range cap(batch) {
		batch = append(batch, Event{Time: time.Unix(int64(i), 0).UTC(), Merchant: fmt.Sprintf("merchant-%03d", i%500), Action: "start", Result: "ok"})
	}
	if err := st.AppendEvent(ctx, batch...); err != nil {
		b.Fatal(err)
	}
	b.Run("events=100000/merchant/limit=20", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			es, err := st.Events(ctx, "merchant-007", 20)
			if err != nil || len(es) != 20 {
				b.Fatal(len(es), err)
			}
		}
	})
}
