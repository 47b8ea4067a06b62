package router

import (
	"fmt"
	"testing"
)

// BenchmarkRender10000 renders the routing of 10,000 merchants: what every
// apply of a large fleet costs before nginx sees it.
func BenchmarkRender10000(b *testing.B) {
	r := renderRouter(b, Config{Mode: Managed, Listen: "0.0.0.0:80", Prefix: "/srv/steward/run/router"})
	routes := make([]Route, 10000)
	for i := range routes {
		routes[i] = Route{Merchant: fmt.Sprintf("m%05d", i), Domains: []string{fmt.Sprintf("m%05d.example.com", i), fmt.Sprintf("www.m%05d.example.com", i)}, Upstream: 20000 + i}
		if i%50 == 0 {
			routes[i].Maintenance, routes[i].Reason = true, "suspended"
		}
	}
	b.ReportAllocs()
	var size int
	for b.Loop() {
		rd, err := r.render(routes)
		if err != nil {
			b.Fatal(err)
		}
		size = len(rd.conf)
	}
	b.ReportMetric(float64(size), "conf-bytes")
}
