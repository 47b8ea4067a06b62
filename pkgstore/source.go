package pkgstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"steward/spec"
	"strings"

	"steward/internal/safefile"
)

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	versionRE = regexp.MustCompile(`^v?[0-9][0-9A-Za-z_.+-]*$`)
)

// CheckName reports whether name can name a package: letters, digits, "_",
// "." and "-", starting with a letter or digit.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid package name %q", name)
	}
	return nil
}

// CheckVersion reports whether version can be a package version: a digit
// (optionally after "v") then letters, digits, ".", "_", "+" and "-".
func CheckVersion(version string) error {
	if !versionRE.MatchString(version) {
		return fmt.Errorf("invalid package version %q", version)
	}
	return nil
}

// Tarball returns the file name of a package release: NAME-VERSION.tar.gz.
func Tarball(name, version string) string {
	return name + "-" + version + ".tar.gz"
}

// SumsFile is the name of a digest list in a package source: sha256sum
// format, one line per file, used when a tarball has no .sha256 of its own.
const SumsFile = "SHA256SUMS"

// SourceDir turns a local package source into a directory path. A local
// source is a directory path or a file:// URL of one; "file:///srv/packages"
// is /srv/packages and "file://../packages" is the relative path
// ../packages (relative paths are resolved against the working directory,
// so callers resolve them first). An http:// or https:// source is not a
// directory (Install fetches from it, see doc.go); other schemes are not
// supported.
func SourceDir(source string) (string, error) {
	if source == "" {
		return "", errors.New("empty package source")
	}
	if isHTTP(source) {
		return "", fmt.Errorf("package source %s is an HTTP URL, not a directory", redactSource(source))
	}
	rest, ok := strings.CutPrefix(source, "file://")
	if !ok {
		if i := strings.Index(source, "://"); i > 0 {
			return "", fmt.Errorf("package source %q: scheme %q is not supported (use a directory, file://, http:// or https://)", source, source[:i])
		}
		return source, nil
	}
	if strings.HasPrefix(rest, "localhost/") {
		rest = rest[len("localhost"):]
	}
	p, err := url.PathUnescape(rest)
	if err != nil || p == "" {
		return "", fmt.Errorf("package source %q: invalid file URL", source)
	}
	return p, nil
}

// AvailableVersions lists the versions of package name that source holds a
// tarball for, oldest first by spec.CompareVersions. For a local source those
// are the tarballs in the directory (a digest is not required here). For
// an HTTP source they are the tarballs its SHA256SUMS lists; without a
// SHA256SUMS listing is not possible over HTTP and is an error. HTTP
// requests use a default client bounded by DefaultHTTPTimeout;
// (*Store).AvailableVersions takes a context and uses the Store's client.
func AvailableVersions(source, name string) ([]string, error) {
	return availableVersions(context.Background(), defaultClient, source, name)
}

// AvailableVersions is the package-level AvailableVersions with a context,
// using the Store's HTTP client for HTTP sources.
func (s *Store) AvailableVersions(ctx context.Context, source, name string) ([]string, error) {
	return availableVersions(ctx, s.opts.HTTPClient, source, name)
}

func availableVersions(ctx context.Context, client *http.Client, source, name string) ([]string, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if isHTTP(source) {
		src, err := newHTTPSource(client, source)
		if err != nil {
			return nil, err
		}
		return src.versions(ctx, name)
	}
	dir, err := SourceDir(source)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("package source: %w", err)
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() {
			files = append(files, e.Name())
		}
	}
	return versionsIn(files, name), nil
}

// versionsIn returns the versions of name that files holds tarballs of,
// each once, sorted by spec.CompareVersions.
func versionsIn(files []string, name string) []string {
	var versions []string
	for _, f := range files {
		v, ok := strings.CutPrefix(f, name+"-")
		if !ok {
			continue
		}
		v, ok = strings.CutSuffix(v, ".tar.gz")
		if !ok || CheckVersion(v) != nil || slices.Contains(versions, v) {
			continue
		}
		versions = append(versions, v)
	}
	slices.SortFunc(versions, spec.CompareVersions)
	return versions
}

// sumLine is one line of a sha256sum-format file.
type sumLine struct {
	sum  string // lower-case hex
	file string // as written, without the "*" or " " marker
}

// parseSums parses sha256sum-format data ("<64 hex>  <file>" or
// "<64 hex> *<file>" per line); label names the data in errors.
func parseSums(data []byte, label string) ([]sumLine, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	lineNo := 0
	var lines []sumLine
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		sum, file, ok := strings.Cut(line, " ")
		if !ok || len(sum) != 64 || len(file) < 2 || (file[0] != ' ' && file[0] != '*') {
			return nil, badPackage{fmt.Errorf("%s:%d: malformed line, want \"<sha256 hex>  <file name>\"", label, lineNo)}
		}
		if _, err := hex.DecodeString(sum); err != nil {
			return nil, badPackage{fmt.Errorf("%s:%d: malformed sha256 %q", label, lineNo, sum)}
		}
		lines = append(lines, sumLine{sum: strings.ToLower(sum), file: file[1:]})
	}
	if err := sc.Err(); err != nil {
		return nil, badPackage{fmt.Errorf("%s:%d: %w", label, lineNo+1, err)}
	}
	return lines, nil
}

// lookupSum returns the digest lines give for the file named want (matched
// by base name, as "sha256sum dist/x.tar.gz" writes it). ok is false when
// no line names it; two lines naming it with different digests are an
// error.
func lookupSum(lines []sumLine, label, want string) (sum string, ok bool, err error) {
	for _, l := range lines {
		if path.Base(l.file) != want {
			continue
		}
		if ok && l.sum != sum {
			return "", false, badPackage{fmt.Errorf("%s lists %s twice with different digests", label, want)}
		}
		sum, ok = l.sum, true
	}
	return sum, ok, nil
}

// readDigestFile reads a sha256sum-format file (a regular file of at most
// maxSumsBytes) and returns the digest listed for want.
func readDigestFile(p, want string) (string, error) {
	data, err := safefile.ReadRegular(context.Background(), p, maxSumsBytes)
	if err != nil {
		return "", err
	}
	return digestFor(data, filepath.Base(p), want)
}

// digestFor returns the digest a file's own sha256sum-format file, named
// label, gives for want; it must list want.
func digestFor(data []byte, label, want string) (string, error) {
	lines, err := parseSums(data, label)
	if err != nil {
		return "", err
	}
	sum, ok, err := lookupSum(lines, label, want)
	switch {
	case err != nil:
		return "", err
	case ok:
		return sum, nil
	case len(lines) == 0:
		return "", badPackage{fmt.Errorf("%s: no digest in file", label)}
	}
	names := make([]string, len(lines))
	for i, l := range lines {
		names[i] = l.file
	}
	return "", badPackage{fmt.Errorf("%s: no digest for %s (it lists %s)", label, want, strings.Join(names, ", "))}
}

// sourceDigest finds the digest of tarName in a source: its own
// tarName.sha256 when there is one, otherwise its line in SumsFile. read
// returns a file of the source, or an error matching fs.ErrNotExist when
// the source does not have it. A .sha256 that exists but does not list
// tarName is an error, not a reason to look further.
func sourceDigest(tarName string, read func(file string) ([]byte, error)) (string, error) {
	data, err := read(tarName + ".sha256")
	if err == nil {
		return digestFor(data, tarName+".sha256", tarName)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	data, err = read(SumsFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err == nil {
		lines, err := parseSums(data, SumsFile)
		if err != nil {
			return "", err
		}
		sum, ok, err := lookupSum(lines, SumsFile, tarName)
		if ok || err != nil {
			return sum, err
		}
	}
	return "", noDigestError{tarName}
}

// noDigestError is a tarball that neither its .sha256 nor SHA256SUMS gives a
// digest for. It is a bad package, and matches fs.ErrNotExist too: often
// the version was not published at all.
type noDigestError struct{ tarName string }

func (e noDigestError) Error() string {
	return fmt.Sprintf("no digest for %s: neither %s.sha256 nor %s lists it", e.tarName, e.tarName, SumsFile)
}

func (noDigestError) Is(t error) bool { return t == ErrBadPackage || t == fs.ErrNotExist }
