package pkgstore

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// entry is one archive member for makeTarGz. typ defaults to a regular
// file and mode to 0644 (0755 for directories).
type entry struct {
	name string
	typ  byte
	body string
	mode int64
	link string
}

func makeTarGz(t testing.TB, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		if e.typ == tar.TypeXGlobalHeader {
			h := &tar.Header{Typeflag: e.typ, PAXRecords: map[string]string{"comment": e.body}}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			continue
		}
		h := &tar.Header{
			Name:     e.name,
			Typeflag: e.typ,
			Mode:     e.mode,
			Linkname: e.link,
			ModTime:  time.Unix(1700000000, 0),
			Format:   tar.FormatPAX,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

const goodManifest = `command = ["bin/app", "--port=${port}", "--merchant=${merchant}"]
health { http = "/health" }
migrate = ["bin/app", "migrate"]
`

// appEntries is a small valid package with the given manifest.
func appEntries(manifest string) []entry {
	return []entry{
		{name: "bin/", typ: tar.TypeDir},
		{name: "bin/app", body: "#!/bin/sh\necho app\n", mode: 0o755},
		{name: "share/readme.txt", body: "hello\n"},
		{name: "package.hcl", body: manifest},
	}
}

// writePackage writes NAME-VERSION.tar.gz and its .sha256 into dir and
// returns the digest.
func writePackage(t testing.TB, dir, name, version string, entries []entry) string {
	t.Helper()
	data := makeTarGz(t, entries)
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	tarName := Tarball(name, version)
	if err := os.WriteFile(filepath.Join(dir, tarName), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, tarName+".sha256"), []byte(digest+"  "+tarName+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return digest
}

// openStore opens a store in a temporary directory that is made writable
// again before the test's cleanup removes it.
func openStore(t testing.TB) *Store {
	t.Helper()
	return openStoreWith(t, Options{})
}

// openStoreWith is openStore with options.
func openStoreWith(t testing.TB, opts Options) *Store {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { _ = removeAllWritable(dir) })
	s, err := OpenWith(filepath.Join(dir, "releases"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// listTree returns every path under dir, relative, sorted by the walk.
func listTree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel != "." {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
