package state

import (
	"maps"
	"slices"
)

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	if s == nil {
		return nil
	}
	c := *s
	c.Merchants = make(map[string]*Merchant, len(s.Merchants))
	for k, m := range s.Merchants {
		c.Merchants[k] = m.Clone()
	}
	c.Databases = make(map[string]*Database, len(s.Databases))
	for k, d := range s.Databases {
		if d == nil {
			continue
		}
		dd := *d
		c.Databases[k] = &dd
	}
	c.Rollouts = make(map[string]*Rollout, len(s.Rollouts))
	for k, r := range s.Rollouts {
		rr := *r
		rr.Succeeded = slices.Clone(r.Succeeded)
		rr.Failed = slices.Clone(r.Failed)
		c.Rollouts[k] = &rr
	}
	return &c
}

// Clone returns a deep copy of m.
func (m *Merchant) Clone() *Merchant {
	if m == nil {
		return nil
	}
	c := *m
	c.Applied = maps.Clone(m.Applied)
	c.GoodVersions = slices.Clone(m.GoodVersions)
	c.BadVersions = slices.Clone(m.BadVersions)
	if m.Schema != nil {
		v := *m.Schema
		c.Schema = &v
	}
	return &c
}
