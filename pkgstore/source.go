package pkgstore

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
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

// SourceDir turns a package source into a directory path. A source is a
// local directory path or a file:// URL of one; "file:///srv/packages" is
// /srv/packages and "file://../packages" is the relative path ../packages
// (relative paths are resolved against the working directory, so callers
// resolve them first). Other schemes are not supported yet.
func SourceDir(source string) (string, error) {
	if source == "" {
		return "", errors.New("empty package source")
	}
	rest, ok := strings.CutPrefix(source, "file://")
	if !ok {
		if i := strings.Index(source, "://"); i > 0 {
			return "", fmt.Errorf("package source %q: scheme %q is not supported (use a directory or file://)", source, source[:i])
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
// tarball for (a .sha256 beside it is not required here), oldest first by
// CompareVersions.
func AvailableVersions(source, name string) ([]string, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	dir, err := SourceDir(source)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("package source: %w", err)
	}
	var versions []string
	for _, e := range entries {
		v, ok := strings.CutPrefix(e.Name(), name+"-")
		if !ok {
			continue
		}
		v, ok = strings.CutSuffix(v, ".tar.gz")
		if !ok || CheckVersion(v) != nil || e.IsDir() {
			continue
		}
		versions = append(versions, v)
	}
	slices.SortFunc(versions, CompareVersions)
	return versions, nil
}

// readDigestFile reads a sha256sum-format file ("<64 hex>  <file>" or
// "<64 hex> *<file>") and returns the digest listed for want.
func readDigestFile(p, want string) (string, error) {
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", badPackage{fmt.Errorf("%s not found: every tarball needs its sha256 file: %w", filepath.Base(p), err)}
	}
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	lineNo := 0
	var names []string
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		sum, file, ok := strings.Cut(line, " ")
		if !ok || len(sum) != 64 || len(file) < 2 || (file[0] != ' ' && file[0] != '*') {
			return "", badPackage{fmt.Errorf("%s:%d: malformed line, want \"<sha256 hex>  <file name>\"", filepath.Base(p), lineNo)}
		}
		if _, err := hex.DecodeString(sum); err != nil {
			return "", badPackage{fmt.Errorf("%s:%d: malformed sha256 %q", filepath.Base(p), lineNo, sum)}
		}
		file = file[1:]
		if filepath.Base(file) == want {
			return strings.ToLower(sum), nil
		}
		names = append(names, file)
	}
	if len(names) == 0 {
		return "", badPackage{fmt.Errorf("%s: no digest in file", filepath.Base(p))}
	}
	return "", badPackage{fmt.Errorf("%s: no digest for %s (it lists %s)", filepath.Base(p), want, strings.Join(names, ", "))}
}

// CompareVersions orders versions the way people expect: dot-separated
// parts compare numerically when both are numbers ("1.10.0" > "1.9.0"),
// otherwise as strings; a leading "v" is ignored and a pre-release
// ("1.0.0-rc1") comes before its release. It returns -1, 0 or +1.
func CompareVersions(a, b string) int {
	if c := compareVersions(a, b); c != 0 {
		return c
	}
	return strings.Compare(a, b) // a total order: "v1.0" and "1.0" differ
}

func compareVersions(a, b string) int {
	a, b = strings.TrimPrefix(a, "v"), strings.TrimPrefix(b, "v")
	a, b = strings.SplitN(a, "+", 2)[0], strings.SplitN(b, "+", 2)[0]
	ar, apre, _ := strings.Cut(a, "-")
	br, bpre, _ := strings.Cut(b, "-")
	if c := compareDotted(ar, br); c != 0 {
		return c
	}
	switch {
	case apre == bpre:
		return 0
	case apre == "":
		return 1
	case bpre == "":
		return -1
	}
	return compareDotted(apre, bpre)
}

func compareDotted(a, b string) int {
	ap, bp := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(ap) || i < len(bp); i++ {
		if i >= len(ap) {
			return -1
		}
		if i >= len(bp) {
			return 1
		}
		an, aerr := strconv.ParseUint(ap[i], 10, 64)
		bn, berr := strconv.ParseUint(bp[i], 10, 64)
		var c int
		switch {
		case aerr == nil && berr == nil:
			c = cmp.Compare(an, bn)
		case aerr == nil: // numbers before words
			c = -1
		case berr == nil:
			c = 1
		default:
			c = strings.Compare(ap[i], bp[i])
		}
		if c != 0 {
			return c
		}
	}
	return 0
}
