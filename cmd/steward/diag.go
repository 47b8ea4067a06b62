package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// renderDiagnostics prints diagnostics for people:
//
//	specs/east.hcl:5:14: error: Unknown database
//	    5 |   database = "db-nowhere"
//	      |              ^^^^^^^^^^^^
//	  Merchant "acme" refers to database "db-nowhere", which is not declared.
func renderDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics) {
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		if d.Subject != nil {
			fmt.Fprintf(w, "%s:%d:%d: %s: %s\n", displayPath(d.Subject.Filename), d.Subject.Start.Line, d.Subject.Start.Column, sev, d.Summary)
			snippet(w, files, d.Subject)
		} else {
			fmt.Fprintf(w, "%s: %s\n", sev, d.Summary)
		}
		if d.Detail != "" {
			fmt.Fprintf(w, "  %s\n", d.Detail)
		}
	}
}

// snippet prints the subject's first line with a marker under the range.
func snippet(w io.Writer, files map[string]*hcl.File, r *hcl.Range) {
	f := files[r.Filename]
	if f == nil || r.Start.Line < 1 {
		return
	}
	lines := strings.Split(string(f.Bytes), "\n")
	if r.Start.Line > len(lines) {
		return
	}
	line := strings.ReplaceAll(lines[r.Start.Line-1], "\t", " ")
	num := fmt.Sprint(r.Start.Line)
	fmt.Fprintf(w, "  %s | %s\n", num, line)
	start := r.Start.Column - 1
	if start > len(line) {
		start = len(line)
	}
	width := 1
	if r.End.Line == r.Start.Line && r.End.Column > r.Start.Column {
		width = r.End.Column - r.Start.Column
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

func diagnosticsJSON(diags hcl.Diagnostics) []jsonDiagnostic {
	out := make([]jsonDiagnostic, 0, len(diags))
	for _, d := range diags {
		j := jsonDiagnostic{Severity: "error", Summary: d.Summary, Detail: d.Detail}
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
