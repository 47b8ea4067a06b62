package state_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"steward/state"
	"steward/state/statetest"
)

func open(t *testing.T, dir string) *state.FileStore {
	t.Helper()
	st, err := state.OpenFile(dir)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestFileStoreConformance(t *testing.T) {
	statetest.Run(t, func(t *testing.T) state.Store { return open(t, t.TempDir()) })
}

func TestFileStoreReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := open(t, dir)
	r := statetest.FullRecord("acme")
	if err := a.PutMerchant(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := a.AppendEvent(ctx, state.Event{Merchant: "acme", Action: "start"}); err != nil {
		t.Fatal(err)
	}
	s, err := a.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lineage := s.Lineage
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := a.Load(ctx); !errors.Is(err, state.ErrClosed) {
		t.Errorf("Load after Close = %v", err)
	}
	b := open(t, dir)
	got, err := b.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Lineage != lineage || lineage == "" || got.Revision != r.Rev || !reflect.DeepEqual(got.Merchants["acme"], r) {
		t.Errorf("reopened store Load = %+v; want the record at revision %d in lineage %s", got, r.Rev, lineage)
	}
	if es, err := b.Events(ctx, "acme", 0); err != nil || len(es) != 1 {
		t.Errorf("reopened store Events = %v, %v; want one event", es, err)
	}
}
