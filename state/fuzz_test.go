package state

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzLoad feeds arbitrary bytes as a merchant's record file, and as a
// format 1 state.json. Load returns an error or records that hold the
// stored invariants, which a write accepts and reads back unchanged.
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		`{"id":"acme","rev":3,"port":8101,"current":{"pid":4242,"start_time":7,"version":"1.0.0"},"change":{"kind":"upgrade","from":"1.0.0","to":"1.1.0","step":4}}`,
		`{"id":"acme"}`, `{"id":"acme","rev":18446744073709551615}`, `{"id":"bolt"}`, `{"id":"acme","pin":null,"candidate":{}}`,
		`{"format":1,"serial":3,"lineage":"x","merchants":{"acme":{"id":"acme","version":"1.0.0","upgrade_from":"0.9"}}}`,
		`{"format":1,"serial":1,"lineage":"x","merchants":{"a":null}}`,
		`null`, `[]`, `{}`, ``, `{"id":"acme"`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		for _, layout := range []string{"record", "format1"} {
			dir := t.TempDir()
			if layout == "record" {
				os.MkdirAll(filepath.Join(dir, merchantsDir), 0o700)
				os.WriteFile(filepath.Join(dir, formatFile), []byte("2\n"), 0o600)
				os.WriteFile(filepath.Join(dir, merchantsDir, "acme.json"), data, 0o600)
			} else {
				os.WriteFile(filepath.Join(dir, v1File), data, 0o600)
			}
			st, err := OpenFile(dir)
			if err != nil {
				t.Fatal(err)
			}
			s, err := st.Load(ctx)
			if err != nil {
				st.Close()
				continue
			}
			for id, r := range s.Merchants {
				if r == nil || r.ID != id {
					t.Fatalf("Load returned record %q under %q", r.ID, id)
				}
				if r.Rev == ^uint64(0) {
					continue // the next revision would wrap; nothing real gets there
				}
				before := r.Clone()
				if err := st.PutMerchant(ctx, r); err != nil {
					t.Fatalf("writing back a loaded record: %v", err)
				}
				got, err := st.Merchant(ctx, id)
				if err != nil {
					t.Fatalf("Merchant after a write: %v", err)
				}
				got.Rev = before.Rev
				if !reflect.DeepEqual(got, before) {
					t.Fatalf("a write and a read changed the record\nbefore: %+v\n after: %+v", before, got)
				}
			}
			st.Close()
		}
	})
}

// FuzzEvents feeds arbitrary bytes as events.jsonl: Events returns an error
// or events, and appending after any content keeps earlier whole lines.
func FuzzEvents(f *testing.F) {
	for _, seed := range []string{
		"",
		`{"action":"start"}` + "\n",
		`{"action":"start","merchant":"acme"}` + "\n" + `{"action":"st`,
		"\n\n\n",
		"{}\n[]\n",
		`{"time":"bad"}` + "\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st := storeHolding(t, eventsFile, data)
		ctx := context.Background()
		before, err := st.Events(ctx, "", 0)
		if err != nil {
			return
		}
		if err := st.AppendEvent(ctx, Event{Merchant: "fuzz", Action: "start"}); err != nil {
			t.Fatal(err)
		}
		after, err := st.Events(ctx, "", 0)
		if err != nil {
			t.Fatalf("Events after AppendEvent: %v", err)
		}
		if len(after) != len(before)+1 || after[len(after)-1].Merchant != "fuzz" {
			t.Fatalf("Events after AppendEvent = %d events, last %+v; want %d, the appended one last", len(after), after[len(after)-1], len(before)+1)
		}
	})
}

// storeHolding opens a FileStore in a new directory whose file name holds
// data; it is closed when the test ends.
func storeHolding(t *testing.T, name string, data []byte) *FileStore {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
