package merge

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestConcurrentHubCorrectionBeatsUninformedEdge(t *testing.T) {
	// The WAN is down. The office marks the pupil excused (hub change 12);
	// the teacher, whose edge last applied change 11 and whose clock runs
	// two hours fast, marks them absent. The office decision stands.
	hub := Correction{Origin: Hub, Basis: 12, At: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC), Status: "excused"}
	edge := Correction{Origin: Edge, Basis: 11, EdgeID: "e1", Seq: 900, At: time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC), Status: "absent"}
	if got := Resolve([]Correction{edge, hub}); got.Status != "excused" {
		t.Fatalf("got %s: a later wall clock must not win", got.Status)
	}
	// Once the edge has applied change 12, the teacher corrects again: late.
	again := Correction{Origin: Edge, Basis: 12, EdgeID: "e1", Seq: 950, At: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), Status: "late"}
	if got := Resolve([]Correction{hub, edge, again}); got.Status != "late" {
		t.Fatalf("got %s: an informed edge correction must win even with an earlier clock", got.Status)
	}
}

func TestResolveIsOrderIndependent(t *testing.T) {
	cs := []Correction{
		{Origin: Hub, Basis: 3, Status: "a"}, {Origin: Hub, Basis: 5, Status: "b"},
		{Origin: Edge, Basis: 5, EdgeID: "e1", Seq: 10, Status: "c"}, {Origin: Edge, Basis: 5, EdgeID: "e1", Seq: 11, Status: "d"},
		{Origin: Edge, Basis: 4, EdgeID: "e1", Seq: 20, Status: "e"},
	}
	for range 100 {
		rand.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
		if got := Resolve(cs); got.Status != "d" {
			t.Fatalf("got %s, want d", got.Status)
		}
	}
}
