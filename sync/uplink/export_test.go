package uplink

import "time"

// SetRestartEvery shortens how often BBR is restarted on a connection that
// carries a backlog (see restartEvery), so a test sees it in seconds.
func SetRestartEvery(u *Uplink, d time.Duration) { u.restartEvery = d }
