package bake

import (
	"time"
)

// pollAfter says how long to wait before the next readiness check of
// something that started elapsed ago and usually takes expected. It sleeps
// through most of the expected time in one Wait, then polls every few
// seconds around the expected moment, and backs off gently once the work is
// late, so that a bake both notices readiness within seconds and spends few
// state transitions (each round of a wait loop costs three).
//
// The schedule, with e = expected:
//   - before 0.9e: wait until 0.9e (one round)
//   - until 2e:    every max(2s, e/60)
//   - later:       every elapsed/10, at most 60s
func pollAfter(elapsed, expected time.Duration) time.Duration {
	const floor = 2 * time.Second
	if expected <= 0 {
		// Nothing to expect (an emulator that changes state at once).
		return time.Second
	}
	lead := expected * 9 / 10
	if elapsed < lead {
		return max(lead-elapsed, time.Second)
	}
	if elapsed < 2*expected {
		return max(floor, expected/60)
	}
	return min(max(floor, elapsed/10), 60*time.Second)
}

// waitSeconds renders a wait for the state machine's SecondsPath: whole
// seconds, at least 1.
func waitSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

// notReady is the Wait a check returns while something is not ready yet.
func notReady(what string, polls int, elapsed, expected time.Duration) *Wait {
	return &Wait{For: what, Polls: polls + 1, Seconds: waitSeconds(pollAfter(elapsed, expected))}
}

// ready is the Wait a check returns once the awaited thing is ready.
func ready(what string, polls int) *Wait {
	return &Wait{Ready: true, For: what, Polls: polls + 1}
}
