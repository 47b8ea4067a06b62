package state

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
)

// decodeState parses a serialised State and checks what every stored state
// must hold. Maps are never nil in the result.
func decodeState(data []byte) (*State, error) {
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	switch {
	case s.Format > FormatVersion:
		return nil, fmt.Errorf("format %d is newer than this build of steward understands (%d); upgrade steward", s.Format, FormatVersion)
	case s.Format < 1:
		return nil, fmt.Errorf("format %d is not a valid state format", s.Format)
	case s.Lineage == "":
		return nil, fmt.Errorf("lineage is missing")
	}
	if err := checkRecords(&s); err != nil {
		return nil, err
	}
	// Save reads only the first format, serial and lineage fields; a
	// document that says something else further on (duplicate keys) is
	// not one Save wrote.
	if h, err := decodeHeader(bytes.NewReader(data)); err != nil || h.Format != s.Format || h.Serial != s.Serial || h.Lineage != s.Lineage {
		return nil, fmt.Errorf("the format, serial and lineage fields are not the first of their name")
	}
	if s.Merchants == nil {
		s.Merchants = map[string]*Merchant{}
	}
	if s.Databases == nil {
		s.Databases = map[string]*Database{}
	}
	if s.Rollouts == nil {
		s.Rollouts = map[string]*Rollout{}
	}
	return &s, nil
}

// checkRecords checks the map invariants: no nil records, and every record
// is stored under its own id or name.
func checkRecords(s *State) error {
	for k, m := range s.Merchants {
		if m == nil {
			return fmt.Errorf("merchant %q has no record", k)
		}
		if m.ID != k {
			return fmt.Errorf("merchant %q is stored under key %q", m.ID, k)
		}
	}
	for k, d := range s.Databases {
		if d == nil {
			return fmt.Errorf("database %q has no record", k)
		}
		if d.Name != k {
			return fmt.Errorf("database %q is stored under key %q", d.Name, k)
		}
	}
	return nil
}

// newLineage returns a random version 4 UUID.
func newLineage() string {
	var b [16]byte
	rand.Read(b[:]) // never fails; see crypto/rand.Read
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
