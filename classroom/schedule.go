package classroom

import (
	"context"
	"time"
)

// RunSchedule starts sessions when their scheduled start (a time, or a
// timetable period) comes, until ctx is done, and tells the participants
// already joined. A second's resolution is what a lesson bell needs.
func (l *Live) RunSchedule(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, s := range l.Sessions.StartDue(now) {
				l.log.Info("session started on schedule", "session", s.ID, "title", s.Title, "scheduled_start", s.ScheduledStart, "classrooms", len(s.Classrooms))
				l.broadcast(l.classFor(s.ID))
			}
		}
	}
}
