package pkgstore

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for a second steward process
// installing a package (see TestInstallConcurrentProcesses).
func TestMain(m *testing.M) {
	if os.Getenv("PKGSTORE_TEST_INSTALL") == "1" {
		os.Exit(installHelper())
	}
	os.Exit(m.Run())
}

func installHelper() int {
	s, err := Open(os.Getenv("PKGSTORE_RELEASES"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := s.Install(ctx, os.Getenv("PKGSTORE_SOURCE"), "app", "1.0.0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("unpacked=%d dir=%s\n", s.unpacks.Load(), r.Dir)
	return 0
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestInstall(t *testing.T) {
	ctx := testContext(t)
	src := t.TempDir()
	digest := writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
	s := openStore(t)

	r, err := s.Install(ctx, src, "app", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	wantDir := filepath.Join(s.Dir(), "app", "1.0.0")
	if r.Name != "app" || r.Version != "1.0.0" || r.Dir != wantDir || r.SHA256 != digest {
		t.Errorf("Release = %+v, want dir %s and digest %s", r, wantDir, digest)
	}
	if r.Manifest.Health.HTTP != "/health" {
		t.Errorf("manifest health = %+v", r.Manifest.Health)
	}
	argv, err := r.Command(8101, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(wantDir, "bin/app"), "--port=8101", "--merchant=acme"}; !slices.Equal(argv, want) {
		t.Errorf("Command = %q, want %q", argv, want)
	}
	if got, want := r.MigrateCommand(), []string{filepath.Join(wantDir, "bin/app"), "migrate"}; !slices.Equal(got, want) {
		t.Errorf("MigrateCommand = %q, want %q", got, want)
	}
	if out, err := exec.CommandContext(ctx, argv[0]).Output(); err != nil || string(out) != "app\n" {
		t.Errorf("running %s: %q, %v", argv[0], out, err)
	}

	// Read-only: every directory 0555, every file without write bits.
	err = filepath.WalkDir(r.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir() && fi.Mode().Perm() != 0o555:
			t.Errorf("%s: mode %v, want dr-xr-xr-x", p, fi.Mode())
		case fi.Mode().IsRegular() && fi.Mode().Perm()&0o222 != 0:
			t.Errorf("%s: mode %v is writable", p, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(r.Dir, "bin/app")); fi.Mode().Perm() != 0o555 {
		t.Errorf("bin/app mode %v, want -r-xr-xr-x", fi.Mode())
	}

	// Idempotent: a second Install does not unpack again, not even when
	// the source is gone.
	if err := os.Remove(filepath.Join(src, "app-1.0.0.tar.gz")); err != nil {
		t.Fatal(err)
	}
	r2, err := s.Install(ctx, src, "app", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if r2.Dir != r.Dir || r2.SHA256 != digest || s.unpacks.Load() != 1 {
		t.Errorf("second Install: %+v, %d unpacks", r2, s.unpacks.Load())
	}

	g, err := s.Get("app", "1.0.0")
	if err != nil || g.Dir != r.Dir || g.SHA256 != digest || g.Manifest.Health != r.Manifest.Health {
		t.Errorf("Get = %+v, %v", g, err)
	}
	if _, err := s.Get("app", "2.0.0"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get of a missing version = %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Get("other", "1.0.0"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get of a missing package = %v, want fs.ErrNotExist", err)
	}
	// Only the release and dot files beside it.
	var names []string
	entries, _ := os.ReadDir(filepath.Join(s.Dir(), "app"))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{".1.0.0.lock", ".1.0.0.sha256", "1.0.0"}; !slices.Equal(names, want) {
		t.Errorf("name directory holds %q, want %q", names, want)
	}
}

func TestInstalledAndRemove(t *testing.T) {
	ctx := testContext(t)
	src := t.TempDir()
	for _, v := range []string{"1.10.0", "1.2.0", "1.9.0", "1.0.0-rc1"} {
		writePackage(t, src, "app", v, appEntries(goodManifest))
	}
	s := openStore(t)
	if vs, err := s.Installed("app"); err != nil || len(vs) != 0 {
		t.Errorf("Installed before any install = %q, %v", vs, err)
	}
	for _, v := range []string{"1.10.0", "1.2.0", "1.9.0", "1.0.0-rc1"} {
		if _, err := s.Install(ctx, "file://"+src, "app", v); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"1.0.0-rc1", "1.2.0", "1.9.0", "1.10.0"}
	if vs, err := s.Installed("app"); err != nil || !slices.Equal(vs, want) {
		t.Errorf("Installed = %q, %v; want %q", vs, err, want)
	}
	if err := s.Remove(ctx, "app", "1.2.0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "app", "1.2.0"); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if _, err := s.Get("app", "1.2.0"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get after Remove = %v", err)
	}
	if vs, _ := s.Installed("app"); !slices.Equal(vs, []string{"1.0.0-rc1", "1.9.0", "1.10.0"}) {
		t.Errorf("Installed after Remove = %q", vs)
	}
	// It can come back.
	if _, err := s.Install(ctx, src, "app", "1.2.0"); err != nil {
		t.Fatal(err)
	}
}

func TestInstallErrors(t *testing.T) {
	const tarName = "app-1.0.0.tar.gz"
	tests := []struct {
		name     string
		prepare  func(t *testing.T, src string) // writes the source
		want     string                         // a substring of the error
		bad      bool                           // errors.Is(err, ErrBadPackage)
		notExist bool                           // errors.Is(err, fs.ErrNotExist)
	}{
		{
			name: "missing tarball",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "0.9.0", appEntries(goodManifest))
				writePackage(t, src, "app", "0.10.0", appEntries(goodManifest))
				writePackage(t, src, "other", "1.0.0", appEntries(goodManifest))
			},
			want:     tarName + " not found in %SRC% (have 0.9.0, 0.10.0)",
			notExist: true,
		},
		{
			name:     "empty source",
			prepare:  func(t *testing.T, src string) {},
			want:     tarName + " not found in %SRC% (no versions of app there)",
			notExist: true,
		},
		{
			name: "missing sha256",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
				os.Remove(filepath.Join(src, tarName+".sha256"))
			},
			want: "no digest for " + tarName + ": neither " + tarName + ".sha256 nor SHA256SUMS lists it",
			bad:  true, notExist: true,
		},
		{
			name: "malformed sha256",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
				os.WriteFile(filepath.Join(src, tarName+".sha256"), []byte("abc "+tarName+"\n"), 0o644)
			},
			want: tarName + `.sha256:1: malformed line, want "<sha256 hex>  <file name>"`,
			bad:  true,
		},
		{
			name: "sha256 not hex",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
				os.WriteFile(filepath.Join(src, tarName+".sha256"), []byte(strings.Repeat("g", 64)+"  "+tarName+"\n"), 0o644)
			},
			want: tarName + `.sha256:1: malformed sha256`,
			bad:  true,
		},
		{
			name: "sha256 for another file",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
				os.WriteFile(filepath.Join(src, tarName+".sha256"), []byte(strings.Repeat("a", 64)+"  other.tar.gz\n"), 0o644)
			},
			want: tarName + ".sha256: no digest for " + tarName + " (it lists other.tar.gz)",
			bad:  true,
		},
		{
			name: "digest mismatch",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
				os.WriteFile(filepath.Join(src, tarName+".sha256"), []byte(strings.Repeat("a", 64)+" *"+tarName+"\n"), 0o644)
			},
			want: "sha256 mismatch for " + tarName + ": got %DIGEST%, want " + strings.Repeat("a", 64),
			bad:  true,
		},
		{
			name: "unsafe entry",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", append(appEntries(goodManifest), entry{name: "evil", typ: tar.TypeSymlink, link: "/etc/passwd"}))
			},
			want: `unpacking ` + tarName + `: refusing archive entry "evil": symlink to "/etc/passwd" is absolute`,
			bad:  true,
		},
		{
			name: "not a tarball",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", nil)
				os.WriteFile(filepath.Join(src, tarName), []byte("hello"), 0o644)
				os.WriteFile(filepath.Join(src, tarName+".sha256"), []byte("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824  "+tarName+"\n"), 0o644)
			},
			want: "unpacking " + tarName + ": not a gzip stream",
			bad:  true,
		},
		{
			name: "no manifest",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", appEntries(goodManifest)[:2])
			},
			want: tarName + ": no package.hcl at the root of the package",
			bad:  true,
		},
		{
			name: "bad manifest",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", appEntries("command = [\"bin/app\"]\n\nhealth {\n  http = \"/h\"\n  grpc = true\n}\n"))
			},
			want: tarName + ": bad manifest: " + tarName + `/package.hcl:5,3-7: Unsupported argument; An argument named "grpc" is not expected here.`,
			bad:  true,
		},
		{
			name: "program missing",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", appEntries(`command = ["bin/nothere"]`))
			},
			want: tarName + "/package.hcl: command program bin/nothere is not in the package",
			bad:  true,
		},
		{
			name: "program not executable",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", appEntries(`command = ["share/readme.txt"]`))
			},
			want: tarName + "/package.hcl: command program share/readme.txt is not an executable file",
			bad:  true,
		},
		{
			name: "migrate program missing",
			prepare: func(t *testing.T, src string) {
				writePackage(t, src, "app", "1.0.0", appEntries("command = [\"bin/app\"]\nmigrate = [\"bin/migrate\"]\n"))
			},
			want: tarName + "/package.hcl: migrate program bin/migrate is not in the package",
			bad:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			src := t.TempDir()
			tt.prepare(t, src)
			s := openStore(t)
			_, err := s.Install(ctx, src, "app", "1.0.0")
			if err == nil {
				t.Fatal("Install succeeded")
			}
			want := strings.ReplaceAll(tt.want, "%SRC%", src)
			if data, rerr := os.ReadFile(filepath.Join(src, tarName)); rerr == nil {
				want = strings.ReplaceAll(want, "%DIGEST%", sha256Hex(data))
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error:\n %v\nwant it to contain\n %s", err, want)
			}
			if errors.Is(err, ErrBadPackage) != tt.bad {
				t.Errorf("errors.Is(err, ErrBadPackage) = %v, want %v", !tt.bad, tt.bad)
			}
			if errors.Is(err, fs.ErrNotExist) != tt.notExist {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %v, want %v", !tt.notExist, tt.notExist)
			}
			// Nothing installed, nothing left behind but the lock file.
			for _, p := range listTree(t, s.Dir()) {
				if p != "app" && p != filepath.Join("app", ".1.0.0.lock") {
					t.Errorf("left behind in the releases directory: %s", p)
				}
			}
		})
	}
}

// A tarball whose digest does not match is refused before anything at all
// is written to the releases directory.
func TestInstallMismatchWritesNothing(t *testing.T) {
	src := t.TempDir()
	writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
	// Swap in another tarball under the same name: the .sha256 is stale.
	other := makeTarGz(t, appEntries(goodManifest+"# changed\n"))
	if err := os.WriteFile(filepath.Join(src, "app-1.0.0.tar.gz"), other, 0o644); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	_, err := s.Install(testContext(t), src, "app", "1.0.0")
	if err == nil || !strings.Contains(err.Error(), "sha256 mismatch for app-1.0.0.tar.gz: got "+sha256Hex(other)+", want ") {
		t.Fatalf("Install = %v, want a digest mismatch", err)
	}
	if got := listTree(t, s.Dir()); len(got) != 0 {
		t.Errorf("releases directory after a mismatch holds %q, want nothing", got)
	}
}

func TestInstallBadNames(t *testing.T) {
	s := openStore(t)
	for _, nv := range [][2]string{{"../x", "1.0.0"}, {"app", "../1"}, {"app", ".."}, {"", "1"}, {"app", ""}, {"a/b", "1"}, {"app", "1/2"}} {
		if _, err := s.Install(testContext(t), t.TempDir(), nv[0], nv[1]); err == nil || !strings.Contains(err.Error(), "invalid package") {
			t.Errorf("Install(%q, %q) = %v, want an invalid name error", nv[0], nv[1], err)
		}
	}
}

func TestInstallConcurrent(t *testing.T) {
	ctx := testContext(t)
	src := t.TempDir()
	writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
	s := openStore(t)

	const n = 8
	var wg sync.WaitGroup
	start := make(chan struct{})
	dirs := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			r, err := s.Install(ctx, src, "app", "1.0.0")
			errs[i] = err
			if err == nil {
				dirs[i] = r.Dir
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || dirs[i] != dirs[0] {
			t.Errorf("Install %d: %q, %v", i, dirs[i], errs[i])
		}
	}
	if got := s.unpacks.Load(); got != 1 {
		t.Errorf("%d unpacks, want 1", got)
	}
	if names, _ := filepath.Glob(filepath.Join(s.Dir(), "app", ".tmp-*")); len(names) != 0 {
		t.Errorf("temporary directories left: %q", names)
	}
}

// Installs from separate processes (the test binary itself, see TestMain)
// share the releases directory safely: one unpacks, all succeed.
func TestInstallConcurrentProcesses(t *testing.T) {
	ctx := testContext(t)
	src := t.TempDir()
	writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
	s := openStore(t)

	if unpacked := installInProcesses(t, ctx, s, src, 4); unpacked != 1 {
		t.Errorf("%d processes unpacked, want 1", unpacked)
	}
}

// installInProcesses installs app 1.0.0 from source into s from n
// processes at once (the test binary itself, see TestMain), checks that
// each succeeded with the release's directory, and returns how many of
// them unpacked it.
func installInProcesses(t *testing.T, ctx context.Context, s *Store, source string, n int) (unpacked int) {
	t.Helper()
	cmds := make([]*exec.Cmd, n)
	outs := make([]strings.Builder, n)
	for i := range n {
		cmd := exec.CommandContext(ctx, os.Args[0])
		cmd.Env = append(os.Environ(), "PKGSTORE_TEST_INSTALL=1", "PKGSTORE_RELEASES="+s.Dir(), "PKGSTORE_SOURCE="+source)
		cmd.Stdout = &outs[i]
		cmd.Stderr = &outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("process %d: %v\n%s", i, err, outs[i].String())
		}
		out := outs[i].String()
		if !strings.HasSuffix(out, " dir="+filepath.Join(s.Dir(), "app", "1.0.0")+"\n") {
			t.Errorf("process %d printed %q", i, out)
		}
		if strings.HasPrefix(out, "unpacked=1 ") {
			unpacked++
		}
	}
	return unpacked
}

// A crash mid-unpack leaves a temporary directory; the next Install of
// that version removes it and succeeds.
func TestInstallCleansStaleTemp(t *testing.T) {
	src := t.TempDir()
	writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
	s := openStore(t)
	stale := filepath.Join(s.Dir(), "app", ".tmp-1.0.0-123")
	if err := os.MkdirAll(filepath.Join(stale, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(stale, "bin"), 0o555); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Install(testContext(t), src, "app", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary directory still there: %v", err)
	}
}

func TestInstallCancelledWhileLocked(t *testing.T) {
	src := t.TempDir()
	writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
	s := openStore(t)
	if err := os.MkdirAll(filepath.Join(s.Dir(), "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockFile(testContext(t), filepath.Join(s.Dir(), "app", ".1.0.0.lock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Install(ctx, src, "app", "1.0.0"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Install while locked = %v, want the context's deadline", err)
	}
	unlock()
	if _, err := s.Install(testContext(t), src, "app", "1.0.0"); err != nil {
		t.Errorf("Install after unlock: %v", err)
	}
}

// A local source may give digests in a SHA256SUMS instead of .sha256 files.
// A .sha256 that is there wins, even when it is wrong: it is not a reason
// to look further.
func TestInstallLocalSums(t *testing.T) {
	ctx := testContext(t)
	src := t.TempDir()
	digest := writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
	writePackage(t, src, "app", "1.1.0", appEntries(goodManifest))
	writePackage(t, src, "app", "1.2.0", appEntries(goodManifest))
	writeSums(t, src)
	s := openStore(t)

	r, err := s.Install(ctx, "file://"+src, "app", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if r.SHA256 != digest {
		t.Errorf("SHA256 = %s, want %s", r.SHA256, digest)
	}

	// A .sha256 of its own that does not list the tarball is an error.
	const tarName = "app-1.1.0.tar.gz"
	if err := os.WriteFile(filepath.Join(src, tarName+".sha256"), []byte(strings.Repeat("a", 64)+"  other.tar.gz\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = s.Install(ctx, src, "app", "1.1.0")
	if want := tarName + ".sha256: no digest for " + tarName + " (it lists other.tar.gz)"; err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrBadPackage) {
		t.Errorf("Install with a stray .sha256 = %v, want %q", err, want)
	}

	// A list that names a tarball twice with different digests is refused.
	sums, err := os.ReadFile(filepath.Join(src, SumsFile))
	if err != nil {
		t.Fatal(err)
	}
	sums = append(sums, []byte(strings.Repeat("b", 64)+"  dist/app-1.2.0.tar.gz\n")...)
	if err := os.WriteFile(filepath.Join(src, SumsFile), sums, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = s.Install(ctx, src, "app", "1.2.0")
	if want := "SHA256SUMS lists app-1.2.0.tar.gz twice with different digests"; err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrBadPackage) {
		t.Errorf("Install with an ambiguous list = %v, want %q", err, want)
	}
	if vs, _ := s.Installed("app"); !slices.Equal(vs, []string{"1.0.0"}) {
		t.Errorf("Installed = %q", vs)
	}
}

// Cleaning up after a crashed install of 1.0.0 must not touch 1.0.0-rc1's
// temporary directory: another Install may be unpacking into it.
func TestInstallStaleCleanupSparesOtherVersions(t *testing.T) {
	src := t.TempDir()
	writePackage(t, src, "app", "1.0.0", appEntries(goodManifest))
	s := openStore(t)
	nameDir := filepath.Join(s.Dir(), "app")
	others := []string{".tmp-1.0.0-rc1-123", ".tmp-1.0.0-5-77", ".tmp-1.0.0--9", ".1.0.0-rc1.sha256.tmp"}
	own := []string{".tmp-1.0.0-123", ".tmp-1.0.0-removed", ".tmp-1.0.0-download", ".1.0.0.sha256.tmp"}
	for _, p := range append(slices.Clone(others), own...) {
		if err := os.MkdirAll(filepath.Join(nameDir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Install(testContext(t), src, "app", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	for _, p := range others {
		if _, err := os.Stat(filepath.Join(nameDir, p)); err != nil {
			t.Errorf("another version's %s: %v", p, err)
		}
	}
	for _, p := range own {
		if _, err := os.Stat(filepath.Join(nameDir, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale %s still there: %v", p, err)
		}
	}
}

func TestStaleVersion(t *testing.T) {
	for entry, want := range map[string]string{
		".tmp-1.0.0-123":          "1.0.0",
		".tmp-1.0.0-rc1-123":      "1.0.0-rc1",
		".tmp-1.0.0--9":           "1.0.0-",
		".tmp-1.0.0-removed":      "1.0.0",
		".tmp-v2-download":        "v2",
		".1.0.0.sha256.tmp":       "1.0.0",
		".1.0.0.lock":             "",
		".1.0.0.sha256":           "",
		".tmp-1.0.0-":             "",
		".tmp--1":                 "",
		".tmp-x-1":                "",
		"1.0.0":                   "",
		".tmp-1.0.0":              "",
		".tmp-../../etc-1":        "",
		".tmp-1.0.0-rc1-download": "1.0.0-rc1",
	} {
		got, ok := staleVersion(entry)
		if got != want || ok != (want != "") {
			t.Errorf("staleVersion(%q) = %q, %v; want %q", entry, got, ok, want)
		}
	}
}
