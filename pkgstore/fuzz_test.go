package pkgstore

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzUnpack feeds arbitrary bytes to unpack as a .tar.gz (gzipping them
// first unless they start with the gzip magic, so that the fuzzer reaches
// the tar reader and the checks). It must fail or
// leave everything inside the root: no path outside it, no symlink that
// resolves outside it, no special files, the limits kept.
func FuzzUnpack(f *testing.F) {
	f.Add(makeTarGz(f, appEntries(goodManifest)))
	f.Add(makeTarGz(f, []entry{
		{name: "bin/app", body: "x", mode: 0o755},
		{name: "lib/l", typ: tar.TypeSymlink, link: "../bin/app"},
		{name: "lib/h", typ: tar.TypeLink, link: "bin/app"},
		{name: "lib/self", typ: tar.TypeSymlink, link: "."},
	}))
	f.Add(makeTarGz(f, []entry{{name: "l", typ: tar.TypeSymlink, link: "."}, {name: "l/x", body: "x"}}))
	f.Add(makeTarGz(f, []entry{{name: "a", typ: tar.TypeSymlink, link: "."}, {name: "b", typ: tar.TypeSymlink, link: "a/../.."}}))
	f.Add(makeTarGz(f, []entry{{name: "../x", body: "x"}}))
	f.Add(makeTarGz(f, []entry{{name: "/x", body: "x"}}))
	f.Add(makeTarGz(f, []entry{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}}))
	f.Add(makeTarGz(f, []entry{{name: "p", typ: tar.TypeFifo}}))
	f.Add(gunzip(f, makeTarGz(f, []entry{{name: "a/b", body: "x"}, {name: "a/c", typ: tar.TypeSymlink, link: "b"}})))
	f.Add([]byte{})
	f.Add([]byte("\x1f\x8b"))

	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		root := filepath.Join(parent, "root")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("\x1f\x8b")) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(data)
			zw.Close()
			data = buf.Bytes()
		}
		lim := limits{MaxFiles: 200, MaxBytes: 1 << 20}
		err := unpack(context.Background(), bytes.NewReader(data), root, lim)

		// Whatever happened, nothing was made beside the root.
		entries, rerr := os.ReadDir(parent)
		if rerr != nil || len(entries) != 1 {
			t.Fatalf("parent holds %v (%v), want only root", entries, rerr)
		}
		if err != nil {
			return
		}
		if err := makeReadOnly(root); err != nil {
			t.Fatal(err)
		}
		realRoot, err := filepath.EvalSymlinks(root)
		if err != nil {
			t.Fatal(err)
		}
		var files int
		var size int64
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			files++
			fi, err := d.Info()
			if err != nil {
				return err
			}
			switch mode := fi.Mode(); {
			case mode.IsDir():
				if p != root && mode.Perm() != 0o555 {
					t.Errorf("%s: directory mode %v", p, mode)
				}
			case mode.IsRegular():
				size += fi.Size()
				if mode.Perm()&0o222 != 0 || mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
					t.Errorf("%s: file mode %v", p, mode)
				}
			case mode&fs.ModeSymlink != 0:
				checkLinkInside(t, realRoot, root, p)
			default:
				t.Errorf("%s: unexpected file type %v", p, mode)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if files-1 > lim.MaxFiles || size > lim.MaxBytes {
			t.Errorf("%d entries and %d bytes exceed %+v", files-1, size, lim)
		}
	})
}

// checkLinkInside fails unless the symlink at p resolves inside the root,
// or would if the missing part of its target were created.
func checkLinkInside(t *testing.T, realRoot, root, p string) {
	t.Helper()
	target, err := filepath.EvalSymlinks(p)
	if err != nil {
		// Dangling or a loop: resolve the link's directory for real and
		// the target lexically from there.
		dir, derr := filepath.EvalSymlinks(filepath.Dir(p))
		if derr != nil {
			t.Fatalf("%s: resolving its directory: %v", p, derr)
		}
		link, lerr := os.Readlink(p)
		if lerr != nil {
			t.Fatal(lerr)
		}
		target = filepath.Join(dir, link)
	}
	if target != realRoot && !strings.HasPrefix(target, realRoot+string(filepath.Separator)) {
		t.Errorf("symlink %s resolves to %s, outside %s", p, target, root)
	}
}

// FuzzParseManifest: no input makes ParseManifest, Argv or DownArgv panic,
// errors always carry a range, and a manifest that parses has a valid
// health check, programs inside the release and a consistent schema.
func FuzzParseManifest(f *testing.F) {
	f.Add(goodManifest)
	f.Add(`command = ["bin/app"]`)
	f.Add("command = [\"bin/app\", \"${merchant}-${port + 1}\"]\nhealth {\n  tcp = true\n}\n")
	f.Add("command = [\"bin/app\"]\nhealth {}\nhealth { http = \"/\" }\nfoo = 1\n")
	f.Add(`command = ["${port}", upper("x"), [1], null]`)
	f.Add("command = [\"bin/app\"\n")
	f.Add("migrate = [\"a\", \"${merchant}\"]")
	f.Add(schemaManifest)
	f.Add("command = [\"bin/app\"]\nschema {\n  version = 0\n  command = [\"bin/v\"]\n  timeout = \"1s\"\n}\n")
	f.Add("command = [\"bin/app\"]\nmigrate = [\"bin/app\"]\nschema {\n  version = 9\n  down = [\"bin/app\", \"--to=${to + 1}\", \"${to}\"]\n  query = \"SELECT 1\"\n}\n")
	f.Add("command = [\"bin/app\"]\nschema {\n  version = -1.5\n  migrate = [\"${to}\"]\n  down = [\"bin/app\"]\n  query = \"\"\n  command = [\"/x\"]\n  timeout = \"0s\"\n}\nschema {}\n")
	// Nested far beyond the depth limit: without it, a stack overflow or
	// hundreds of megabytes.
	f.Add("command = [\"bin/app\", " + strings.Repeat("(", 5000) + "\"x\"" + strings.Repeat(")", 5000) + "]\n")
	f.Add("command = [\"bin/app\", \"" + strings.Repeat(`${"`, 5000) + strings.Repeat(`"}`, 5000) + "\"]\n")
	f.Add("command = [\"bin/app\"]\nhealth {\n  tcp = " + strings.Repeat("!", 50000) + "false\n}\n")
	f.Add(strings.Repeat("schema {\n", 5000) + strings.Repeat("}\n", 5000))
	f.Fuzz(func(t *testing.T, src string) {
		m, diags := ParseManifest([]byte(src), "package.hcl")
		for _, d := range diags {
			if d.Severity == 1 && d.Subject == nil { // hcl.DiagError
				t.Errorf("error without a range: %v", d)
			}
		}
		if diags.HasErrors() {
			if m != nil {
				t.Error("a manifest returned with errors")
			}
			return
		}
		if (m.Health.HTTP == "") == !m.Health.TCP || (m.Health.HTTP != "" && !strings.HasPrefix(m.Health.HTTP, "/")) {
			t.Errorf("health %+v", m.Health)
		}
		if p := m.program(); !filepath.IsLocal(p) {
			t.Errorf("program %q is not inside the release", p)
		}
		argv, err := m.Argv(8101, "acme")
		if err == nil && (len(argv) == 0 || argv[0] != m.program()) {
			t.Errorf("Argv = %q, program %q", argv, m.program())
		}
		if sc := m.Schema; sc != nil {
			if sc.Version < 0 || sc.Timeout <= 0 || (sc.Query == "") == (sc.Command == nil) {
				t.Errorf("schema %+v", *sc)
			}
			if sc.Version > 0 && len(m.SchemaMigrate()) == 0 {
				t.Errorf("schema version %d without a migrate command", sc.Version)
			}
			for _, argv := range [][]string{sc.Migrate, sc.Command, m.SchemaMigrate()} {
				if argv != nil && (len(argv) == 0 || !filepath.IsLocal(argv[0])) {
					t.Errorf("schema program %q is not inside the release", argv)
				}
			}
			down, err := sc.DownArgv(3)
			if sc.HasDown() && err == nil && (len(down) == 0 || !filepath.IsLocal(down[0])) {
				t.Errorf("DownArgv = %q", down)
			}
			if !sc.HasDown() && (down != nil || err != nil) {
				t.Errorf("DownArgv without down = %q, %v", down, err)
			}
		}
	})
}

func gunzip(t testing.TB, data []byte) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(zr); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzParseSums: no input makes the sha256sum parser panic; what it accepts
// is 64 lower-case hex digits per line, and a digest it finds for a file is
// one of the lines naming that file.
func FuzzParseSums(f *testing.F) {
	sum := strings.Repeat("ab", 32)
	f.Add([]byte(sum+"  app-1.0.0.tar.gz\n"), "app-1.0.0.tar.gz")
	f.Add([]byte(sum+" *./dist/app-1.0.0.tar.gz\r\n\n"+strings.Repeat("CD", 32)+"  app-1.0.0.tar.gz\n"), "app-1.0.0.tar.gz")
	f.Add([]byte("abc app\n"), "app")
	f.Add([]byte(sum+"  \n"), "")
	f.Fuzz(func(t *testing.T, data []byte, want string) {
		lines, err := parseSums(data, SumsFile)
		if err != nil {
			if !errors.Is(err, ErrBadPackage) {
				t.Fatalf("error %v does not match ErrBadPackage", err)
			}
			return
		}
		for _, l := range lines {
			if len(l.sum) != 64 || strings.ToLower(l.sum) != l.sum || strings.Trim(l.sum, "0123456789abcdef") != "" {
				t.Fatalf("accepted digest %q", l.sum)
			}
		}
		got, ok, err := lookupSum(lines, SumsFile, want)
		if err != nil || !ok {
			return
		}
		if !slices.ContainsFunc(lines, func(l sumLine) bool { return l.sum == got && path.Base(l.file) == want }) {
			t.Fatalf("lookupSum(%q) = %s, which no line gives it", want, got)
		}
	})
}
