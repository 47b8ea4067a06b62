package main

import (
	"slices"
	"testing"

	"steward/spec"
)

// A SIGHUP names the settings it cannot change in a running daemon.
func TestFixedSettingsChanged(t *testing.T) {
	base := func() *spec.Host {
		return &spec.Host{API: spec.APIConfig{Listen: "127.0.0.1:7070", Hosts: []string{"steward.internal"}}}
	}
	for _, tc := range []struct {
		name string
		edit func(h *spec.Host)
		want []string
	}{
		{"nothing", func(*spec.Host) {}, nil},
		{"listen", func(h *spec.Host) { h.API.Listen = "127.0.0.1:7071" }, []string{"api.listen"}},
		{"hosts", func(h *spec.Host) { h.API.Hosts = nil }, []string{"api.hosts"}},
		{"router added", func(h *spec.Host) { h.Router = &spec.RouterConfig{} }, []string{"router"}},
		{"runtime only", func(h *spec.Host) { h.Runtime.StopGrace = 1 }, nil},
	} {
		b := base()
		tc.edit(b)
		if got := fixedSettingsChanged(base(), b); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
