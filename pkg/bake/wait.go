package bake

import (
	"time"
)

// pollAfter says how long to wait before the next readiness check of
// something that started elapsed ago and usually takes expected. It sleeps
// through most of the expected time in one Wait, then polls every few
// seconds around the expected moment, and backs off once the work is late,
// so that a bake both notices readiness within seconds and spends few
// state transitions (each round of a wait loop costs three).
//
// The schedule, with e = expected:
//   - before 0.9e: wait until 0.9e (one round)
//   - until 1.1e:  every max(2s, e/60)
//   - later:       every fifth of the time past e (so work that runs late
//     is noticed within a fifth of its delay), at least as often as
//     around e, at most every 60s
//
// Work that takes twice its expectation thus costs about 20 checks, not
// the 60 a steady e/60 would. Publish keeps what each wait really took, so
// a recipe's next bake expects that instead (LearnedTimings).
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
	brisk := max(floor, expected/60)
	if elapsed < expected*11/10 {
		return brisk
	}
	return min(max(brisk, (elapsed-expected)/5), 60*time.Second)
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
