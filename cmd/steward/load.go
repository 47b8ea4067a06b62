package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/hashicorp/hcl/v2"

	"steward/internal/app"
	"steward/source"
	"steward/spec"
)

// loaded is a host config and the fleet it points at.
type loaded struct {
	host  *spec.Host
	fleet *spec.Fleet
	src   source.Source
	snap  *source.Snapshot
	files map[string]*hcl.File
	diags hcl.Diagnostics
	// red knows every secret value of the host config and the specs (also
	// of specs that did not validate), for rendering diagnostics.
	red *spec.Redactor
}

// renderDiags prints l's diagnostics with every secret it knows hidden.
func (l *loaded) renderDiags(w io.Writer) {
	red := l.red
	if red == nil && l.host != nil {
		red = l.host.Redactor()
	}
	renderDiagnosticsRedacted(w, l.files, l.diags, red)
}

func mergeFiles(dst, src map[string]*hcl.File) map[string]*hcl.File {
	if dst == nil {
		dst = map[string]*hcl.File{}
	}
	for k, v := range src {
		dst[k] = v
	}
	return dst
}

// loadHost reads the host config. When the path is the implicit default and
// the file does not exist, built-in defaults are used if allowMissing.
func (e *env) loadHost(configFlag string, allowMissing bool) (*spec.Host, map[string]*hcl.File, hcl.Diagnostics) {
	path, explicit := e.configPath(configFlag)
	if !explicit {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if allowMissing {
				h, _, diags := spec.LoadHostBytes(nil, "steward.hcl")
				return h, nil, diags
			}
			return nil, nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "No host config",
				Detail: "There is no ./steward.hcl. Pass -config FILE or set STEWARD_CONFIG (the example fleet's is examples/steward.hcl)."}}
		}
	}
	return spec.LoadHost(path)
}

// newSource returns the spec source the host config names; log may be nil.
func newSource(h *spec.Host, log *slog.Logger) source.Source { return app.NewSource(h, log) }

// load reads the host config and the fleet its source holds.
func (e *env) load(ctx context.Context, configFlag string) *loaded {
	l := &loaded{}
	h, files, diags := e.loadHost(configFlag, false)
	l.files, l.diags = mergeFiles(nil, files), diags
	if diags.HasErrors() {
		return l
	}
	l.host = h
	l.src = newSource(h, nil)
	l.reload(ctx)
	return l
}

// reload reads the specs again from l's source.
func (l *loaded) reload(ctx context.Context) {
	l.fleet, l.snap = nil, nil
	hostDiags := hcl.Diagnostics{}
	for _, d := range l.diags {
		if d.Subject != nil && d.Subject.Filename == l.host.File {
			hostDiags = append(hostDiags, d)
		}
	}
	l.diags = hostDiags
	snap, err := l.src.Load(ctx)
	if err != nil {
		what := "the spec directory " + displayPath(l.host.Source.Path)
		if g := l.host.Source.Git; g != nil {
			what = fmt.Sprintf("git %s (ref %s)", source.Redact(g.URL), g.Ref)
		}
		l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot read specs", Detail: fmt.Sprintf("Reading %s: %s.", what, err)})
		return
	}
	l.snap = snap
	fl, ffiles, fdiags := spec.Load(snap.Sources, specOptions(l.host))
	l.red = l.host.Redactor()
	if fl != nil {
		l.red = l.red.Merge(fl.Redactor())
	}
	fl.Revision = snap.Revision
	l.files = mergeFiles(l.files, ffiles)
	l.diags = append(l.diags, fdiags...)
	if !fdiags.HasErrors() {
		l.fleet = fl
	}
}

// what says what failed to load: the host config or the specs.
func (l *loaded) what() string {
	if l.host == nil {
		return "The host config could not be read"
	}
	return "The specs are invalid"
}
