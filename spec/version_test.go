package spec

import (
	"cmp"
	"slices"
	"testing"
)

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.0", 0},
		{"1.0.0-rc1", "1.0.0", -1}, // a pre-release comes before its release: not a rollback
		{"1.0.0", "1.0.0-rc1", 1},
		{"v1.2.0", "1.10.0", -1}, // the leading v is not a word
		{"1.2.0", "1.10.0", -1},
		{"1.9.0", "1.10.0", -1},
		{"1.10.0", "v1.2.0", 1},
		{"1.0.0-alpha", "1.0.0-alpha.1", -1},
		{"1.0.0-alpha.1", "1.0.0-beta", -1},
		{"1.0.0-beta.2", "1.0.0-beta.11", -1},
		{"1.0.0-rc.1", "1.0.0", -1},
		{"1.2", "1.2.1", -1},
		{"v1.2.0", "1.2.0", 1}, // equal precedence, ordered as strings: a total order
		{"1.2.0", "v1.2.0", -1},
		{"1.0.0+build.1", "1.0.0+build.2", -1},
		{"2.0.0", "latest", -1}, // other strings after semantic versions
		{"2024.01.05", "2024.01.10", -1},
		{"2024-01-05", "2024-02-01", -1},
		{"latest", "nightly", -1},
	} {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := CompareVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d (antisymmetry)", tc.b, tc.a, got, -tc.want)
		}
	}
}

func TestCompareVersionsOrdersAList(t *testing.T) {
	ordered := []string{"0.9", "1.0.0-alpha", "1.0.0-rc1", "1.0.0-rc2", "1.0.0", "v1.0.0", "1.0.1", "1.2.0", "1.9.9", "1.10.0", "2.0.0", "10.0.0"}
	for i := range ordered {
		for j := range ordered {
			if got, want := CompareVersions(ordered[i], ordered[j]), cmp.Compare(i, j); got != want {
				t.Errorf("CompareVersions(%q, %q) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
}

// The order must be total and transitive, or sorting and rollback
// detection disagree with each other.
func TestCompareVersionsIsATotalOrder(t *testing.T) {
	vs := []string{"latest", "1.10.0", "v1.2.0", "1.2.0", "1.0.0-rc1", "1.0.0", "2024-01-05", "1.2", "0.9", "v2", "nightly", "1.0.0+b", "1.0.0-rc.2", "10", "2"}
	for _, a := range vs {
		for _, b := range vs {
			for _, c := range vs {
				if CompareVersions(a, b) < 0 && CompareVersions(b, c) < 0 && CompareVersions(a, c) >= 0 {
					t.Errorf("not transitive: %s < %s < %s but not %s < %s", a, b, c, a, c)
				}
			}
			if (CompareVersions(a, b) == 0) != (a == b) {
				t.Errorf("CompareVersions(%q, %q) = 0 for different strings", a, b)
			}
		}
	}
	s := slices.Clone(vs)
	slices.SortFunc(s, CompareVersions)
	t.Logf("sorted: %v", s)
}

func FuzzCompareVersions(f *testing.F) {
	for _, s := range []string{"1.0.0", "v1.2.0", "1.0.0-rc1", "latest", "1.2"} {
		f.Add(s, "1.10.0")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if CompareVersions(a, b) != -CompareVersions(b, a) {
			t.Fatalf("not antisymmetric for %q, %q", a, b)
		}
	})
}
