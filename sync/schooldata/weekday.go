package schooldata

import "time"

// weekdayNames holds the day names timetables use (three lower-case
// letters), three bytes per day in time.Weekday order. It is the one
// table: the importer, the prefetch planner, attendance and scheduled
// sessions all read day names through the functions below.
const weekdayNames = "sunmontuewedthufrisat"

// DayName is the timetable's name of wd: "mon" for time.Monday.
func DayName(wd time.Weekday) string {
	i := int(wd) % 7
	return weekdayNames[3*i : 3*i+3]
}

// ParseDay reads a timetable day name as DayName writes it (callers that
// accept other cases lower them first).
func ParseDay(s string) (time.Weekday, bool) {
	for wd := time.Sunday; wd <= time.Saturday; wd++ {
		if DayName(wd) == s {
			return wd, true
		}
	}
	return 0, false
}

// WeekDays lists the day names in school-week order, Monday first.
func WeekDays() []string {
	out := make([]string, 0, 7)
	for i := 1; i <= 7; i++ {
		out = append(out, DayName(time.Weekday(i%7)))
	}
	return out
}

// dayRank orders day names Monday first; an unknown name ranks -1.
func dayRank(s string) int {
	wd, ok := ParseDay(s)
	if !ok {
		return -1
	}
	return (int(wd) + 6) % 7
}
