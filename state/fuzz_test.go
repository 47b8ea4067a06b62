package state

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes as state.json. Load returns an error or a
// state holding the stored invariants, which Save accepts and writes back
// unchanged but for the serial.
func FuzzLoad(f *testing.F) {
	full, err := json.Marshal(fullState("1b4e28ba-2fa1-41d2-883f-0016d3cca427"))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(full),
		`{"format":1,"serial":0,"lineage":"x","merchants":{}}`,
		`{"format":1,"serial":18446744073709551615,"lineage":"x"}`,
		`{"format":2,"serial":1,"lineage":"x"}`,
		`{"format":1,"serial":1,"lineage":"x","merchants":{"a":null}}`,
		`{"format":1,"serial":1,"lineage":"x","merchants":{"a":{"id":"b"}}}`,
		`{"format":1,"serial":1,"lineage":"x","databases":{"d":{"name":"d","latency":-1,"since":"0001-01-01T00:00:00Z"}}}`,
		`{"format":1,"lineage":"x","merchants":{"a":{"id":"a","started_at":"2026-11-22T03:20:00.123+08:00"}}}`,
		`null`, `[]`, `{}`, ``, `{"format":1`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st := storeHolding(t, stateFile, data)
		ctx := context.Background()
		s, err := st.Load(ctx)
		if err != nil {
			return
		}
		if s.Format < 1 || s.Format > FormatVersion || s.Lineage == "" || s.Merchants == nil || s.Databases == nil {
			t.Fatalf("Load returned an invalid state: %+v", s)
		}
		if err := checkRecords(s); err != nil {
			t.Fatalf("Load returned an invalid state: %v", err)
		}
		if s.Serial == ^uint64(0) {
			return // the next serial would wrap; nothing real gets there
		}
		before, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("loaded state does not marshal: %v", err)
		}
		if err := st.Save(ctx, s); err != nil {
			t.Fatalf("Save of a loaded state: %v", err)
		}
		again, err := st.Load(ctx)
		if err != nil {
			t.Fatalf("Load after Save: %v", err)
		}
		again.Serial--
		after, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if string(before) != string(after) {
			t.Fatalf("Save and Load changed the state\nbefore: %s\n after: %s", before, after)
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
