package spec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"steward/internal/safefile"
)

// Limits bound what steward reads from files and requests it does not
// control. Every field is positive once defaults are applied; a zero field
// means the DefaultLimits value.
type Limits struct {
	// FileSize is the largest spec file, package manifest or host config
	// steward parses, in bytes (host config: limits.spec_file_size).
	FileSize int64
	// TotalSize bounds all the spec files of a fleet together, in bytes
	// (limits.spec_total_size): parsing takes several hundred times a
	// file's size in memory at worst, so many files each within FileSize
	// could still exhaust it.
	TotalSize int64
	// Depth is the deepest nesting steward parses: brackets, parentheses,
	// braces, template interpolations and directives, and chains of
	// operators each count one level (limits.spec_depth).
	Depth int
	// APIBody is the largest request body the API reads (api_body_size).
	APIBody int64
	// PackageSize is the largest package tarball steward downloads or
	// hashes (package_size).
	PackageSize int64
	// UnpackFiles and UnpackSize bound what one package unpacks to: entries
	// of any kind, and the total size of its regular files (unpack_files,
	// unpack_size).
	UnpackFiles int
	UnpackSize  int64
	// GitFetchMemory bounds the memory of the process that fetches a git
	// source (git_fetch_memory): go-git holds each fetched object whole in
	// memory, so a commit of a huge file that compresses to little would
	// otherwise take the daemon's memory.
	GitFetchMemory int64
}

// DefaultLimits are the limits without a limits block in the host config.
// The host config itself is always read with these.
var DefaultLimits = Limits{
	FileSize:    1 << 20,
	TotalSize:   4 << 20,
	Depth:       64,
	APIBody:     1 << 20,
	PackageSize: 1 << 30,
	UnpackFiles: 100_000,
	UnpackSize:  1 << 30,

	GitFetchMemory: 1 << 30,
}

// Bounds of the limits a host config may set. Depth is bounded because every
// level costs the parser stack (about 20 KiB a level); the file size because
// parsing costs about 400 bytes of memory per byte of a file of tiny tokens.
const (
	maxDepthLimit    = 1000
	minDepthLimit    = 8
	maxFileSizeLimit = 64 << 20
	minFileSizeLimit = 1 << 10
)

// WithDefaults returns l with every zero or negative field replaced by its
// DefaultLimits value.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	if l.FileSize <= 0 {
		l.FileSize = d.FileSize
	}
	if l.TotalSize <= 0 {
		l.TotalSize = d.TotalSize
	}
	if l.Depth <= 0 {
		l.Depth = d.Depth
	}
	if l.APIBody <= 0 {
		l.APIBody = d.APIBody
	}
	if l.PackageSize <= 0 {
		l.PackageSize = d.PackageSize
	}
	if l.UnpackFiles <= 0 {
		l.UnpackFiles = d.UnpackFiles
	}
	if l.UnpackSize <= 0 {
		l.UnpackSize = d.UnpackSize
	}
	if l.GitFetchMemory <= 0 {
		l.GitFetchMemory = d.GitFetchMemory
	}
	return l
}

// hostLimitsFixed is why the host config's own limits cannot be raised.
const hostLimitsFixed = "the host config itself is always read with the built-in limits"

// advice ends a limit's diagnostic: what to do, and how to raise the limit
// (setting in the host config's limits block) unless fixed says why it
// cannot be.
func advice(action, setting, fixed string) string {
	if fixed != "" {
		return action + "; " + fixed + "."
	}
	return action + ", or raise limits." + setting + " in the host config."
}

// CheckSource refuses src, the content of the file name, when it is larger
// than lim.FileSize or nested deeper than lim.Depth. It runs before HCL
// parses the file: the parser recurses once per level of nesting, so a file
// of tens of thousands of nested parentheses would otherwise exhaust the
// stack or the memory. Zero fields of lim take the defaults.
//
// Depth is measured on hclsyntax's tokens (the lexer does not recurse):
// each open ( [ { ${ and %{ counts one level until its closer, a template
// if or for directive one level until its end directive, and each operator
// one level within its bracket (the parser nests an expression one level
// per operator, unary ones included; a comma, or a newline outside
// parentheses and brackets, ends an expression). A file without templates
// or heredocs is first bounded by a quick scan of its bytes and lexed only
// when that bound exceeds the limit.
func CheckSource(name string, src []byte, lim Limits) hcl.Diagnostics {
	return checkSource(name, src, lim.WithDefaults(), "")
}

// checkSource is CheckSource with defaults applied; fixed, when set, says
// why the limits cannot be raised for this file.
func checkSource(name string, src []byte, lim Limits, fixed string) hcl.Diagnostics {
	if int64(len(src)) > lim.FileSize {
		start := hcl.Range{Filename: name, Start: hcl.InitialPos, End: hcl.InitialPos}
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "File too large",
			Detail: fmt.Sprintf("%s is %s, more than the limit of %s for a spec file, package manifest or host config; steward does not parse it. %s",
				name, FormatSize(int64(len(src))), FormatSize(lim.FileSize), advice("Split it into smaller files", "spec_file_size", fixed)),
			Subject: &start}}
	}
	if d, ok := quickDepth(src); ok && d <= lim.Depth {
		return nil
	}
	toks, _ := hclsyntax.LexConfig(src, name, hcl.InitialPos)
	if _, rng, deep := tokenDepth(toks, lim.Depth); deep {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Nesting too deep",
			Detail: fmt.Sprintf("%s nests brackets, operators or template directives more than %d levels deep here; steward does not parse it. %s",
				name, lim.Depth, advice("Flatten the expression", "spec_depth", fixed)),
			Subject: &rng}}
	}
	return nil
}

// depthFrame is one open level: what opened it, and the operators seen in
// the expression it is in.
type depthFrame struct {
	open byte // '(', '[', '{', '$' for ${, '%' for %{, 't' for a template if or for
	ops  int
}

// depthCounter measures nesting as CheckSource describes; the two scanners
// below feed it.
type depthCounter struct {
	stack  []depthFrame
	topOps int // operators of the current top-level expression
	depth  int // len(stack) plus the ops of every frame and the top level
	max    int
}

func (c *depthCounter) ops() *int {
	if len(c.stack) == 0 {
		return &c.topOps
	}
	return &c.stack[len(c.stack)-1].ops
}

func (c *depthCounter) top() byte {
	if len(c.stack) == 0 {
		return 0
	}
	return c.stack[len(c.stack)-1].open
}

func (c *depthCounter) push(open byte) {
	c.stack = append(c.stack, depthFrame{open: open})
	c.depth++
	c.max = max(c.max, c.depth)
}

// pop closes the innermost level if it was opened by one of opens;
// anything else is a syntax error the parser reports.
func (c *depthCounter) pop(opens string) {
	if t := c.top(); t == 0 || !strings.ContainsRune(opens, rune(t)) {
		return
	}
	c.depth -= 1 + c.stack[len(c.stack)-1].ops
	c.stack = c.stack[:len(c.stack)-1]
}

func (c *depthCounter) op() {
	*c.ops()++
	c.depth++
	c.max = max(c.max, c.depth)
}

// endExpr ends the current expression (a comma, or a newline where
// newlines separate items).
func (c *depthCounter) endExpr() {
	p := c.ops()
	c.depth -= *p
	*p = 0
}

// newline ends the expression in a body or an object, not inside
// parentheses, brackets or interpolations, where the parser skips newlines.
func (c *depthCounter) newline() {
	if t := c.top(); t == 0 || t == '{' {
		c.endExpr()
	}
}

// tokenDepth measures toks, stopping at the first token that nests deeper
// than limit: it returns the deepest nesting seen, that token's range and
// whether there was one.
func tokenDepth(toks hclsyntax.Tokens, limit int) (int, hcl.Range, bool) {
	var c depthCounter
	directive := -1 // index of the last %{
	for i, t := range toks {
		switch t.Type {
		case hclsyntax.TokenOParen:
			c.push('(')
		case hclsyntax.TokenOBrack:
			c.push('[')
		case hclsyntax.TokenOBrace:
			c.push('{')
		case hclsyntax.TokenTemplateInterp:
			c.push('$')
		case hclsyntax.TokenTemplateControl:
			c.push('%')
			directive = i
		case hclsyntax.TokenCParen:
			c.pop("(")
		case hclsyntax.TokenCBrack:
			c.pop("[")
		case hclsyntax.TokenCBrace:
			c.pop("{")
		case hclsyntax.TokenTemplateSeqEnd:
			wasDirective := c.top() == '%'
			c.pop("$%")
			if wasDirective && directive >= 0 && directive+1 < i && toks[directive+1].Type == hclsyntax.TokenIdent {
				switch string(toks[directive+1].Bytes) {
				case "if", "for":
					c.push('t')
				case "endif", "endfor":
					c.pop("t")
				}
			}
			directive = -1
		case hclsyntax.TokenComma:
			c.endExpr()
		case hclsyntax.TokenNewline:
			c.newline()
		case hclsyntax.TokenPlus, hclsyntax.TokenMinus, hclsyntax.TokenStar, hclsyntax.TokenSlash, hclsyntax.TokenPercent,
			hclsyntax.TokenEqualOp, hclsyntax.TokenNotEqual, hclsyntax.TokenLessThan, hclsyntax.TokenLessThanEq,
			hclsyntax.TokenGreaterThan, hclsyntax.TokenGreaterThanEq, hclsyntax.TokenAnd, hclsyntax.TokenOr,
			hclsyntax.TokenBang, hclsyntax.TokenQuestion:
			c.op()
		}
		if c.depth > limit {
			return c.max, t.Range, true
		}
	}
	return c.max, hcl.Range{}, false
}

// quickDepth is a fast upper bound of tokenDepth's measure for the common
// file without templates: it follows comments and quoted strings itself and
// gives up (ok=false) at a template sequence, a heredoc, invalid UTF-8 or
// anything else it does not follow, leaving the file to the lexer. Every byte that may be
// an operator counts as one, so it may count more than the lexer does,
// never less.
func quickDepth(src []byte) (depth int, ok bool) {
	if !utf8.Valid(src) {
		return 0, false // the lexer may read a quote as part of a bad sequence
	}
	var c depthCounter
	n := len(src)
	for i := 0; i < n; i++ {
		switch b := src[i]; b {
		case '#':
			i = skipLine(src, i)
		case '/':
			switch {
			case i+1 < n && src[i+1] == '/':
				i = skipLine(src, i)
			case i+1 < n && src[i+1] == '*':
				end := bytes.Index(src[i+2:], []byte("*/"))
				if end < 0 {
					return 0, false
				}
				i += 2 + end + 1
			default:
				c.op()
			}
		case '"':
			for i++; i < n && src[i] != '"'; i++ {
				switch src[i] {
				case '\\':
					if i+1 < n && src[i+1] == '\n' {
						return 0, false
					}
					i++
				case '$', '%':
					if i+1 < n && src[i+1] == '{' {
						return 0, false
					}
				case '\n':
					return 0, false
				}
			}
		case '<':
			if i+1 < n && src[i+1] == '<' {
				return 0, false
			}
			c.op()
		case '=':
			if i+1 < n && src[i+1] == '=' {
				c.op()
				i++
			}
		case '(', '[', '{':
			c.push(b)
		case ')':
			c.pop("(")
		case ']':
			c.pop("[")
		case '}':
			c.pop("{")
		case ',':
			c.endExpr()
		case '\n':
			c.newline()
		case '+', '-', '*', '%', '>', '!', '?', '&', '|':
			c.op()
		}
	}
	return c.max, true
}

// skipLine returns the index of the newline ending the line at i, or the
// last index.
func skipLine(src []byte, i int) int {
	if j := bytes.IndexByte(src[i:], '\n'); j >= 0 {
		return i + j
	}
	return len(src) - 1
}

// ReadFile reads the regular file path, refusing anything larger than
// lim.FileSize (zero: the default) and anything that is not a regular file:
// a FIFO or a device named like a spec file must not block or exhaust the
// reader (internal/safefile: opened without blocking, checked with fstat,
// read with a bound). ReadDiagnostic turns its errors into diagnostics.
func ReadFile(path string, lim Limits) ([]byte, error) {
	return safefile.ReadRegular(context.Background(), path, lim.WithDefaults().FileSize)
}

// ReadDiagnostic turns an error of ReadFile into a diagnostic with summary
// that names the file, and for a file over the size limit, the limit and
// how to raise it.
func ReadDiagnostic(summary, path string, err error) *hcl.Diagnostic {
	return readDiag(summary, path, err, "")
}

// readDiag is ReadDiagnostic; fixed is as for checkSource.
func readDiag(summary, path string, err error, fixed string) *hcl.Diagnostic {
	var tl *safefile.TooLargeError
	detail := err.Error() + "."
	if errors.As(err, &tl) {
		summary = "File too large"
		size := "larger than"
		if tl.Size >= 0 {
			size = FormatSize(tl.Size) + ", more than"
		}
		detail = fmt.Sprintf("%s is %s the limit of %s; steward does not read it. %s", path, size, FormatSize(tl.Limit), advice("Split it into smaller files", "spec_file_size", fixed))
	}
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail,
		Subject: &hcl.Range{Filename: path, Start: hcl.InitialPos, End: hcl.InitialPos}}
}

// FormatSize writes n bytes for people: "1 MiB", "1.5 KiB", "300 B".
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := fmt.Sprintf("%.1f", v)
	if n%div == 0 {
		s = fmt.Sprintf("%d", n/div)
	}
	return s + " " + []string{"KiB", "MiB", "GiB", "TiB", "PiB"}[exp]
}

// TotalSizeError is the error of a fleet's spec files that are larger than
// limit together.
func TotalSizeError(total, limit int64) error {
	return fmt.Errorf("the spec files are %s together, more than the limit of %s: split the fleet, or raise limits.spec_total_size in the host config", FormatSize(total), FormatSize(limit))
}
