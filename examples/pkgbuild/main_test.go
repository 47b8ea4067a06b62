package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"steward/pkgstore"
)

func TestPackDeterministic(t *testing.T) {
	a, err := pack("invoicing", []byte("binary"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := pack("invoicing", []byte("binary"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("pack is not deterministic")
	}
	c, _ := pack("invoicing", []byte("other binary"))
	if bytes.Equal(a, c) {
		t.Error("different binaries packed the same")
	}
}

func TestManifestParses(t *testing.T) {
	m, diags := pkgstore.ParseManifest([]byte(manifest("invoicing")), "package.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	argv, err := m.Argv(8101, "acme")
	if err != nil || !slices.Equal(argv, []string{"bin/invoicing", "--port=8101"}) {
		t.Errorf("Argv = %q, %v", argv, err)
	}
}

func TestArgs(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-out", "x", "-versions", ""},
		{"-out", "x", "-versions", "1.0,../x"},
		{"-out", "x", "-name", "a/b"},
		{"-out", "x", "extra"},
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
// stamped in, the broken build fails its health check, migrate works.
func TestBuildInstallRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the app")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := t.TempDir()
	var stdout, stderr strings.Builder
	if code := run(ctx, []string{"-out", out, "-versions", "1.1.0,1.2.0"}, &stdout, &stderr); code != 0 {
		t.Fatalf("pkgbuild exited %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], filepath.Join(out, "invoicing-1.1.0.tar.gz")+"  sha256 ") ||
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

	// A rebuild gives the same digests.
	stdout.Reset()
	if code := run(ctx, []string{"-out", out, "-versions", "1.1.0"}, &stdout, &stderr); code != 0 {
		t.Fatalf("second pkgbuild exited %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "unchanged") {
		t.Errorf("rebuild changed the package: %s", stdout.String())
	}
}
