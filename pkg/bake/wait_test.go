package bake

import (
	"testing"
	"time"
)

func TestPollAfter(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		elapsed, expected, want time.Duration
	}{
		{0, 0, s},                  // an emulator: every second
		{0, 120 * s, 108 * s},      // one sleep to 0.9e
		{100 * s, 120 * s, 8 * s},  // the rest of it
		{108 * s, 120 * s, 2 * s},  // then every e/60, at least 2 s
		{290 * s, 300 * s, 5 * s},  // e/60 of a copy
		{131 * s, 120 * s, 2 * s},  // until 1.1e
		{180 * s, 120 * s, 12 * s}, // then a fifth of the delay
		{480 * s, 120 * s, 60 * s}, // at most a minute
		{335 * s, 300 * s, 7 * s},  // a fifth of 35 s
		{31 * s, 30 * s, 2 * s},    // short waits keep the floor
		{29*s + 500*time.Millisecond, 30 * s, 2 * s},
	} {
		if got := pollAfter(c.elapsed, c.expected); got != c.want {
			t.Errorf("pollAfter(%s, %s) = %s, want %s", c.elapsed, c.expected, got, c.want)
		}
	}
}

// TestPollAfterCost: how many checks a wait costs and how late it notices
// readiness, for work on time, a little late, twice as long as expected,
// and a little early. Late work costs a bounded number of checks and is
// noticed within a fifth of its delay (a steady e/60 would take 66 checks
// for work twice as long as expected, 75 for four times).
func TestPollAfterCost(t *testing.T) {
	for _, c := range []struct {
		name           string
		took, expected time.Duration
		maxChecks      int
		maxLate        time.Duration
	}{
		{"on time", 120 * time.Second, 120 * time.Second, 7, 2 * time.Second},
		{"7% late", 128 * time.Second, 120 * time.Second, 11, 2 * time.Second},
		{"twice as long", 240 * time.Second, 120 * time.Second, 30, 25 * time.Second},
		{"four times", 480 * time.Second, 120 * time.Second, 35, 72 * time.Second},
		{"15% early", 102 * time.Second, 120 * time.Second, 1, 6 * time.Second},
	} {
		var at time.Duration
		checks := 0
		for {
			at += pollAfter(at, c.expected)
			checks++
			if at >= c.took {
				break
			}
		}
		if checks > c.maxChecks || at-c.took > c.maxLate {
			t.Errorf("%s: %d checks, noticed %s late; want at most %d and %s", c.name, checks, at-c.took, c.maxChecks, c.maxLate)
		}
		t.Logf("%s: %d checks, noticed %s late", c.name, checks, at-c.took)
	}
}
