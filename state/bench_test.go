package state

import (
	"context"
	"fmt"
	"testing"
	"time"

	"steward/reconcile"
)

// storeWith returns a store holding n merchant records.
func storeWith(b *testing.B, n int) *FileStore {
	b.Helper()
	st, err := OpenFile(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ctx := context.Background()
	for i := range n {
		r := &reconcile.Record{ID: fmt.Sprintf("m%05d", i), Package: "invoicing", Port: 8100 + i,
			Current: reconcile.Instance{PID: 1000 + i, StartTime: 42, Port: 8100 + i, Version: "1.0.0", StartedAt: time.Now()},
			Applied: map[string]string{"package": "invoicing", "database": "db-east", "env.LOCALE": "zh_CN"}, Phase: reconcile.PhaseRunning,
			GoodVersions: []string{"1.0.0"}}
		if err := st.PutMerchant(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	return st
}

// BenchmarkPutMerchant saves one merchant's change in a store of 100 and
// of 10,000 merchants: a write costs the same whatever the fleet's size.
func BenchmarkPutMerchant(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("merchants=%d", n), func(b *testing.B) {
			st := storeWith(b, n)
			r, err := st.Merchant(context.Background(), "m00042")
			if err != nil || r == nil {
				b.Fatal(r, err)
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				r.Restarts = i + 1
				if err := st.PutMerchant(context.Background(), r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoad reads every record of a fleet of 1,000 and 10,000.
func BenchmarkLoad(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("merchants=%d", n), func(b *testing.B) {
			st := storeWith(b, n)
			for b.Loop() {
				if _, err := st.Load(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	st, err := OpenFile(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for b.Loop() {
		if err := st.AppendEvent(context.Background(), Event{Time: time.Now(), Merchant: "acme", Action: "start", Result: "ok"}); err != nil {
			b.Fatal(err)
		}
	}
}
