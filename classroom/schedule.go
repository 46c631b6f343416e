package classroom

import (
	"context"
	"time"
)

// RunSchedule starts sessions when their scheduled start (a time, or a
// timetable period) comes, until ctx is done, and tells the participants
// already joined. A second's resolution is what a lesson bell needs. Once
// a minute it also forgets ended sessions past session.EndedRetention.
func (l *Live) RunSchedule(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastPrune := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(lastPrune) >= pruneEvery {
				lastPrune = now
				l.Sessions.Prune(now) // ended sessions past their retention
			}
			for _, s := range l.Sessions.StartDue(now) {
				l.log.Info("session started on schedule", "session", s.ID, "title", s.Title, "scheduled_start", s.ScheduledStart, "classrooms", len(s.Classrooms))
				l.control.broadcast(l.control.classFor(s.ID))
			}
		}
	}
}
