package spec

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// nest returns an attribute whose value is n levels of open, "1", close.
func nest(n int, open, close string) string {
	return "a = " + strings.Repeat(open, n) + "1" + strings.Repeat(close, n) + "\n"
}

func TestCheckSourceDepth(t *testing.T) {
	lim := Limits{Depth: 16}
	for _, tt := range []struct {
		name string
		src  string
		deep bool
	}{
		{"parentheses at the limit", nest(16, "(", ")"), false},
		{"parentheses over the limit", nest(17, "(", ")"), true},
		{"brackets", nest(17, "[", "]"), true},
		{"objects", nest(17, "{a=", "}"), true},
		{"blocks", strings.Repeat("b {\n", 17) + strings.Repeat("}\n", 17), true},
		{"blocks at the limit", strings.Repeat("b {\n", 16) + strings.Repeat("}\n", 16), false},
		{"function calls", nest(17, "f(", ")"), true},
		{"interpolations", `a = "` + strings.Repeat(`${"`, 17) + strings.Repeat(`"}`, 17) + "\"\n", true},
		{"template if directives", "a = <<EOT\n" + strings.Repeat("%{ if true }", 16) + strings.Repeat("%{ endif }", 16) + "\nEOT\n", true},
		{"sequential template directives", "a = <<EOT\n" + strings.Repeat("%{ if true }x%{ endif }", 40) + "\nEOT\n", false},
		{"unary operators", "a = " + strings.Repeat("!", 17) + "true\n", true},
		{"negations", "a = " + strings.Repeat("-", 17) + "1\n", true},
		{"a chain of operators", "a = 1" + strings.Repeat(" + 1", 17) + "\n", true},
		{"a chain across lines in parentheses", "a = (1" + strings.Repeat("\n+ 1", 16) + ")\n", true},
		{"a chain of conditionals", "a = " + strings.Repeat("true ? 1 : ", 17) + "1\n", true},
		{"operators in separate attributes", strings.Repeat("a = 1"+strings.Repeat(" + 1", 10)+"\n", 20), false},
		{"operators in separate list elements", "a = [" + strings.Repeat("1"+strings.Repeat("+1", 10)+",", 20) + "]\n", false},
		{"brackets and operators together", "a = " + strings.Repeat("(1+", 9) + "1" + strings.Repeat(")", 9) + "\n", true},
		{"brackets in strings and comments do not count", "# " + strings.Repeat("(", 100) + "\na = \"" + strings.Repeat("[", 100) + "\"\n", false},
		{"unbalanced closers", strings.Repeat(")", 100) + nest(16, "(", ")"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			diags := CheckSource("deep.hcl", []byte(tt.src), lim)
			if got := diags.HasErrors(); got != tt.deep {
				t.Fatalf("refused = %v, want %v: %v", got, tt.deep, diags)
			}
			// The lexer's measure alone agrees (CheckSource skips it when
			// the quick bound is within the limit).
			toks, _ := hclsyntax.LexConfig([]byte(tt.src), "deep.hcl", hcl.InitialPos)
			if _, _, deep := tokenDepth(toks, lim.Depth); deep != tt.deep {
				t.Errorf("tokenDepth: deep = %v, want %v", deep, tt.deep)
			}
			if !tt.deep {
				return
			}
			d := diags[0]
			if d.Summary != "Nesting too deep" || d.Subject == nil || d.Subject.Filename != "deep.hcl" ||
				!strings.Contains(d.Detail, "deep.hcl") || !strings.Contains(d.Detail, "16 levels") ||
				!strings.Contains(d.Detail, "limits.spec_depth in the host config") {
				t.Errorf("diagnostic = %s: %s (subject %v)", d.Summary, d.Detail, d.Subject)
			}
		})
	}
}

// FuzzQuickDepth: the quick scanner never counts less nesting than the
// lexer-based measure, so skipping the lexer when it is within the limit is
// safe.
func FuzzQuickDepth(f *testing.F) {
	for _, b := range deepSeeds() {
		f.Add(b[:min(len(b), 300)])
	}
	for _, s := range []string{base, nest(20, "(", ")"), "a = \"(((\" # )))\nb = [1, 2 + 3]\n", "a = \"\\\"))\"\nb = {\n c = (1 + /* ) */ 2)\n}\n",
		"a = 1 +\n2\n", "a = [\n1 + 1 + 1\n+ 1]\n", "x = a == b != c <= d >= e && f || !g ? h : i % j\n", "a = ((\n# )\n))\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		quick, ok := quickDepth(src)
		if !ok {
			return
		}
		toks, _ := hclsyntax.LexConfig(src, "f.hcl", hcl.InitialPos)
		if exact, _, _ := tokenDepth(toks, 1<<30); quick < exact {
			t.Fatalf("quickDepth = %d < %d measured on the tokens", quick, exact)
		}
	})
}

func TestCheckSourceSize(t *testing.T) {
	src := []byte("a = \"" + strings.Repeat("x", 2000) + "\"\n")
	if diags := CheckSource("big.hcl", src, Limits{FileSize: 4096}); diags.HasErrors() {
		t.Fatalf("within the limit: %v", diags)
	}
	diags := CheckSource("big.hcl", src, Limits{FileSize: 1024})
	if !diags.HasErrors() {
		t.Fatal("a file over the size limit was accepted")
	}
	want := "big.hcl is 2.0 KiB, more than the limit of 1 KiB for a spec file, package manifest or host config; steward does not parse it. Split it into smaller files, or raise limits.spec_file_size in the host config."
	if d := diags[0]; d.Summary != "File too large" || d.Detail != want || d.Subject == nil || d.Subject.Filename != "big.hcl" {
		t.Errorf("diagnostic = %s: %s", d.Summary, d.Detail)
	}
	// The zero value means the defaults: 1 MiB and depth 64.
	if diags := CheckSource("x.hcl", bytes.Repeat([]byte("#\n"), 600_000), Limits{}); !diags.HasErrors() || !strings.Contains(diags[0].Detail, "limit of 1 MiB") {
		t.Errorf("default size limit: %v", diags)
	}
	if diags := CheckSource("x.hcl", []byte(nest(65, "(", ")")), Limits{}); !diags.HasErrors() || !strings.Contains(diags[0].Detail, "64 levels") {
		t.Errorf("default depth limit: %v", diags)
	}
}

// Every place that parses a file applies the limits before parsing: fleet
// specs (with the limits of the options), the host config (with the
// built-in limits, whatever its limits block says).
func TestLimitsApplyToEveryParser(t *testing.T) {
	deep := []byte(nest(100, "(", ")"))
	good := []byte(base)
	_, _, diags := Load([]Source{{Name: "good.hcl", Dir: "/", Bytes: good}, {Name: "deep.hcl", Dir: "/", Bytes: deep}}, Options{})
	if !diags.HasErrors() || diags[0].Summary != "Nesting too deep" || diags[0].Subject.Filename != "deep.hcl" {
		t.Errorf("Load: %v", diags)
	}
	if _, _, diags := Load([]Source{{Name: "deep.hcl", Bytes: deep}}, Options{Limits: Limits{Depth: 200}}); len(diags) != 1 || diags[0].Summary != "Unsupported argument" {
		t.Errorf("Load with a raised depth limit: %v", diags)
	}
	if _, _, diags := Load([]Source{{Name: "good.hcl", Bytes: good}}, Options{Limits: Limits{FileSize: 64}}); !diags.HasErrors() || diags[0].Summary != "File too large" {
		t.Errorf("Load with a small size limit: %v", diags)
	}

	h, _, diags := LoadHostBytes(append([]byte("limits { spec_depth = 500 }\n"), deep...), "/etc/steward.hcl")
	if h != nil || !diags.HasErrors() || diags[0].Summary != "Nesting too deep" || !strings.Contains(diags[0].Detail, "the host config itself is always read with the built-in limits") {
		t.Errorf("LoadHostBytes: %v", diags)
	}

	dir := t.TempDir()
	big := filepath.Join(dir, "steward.hcl")
	if err := os.WriteFile(big, bytes.Repeat([]byte("# padding\n"), 110_000), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, diags := LoadHost(big); !diags.HasErrors() || diags[0].Summary != "File too large" || !strings.Contains(diags[0].Detail, big+" is 1.0 MiB, more than the limit of 1 MiB") {
		t.Errorf("LoadHost of a large file: %v", diags)
	}
	specs := filepath.Join(dir, "specs")
	os.Mkdir(specs, 0o755)
	os.WriteFile(filepath.Join(specs, "a.hcl"), good, 0o644)
	os.WriteFile(filepath.Join(specs, "b.hcl"), bytes.Repeat([]byte("#\n"), 1000), 0o644)
	if _, _, diags := LoadDir(specs, Options{Limits: Limits{FileSize: 1024}}); !diags.HasErrors() || diags[0].Summary != "File too large" || !strings.Contains(diags[0].Detail, "limits.spec_file_size") {
		t.Errorf("LoadDir: %v", diags)
	}
}

func TestHostLimitsBlock(t *testing.T) {
	h, _, diags := LoadHostBytes([]byte(`
limits {
  spec_file_size = "2MB"
  spec_total_size = "32MB"
  spec_depth     = 100
  api_body_size  = "64KB"
  package_size   = "2GB"
  unpack_files   = 5000
  unpack_size    = "3GB"
  git_fetch_memory = "256MB"
}
`), "/etc/steward.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	want := Limits{FileSize: 2 << 20, TotalSize: 32 << 20, Depth: 100, APIBody: 64 << 10, PackageSize: 2 << 30, UnpackFiles: 5000, UnpackSize: 3 << 30, GitFetchMemory: 256 << 20}
	if h.Limits != want {
		t.Errorf("Limits = %+v, want %+v", h.Limits, want)
	}
	h, _, diags = LoadHostBytes([]byte(`limits { spec_depth = 100 }`), "/etc/steward.hcl")
	if diags.HasErrors() || h.Limits.FileSize != DefaultLimits.FileSize || h.Limits.Depth != 100 {
		t.Errorf("partial limits block: %+v %v", h.Limits, diags)
	}
	h, _, _ = LoadHostBytes(nil, "/etc/steward.hcl")
	if h.Limits != DefaultLimits {
		t.Errorf("without a limits block: %+v", h.Limits)
	}
	for src, want := range map[string]string{
		`limits { spec_depth = 2 }`:                "spec_depth must be a whole number from 8 to 1000",
		`limits { spec_file_size = "1GB" }`:        "spec_file_size must be from 1 KiB to 64 MiB",
		`limits { api_body_size = "lots" }`:        `"lots" is not a size`,
		`limits { unpack_files = 0 }`:              "unpack_files must be a whole number from 1",
		`limits { package_size = "9999999999GB" }`: "too large a size",
		`limits { nesting = 3 }`:                   `An argument named "nesting" is not expected here.`,
	} {
		_, _, diags := LoadHostBytes([]byte(src), "/etc/steward.hcl")
		if !diags.HasErrors() || !strings.Contains(diags.Error(), want) {
			t.Errorf("%s: %v, want %q", src, diags, want)
		}
	}
}

// Files that are not regular files are refused at once, not read: a FIFO
// would block the reader forever, a device would never end.
func TestReadFileRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.hcl")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.hcl")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, zero} {
		done := make(chan error, 1)
		go func() { _, err := ReadFile(p, Limits{}); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("ReadFile(%s) = %v", p, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("ReadFile(%s) blocks", p)
		}
		if _, _, diags := LoadHost(p); !diags.HasErrors() || !strings.Contains(diags.Error(), "not a regular file") {
			t.Errorf("LoadHost(%s): %v", p, diags)
		}
	}
	if _, _, diags := LoadDir(dir, Options{}); !diags.HasErrors() || !strings.Contains(diags.Error(), "not a regular file") {
		t.Errorf("LoadDir: %v", diags)
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 1 << 20: "1 MiB", 1<<20 + 1: "1.0 MiB", 3 << 30: "3 GiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// The memory test runs a child process (this test binary again) whose
// address space may grow by at most childHeadroom beyond what it has when
// the test starts, and has it load a file of deepLevels nested
// parentheses. Without the limits, parsing that file takes more than
// 800 MB; the control child proves the bound bites.
const (
	childEnv      = "STEWARD_SPEC_MEMORY_CHILD"
	childHeadroom = 512 << 20
	deepLevels    = 40_000
)

func TestDeepNestingMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	run := func(mode string) (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDeepNestingChild$", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"="+mode)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("load")
	if err != nil {
		t.Fatalf("loading %d nested levels under a %d MiB address-space bound: %v\n%s", deepLevels, childHeadroom>>20, err, out)
	}
	if !strings.Contains(out, "deep.hcl:1:") || !strings.Contains(out, "Nesting too deep") || !strings.Contains(out, "more than 64 levels deep") {
		t.Errorf("the child did not report the limit:\n%s", out)
	}
	if !strings.Contains(out, "--- PASS: TestDeepNestingChild") {
		t.Errorf("the child did not end normally:\n%s", out)
	}
	out, err = run("parse")
	if err == nil && strings.Contains(out, "parsed without limits") {
		t.Errorf("control: parsing %d levels without the limits fit in %d MiB; the test proves nothing:\n%s", deepLevels, childHeadroom>>20, out)
	}
}

// TestDeepNestingChild is the child of TestDeepNestingMemoryBounded; it does
// nothing unless that test runs it.
func TestDeepNestingChild(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		t.Skip("run by TestDeepNestingMemoryBounded")
	}
	src := []byte(nest(deepLevels, "(", ")"))
	limitAddressSpace(t, childHeadroom)
	switch mode {
	case "load":
		_, _, diags := Load([]Source{{Name: "deep.hcl", Dir: "/", Bytes: src}}, Options{})
		for _, d := range diags {
			fmt.Printf("%s:%d:%d: %s: %s\n", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary, d.Detail)
		}
	case "parse":
		hclsyntax.ParseConfig(src, "deep.hcl", hcl.InitialPos)
		fmt.Println("parsed without limits")
	}
}

// limitAddressSpace lets the process's address space grow by at most n
// bytes from its current size (a Go process reserves much address space
// at start, so an absolute bound would say little).
func limitAddressSpace(t *testing.T, n uint64) {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var vm uint64
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmSize:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			vm = kb << 10
		}
	}
	if vm == 0 {
		t.Fatal("no VmSize in /proc/self/status")
	}
	lim := &syscall.Rlimit{Cur: vm + n, Max: vm + n}
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, lim); err != nil {
		t.Fatal(err)
	}
}

// The spec files of a fleet are bounded together, before any is parsed:
// by spec.Load and by the directory source, which stops reading.
func TestTotalSizeLimit(t *testing.T) {
	chunk := strings.Repeat("# padding\n", 1000) // 10 kB
	srcs := []Source{{Name: "a.hcl", Bytes: []byte(chunk)}, {Name: "b.hcl", Bytes: []byte(chunk)}}
	_, _, diags := Load(srcs, Options{Limits: Limits{TotalSize: 15000}})
	if len(diags) != 1 || diags[0].Summary != "Specs too large" || !strings.Contains(diags[0].Detail, "limits.spec_total_size") {
		t.Errorf("Load over the total: %v", diags)
	}
	if _, _, diags := Load(srcs, Options{Limits: Limits{TotalSize: 30000}}); diags.HasErrors() && diags[0].Summary == "Specs too large" {
		t.Errorf("Load within the total: %v", diags)
	}
}
