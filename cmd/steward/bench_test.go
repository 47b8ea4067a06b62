package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"steward/reconcile"
	"steward/spec"
)

// writeFleet generates n merchants over two databases, 100 per file.
func writeFleet(tb testing.TB, dir string, n int) {
	tb.Helper()
	head := `database "db-east" { dsn = env("BENCH_DSN", "postgres://u:p@east/postgres") }
database "db-west" { dsn = env("BENCH_DSN", "postgres://u:p@west/postgres") }
package "invoicing" {
  source = "file://../packages"
  channel "stable" { version = "1.1.0" }
  channel "edge"   { version = "1.2.0" }
}
defaults {
  package = "invoicing"
  channel = "stable"
}
`
	if err := os.WriteFile(filepath.Join(dir, "fleet.hcl"), []byte(head), 0o644); err != nil {
		tb.Fatal(err)
	}
	for f := 0; f*100 < n; f++ {
		var b strings.Builder
		for i := f * 100; i < n && i < (f+1)*100; i++ {
			db := []string{"db-east", "db-west"}[i%2]
			fmt.Fprintf(&b, "merchant \"m%05d\" {\n  database = %q\n  env = { LOCALE = \"en_US\", SHARD = \"%d\" }\n", i, db, i%7)
			if i%10 == 0 {
				b.WriteString("  channel = \"edge\"\n")
			}
			b.WriteString("}\n\n")
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("m%03d.hcl", f)), []byte(b.String()), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkPlan measures parse + validate + diff + render of a fleet where
// every merchant runs and one in ten has a pending upgrade.
func BenchmarkPlan(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("merchants=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			writeFleet(b, dir, n)
			ports := spec.PortRange{Low: 10000, High: 60000}
			fl, _, diags := spec.LoadDir(dir, spec.Options{Ports: ports})
			if diags.HasErrors() {
				b.Fatal(diags)
			}
			recs := map[string]*reconcile.Record{}
			obs := reconcile.Observation{Now: time.Now(), Merchants: map[string]reconcile.MerchantObs{}, Databases: map[string]reconcile.DBState{"db-east": reconcile.DBUp, "db-west": reconcile.DBUp}}
			key := []byte("bench-key-0123456789")
			for i, id := range fl.MerchantIDs() {
				m := fl.Merchants[id]
				v := m.Version
				if i%10 == 0 {
					v = "1.1.0"
				}
				recs[id] = &reconcile.Record{ID: id, Package: m.Package, Port: 10000 + i, Current: reconcile.Instance{PID: 100 + i, StartTime: 1, Port: 10000 + i, Version: v},
					Applied: reconcile.Fingerprints(fl, m, key), GoodVersions: []string{v}}
				obs.Merchants[id] = reconcile.MerchantObs{Current: reconcile.Alive}
			}
			b.ResetTimer()
			for b.Loop() {
				fl, _, diags := spec.LoadDir(dir, spec.Options{Ports: ports})
				if diags.HasErrors() {
					b.Fatal(diags)
				}
				p := reconcile.Diff(reconcile.Input{Fleet: fl, Ports: ports, Records: recs, Obs: obs, Key: key, Policy: reconcile.DefaultRestartPolicy})
				if s := p.Summary(); s.Change != n/10 {
					b.Fatalf("plan has %d changes, want %d", s.Change, n/10)
				}
				renderPlan(io.Discard, p)
			}
		})
	}
}
