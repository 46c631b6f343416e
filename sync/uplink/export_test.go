package uplink

import "time"

// SetConnSpan shortens how long one connection carries a backlog (see
// connSpan), so a test sees batches move to new connections in seconds.
func SetConnSpan(u *Uplink, d time.Duration) { u.connSpan = d }
