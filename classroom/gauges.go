package classroom

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/campusedge/campusedge/classroom/session"
	"github.com/campusedge/campusedge/classroom/sfu"
)

// pruneEvery is how often ended sessions past session.EndedRetention are
// forgotten when no class ends to trigger it.
const pruneEvery = time.Minute

// registerLiveGauges adds the gauges of what a live class holds in memory.
// Each returns to zero when the school is idle (no class live): a value
// that stays up after the last class is a leak, and the soak benchmark and
// TestEndedClassesLeaveNothing check exactly that. What is kept on purpose
// after a class (ended sessions, their recording outcome) has its own
// gauges, bounded by session.MaxEndedSessions and session.EndedRetention.
func (l *Live) registerLiveGauges(reg *prometheus.Registry) {
	g := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	sfuGauge := func(name, help string, f func(sfu.Totals) float64) prometheus.Collector {
		return g(name, help, func() float64 { return f(l.SFU.Totals()) })
	}
	kept := func(st session.State) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "campusedge_sessions_kept",
			Help:        fmt.Sprintf("Sessions held in memory by state; ended ones are kept for the console, at most %d and for %v.", session.MaxEndedSessions, session.EndedRetention),
			ConstLabels: prometheus.Labels{"state": string(st)}},
			func() float64 { return float64(l.Sessions.Counts()[st]) })
	}
	reg.MustRegister(
		g("campusedge_live_sessions", "Sessions live now (started, not ended).",
			func() float64 { return float64(l.Sessions.Counts()[session.StateLive]) }),
		kept(session.StateCreated), kept(session.StateLive), kept(session.StateEnded),
		sfuGauge("campusedge_live_rooms", "SFU rooms (sessions with media state).", func(t sfu.Totals) float64 { return float64(t.Rooms) }),
		sfuGauge("campusedge_live_peers", "Media peers (publishers and subscribers, WHIP, WHEP, control channel or cascade) not yet closed.",
			func(t sfu.Totals) float64 { return float64(t.Peers) }),
		sfuGauge("campusedge_live_keyframe_caches", "Video tracks being forwarded, each holding its last group of pictures for viewers who join.",
			func(t sfu.Totals) float64 { return float64(t.KeyframeCaches) }),
		g("campusedge_live_control_classes", "Sessions with control-channel state (participants, hands, stage, mutes).", func() float64 {
			return float64(l.control.count())
		}),
		g("campusedge_live_interact_states", "Sessions with quiz, roster or attendance-mark state.", func() float64 {
			n, _ := l.interaction.counts()
			return float64(n)
		}),
		g("campusedge_live_quiz_states", "Quizzes held for live sessions (open or closed, until the session ends).", func() float64 {
			_, n := l.interaction.counts()
			return float64(n)
		}),
	)
}
