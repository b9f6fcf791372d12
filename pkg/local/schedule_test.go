package local

import (
	"strings"
	"testing"
	"time"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestScheduleNext pins the next fire times of both dialects. The
// reference time is Sunday 2026-11-22 10:07:30 UTC.
func TestScheduleNext(t *testing.T) {
	const from = "2026-11-22T10:07:30Z"
	for _, tc := range []struct {
		name, expr, after, want string
	}{
		// Crontab lines.
		{"daily at 3", "0 3 * * *", from, "2026-11-23T03:00:00Z"},
		{"every quarter hour", "*/15 * * * *", from, "2026-11-22T10:15:00Z"},
		{"later today", "30 10 * * *", from, "2026-11-22T10:30:00Z"},
		{"strictly after: the same minute is past", "7 10 * * *", from, "2026-11-23T10:07:00Z"},
		{"strictly after: an exact fire time is past", "7 10 * * *", "2026-11-22T10:07:00Z", "2026-11-23T10:07:00Z"},
		{"first of the month", "0 0 1 * *", from, "2026-12-01T00:00:00Z"},
		{"weekdays from a Sunday", "0 9 * * 1-5", from, "2026-11-23T09:00:00Z"},
		{"day names", "0 9 * * MON-FRI", from, "2026-11-23T09:00:00Z"},
		{"month names and a list", "0 0 1 JAN,JUL *", from, "2027-01-01T00:00:00Z"},
		{"sunday as 7", "0 0 * * 7", from, "2026-11-29T00:00:00Z"},
		{"sunday as 0", "0 0 * * 0", from, "2026-11-29T00:00:00Z"},
		{"leap day", "0 0 29 2 *", from, "2028-02-29T00:00:00Z"},
		{"range with step", "0 8-18/5 * * *", from, "2026-11-22T13:00:00Z"},
		// Vixie cron: both day fields restricted, either matches (Friday
		// the 27th comes before the 13th of December).
		{"day-of-month or day-of-week", "0 0 13 * 5", from, "2026-11-27T00:00:00Z"},
		// A day field beginning with * is unrestricted: both must match
		// (the first Monday on day 1, 11, 21 or 31 is 21 December).
		{"starred day-of-month and day-of-week", "0 0 */10 * 1", from, "2026-12-21T00:00:00Z"},
		{"never: 30 February", "0 0 30 2 *", from, ""},
		{"@hourly", "@hourly", from, "2026-11-22T11:00:00Z"},
		{"@daily", "@daily", from, "2026-11-23T00:00:00Z"},
		{"@weekly", "@weekly", from, "2026-11-29T00:00:00Z"},
		{"@monthly", "@monthly", from, "2026-12-01T00:00:00Z"},
		{"@yearly", "@yearly", from, "2027-01-01T00:00:00Z"},

		// EventBridge's cron(...).
		{"stack default rebuild", "cron(0 3 * * ? *)", from, "2026-11-23T03:00:00Z"},
		{"stack default retention", "cron(0 4 * * ? *)", from, "2026-11-23T04:00:00Z"},
		{"weekdays", "cron(0 10 ? * MON-FRI *)", from, "2026-11-23T10:00:00Z"},
		{"numbered days from SUN=1", "cron(0 10 ? * 2-6 *)", from, "2026-11-23T10:00:00Z"},
		{"sunday is 1", "cron(0 0 ? * 1 *)", from, "2026-11-29T00:00:00Z"},
		{"steps from a start", "cron(1/10 * * * ? *)", from, "2026-11-22T10:11:00Z"},
		{"steps from zero", "cron(0/10 * * * ? *)", from, "2026-11-22T10:10:00Z"},
		{"last day of the month", "cron(0 0 L * ? *)", from, "2026-11-30T00:00:00Z"},
		{"last day of February", "cron(0 0 L * ? *)", "2027-02-01T00:00:00Z", "2027-02-28T00:00:00Z"},
		// 31 January 2027 is a Sunday.
		{"last weekday", "cron(0 0 LW * ? *)", "2027-01-01T00:00:00Z", "2027-01-29T00:00:00Z"},
		// 15 May 2027 is a Saturday, 15 August a Sunday, 1 May a Saturday.
		{"nearest weekday to a Saturday", "cron(0 0 15W * ? *)", "2027-05-01T00:00:00Z", "2027-05-14T00:00:00Z"},
		{"nearest weekday to a Sunday", "cron(0 0 15W * ? *)", "2027-08-01T00:00:00Z", "2027-08-16T00:00:00Z"},
		{"nearest weekday stays in the month", "cron(0 0 1W * ? *)", "2027-04-30T12:00:00Z", "2027-05-03T00:00:00Z"},
		{"a weekday is its own nearest", "cron(0 0 15W * ? *)", "2027-02-01T00:00:00Z", "2027-02-15T00:00:00Z"},
		{"last Friday", "cron(0 0 ? * 6L *)", from, "2026-11-27T00:00:00Z"},
		{"last FRI by name", "cron(0 0 ? * FRIL *)", from, "2026-11-27T00:00:00Z"},
		{"second Tuesday", "cron(0 0 ? * 3#2 *)", from, "2026-12-08T00:00:00Z"},
		{"last day of the week is Saturday", "cron(0 0 ? * L *)", from, "2026-11-28T00:00:00Z"},
		{"a year", "cron(0 0 1 1 ? 2030)", from, "2030-01-01T00:00:00Z"},
		{"a year range", "cron(0 0 1 1 ? 2029-2031)", from, "2029-01-01T00:00:00Z"},
		{"never: a past year", "cron(0 0 1 1 ? 2020)", from, ""},
		{"never: 30 February", "cron(0 0 30 2 ? *)", from, ""},

		// rate(...): one period after the given time.
		{"rate in minutes", "rate(5 minutes)", from, "2026-11-22T10:12:30Z"},
		{"rate of one hour", "rate(1 hour)", from, "2026-11-22T11:07:30Z"},
		{"rate in days", "rate(2 days)", from, "2026-11-24T10:07:30Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSchedule(tc.expr, nil)
			if err != nil {
				t.Fatalf("ParseSchedule(%q) = %v", tc.expr, err)
			}
			got := s.Next(at(tc.after))
			var want time.Time
			if tc.want != "" {
				want = at(tc.want)
			}
			if !got.Equal(want) {
				t.Errorf("ParseSchedule(%q).Next(%s) = %v, want %v", tc.expr, tc.after, got, want)
			}
		})
	}
}

// TestScheduleTimeZones: times are in the schedule's zone; the spring
// change skips a time that does not exist and the autumn change does not
// fire a repeated time twice, as EventBridge Scheduler behaves.
func TestScheduleTimeZones(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skipf("no time zone database: %v", err)
	}
	for _, tc := range []struct {
		name, expr, after string
		want              []string // successive fire times, UTC
	}{
		{"daily at 3 New York time", "cron(0 3 * * ? *)", "2026-11-22T10:07:30Z",
			[]string{"2026-11-23T08:00:00Z", "2026-11-24T08:00:00Z"}},
		// 2027-03-14: New York skips 02:00-02:59.
		{"skipped by the spring change", "30 2 * * *", "2027-03-13T12:00:00Z",
			[]string{"2027-03-15T06:30:00Z"}},
		// 2026-11-01: New York has 01:00-01:59 twice; 01:30 EDT is 05:30Z.
		{"repeated by the autumn change", "30 1 * * *", "2026-11-01T00:00:00Z",
			[]string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}},
		{"every half hour through the autumn change", "*/30 * * * *", "2026-11-01T05:15:00Z",
			[]string{"2026-11-01T05:30:00Z", "2026-11-01T07:00:00Z", "2026-11-01T07:30:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSchedule(tc.expr, ny)
			if err != nil {
				t.Fatalf("ParseSchedule(%q) = %v", tc.expr, err)
			}
			prev := at(tc.after)
			for i, w := range tc.want {
				got := s.Next(prev)
				if !got.Equal(at(w)) {
					t.Fatalf("ParseSchedule(%q) fire %d after %s = %s, want %s", tc.expr, i+1, prev.UTC(), got.UTC(), w)
				}
				prev = got
			}
		})
	}
}

// TestScheduleFirst: a rate schedule fires when it starts, a
// cron schedule at its next time.
func TestScheduleFirst(t *testing.T) {
	start := at("2026-11-22T10:07:30Z")
	rate, _ := ParseSchedule("rate(1 hour)", nil)
	if got := rate.First(start); !got.Equal(start) {
		t.Errorf("rate(1 hour).First(%s) = %s, want the start", start, got)
	}
	cron, _ := ParseSchedule("cron(0 3 * * ? *)", nil)
	if got, want := cron.First(start), at("2026-11-23T03:00:00Z"); !got.Equal(want) {
		t.Errorf("cron(0 3 * * ? *).First(%s) = %s, want %s", start, got, want)
	}
}

func TestParseScheduleErrors(t *testing.T) {
	for _, tc := range []struct {
		expr, want string
	}{
		{"", "empty"},
		{"0 3 * *", "4 fields, want 5"},
		{"0 3 * * ? *", "write cron(0 3 * * ? *)"},
		{"cron(0 3 * * ?)", "5 fields, want 6"},
		{"cron(0 3 * * * *)", "EventBridge wants ? in one of them"},
		{"cron(0 3 ? * ? *)", "both ?"},
		{"60 * * * *", "60 is outside 0-59"},
		{"0 24 * * *", "24 is outside 0-23"},
		{"0 0 32 * *", "32 is outside 1-31"},
		{"0 0 0 * *", "0 is outside 1-31"},
		{"0 0 * 13 *", "13 is outside 1-12"},
		{"0 0 * * 8", "8 is outside 0-7"},
		{"cron(0 0 ? * 0 *)", "0 is outside 1-7"},
		{"5-1 * * * *", "runs backwards"},
		{"*/0 * * * *", "at least 1"},
		{"x * * * *", `"x" is not a number`},
		{"0 ? * * *", "? is for day-of-month or day-of-week only"},
		{"0 0 L * *", "write cron("},
		{"cron(0 0 ? * 1/2 *)", "steps (/) are not allowed"},
		{"cron(0 0 ? * 3#2,5#1 *)", "that one expression only"},
		{"cron(0 0 ? * 3#6 *)", "1-5"},
		{"cron(0 0 32W * ? *)", "W follows a day 1-31"},
		{"cron(0 0 1 1 ? 1969)", "outside 1970-2199"},
		{"cron(0 0 1 1 ? 2200)", "outside 1970-2199"},
		{"rate(0 minutes)", "at least 1"},
		{"rate(1 minutes)", "rate(1 minute)"},
		{"rate(5 minute)", "rate(5 minutes)"},
		{"rate(5 weeks)", "want minute(s), hour(s) or day(s)"},
		{"rate(5)", "want rate(N unit)"},
		{"@reboot", "unknown macro"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			s, err := ParseSchedule(tc.expr, nil)
			if err == nil {
				t.Fatalf("ParseSchedule(%q) = %v, want an error", tc.expr, s)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseSchedule(%q) = %v, want it to say %q", tc.expr, err, tc.want)
			}
		})
	}
}

// TestScheduleNeverLoopsForever: a schedule that cannot fire is answered
// quickly.
func TestScheduleNeverLoopsForever(t *testing.T) {
	s, err := ParseSchedule("cron(0 0 31 2,4,6,9,11 ? *)", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got := s.Next(at("2026-11-22T10:07:30Z")); !got.IsZero() {
		t.Errorf("Next = %v, want never", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Next took %s to find nothing", d)
	}
}

// TestScheduleNextAgreesWithMinuteScan checks Next's skipping (a year,
// month, day or hour at a time) against a scan of every minute, over many
// expressions, start times and two zones.
func TestScheduleNextAgreesWithMinuteScan(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		ny = time.UTC
	}
	exprs := []string{
		"0 3 * * *", "*/7 */5 * * *", "15 10 1-7 * 1", "0 0 13 * 5", "0 0 */10 * 1",
		"59 23 31 * *", "0 12 * 2 SUN", "0 0 29 2 *", "30 2 * * *", "30 1 * * *",
		"cron(0 0 L * ? *)", "cron(0 0 LW * ? *)", "cron(5 4 15W * ? *)", "cron(0 0 1W,31W * ? *)",
		"cron(0 9 ? * 6L *)", "cron(0 9 ? * 2#5 *)", "cron(0/20 8-17 ? * MON-FRI *)", "cron(0 0 1 1-12/3 ? 2027-2028)",
	}
	starts := []string{"2026-11-22T10:07:30Z", "2027-02-27T23:59:00Z", "2027-03-14T06:00:00Z", "2026-10-31T23:00:00Z"}
	const horizon = 400 * 24 * 60 // minutes
	for _, loc := range []*time.Location{time.UTC, ny} {
		for _, expr := range exprs {
			s, err := ParseSchedule(expr, loc)
			if err != nil {
				t.Fatalf("ParseSchedule(%q) = %v", expr, err)
			}
			for _, from := range starts {
				start := at(from)
				var want time.Time
				for m := 1; m <= horizon; m++ {
					c := start.Truncate(time.Minute).Add(time.Duration(m) * time.Minute).In(loc)
					y, mo, d := c.Date()
					if (s.cron.years == nil || s.cron.years[y-minYear]) && has(s.cron.month, int(mo)) &&
						s.cron.dayMatches(y, mo, d, c.Weekday()) && has(s.cron.hour, c.Hour()) &&
						has(s.cron.minute, c.Minute()) && !repeatedWallTime(c) {
						want = c
						break
					}
				}
				got := s.Next(start)
				if want.IsZero() && (got.IsZero() || got.Sub(start) > horizon*time.Minute) {
					continue
				}
				if !got.Equal(want) {
					t.Errorf("ParseSchedule(%q, %s).Next(%s) = %s, the minute scan finds %s", expr, loc, from, got, want)
				}
			}
		}
	}
}
