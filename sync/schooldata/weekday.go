package schooldata

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/campusedge/campusedge/edge/textnorm"
)

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

// chineseDays are the ways a Chinese timetable writes days, Monday first.
var chineseDays = [7][]string{
	{"周一", "星期一", "礼拜一", "一"}, {"周二", "星期二", "礼拜二", "二"}, {"周三", "星期三", "礼拜三", "三"},
	{"周四", "星期四", "礼拜四", "四"}, {"周五", "星期五", "礼拜五", "五"}, {"周六", "星期六", "礼拜六", "六"},
	{"周日", "星期日", "星期天", "礼拜天", "周天", "日", "天"},
}

// ParseDayName reads a day as a timetable file may write it — mon, Mon,
// Monday, 周一, 星期一, or 1 (Monday) to 7 — and returns DayName's form.
func ParseDayName(s string) (string, bool) {
	s = strings.ToLower(textnorm.Fold(s))
	if _, ok := ParseDay(s); ok {
		return s, true
	}
	for i, d := range WeekDays() {
		if s == longDays[i] {
			return d, true
		}
		if s == strconv.Itoa(i+1) || slices.Contains(chineseDays[i], s) {
			return d, true
		}
	}
	return "", false
}

var longDays = [7]string{"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
