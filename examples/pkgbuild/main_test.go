package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"steward/internal/pgtest"
	"steward/pkgstore"
)

func TestPackDeterministic(t *testing.T) {
	a, err := pack("invoicing", []byte("binary"), manifest("invoicing", 2, true))
	if err != nil {
		t.Fatal(err)
	}
	b, err := pack("invoicing", []byte("binary"), manifest("invoicing", 2, true))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("pack is not deterministic")
	}
	c, _ := pack("invoicing", []byte("other binary"), manifest("invoicing", 2, true))
	if bytes.Equal(a, c) {
		t.Error("different binaries packed the same")
	}
	d, _ := pack("invoicing", []byte("binary"), manifest("invoicing", 2, false))
	if bytes.Equal(a, d) {
		t.Error("different manifests packed the same")
	}
}

func TestManifestParses(t *testing.T) {
	m, diags := pkgstore.ParseManifest([]byte(manifest("invoicing", 3, true)), "package.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	argv, err := m.Argv(8101, "acme")
	if err != nil || !slices.Equal(argv, []string{"bin/invoicing", "--port=8101"}) {
		t.Errorf("Argv = %q, %v", argv, err)
	}
	if !slices.Equal(m.Migrate, []string{"bin/invoicing", "migrate"}) {
		t.Errorf("top-level migrate = %q", m.Migrate)
	}
	s := m.Schema
	if s == nil || s.Version != 3 || !slices.Equal(s.Migrate, []string{"bin/invoicing", "migrate", "up"}) ||
		s.Query != pkgstore.DefaultSchemaQuery || s.Command != nil || s.Timeout != pkgstore.DefaultSchemaTimeout {
		t.Fatalf("schema = %+v", s)
	}
	if down, err := s.DownArgv(1); err != nil || !slices.Equal(down, []string{"bin/invoicing", "migrate", "down", "1"}) {
		t.Errorf("DownArgv(1) = %q, %v", down, err)
	}

	m, diags = pkgstore.ParseManifest([]byte(manifest("invoicing", 0, false)), "package.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if m.Schema == nil || m.Schema.Version != 0 || m.Schema.HasDown() {
		t.Errorf("schema without down = %+v", m.Schema)
	}
}

func TestParseSchemas(t *testing.T) {
	o, err := parseArgs([]string{"-out", "x"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int64{"1.0.0": 1, "1.1.0": 2, "1.2.0": 3}; !maps.Equal(o.schemas, want) || o.noDown != nil {
		t.Errorf("defaults: schemas %v, no-down %q", o.schemas, o.noDown)
	}
	o, err = parseArgs([]string{"-out", "x", "-versions", "2.0.0", "-schemas", " 2.0.0 = 7 ,3.0.0=0", "-no-down", "2.0.0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int64{"2.0.0": 7, "3.0.0": 0}; !maps.Equal(o.schemas, want) || !slices.Equal(o.noDown, []string{"2.0.0"}) {
		t.Errorf("schemas %v, no-down %q", o.schemas, o.noDown)
	}
}

func TestArgs(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-out", "x", "-versions", ""},
		{"-out", "x", "-versions", "1.0,../x"},
		{"-out", "x", "-name", "a/b"},
		{"-out", "x", "extra"},
		{"-out", "x", "-versions", "2.0.0"},
		{"-out", "x", "-schemas", "1.0.0=1,1.1.0=2"},
		{"-out", "x", "-schemas", "1.0.0=1,1.1.0=2,1.2.0=-1"},
		{"-out", "x", "-schemas", "1.0.0=1,1.1.0=2,1.2.0=x"},
		{"-out", "x", "-schemas", "1.0.0,1.1.0=2,1.2.0=3"},
		{"-out", "x", "-schemas", "../x=1,1.0.0=1,1.1.0=2,1.2.0=3"},
		{"-out", "x", "-schemas", "1.0.0=1,1.0.0=2,1.1.0=2,1.2.0=3"},
		{"-out", "x", "-no-down", "a/b"},
	} {
		var stderr strings.Builder
		if code := run(context.Background(), args, io.Discard, &stderr); code != 2 {
			t.Errorf("run %q = %d, want 2 (stderr %q)", args, code, stderr.String())
		}
	}
}

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startRelease starts a release for merchant acme on a free port, waits
// (bounded) until it accepts connections and returns its base URL; the
// process is killed at cleanup.
func startRelease(t *testing.T, ctx context.Context, r *pkgstore.Release) string {
	t.Helper()
	port := freePort(t)
	argv, err := r.Command(port, "acme")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "MERCHANT=acme", "DATABASE_URL=")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s not listening on %s after 20s: %v", r.Name, r.Version, addr, err)
		}
		<-tick.C
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The builder's packages install with pkgstore and run: the version is
// stamped in, the broken build fails its health check, the manifests
// declare each version's schema, and the schema commands migrate a real
// database.
func TestBuildInstallRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the app")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := t.TempDir()
	var stdout, stderr strings.Builder
	if code := run(ctx, []string{"-out", out, "-versions", "1.1.0,1.2.0", "-no-down", "1.2.0"}, &stdout, &stderr); code != 0 {
		t.Fatalf("pkgbuild exited %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], filepath.Join(out, "invoicing-1.1.0.tar.gz")+"  sha256 ") ||
		!strings.Contains(lines[0], ", schema 2") || !strings.Contains(lines[1], ", schema 3 without down") ||
		!strings.Contains(lines[1], "/health fails on purpose") {
		t.Errorf("output:\n%s", stdout.String())
	}
	if vs, err := pkgstore.AvailableVersions(out, "invoicing"); err != nil || !slices.Equal(vs, []string{"1.1.0", "1.2.0"}) {
		t.Errorf("AvailableVersions = %q, %v", vs, err)
	}

	storeDir := t.TempDir()
	t.Cleanup(func() { // releases are read-only
		filepath.WalkDir(storeDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	s, err := pkgstore.Open(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Install(ctx, "file://"+out, "invoicing", "1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if r.Manifest.Health != (pkgstore.Health{HTTP: "/health"}) {
		t.Errorf("health = %+v", r.Manifest.Health)
	}
	if !slices.Equal(r.Manifest.Migrate, []string{"bin/invoicing", "migrate"}) {
		t.Errorf("migrate = %q", r.Manifest.Migrate)
	}
	if sc := r.Manifest.Schema; sc == nil || sc.Version != 2 || !sc.HasDown() {
		t.Fatalf("1.1.0 schema = %+v", sc)
	}
	bin := filepath.Join(r.Dir, "bin/invoicing")
	if got := r.SchemaMigrateCommand(); !slices.Equal(got, []string{bin, "migrate", "up"}) {
		t.Errorf("SchemaMigrateCommand = %q", got)
	}
	if got, err := r.SchemaDownCommand(1); err != nil || !slices.Equal(got, []string{bin, "migrate", "down", "1"}) {
		t.Errorf("SchemaDownCommand(1) = %q, %v", got, err)
	}

	base := startRelease(t, ctx, r)
	if code, body := httpGet(t, base+"/version"); code != 200 || body != "1.1.0\n" {
		t.Errorf("/version = %d %q", code, body)
	}
	if code, _ := httpGet(t, base+"/health"); code != 200 {
		t.Errorf("1.1.0 /health = %d", code)
	}

	broken, err := s.Install(ctx, out, "invoicing", "1.2.0")
	if err != nil {
		t.Fatal(err)
	}
	base = startRelease(t, ctx, broken)
	if code, _ := httpGet(t, base+"/health"); code != 500 {
		t.Errorf("1.2.0 /health = %d, want 500", code)
	}
	if sc := broken.Manifest.Schema; sc == nil || sc.Version != 3 || sc.HasDown() {
		t.Errorf("1.2.0 schema = %+v, want version 3 without down", sc)
	}

	t.Run("migrations", func(t *testing.T) { testReleaseMigrations(t, ctx, r, broken) })

	// A rebuild gives the same digests.
	stdout.Reset()
	if code := run(ctx, []string{"-out", out, "-versions", "1.1.0"}, &stdout, &stderr); code != 0 {
		t.Fatalf("second pkgbuild exited %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "unchanged") {
		t.Errorf("rebuild changed the package: %s", stdout.String())
	}
}

// testReleaseMigrations runs the schema commands of two releases, needing
// schemas 2 and 3, against a new database.
func testReleaseMigrations(t *testing.T, ctx context.Context, r2, r3 *pkgstore.Release) {
	dsn := newDatabase(t, ctx)
	runCmd := func(argv []string) (string, error) {
		t.Helper()
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "MERCHANT=acme", "DATABASE_URL="+dsn)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	down1, err := r2.SchemaDownCommand(1)
	if err != nil {
		t.Fatal(err)
	}
	version := []string{filepath.Join(r2.Dir, "bin/invoicing"), "migrate", "version"}
	steps := []struct {
		what string
		argv []string
		out  string
		fail bool
	}{
		{"1.1.0 up", r2.SchemaMigrateCommand(), "migrate: 1 create invoices\nmigrate: 2 add currency to invoices\nschema at 2\n", false},
		{"1.1.0 up again, the top-level migrate", r2.MigrateCommand(), "schema at 2\n", false},
		{"version", version, "2\n", false},
		{"1.1.0 down to 1", down1, "migrate: down 2 add currency to invoices\nschema at 1\n", false},
		{"1.2.0 up", r3.SchemaMigrateCommand(), "migrate: 2 add currency to invoices\nmigrate: 3 create payments\nschema at 3\n", false},
		{"version", version, "3\n", false},
		{"1.1.0 down to 1 from 3", down1, "invoicing migrate: the schema is at 3, but this release knows migrations up to 2 only", true},
	}
	for _, st := range steps {
		out, err := runCmd(st.argv)
		if (err != nil) != st.fail || !strings.HasPrefix(out, st.out) {
			t.Errorf("%s: %q, %v; want %q (failing: %v)", st.what, out, err, st.out, st.fail)
		}
	}
}

// newDatabase creates a database on the test server, dropped at cleanup,
// and returns its DSN (see package pgtest).
func newDatabase(t *testing.T, ctx context.Context) string {
	t.Helper()
	server := pgtest.Server(t)
	db, err := sql.Open("postgres", server)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	name := pgtest.UniqueName("pkgbuild_test")
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		t.Fatal(err)
	}
	pgtest.DropAtCleanup(t, server, name)
	return pgtest.WithDB(t, server, name)
}
