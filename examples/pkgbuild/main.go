// Command pkgbuild builds the example invoicing app into steward packages.
//
//	go run ./examples/pkgbuild -out examples/packages [-versions 1.0.0,1.1.0,1.2.0] [-name invoicing] [-broken 1.2.0]
//	    [-schemas 1.0.0=1,1.1.0=2,1.2.0=3] [-no-down VERSIONS]
//
// For each version it builds the app (CGO_ENABLED=0, -trimpath, with the
// version and its schema version set through -ldflags) and writes
// NAME-VERSION.tar.gz, holding bin/NAME and package.hcl, and
// NAME-VERSION.tar.gz.sha256 in sha256sum format. Versions listed in -broken
// are built with a /health that fails. -schemas gives the schema version
// each version needs (every version built must have one); the manifest
// declares it in a schema block with the app's "migrate up" and "migrate
// down ${to}" commands, leaving down out for the versions listed in -no-down
// (a release without a down migration). The top-level migrate stays, for
// stewards that do not read the schema block.
// Tarballs are deterministic (sorted entries, fixed times, uid and gid 0), so
// rebuilding with the same toolchain gives the same digests. It must run
// inside the steward module; go's build cache makes repeated runs quick.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"steward/internal/atomicfile"
	"steward/pkgstore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	out      string
	name     string
	app      string
	versions []string
	broken   []string
	schemas  map[string]int64 // version → schema version
	noDown   []string
}

func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	flags := flag.NewFlagSet("pkgbuild", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&o.out, "out", "", "directory to write the packages to (required)")
	flags.StringVar(&o.name, "name", "invoicing", "package name")
	flags.StringVar(&o.app, "app", "steward/examples/app", "Go package of the app to build")
	versions := flags.String("versions", "1.0.0,1.1.0,1.2.0", "comma-separated versions to build")
	broken := flags.String("broken", "1.2.0", "comma-separated versions whose /health fails on purpose")
	schemas := flags.String("schemas", "1.0.0=1,1.1.0=2,1.2.0=3", "comma-separated VERSION=N: the schema version each version needs")
	noDown := flags.String("no-down", "", "comma-separated versions whose manifest has no down migration")
	if err := flags.Parse(args); err != nil {
		return o, err
	}
	if flags.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", flags.Arg(0))
	}
	if o.out == "" {
		return o, errors.New("-out is required")
	}
	if err := pkgstore.CheckName(o.name); err != nil {
		return o, err
	}
	o.versions = splitList(*versions)
	o.broken = splitList(*broken)
	o.noDown = splitList(*noDown)
	if len(o.versions) == 0 {
		return o, errors.New("-versions is empty")
	}
	var err error
	if o.schemas, err = parseSchemas(*schemas); err != nil {
		return o, err
	}
	for _, v := range slices.Concat(o.versions, o.broken, o.noDown) {
		if err := pkgstore.CheckVersion(v); err != nil {
			return o, err
		}
	}
	for _, v := range o.versions {
		if _, ok := o.schemas[v]; !ok {
			return o, fmt.Errorf("-schemas gives no schema version for %s", v)
		}
	}
	return o, nil
}

// parseSchemas parses "1.0.0=1,1.1.0=2".
func parseSchemas(s string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, f := range splitList(s) {
		v, n, ok := strings.Cut(f, "=")
		v = strings.TrimSpace(v)
		if !ok {
			return nil, fmt.Errorf("-schemas: %q is not VERSION=N", f)
		}
		if err := pkgstore.CheckVersion(v); err != nil {
			return nil, fmt.Errorf("-schemas: %w", err)
		}
		i, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
		if err != nil || i < 0 {
			return nil, fmt.Errorf("-schemas: %q is not a schema version (a whole number >= 0)", n)
		}
		if old, dup := out[v]; dup && old != i {
			return nil, fmt.Errorf("-schemas: two schema versions for %s", v)
		}
		out[v] = i
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "pkgbuild: %v\n", err)
		return 2
	}
	if err := build(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "pkgbuild: %v\n", err)
		return 1
	}
	return 0
}

// build compiles every version (in parallel: they share the build cache)
// and then writes the packages in the order given.
func build(ctx context.Context, o options, stdout io.Writer) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command is needed: %w", err)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "pkgbuild-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	bins := make([]string, len(o.versions))
	errs := make([]error, len(o.versions))
	var wg sync.WaitGroup
	for i, v := range o.versions {
		bins[i] = filepath.Join(tmp, v, o.name)
		wg.Go(func() {
			errs[i] = compile(ctx, goBin, o.app, v, o.schemas[v], slices.Contains(o.broken, v), bins[i])
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for i, v := range o.versions {
		bin, err := os.ReadFile(bins[i])
		if err != nil {
			return err
		}
		down := !slices.Contains(o.noDown, v)
		data, err := pack(o.name, bin, manifest(o.name, o.schemas[v], down))
		if err != nil {
			return err
		}
		tarName := pkgstore.Tarball(o.name, v)
		sum := sha256.Sum256(data)
		digest := hex.EncodeToString(sum[:])
		note := fmt.Sprintf(", schema %d", o.schemas[v])
		if !down {
			note += " without down"
		}
		if old, err := os.ReadFile(filepath.Join(o.out, tarName+".sha256")); err == nil && strings.HasPrefix(string(old), digest+" ") {
			note = ", unchanged"
		}
		if slices.Contains(o.broken, v) {
			note += ", /health fails on purpose"
		}
		if err := atomicfile.WriteFile(filepath.Join(o.out, tarName), data, 0o644, false); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(o.out, tarName+".sha256"), []byte(digest+"  "+tarName+"\n"), 0o644, false); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s  sha256 %s  (%d bytes%s)\n", filepath.Join(o.out, tarName), digest[:12], len(data), note)
	}
	return nil
}

func compile(ctx context.Context, goBin, pkg, version string, schema int64, broken bool, out string) error {
	ldflags := fmt.Sprintf("-s -w -X main.version=%s -X main.schemaVersion=%d", version, schema)
	if broken {
		ldflags += " -X main.brokenHealth=true"
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s %s: %v\n%s", pkg, version, err, buf.String())
	}
	return nil
}

// manifest returns the package.hcl of the package name needing schema
// version schema, with a down migration or without.
func manifest(name string, schema int64, down bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `command = ["bin/%[1]s", "--port=${port}"]
health { http = "/health" }
migrate = ["bin/%[1]s", "migrate"]

schema {
  version = %[2]d
  migrate = ["bin/%[1]s", "migrate", "up"]
`, name, schema)
	if down {
		fmt.Fprintf(&b, "  down    = [\"bin/%s\", \"migrate\", \"down\", \"${to}\"]\n", name)
	}
	b.WriteString("}\n")
	return b.String()
}

// epoch is the modification time of every entry, for reproducible tarballs.
var epoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// pack returns the deterministic .tar.gz of a package holding bin/NAME and
// package.hcl: entries sorted, fixed times, uid and gid 0 without names.
func pack(name string, bin []byte, manifest string) ([]byte, error) {
	type file struct {
		name string
		mode int64
		body []byte
		dir  bool
	}
	files := []file{
		{name: "bin/", mode: 0o755, dir: true},
		{name: "bin/" + name, mode: 0o755, body: bin},
		{name: "package.hcl", mode: 0o644, body: []byte(manifest)},
	}
	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.name, b.name) })

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, f := range files {
		h := &tar.Header{
			Name:     f.name,
			Mode:     f.mode,
			ModTime:  epoch,
			Typeflag: tar.TypeReg,
			Size:     int64(len(f.body)),
			Format:   tar.FormatUSTAR,
		}
		if f.dir {
			h.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
