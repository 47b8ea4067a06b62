package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"steward/spec"
)

// renderDiagnostics prints diagnostics for people:
//
//	specs/east.hcl:5:14: error: Unknown database
//	    5 |   database = "db-nowhere"
//	      |              ^^^^^^^^^^^^
//	  Merchant "acme" refers to database "db-nowhere", which is not declared.
//
// Without a Redactor no value is known to be secret: a source line is still
// left out when it may hold one (see snippetLine).
func renderDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics) {
	renderDiagnosticsRedacted(w, files, diags, nil)
}

// renderDiagnosticsRedacted is renderDiagnostics with every value red knows
// replaced in summaries, details and source lines; red may be nil.
func renderDiagnosticsRedacted(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics, red *spec.Redactor) {
	var sensitive map[string]bool // env keys listed in sensitive, read once when needed
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		if d.Subject != nil {
			fmt.Fprintf(w, "%s:%d:%d: %s: %s\n", displayPath(d.Subject.Filename), d.Subject.Start.Line, d.Subject.Start.Column, sev, red.Redact(d.Summary))
			if sensitive == nil {
				sensitive = sensitiveNames(files)
			}
			snippet(w, files, d.Subject, red, sensitive)
		} else {
			fmt.Fprintf(w, "%s: %s\n", sev, red.Redact(d.Summary))
		}
		if d.Detail != "" {
			fmt.Fprintf(w, "  %s\n", red.Redact(d.Detail))
		}
	}
}

// sensitiveNames returns the env keys the sensitive lists of files name.
func sensitiveNames(files map[string]*hcl.File) map[string]bool {
	srcs := make([][]byte, 0, len(files))
	for _, f := range files {
		srcs = append(srcs, f.Bytes)
	}
	return spec.SensitiveNames(srcs...)
}

// snippet prints the subject's first line with a marker under the range.
// The line is passed through red; a line that may still hold a secret
// (spec.SnippetLineSafe: a literal assigned to a secret-looking name, URL
// credentials) is replaced by a note, which covers files that did not parse
// and whose values nobody knows.
func snippet(w io.Writer, files map[string]*hcl.File, r *hcl.Range, red *spec.Redactor, sensitive map[string]bool) {
	f := files[r.Filename]
	if f == nil || r.Start.Line < 1 {
		return
	}
	lines := strings.Split(string(f.Bytes), "\n")
	if r.Start.Line > len(lines) {
		return
	}
	raw := strings.ReplaceAll(lines[r.Start.Line-1], "\t", " ")
	line := red.Redact(raw)
	num := fmt.Sprint(r.Start.Line)
	if !spec.SnippetLineSafe(line, sensitive) {
		fmt.Fprintf(w, "  %s | (line not shown: it may hold a secret)\n", num)
		return
	}
	fmt.Fprintf(w, "  %s | %s\n", num, line)
	start := min(max(r.Start.Column-1, 0), len(raw))
	end := start + 1
	if r.End.Line == r.Start.Line && r.End.Column > r.Start.Column {
		end = min(r.End.Column-1, len(raw))
	}
	end = max(end, start)
	if line != raw {
		// Place the marker where the range's text is after redaction.
		start, end = len(red.Redact(raw[:start])), len(red.Redact(raw[:end]))
	}
	width := max(end-start, 1)
	if start > len(line) {
		start = len(line)
	}
	if start+width > len(line) && len(line) > start {
		width = len(line) - start
	}
	fmt.Fprintf(w, "  %s | %s%s\n", strings.Repeat(" ", len(num)), strings.Repeat(" ", start), strings.Repeat("^", width))
}

// jsonDiagnostic is a diagnostic as data (validate -o json).
type jsonDiagnostic struct {
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
	Detail   string `json:"detail,omitempty"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	Column   int    `json:"column,omitempty"`
	EndLine  int    `json:"end_line,omitempty"`
	EndCol   int    `json:"end_column,omitempty"`
}

// diagnosticsJSON returns diags as data, with every value red (which may be
// nil) knows replaced.
func diagnosticsJSON(diags hcl.Diagnostics, red *spec.Redactor) []jsonDiagnostic {
	out := make([]jsonDiagnostic, 0, len(diags))
	for _, d := range diags {
		j := jsonDiagnostic{Severity: "error", Summary: red.Redact(d.Summary), Detail: red.Redact(d.Detail)}
		if d.Severity == hcl.DiagWarning {
			j.Severity = "warning"
		}
		if d.Subject != nil {
			j.File, j.Line, j.Column = displayPath(d.Subject.Filename), d.Subject.Start.Line, d.Subject.Start.Column
			j.EndLine, j.EndCol = d.Subject.End.Line, d.Subject.End.Column
		}
		out = append(out, j)
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// countErrors returns the number of error diagnostics and of files they are in.
func countErrors(diags hcl.Diagnostics) (errs, files int) {
	seen := map[string]bool{}
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		errs++
		if d.Subject != nil && !seen[d.Subject.Filename] {
			seen[d.Subject.Filename] = true
			files++
		}
	}
	return errs, files
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
