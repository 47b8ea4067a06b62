package engine

import "context"

// CollectGarbage removes unpacked releases nothing needs any more: it keeps
// every version a merchant runs, is changing from or to, is pinned to, or
// wants in the specs, and each merchant's last two good ones.
func (e *Engine) CollectGarbage(ctx context.Context, d Desired) {
	keep := map[string]map[string]bool{}
	add := func(pkg, v string) {
		if pkg == "" || v == "" {
			return
		}
		if keep[pkg] == nil {
			keep[pkg] = map[string]bool{}
		}
		keep[pkg][v] = true
	}
	recs, _, _ := e.Snapshot()
	for _, rec := range recs {
		add(rec.Package, rec.Current.Version)
		if rec.Candidate != nil {
			add(rec.Package, rec.Candidate.Version)
		}
		if c := rec.Change; c != nil {
			add(rec.Package, c.From)
			add(rec.Package, c.To)
		}
		if rec.Pin != nil {
			add(rec.Package, rec.Pin.Version)
		}
		good := rec.GoodVersions
		for i := max(len(good)-2, 0); i < len(good); i++ {
			add(rec.Package, good[i])
		}
	}
	if d.Fleet != nil {
		for _, m := range d.Fleet.Merchants {
			add(m.Package, m.Version)
		}
		for name := range d.Fleet.Packages {
			if keep[name] == nil {
				keep[name] = map[string]bool{}
			}
		}
	}
	for pkg, versions := range keep {
		removed, err := e.Packages.GC(ctx, pkg, func(v string) bool { return versions[v] })
		if err != nil {
			e.Log.Warn("removing old releases failed", "package", pkg, "err", err)
			continue
		}
		if len(removed) > 0 {
			e.Log.Info("removed old releases", "package", pkg, "versions", removed)
		}
		e.rels.mu.Lock()
		for _, v := range removed {
			delete(e.rels.m, pkg+"@"+v)
		}
		e.rels.mu.Unlock()
	}
}
