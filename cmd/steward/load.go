package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"

	"steward/spec"
)

// loaded is a host config and the fleet it points at.
type loaded struct {
	host  *spec.Host
	fleet *spec.Fleet
	files map[string]*hcl.File
	diags hcl.Diagnostics
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

// load reads the host config and the fleet it names.
func (e *env) load(configFlag string) *loaded {
	l := &loaded{}
	h, files, diags := e.loadHost(configFlag, false)
	l.files, l.diags = mergeFiles(nil, files), diags
	if diags.HasErrors() {
		return l
	}
	l.host = h
	if h.Source.Git != nil {
		l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Git sources are not supported yet",
			Detail: fmt.Sprintf("%s configures a git source; use source { path = \"DIR\" } for now.", displayPath(h.File))})
		return l
	}
	fl, ffiles, fdiags := spec.LoadDir(h.Source.Path, spec.Options{Ports: h.Runtime.Ports})
	l.files = mergeFiles(l.files, ffiles)
	l.diags = append(l.diags, fdiags...)
	if !fdiags.HasErrors() {
		l.fleet = fl
	}
	return l
}
