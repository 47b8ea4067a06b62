package pkgstore

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	testUser = "pkguser"
	testPass = "pkgpass"
)

// pkgServer serves the files of dir under /pkgs/ on loopback, counts the
// requests per file and, when auth is set, requires basic auth.
type pkgServer struct {
	dir  string
	srv  *httptest.Server
	auth bool

	mu       sync.Mutex
	hits     map[string]int
	override map[string]http.HandlerFunc // by file name; set before requests
}

func newPkgServer(t *testing.T, dir string, auth bool) *pkgServer {
	t.Helper()
	ps := &pkgServer{dir: dir, auth: auth, hits: map[string]int{}, override: map[string]http.HandlerFunc{}}
	ps.srv = httptest.NewServer(http.HandlerFunc(ps.serve))
	t.Cleanup(ps.srv.Close)
	return ps
}

func (ps *pkgServer) serve(w http.ResponseWriter, r *http.Request) {
	if ps.auth {
		if u, p, ok := r.BasicAuth(); !ok || u != testUser || p != testPass {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
	}
	file, ok := strings.CutPrefix(r.URL.Path, "/pkgs/")
	if !ok || strings.Contains(file, "/") {
		http.NotFound(w, r)
		return
	}
	ps.mu.Lock()
	ps.hits[file]++
	h := ps.override[file]
	ps.mu.Unlock()
	if h != nil {
		h(w, r)
		return
	}
	data, err := os.ReadFile(filepath.Join(ps.dir, file))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Write(data)
}

// url is the source URL, with credentials when the server wants them.
func (ps *pkgServer) url() string {
	u := ps.srv.URL + "/pkgs"
	if ps.auth {
		u = strings.Replace(u, "http://", "http://"+testUser+":"+testPass+"@", 1)
	}
	return u
}

// shown is the source URL as errors may show it.
func (ps *pkgServer) shown() string { return ps.srv.URL + "/pkgs" }

func (ps *pkgServer) count(file string) int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.hits[file]
}

func (ps *pkgServer) handle(file string, h http.HandlerFunc) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.override[file] = h
}

// writeSums writes a SHA256SUMS for the tarballs in dir and removes their
// .sha256 files, so that the list is the only source of digests.
func writeSums(t testing.TB, dir string, extra ...string) {
	t.Helper()
	tars, err := filepath.Glob(filepath.Join(dir, "*.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	lines := slices.Clone(extra)
	for i, p := range tars {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(p)
		if i%2 == 1 {
			name = "*./" + name // binary marker and a directory, as some tools write them
		} else {
			name = " " + name
		}
		lines = append(lines, sha256Hex(data)+" "+name)
		os.Remove(p + ".sha256")
	}
	if err := os.WriteFile(filepath.Join(dir, SumsFile), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// assertNoCredentials fails when err shows the test credentials.
func assertNoCredentials(t *testing.T, err error) {
	t.Helper()
	if err != nil && (strings.Contains(err.Error(), testUser) || strings.Contains(err.Error(), testPass)) {
		t.Errorf("error shows the credentials: %v", err)
	}
}

// assertOnlyLock fails when the releases directory holds anything but the
// app directory and version 1.0.0's lock file.
func assertOnlyLock(t *testing.T, s *Store) {
	t.Helper()
	for _, p := range listTree(t, s.Dir()) {
		if p != "app" && p != filepath.Join("app", ".1.0.0.lock") {
			t.Errorf("left behind in the releases directory: %s", p)
		}
	}
}

func TestInstallHTTP(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	digest := writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
	ps := newPkgServer(t, dir, true)
	s := openStore(t)

	r, err := s.Install(ctx, ps.url(), "app", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if r.SHA256 != digest || r.Dir != filepath.Join(s.Dir(), "app", "1.0.0") || r.Manifest.Health.HTTP != "/health" {
		t.Errorf("Release = %+v, want digest %s", r, digest)
	}
	argv, err := r.Command(8101, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, argv[0]).Output(); err != nil || string(out) != "app\n" {
		t.Errorf("running %s: %q, %v", argv[0], out, err)
	}
	got := map[string]int{}
	for _, f := range []string{"app-1.0.0.tar.gz.sha256", SumsFile, "app-1.0.0.tar.gz"} {
		got[f] = ps.count(f)
	}
	if want := map[string]int{"app-1.0.0.tar.gz.sha256": 1, SumsFile: 0, "app-1.0.0.tar.gz": 1}; !equalMaps(got, want) {
		t.Errorf("requests %v, want %v", got, want)
	}
	// The download is gone; the name directory is as after a local install.
	var names []string
	entries, _ := os.ReadDir(filepath.Join(s.Dir(), "app"))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{".1.0.0.lock", ".1.0.0.sha256", "1.0.0"}; !slices.Equal(names, want) {
		t.Errorf("name directory holds %q, want %q", names, want)
	}
	// Installed: no more requests.
	if _, err := s.Install(ctx, ps.url(), "app", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if n := ps.count("app-1.0.0.tar.gz"); n != 1 || s.unpacks.Load() != 1 {
		t.Errorf("second Install: %d downloads, %d unpacks", n, s.unpacks.Load())
	}
}

func equalMaps(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// A source with only a SHA256SUMS: each tarball's digest is its line there,
// and AvailableVersions lists what it lists.
func TestInstallHTTPSums(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	digest := writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
	writePackage(t, dir, "app", "1.10.0", appEntries(goodManifest))
	writePackage(t, dir, "app-tools", "2.0.0", appEntries(goodManifest))
	writeSums(t, dir, sha256Hex([]byte("x"))+"  app-0.9.0.tar.gz")
	ps := newPkgServer(t, dir, false)
	s := openStore(t)

	r, err := s.Install(ctx, ps.url(), "app", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if r.SHA256 != digest {
		t.Errorf("SHA256 = %s, want %s", r.SHA256, digest)
	}
	if _, err := s.Install(ctx, ps.url()+"/", "app", "1.10.0"); err != nil {
		t.Fatal(err)
	}
	if n := ps.count(SumsFile); n != 2 {
		t.Errorf("%d requests for %s, want 2", n, SumsFile)
	}

	vs, err := s.AvailableVersions(ctx, ps.url(), "app")
	if want := []string{"0.9.0", "1.0.0", "1.10.0"}; err != nil || !slices.Equal(vs, want) {
		t.Errorf("AvailableVersions = %q, %v; want %q", vs, err, want)
	}
	if vs, err := AvailableVersions(ps.url(), "app-tools"); err != nil || !slices.Equal(vs, []string{"2.0.0"}) {
		t.Errorf("package-level AvailableVersions = %q, %v", vs, err)
	}
	os.Remove(filepath.Join(dir, SumsFile))
	_, err = s.AvailableVersions(ctx, ps.url(), "app")
	if want := "package source " + ps.shown() + ": listing versions over HTTP needs a SHA256SUMS there"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("AvailableVersions without SHA256SUMS = %v, want %q", err, want)
	}
}

func TestInstallHTTPErrors(t *testing.T) {
	const tarName = "app-1.0.0.tar.gz"
	tests := []struct {
		name     string
		limit    int64
		prepare  func(t *testing.T, dir string, ps *pkgServer)
		want     string // a substring of the error; %URL% is the source without credentials
		bad      bool
		notExist bool
	}{
		{
			name: "tarball 404",
			prepare: func(t *testing.T, dir string, ps *pkgServer) {
				writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
				os.Remove(filepath.Join(dir, tarName))
			},
			want:     "GET %URL%/" + tarName + ": 404 Not Found",
			notExist: true,
		},
		{
			name: "tarball 500",
			prepare: func(t *testing.T, dir string, ps *pkgServer) {
				writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
				ps.handle(tarName, func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, "oops", http.StatusInternalServerError)
				})
			},
			want: "GET %URL%/" + tarName + ": 500 Internal Server Error",
		},
		{
			name: "sha256 403",
			prepare: func(t *testing.T, dir string, ps *pkgServer) {
				writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
				ps.handle(tarName+".sha256", func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, "no", http.StatusForbidden)
				})
			},
			want: "GET %URL%/" + tarName + ".sha256: 403 Forbidden",
		},
		{
			name:     "no digest anywhere",
			prepare:  func(t *testing.T, dir string, ps *pkgServer) {},
			want:     "no digest for " + tarName + ": neither " + tarName + ".sha256 nor SHA256SUMS lists it",
			bad:      true,
			notExist: true,
		},
		{
			name: "SHA256SUMS without it",
			prepare: func(t *testing.T, dir string, ps *pkgServer) {
				writePackage(t, dir, "app", "0.9.0", appEntries(goodManifest))
				writeSums(t, dir)
			},
			want:     "no digest for " + tarName + ": neither " + tarName + ".sha256 nor SHA256SUMS lists it",
			bad:      true,
			notExist: true,
		},
		{
			name: "SHA256SUMS malformed",
			prepare: func(t *testing.T, dir string, ps *pkgServer) {
				writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
				writeSums(t, dir, "not a digest line")
			},
			want: `SHA256SUMS:1: malformed line`,
			bad:  true,
		},
		{
			name: "digest mismatch",
			prepare: func(t *testing.T, dir string, ps *pkgServer) {
				writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
				os.WriteFile(filepath.Join(dir, tarName), makeTarGz(t, appEntries(goodManifest+"# changed\n")), 0o644)
			},
			want: "sha256 mismatch for " + tarName + " from %URL%/" + tarName + ": got %DIGEST%, want ",
			bad:  true,
		},
		{
			name:  "larger than MaxBytes",
			limit: 100,
			prepare: func(t *testing.T, dir string, ps *pkgServer) {
				writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
			},
			want: tarName + " from %URL%/" + tarName + " is larger than the package size limit of 100 bytes",
			bad:  true,
		},
		{
			name:  "larger than MaxBytes without Content-Length",
			limit: 100 << 10,
			prepare: func(t *testing.T, dir string, ps *pkgServer) {
				writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
				ps.handle(tarName, func(w http.ResponseWriter, r *http.Request) {
					chunk := make([]byte, 32<<10)
					for range 64 { // 2 MiB, flushed in chunks: no Content-Length
						if _, err := w.Write(chunk); err != nil {
							return
						}
						w.(http.Flusher).Flush()
					}
				})
			},
			want: tarName + " from %URL%/" + tarName + " is larger than the package size limit of 102400 bytes",
			bad:  true,
		},
		{
			name: "short body",
			prepare: func(t *testing.T, dir string, ps *pkgServer) {
				writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
				ps.handle(tarName, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Length", "100000")
					w.Write([]byte("too short"))
				})
			},
			want: "GET %URL%/" + tarName + ": unexpected EOF",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			dir := t.TempDir()
			ps := newPkgServer(t, dir, true)
			tt.prepare(t, dir, ps)
			s := openStoreWith(t, Options{PackageSize: tt.limit})
			_, err := s.Install(ctx, ps.url(), "app", "1.0.0")
			if err == nil {
				t.Fatal("Install succeeded")
			}
			want := strings.ReplaceAll(tt.want, "%URL%", ps.shown())
			if data, rerr := os.ReadFile(filepath.Join(dir, tarName)); rerr == nil {
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
			assertNoCredentials(t, err)
			assertOnlyLock(t, s)
		})
	}
}

// A server that stops answering is given up on when the context ends (no
// headers) or when the client's timeout ends (mid-body), promptly, and
// leaves no download behind.
func TestInstallHTTPHangs(t *testing.T) {
	const tarName = "app-1.0.0.tar.gz"
	tests := []struct {
		name    string
		ctx     time.Duration // the Install's context timeout, or 0
		client  time.Duration // the client's Timeout, or 0
		handler func(w http.ResponseWriter, r *http.Request)
		is      error // errors.Is(err, is), when set
	}{
		{
			name: "no headers, context deadline",
			ctx:  200 * time.Millisecond,
			handler: func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			},
			is: context.DeadlineExceeded,
		},
		{
			name:   "half a body, client timeout",
			client: 300 * time.Millisecond,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "100000")
				w.Write(make([]byte, 1000))
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
			ps := newPkgServer(t, dir, true)
			ps.handle(tarName, tt.handler)
			var opts Options
			if tt.client > 0 {
				opts.HTTPClient = NewHTTPClient(tt.client)
			}
			s := openStoreWith(t, opts)
			ctx := testContext(t)
			if tt.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctx)
				defer cancel()
			}
			errc := make(chan error, 1)
			start := time.Now()
			go func() {
				_, err := s.Install(ctx, ps.url(), "app", "1.0.0")
				errc <- err
			}()
			var err error
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				t.Fatal("Install still waiting on a hung server after 10s")
			}
			t.Logf("returned after %v: %v", time.Since(start), err)
			if err == nil || !strings.Contains(err.Error(), "GET "+ps.shown()+"/"+tarName+": ") {
				t.Errorf("Install = %v, want an error naming the URL", err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(err, %v) = false", tt.is)
			}
			assertNoCredentials(t, err)
			assertOnlyLock(t, s)
		})
	}
}

// Credentials in a source URL are used (the server wants them) and never
// shown, whatever goes wrong.
func TestHTTPErrorsHideUserinfo(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	ps := newPkgServer(t, dir, true)
	s := openStore(t)

	_, err := s.Install(ctx, ps.url()+"?token="+testPass, "app", "1.0.0")
	if err == nil || !strings.Contains(err.Error(), "no digest for app-1.0.0.tar.gz") {
		t.Errorf("Install from an empty source = %v", err)
	}
	assertNoCredentials(t, err)

	// Wrong credentials: 401, named without them.
	wrong := strings.Replace(ps.url(), testPass, "nope", 1)
	_, err = s.Install(ctx, wrong, "app", "1.0.0")
	if want := "GET " + ps.shown() + "/app-1.0.0.tar.gz.sha256: 401 Unauthorized"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Install with wrong credentials = %v, want %q", err, want)
	}
	_, err = s.AvailableVersions(ctx, ps.url(), "app")
	if err == nil {
		t.Error("AvailableVersions without SHA256SUMS succeeded")
	}
	assertNoCredentials(t, err)

	// Nothing listens: a connection error, named without them.
	url := ps.url()
	ps.srv.Close()
	_, err = s.Install(ctx, url, "app", "1.0.0")
	if err == nil || !strings.HasPrefix(err.Error(), "GET "+ps.shown()+"/app-1.0.0.tar.gz.sha256: ") {
		t.Errorf("Install from a closed server = %v", err)
	}
	assertNoCredentials(t, err)

	for _, src := range []string{"http://" + testUser + ":" + testPass + "@", "http://" + testUser + ":" + testPass + "@[::1"} {
		_, err := s.Install(ctx, src, "app", "1.0.0")
		if err == nil {
			t.Errorf("Install(%q) succeeded", src)
		}
		assertNoCredentials(t, err)
		_, err = SourceDir(src)
		assertNoCredentials(t, err)
	}
}

// Installs of one version from 8 goroutines: 7 wait on the version's lock
// while the first downloads; the tarball is fetched once and unpacked once.
func TestInstallHTTPConcurrent(t *testing.T) {
	const n = 8
	ctx := testContext(t)
	dir := t.TempDir()
	writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
	ps := newPkgServer(t, dir, false)
	s := openStore(t)

	var waiting atomic.Int32
	allWaiting := make(chan struct{})
	lockWaitHook = func(p string) {
		if waiting.Add(1) == n-1 {
			close(allWaiting)
		}
	}
	t.Cleanup(func() { lockWaitHook = nil })
	data, err := os.ReadFile(filepath.Join(dir, "app-1.0.0.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	ps.handle("app-1.0.0.tar.gz", func(w http.ResponseWriter, r *http.Request) {
		// Hold the download until the others queue behind the lock.
		select {
		case <-allWaiting:
		case <-time.After(10 * time.Second):
		case <-r.Context().Done():
		}
		w.Write(data)
	})

	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.Install(ctx, ps.url(), "app", "1.0.0")
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Install %d: %v", i, err)
		}
	}
	select {
	case <-allWaiting:
	default:
		t.Errorf("only %d installs waited on the lock, want %d", waiting.Load(), n-1)
	}
	if got := ps.count("app-1.0.0.tar.gz"); got != 1 {
		t.Errorf("%d downloads, want 1", got)
	}
	if got := s.unpacks.Load(); got != 1 {
		t.Errorf("%d unpacks, want 1", got)
	}
	if names, _ := filepath.Glob(filepath.Join(s.Dir(), "app", ".tmp-*")); len(names) != 0 {
		t.Errorf("temporary files left: %q", names)
	}
}

// Separate processes installing one version from an HTTP source download it
// once between them.
func TestInstallHTTPConcurrentProcesses(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	writePackage(t, dir, "app", "1.0.0", appEntries(goodManifest))
	ps := newPkgServer(t, dir, true)
	s := openStore(t)

	if unpacked := installInProcesses(t, ctx, s, ps.url(), 4); unpacked != 1 {
		t.Errorf("%d processes unpacked, want 1", unpacked)
	}
	if got := ps.count("app-1.0.0.tar.gz"); got != 1 {
		t.Errorf("%d downloads, want 1", got)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://u:p@pkgs.example/a/b?token=x#f": "https://pkgs.example/a/b",
		"https://u@pkgs.example/":                "https://pkgs.example/",
		"http://pkgs.example:8080/x":             "http://pkgs.example:8080/x",
		"http://u:p@[::1":                        "http://[::1",
	} {
		if got := redactSource(in); got != want {
			t.Errorf("redactSource(%q) = %q, want %q", in, got, want)
		}
	}
}
