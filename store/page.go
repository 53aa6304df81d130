package store

// DefaultPageLimit is the page size when a Page leaves Limit at zero (or
// below).
const DefaultPageLimit = 50

// EffectiveLimit is the number of summaries a backend returns at most for p:
// DefaultPageLimit when Limit is not positive, never more than MaxPageLimit.
// Every backend uses it so that the web API behaves the same on each.
func (p Page) EffectiveLimit() int {
	switch {
	case p.Limit <= 0:
		return DefaultPageLimit
	case p.Limit > MaxPageLimit:
		return MaxPageLimit
	}
	return p.Limit
}
