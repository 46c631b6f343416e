package classroom

// Link reports: the master teacher's page marks a classroom whose link
// cannot carry the lesson's full quality ("7B: low quality — weak link"),
// from what the SFU's layer chooser knows of that classroom's subscriber.

import (
	"slices"
	"time"

	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
	"github.com/campusedge/campusedge/edge/ctlwire"
)

const (
	linksEvery = time.Second
	// weakAfter: a classroom below the top layer this long is marked
	// weak. A joining classroom starts on the lowest layer and climbs
	// in a few seconds on a good link: it must not flash "weak" first.
	weakAfter = 6 * time.Second
)

// reportLinks sends the master (p) a Links message whenever a classroom's
// layer or weak mark changes, until sub (p's own subscriber) closes.
func (p *participant) reportLinks(sub *sfu.Subscriber) {
	tick := time.NewTicker(linksEvery)
	defer tick.Stop()
	below := map[string]time.Time{} // classroom → since when below its top layer
	var last []RoomLink
	for {
		select {
		case <-sub.Done():
			return
		case now := <-tick.C:
			links := p.ctl.roomLinks(p.cls, below, now)
			if sameMarks(links, last) {
				continue
			}
			last = links
			p.conn.Send(Links{Header: ctlwire.New(TypeLinks), Classrooms: links})
		}
	}
}

// roomLinks reads the links of c's classroom terminals, updating below.
func (ctl *control) roomLinks(c *class, below map[string]time.Time, now time.Time) []RoomLink {
	c.mu.Lock()
	parts := make([]*participant, 0, len(c.parts))
	for _, p := range c.parts {
		if p.grant.Role == session.RoleTerminal {
			parts = append(parts, p)
		}
	}
	c.mu.Unlock()
	out := []RoomLink{}
	seen := map[string]bool{}
	for _, p := range parts {
		sub := p.link.Load()
		if sub == nil || seen[p.grant.ClassroomID] {
			continue
		}
		select {
		case <-sub.Done():
			continue
		default:
		}
		seen[p.grant.ClassroomID] = true
		l := sub.Link()
		r := RoomLink{Classroom: p.grant.ClassroomID, Layer: l.Layer, Layers: l.Layers, BudgetBPS: l.Budget,
			Loss: l.Loss, VideoPaused: l.VideoPaused}
		if l.Layers > 1 && l.Layer < l.Layers-1 {
			if below[r.Classroom].IsZero() {
				below[r.Classroom] = now
			}
		} else {
			delete(below, r.Classroom)
		}
		r.Weak = l.VideoPaused || (!below[r.Classroom].IsZero() && now.Sub(below[r.Classroom]) >= weakAfter)
		out = append(out, r)
	}
	for id := range below {
		if !seen[id] {
			delete(below, id)
		}
	}
	slices.SortFunc(out, func(a, b RoomLink) int {
		switch {
		case a.Classroom < b.Classroom:
			return -1
		case a.Classroom > b.Classroom:
			return 1
		}
		return 0
	})
	return out
}

// sameMarks reports whether two reports show the same rooms with the same
// layer and marks (the estimate moves all the time; it alone is no news).
func sameMarks(a, b []RoomLink) bool {
	return slices.EqualFunc(a, b, func(x, y RoomLink) bool {
		return x.Classroom == y.Classroom && x.Layer == y.Layer && x.Layers == y.Layers && x.Weak == y.Weak && x.VideoPaused == y.VideoPaused
	})
}
