package dbadmin

import (
	"strings"
	"sync"
	"testing"

	"steward/internal/pgtest"
)

func TestEnsureCreatesOnce(t *testing.T) {
	server := pgtest.Server(t)
	ctx := testCtx(t)
	name := uniqueName() + "-Mixed Case" // a quoted identifier
	pgtest.DropAtCleanup(t, server, name)
	created, err := Ensure(ctx, server, name)
	if err != nil || !created {
		t.Fatalf("first Ensure = %v, %v; want true, nil", created, err)
	}
	created, err = Ensure(ctx, server, name)
	if err != nil || created {
		t.Fatalf("second Ensure = %v, %v; want false, nil", created, err)
	}
	if n := queryInt(t, ctx, server, `SELECT count(*) FROM pg_database WHERE datname = $1`, name); n != 1 {
		t.Fatalf("%d databases named %q", n, name)
	}
	// The new database is usable through its URL.
	if v, err := SchemaVersion(ctx, pgtest.WithDB(t, server, name), ""); err != nil || v != 0 {
		t.Fatalf("SchemaVersion of the new database = %d, %v", v, err)
	}
}

func TestEnsureConcurrent(t *testing.T) {
	server := pgtest.Server(t)
	ctx := testCtx(t)
	name := uniqueName()
	pgtest.DropAtCleanup(t, server, name)
	const n = 8
	start := make(chan struct{})
	var wg sync.WaitGroup
	created := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			created[i], errs[i] = Ensure(ctx, server, name)
		}()
	}
	close(start)
	wg.Wait()
	count := 0
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Ensure %d: %v", i, errs[i])
		}
		if created[i] {
			count++
		}
	}
	if count != 1 {
		t.Errorf("%d calls reported creating the database, want 1", count)
	}
}

func TestEnsureRejectsBadNames(t *testing.T) {
	ctx := testCtx(t)
	for _, name := range []string{"", strings.Repeat("x", 64), "a\x00b"} {
		if _, err := Ensure(ctx, "postgres://postgres@127.0.0.1:1/postgres", name); err == nil {
			t.Errorf("Ensure(%q) succeeded", name)
		}
	}
}

func TestEnsureUnreachableHidesPassword(t *testing.T) {
	ctx := testCtx(t)
	for _, dsn := range []string{
		"postgres://postgres:" + testPassword + "@127.0.0.1:1/postgres?sslmode=disable",
		"host=127.0.0.1 port=1 user=postgres password=" + testPassword + " dbname=postgres sslmode=disable",
	} {
		_, err := Ensure(ctx, dsn, "x")
		if err == nil {
			t.Fatal("Ensure on a closed port succeeded")
		}
		noSecret(t, err)
	}
}
