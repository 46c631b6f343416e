// Package merge holds the one rule that settles an attendance mark
// corrected both at the hub (the school office, the city) and at the edge
// (the teacher), while the WAN was down or before the two had heard of each
// other. School clocks drift while offline, so the rule never trusts wall
// time; it orders corrections by what each writer had seen:
//
//  1. Basis: the hub's change sequence the writer knew. A hub correction's
//     basis is the change number it creates; an edge correction's basis is
//     the edge's downlink cursor when the teacher made it.
//  2. At equal basis the edge wins: the teacher had already seen that hub
//     change and corrected it again.
//  3. Then the edge id and the edge's outbox sequence (one edge's later
//     correction beats its earlier one).
//
// The greatest correction is the mark. So an edge correction made without
// having seen the office's correction loses to it, and one made after the
// edge applied it wins, whatever either clock said. Every hub replica and
// every edge computes the same answer from the same set.
package merge

import "time"

// Origin says who made a correction.
type Origin int

// Origins, ordered: at equal basis the edge's correction is the later one.
const (
	Hub Origin = iota
	Edge
)

// Correction is one change of an attendance mark.
type Correction struct {
	Origin Origin
	Basis  uint64    // hub change seq known to the writer (see package doc)
	EdgeID string    // for edge corrections
	Seq    uint64    // the edge's outbox seq, for edge corrections
	At     time.Time // wall clock of the writer: shown to people, never compared
	Status string    // present, absent, late, excused …
}

// Less reports whether a is superseded by b.
func Less(a, b Correction) bool {
	if a.Basis != b.Basis {
		return a.Basis < b.Basis
	}
	if a.Origin != b.Origin {
		return a.Origin < b.Origin
	}
	if a.EdgeID != b.EdgeID {
		return a.EdgeID < b.EdgeID
	}
	return a.Seq < b.Seq
}

// Resolve returns the winning correction of a non-empty set; the answer
// does not depend on the order the corrections arrived in.
func Resolve(cs []Correction) Correction {
	w := cs[0]
	for _, c := range cs[1:] {
		if Less(w, c) {
			w = c
		}
	}
	return w
}
