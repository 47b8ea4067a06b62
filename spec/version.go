package spec

import (
	"cmp"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// CompareVersions is steward's one order of package versions, used to tell
// an upgrade from a rollback and to list versions oldest first. It returns
// -1, 0 or +1, and 0 only for equal strings.
//
// Versions that are semantic versions (a leading "v" and a missing minor or
// patch are accepted, as in "v1.2" = 1.2.0) compare by semver precedence:
// 1.0.0-rc1 < 1.0.0 < 1.10.0, and v1.2.0 < 1.10.0. Any other version
// string ("2024-01-05", "latest") comes after every semantic version and
// orders among its kind by dot-separated parts, numerically where both are
// numbers. Versions of equal precedence that are spelt differently
// ("v1.2.0" and "1.2.0", or differing build metadata) are ordered as
// strings, so the order is total.
func CompareVersions(a, b string) int {
	if a == b {
		return 0
	}
	va, erra := semver.NewVersion(a)
	vb, errb := semver.NewVersion(b)
	var c int
	switch {
	case erra == nil && errb == nil:
		c = va.Compare(vb)
	case erra == nil:
		c = -1
	case errb == nil:
		c = 1
	default:
		c = compareDotted(a, b)
	}
	if c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

// compareDotted orders dot-separated parts: numbers numerically and before
// words, words as strings.
func compareDotted(a, b string) int {
	ap, bp := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(ap) || i < len(bp); i++ {
		if i >= len(ap) {
			return -1
		}
		if i >= len(bp) {
			return 1
		}
		an, aerr := strconv.ParseUint(ap[i], 10, 64)
		bn, berr := strconv.ParseUint(bp[i], 10, 64)
		var c int
		switch {
		case aerr == nil && berr == nil:
			c = cmp.Compare(an, bn)
		case aerr == nil:
			c = -1
		case berr == nil:
			c = 1
		default:
			c = strings.Compare(ap[i], bp[i])
		}
		if c != 0 {
			return c
		}
	}
	return 0
}
