package wire

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// HeaderBacklog is the outbox backlog an edge reports on its signed sync
// calls, "RECORDS OLDEST_AGE_SECONDS" (e.g. "120 3600"): records not yet
// acknowledged and how long the oldest of them has waited, on the edge's
// own clock difference (no wall clock comparison across machines). Not
// signed, like HeaderVersion: it is shown to city staff, not trusted.
// Edges without it (older versions) are listed with the backlog unknown.
const HeaderBacklog = "X-Campusedge-Backlog"

// Backlog is an edge's outbox backlog as reported in HeaderBacklog.
type Backlog struct {
	Records uint64
	Oldest  time.Duration
}

// Bounds of a reported backlog: beyond them the header is refused as
// nonsense rather than shown.
const (
	maxBacklogRecords = 1 << 40
	maxBacklogAge     = 10 * 365 * 24 * time.Hour
)

// String is the header's value.
func (b Backlog) String() string {
	return strconv.FormatUint(b.Records, 10) + " " + strconv.FormatInt(int64(b.Oldest/time.Second), 10)
}

// ParseBacklog parses HeaderBacklog's value.
func ParseBacklog(s string) (Backlog, error) {
	if len(s) > 64 {
		return Backlog{}, errors.New("backlog header too long")
	}
	rec, age, ok := strings.Cut(s, " ")
	if !ok {
		return Backlog{}, errors.New("backlog header is not RECORDS OLDEST_AGE_SECONDS")
	}
	n, err := strconv.ParseUint(rec, 10, 64)
	if err != nil || n > maxBacklogRecords {
		return Backlog{}, errors.New("backlog records is not a count")
	}
	secs, err := strconv.ParseUint(age, 10, 64)
	if err != nil || secs > uint64(maxBacklogAge/time.Second) {
		return Backlog{}, errors.New("backlog age is not a number of seconds")
	}
	if n == 0 && secs != 0 {
		return Backlog{}, errors.New("an empty backlog has no oldest record")
	}
	return Backlog{Records: n, Oldest: time.Duration(secs) * time.Second}, nil
}
