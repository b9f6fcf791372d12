package local

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Schedule is when a scheduled job fires. ParseSchedule reads the
// expressions the stack's schedules take (EventBridge Scheduler's
// cron(...) and rate(...)) and the classic five-field crontab line, so that
// `kiln serve --local` fires the jobs when the stack would.
type Schedule struct {
	expr  string
	loc   *time.Location
	every time.Duration // rate(...); zero for cron
	cron  *cronSpec
}

// ParseSchedule parses expr, whose times are in loc (UTC if nil):
//
//   - cron(minutes hours day-of-month month day-of-week year), EventBridge's
//     six fields: day-of-week 1-7 or SUN-SAT with 1 = Sunday; exactly one
//     of day-of-month and day-of-week is "?"; "L" (last day of the month,
//     or of the week: Saturday), "W" (nearest weekday: 15W, LW), "nL" (the
//     month's last weekday n: 6L) and "n#k" (its k-th weekday n: 3#2)
//     as EventBridge documents them
//     (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-cron-expressions.html);
//   - rate(N minute[s]|hour[s]|day[s]), singular exactly when N is 1: it
//     fires when it starts (as EventBridge Scheduler starts a rate
//     schedule without a start date at once) and then every period;
//   - a crontab line "minute hour day-of-month month day-of-week" (day of
//     week 0-7, 0 and 7 Sunday), where a day matches if either restricted
//     day field matches, as in Vixie cron; or @hourly, @daily (@midnight),
//     @weekly, @monthly, @yearly (@annually).
//
// Fields take *, lists (a,b), ranges (a-b), steps (*/n, a/n, a-b/n) and
// month and day names (JAN, MON). In a time zone with daylight saving
// time, a time the spring change skips does not fire that day and a time
// the autumn change repeats fires once, as EventBridge Scheduler does
// (https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html).
func ParseSchedule(expr string, loc *time.Location) (*Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	s := &Schedule{expr: strings.TrimSpace(expr), loc: loc}
	bad := func(err error) (*Schedule, error) {
		return nil, fmt.Errorf("schedule %q: %w", expr, err)
	}
	e := s.expr
	switch {
	case e == "":
		return bad(errors.New("empty"))
	case strings.HasPrefix(e, "rate(") && strings.HasSuffix(e, ")"):
		d, err := parseRate(e[len("rate(") : len(e)-1])
		if err != nil {
			return bad(err)
		}
		s.every = d
	case strings.HasPrefix(e, "cron(") && strings.HasSuffix(e, ")"):
		c, err := parseCron(strings.Fields(e[len("cron("):len(e)-1]), true)
		if err != nil {
			return bad(err)
		}
		s.cron = c
	case strings.HasPrefix(e, "@"):
		line, ok := cronMacros[e]
		if !ok {
			return bad(errors.New("unknown macro: want @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually"))
		}
		c, err := parseCron(strings.Fields(line), false)
		if err != nil {
			return bad(err)
		}
		s.cron = c
	default:
		fields := strings.Fields(e)
		if len(fields) == 6 {
			return bad(errors.New("six fields are EventBridge's form: write cron(" + e + ")"))
		}
		c, err := parseCron(fields, false)
		if err != nil {
			return bad(err)
		}
		s.cron = c
	}
	return s, nil
}

var cronMacros = map[string]string{
	"@hourly":   "0 * * * *",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@weekly":   "0 0 * * 0",
	"@monthly":  "0 0 1 * *",
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
}

// String returns the expression as given.
func (s *Schedule) String() string { return s.expr }

// Location is the time zone the schedule's times are in.
func (s *Schedule) Location() *time.Location { return s.loc }

// First returns when a schedule that starts at start first fires: start
// itself for a rate schedule, else Next(start).
func (s *Schedule) First(start time.Time) time.Time {
	if s.every > 0 {
		return start
	}
	return s.Next(start)
}

// Next returns the first time after t at which the schedule fires, or the
// zero time if it never does (cron(0 0 1 1 ? 2020), or a 30 February). A
// rate schedule fires every period: Next(t) is t plus the period, so pass
// the previous firing to keep the rhythm.
func (s *Schedule) Next(t time.Time) time.Time {
	if s.every > 0 {
		return t.Add(s.every)
	}
	return s.cron.next(t, s.loc)
}

// parseRate parses the inside of rate(...).
func parseRate(in string) (time.Duration, error) {
	f := strings.Fields(in)
	if len(f) != 2 {
		return 0, errors.New("want rate(N unit), such as rate(5 minutes)")
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1 {
		return 0, fmt.Errorf("rate value %q: want a whole number of at least 1", f[0])
	}
	units := map[string]time.Duration{"minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}
	unit, plural := strings.CutSuffix(f[1], "s")
	d, ok := units[unit]
	switch {
	case !ok:
		return 0, fmt.Errorf("rate unit %q: want minute(s), hour(s) or day(s)", f[1])
	case n == 1 && plural:
		return 0, fmt.Errorf("rate(1 %s): a value of 1 takes the singular unit, rate(1 %s)", f[1], unit)
	case n > 1 && !plural:
		return 0, fmt.Errorf("rate(%d %s): a value above 1 takes the plural unit, rate(%d %ss)", n, f[1], n, unit)
	}
	return time.Duration(n) * d, nil
}

// cronSpec is a parsed cron expression. Bit i of a set means value i
// matches; days of the week are 0-6 from Sunday in both dialects.
type cronSpec struct {
	minute, hour, dom, month, dow uint64
	// years are the years that match (EventBridge), by offset from
	// minYear; nil matches every year.
	years []bool
	// domStar and dowStar say the field was "*" or "?" (or, in crontab,
	// began with "*"): the other day field alone then decides.
	domStar, dowStar bool
	// EventBridge's day specials: the last day of the month, its last
	// weekday, the weekday nearest each day in nearest, the last weekday
	// d of the month for each d in lastDOW, and the nth.k-th weekday
	// nth.day.
	lastDay, lastWeekday bool
	nearest              uint64
	lastDOW              uint64
	nth                  *nthWeekday
	eventBridge          bool
}

type nthWeekday struct{ day, k int }

const (
	minYear = 1970
	maxYear = 2199
)

var (
	monthNames = map[string]int{"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6, "JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12}
	// Day names are numbered as each dialect numbers days: crontab from
	// SUN = 0, EventBridge from SUN = 1.
	dayNames = map[string]int{"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
)

// field describes one cron field: its name, bounds, value names and
// whether it takes steps.
type field struct {
	name     string
	min, max int
	names    map[string]int
	steps    bool
}

func parseCron(fields []string, eventBridge bool) (*cronSpec, error) {
	want := 5
	if eventBridge {
		want = 6
	}
	if len(fields) != want {
		if eventBridge {
			return nil, fmt.Errorf("cron(...) has %d fields, want 6: minutes hours day-of-month month day-of-week year", len(fields))
		}
		return nil, fmt.Errorf("%d fields, want 5: minute hour day-of-month month day-of-week (or cron(...) with 6, or rate(...))", len(fields))
	}
	c := &cronSpec{eventBridge: eventBridge}
	var errs []error
	set := func(dst *uint64, f field, s string) {
		v, err := parseField(s, f)
		if err != nil {
			errs = append(errs, err)
		}
		*dst = v
	}
	set(&c.minute, field{name: "minute", min: 0, max: 59, steps: true}, fields[0])
	set(&c.hour, field{name: "hour", min: 0, max: 23, steps: true}, fields[1])
	set(&c.month, field{name: "month", min: 1, max: 12, names: monthNames, steps: true}, fields[3])
	if err := c.parseDOM(fields[2]); err != nil {
		errs = append(errs, err)
	}
	if err := c.parseDOW(fields[4]); err != nil {
		errs = append(errs, err)
	}
	if eventBridge {
		switch {
		case fields[2] == "?" && fields[4] == "?":
			errs = append(errs, errors.New("day-of-month and day-of-week are both ?: give one of them"))
		case fields[2] != "?" && fields[4] != "?":
			errs = append(errs, errors.New("day-of-month and day-of-week are both set: EventBridge wants ? in one of them"))
		}
		if err := c.parseYears(fields[5]); err != nil {
			errs = append(errs, err)
		}
	}
	for i, f := range fields {
		if i != 2 && i != 4 && strings.Contains(f, "?") {
			errs = append(errs, fmt.Errorf("%q: ? is for day-of-month or day-of-week only", f))
		}
	}
	if !eventBridge && len(errs) > 0 && (eventBridgeDays.MatchString(fields[2]) || eventBridgeDays.MatchString(fields[4])) {
		errs = append(errs, errors.New("L, W and # are EventBridge's: write cron(minutes hours day-of-month month day-of-week year)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// eventBridgeDays finds EventBridge's day specials (L, LW, 15W, 6L, 3#2)
// in a crontab line, to point its author at cron(...).
var eventBridgeDays = regexp.MustCompile(`(^|,)(L|LW|\d+[LW]|\d+#\d+)(,|$)`)

func (c *cronSpec) parseDOM(s string) error {
	f := field{name: "day-of-month", min: 1, max: 31, steps: true}
	c.domStar = s == "*" || s == "?" || (!c.eventBridge && strings.HasPrefix(s, "*"))
	if s == "?" {
		c.dom = bitsBetween(1, 31)
		return nil
	}
	var plain []string
	for item := range strings.SplitSeq(s, ",") {
		if !c.eventBridge || !strings.ContainsAny(item, "LW") {
			plain = append(plain, item)
			continue
		}
		switch {
		case item == "L":
			c.lastDay = true
		case item == "LW":
			c.lastWeekday = true
		case strings.HasSuffix(item, "W"):
			n, err := strconv.Atoi(strings.TrimSuffix(item, "W"))
			if err != nil || n < 1 || n > 31 {
				return fmt.Errorf("day-of-month %q: W follows a day 1-31 (15W) or L (LW)", item)
			}
			c.nearest |= 1 << n
		default:
			return fmt.Errorf("day-of-month %q: L stands alone (L, LW)", item)
		}
	}
	if len(plain) > 0 {
		v, err := parseField(strings.Join(plain, ","), f)
		if err != nil {
			return err
		}
		c.dom = v
	}
	return nil
}

func (c *cronSpec) parseDOW(s string) error {
	c.dowStar = s == "*" || s == "?" || (!c.eventBridge && strings.HasPrefix(s, "*"))
	if s == "?" {
		c.dow = bitsBetween(0, 6)
		return nil
	}
	// Crontab numbers days 0-7 (both ends Sunday); EventBridge 1-7 from
	// Sunday. Names are shifted to match, and values mapped to 0-6 after.
	f := field{name: "day-of-week", min: 0, max: 7, names: dayNames, steps: true}
	shift := 0
	if c.eventBridge {
		f = field{name: "day-of-week", min: 1, max: 7, names: map[string]int{}, steps: false}
		for k, v := range dayNames {
			f.names[k] = v + 1
		}
		shift = 1
	}
	day := func(item string) (int, error) {
		if v, ok := f.names[strings.ToUpper(item)]; ok {
			return v - shift, nil
		}
		n, err := strconv.Atoi(item)
		if err != nil || n < f.min || n > f.max {
			return 0, fmt.Errorf("day-of-week %q: want %d-%d or SUN-SAT", item, f.min, f.max)
		}
		return n - shift, nil
	}
	if c.eventBridge && strings.Contains(s, "#") {
		if strings.Contains(s, ",") {
			return fmt.Errorf("day-of-week %q: with #, the field holds that one expression only", s)
		}
		d, k, _ := strings.Cut(s, "#")
		wd, err := day(d)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(k)
		if err != nil || n < 1 || n > 5 {
			return fmt.Errorf("day-of-week %q: the week after # is 1-5", s)
		}
		c.nth = &nthWeekday{day: wd, k: n}
		return nil
	}
	var plain []string
	for item := range strings.SplitSeq(s, ",") {
		switch {
		case !c.eventBridge || !strings.HasSuffix(item, "L"):
			plain = append(plain, item)
		case item == "L":
			// The last day of the week: Saturday.
			c.dow |= 1 << 6
		default:
			wd, err := day(strings.TrimSuffix(item, "L"))
			if err != nil {
				return err
			}
			c.lastDOW |= 1 << wd
		}
	}
	if len(plain) == 0 {
		return nil
	}
	v, err := parseField(strings.Join(plain, ","), f)
	if err != nil {
		return err
	}
	if c.eventBridge {
		v >>= 1 // 1-7 → 0-6
	} else if v&(1<<7) != 0 {
		v = v&^(1<<7) | 1 // 7 is Sunday too
	}
	c.dow |= v
	return nil
}

func (c *cronSpec) parseYears(s string) error {
	if s == "*" {
		return nil
	}
	// A year set is too wide for a uint64: parse per item.
	c.years = make([]bool, maxYear-minYear+1)
	for item := range strings.SplitSeq(s, ",") {
		lo, hi, step, err := parseItem(item, field{name: "year", min: minYear, max: maxYear, steps: true})
		if err != nil {
			return err
		}
		for y := lo; y <= hi; y += step {
			c.years[y-minYear] = true
		}
	}
	return nil
}

// parseField parses a comma-separated list of items into a bit set.
func parseField(s string, f field) (uint64, error) {
	var v uint64
	for item := range strings.SplitSeq(s, ",") {
		lo, hi, step, err := parseItem(item, f)
		if err != nil {
			return 0, err
		}
		for i := lo; i <= hi; i += step {
			v |= 1 << i
		}
	}
	return v, nil
}

// parseItem parses one item: *, ?, a, a-b, with an optional /step; a
// step after a single value runs to the field's maximum (EventBridge's
// 1/10: minutes 1, 11, 21, ...).
func parseItem(item string, f field) (lo, hi, step int, err error) {
	bad := func(why string) (int, int, int, error) {
		return 0, 0, 0, fmt.Errorf("%s %q: %s", f.name, item, why)
	}
	rng, stepText, hasStep := strings.Cut(item, "/")
	step = 1
	if hasStep {
		if !f.steps {
			return bad("steps (/) are not allowed in this field")
		}
		n, err := strconv.Atoi(stepText)
		if err != nil || n < 1 {
			return bad("the step after / is a whole number of at least 1")
		}
		step = n
	}
	value := func(s string) (int, error) {
		if v, ok := f.names[strings.ToUpper(s)]; ok {
			return v, nil
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("%s %q: %q is not a number", f.name, item, s)
		}
		if n < f.min || n > f.max {
			return 0, fmt.Errorf("%s %q: %d is outside %d-%d", f.name, item, n, f.min, f.max)
		}
		return n, nil
	}
	switch {
	case rng == "":
		return bad("empty")
	case rng == "*" || rng == "?":
		return f.min, f.max, step, nil
	}
	a, b, isRange := strings.Cut(rng, "-")
	if lo, err = value(a); err != nil {
		return 0, 0, 0, err
	}
	hi = lo
	switch {
	case isRange:
		if hi, err = value(b); err != nil {
			return 0, 0, 0, err
		}
		if hi < lo {
			return bad("the range runs backwards")
		}
	case hasStep:
		hi = f.max
	}
	return lo, hi, step, nil
}

func bitsBetween(lo, hi int) uint64 {
	var v uint64
	for i := lo; i <= hi; i++ {
		v |= 1 << i
	}
	return v
}

func has(set uint64, i int) bool { return set&(1<<i) != 0 }

// next returns the first minute after t that c matches, in loc; zero if
// none does before maxYear ends (or, for a crontab line, within 50 years).
// It skips a year, month, day or hour at a time when that does not match,
// so even a schedule that never fires is answered in a few thousand steps.
func (c *cronSpec) next(t time.Time, loc *time.Location) time.Time {
	last := maxYear
	if !c.eventBridge {
		last = min(maxYear, t.Year()+50)
	}
	t = t.Truncate(time.Minute).Add(time.Minute).In(loc)
	// advance moves t on to n, or by a minute should a time zone's jump
	// make n no later than t, so that the search always progresses.
	advance := func(n time.Time) {
		if !n.After(t) {
			n = t.Add(time.Minute)
		}
		t = n
	}
	for t.Year() <= last {
		y, m, d := t.Date()
		switch {
		case c.years != nil && (y < minYear || !c.years[y-minYear]):
			advance(time.Date(y+1, 1, 1, 0, 0, 0, 0, loc))
		case !has(c.month, int(m)):
			advance(time.Date(y, m+1, 1, 0, 0, 0, 0, loc))
		case !c.dayMatches(y, m, d, t.Weekday()):
			advance(time.Date(y, m, d+1, 0, 0, 0, 0, loc))
		case !has(c.hour, t.Hour()):
			advance(t.Add(time.Duration(60-t.Minute()) * time.Minute))
		case !has(c.minute, t.Minute()), repeatedWallTime(t):
			advance(t.Add(time.Minute))
		default:
			return t
		}
	}
	return time.Time{}
}

// repeatedWallTime reports whether t's wall-clock time happened already,
// earlier the same day: the second pass through the hour that the autumn
// daylight saving change repeats.
func repeatedWallTime(t time.Time) bool {
	_, now := t.Zone()
	_, before := t.Add(-3 * time.Hour).Zone()
	if before <= now {
		return false
	}
	e := t.Add(-time.Duration(before-now) * time.Second)
	return e.Day() == t.Day() && e.Hour() == t.Hour() && e.Minute() == t.Minute()
}

// dayMatches applies the day fields. When either is unrestricted both must
// match (the unrestricted one always does); when both are restricted
// (crontab only), either may, as in Vixie cron.
func (c *cronSpec) dayMatches(y int, m time.Month, d int, wd time.Weekday) bool {
	dom, dow := c.domMatches(y, m, d), c.dowMatches(y, m, d, wd)
	if c.domStar || c.dowStar {
		return dom && dow
	}
	return dom || dow
}

func (c *cronSpec) domMatches(y int, m time.Month, d int) bool {
	if has(c.dom, d) {
		return true
	}
	days := daysIn(y, m)
	if c.lastDay && d == days {
		return true
	}
	if c.lastWeekday && d == nearestWeekday(y, m, days) {
		return true
	}
	for n := 1; n <= 31; n++ {
		if has(c.nearest, n) && n <= days && d == nearestWeekday(y, m, n) {
			return true
		}
	}
	return false
}

func (c *cronSpec) dowMatches(y int, m time.Month, d int, wd time.Weekday) bool {
	if has(c.dow, int(wd)) {
		return true
	}
	if has(c.lastDOW, int(wd)) && d+7 > daysIn(y, m) {
		return true
	}
	return c.nth != nil && int(wd) == c.nth.day && (d-1)/7+1 == c.nth.k
}

// nearestWeekday is the weekday (Monday to Friday) nearest day n of the
// month, without leaving the month: a Saturday moves to the Friday before
// (or the Monday after, on the 1st), a Sunday to the Monday after (or the
// Friday before, on the last day).
func nearestWeekday(y int, m time.Month, n int) int {
	days := daysIn(y, m)
	switch time.Date(y, m, n, 12, 0, 0, 0, time.UTC).Weekday() {
	case time.Saturday:
		if n == 1 {
			return 3
		}
		return n - 1
	case time.Sunday:
		if n == days {
			return n - 2
		}
		return n + 1
	}
	return n
}

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 12, 0, 0, 0, time.UTC).Day()
}
