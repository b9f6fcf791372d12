package asl

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Clock is the runner's source of time. Every wait the engine makes (Wait
// states, retry intervals, task and execution timeouts) goes through Sleep,
// so a test can swap in a FakeClock and never wait for real.
type Clock interface {
	// Now reports the current time.
	Now() time.Time
	// Sleep blocks for d or until ctx is done, whichever comes first. It
	// returns ctx.Err() if ctx ended the wait and nil otherwise.
	Sleep(ctx context.Context, d time.Duration) error
}

// RealClock is the wall clock. Its Sleep uses a timer and selects on
// ctx.Done(), so a cancelled execution stops waiting at once.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// Sleep waits for d or for ctx to be done.
func (RealClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// timerKey marks a context whose Sleep is a deadline (a task or execution
// timeout) rather than a wait. A FakeClock in auto mode jumps ahead for
// waits but leaves deadlines to fire only when time reaches them.
type timerKey struct{}

func withTimer(ctx context.Context) context.Context {
	return context.WithValue(ctx, timerKey{}, true)
}

func isTimer(ctx context.Context) bool {
	v, _ := ctx.Value(timerKey{}).(bool)
	return v
}

// FakeClock is a Clock that moves only when told to. Sleepers block until
// Advance (or, in auto mode, another sleeper) moves the time past their
// deadline, or until their context is done.
//
// In auto mode (SetAuto(true)) a Sleep that is a wait (a Wait state or a
// retry interval) moves the clock straight to its own deadline and returns,
// firing any deadline it passes. Task and execution timeouts never move the
// clock: they fire when something else moves it past them. A handler can
// simulate how long it takes by calling Advance. Auto mode suits sequential
// flows; concurrent Map or Parallel branches that wait share one timeline,
// so one branch's wait moves time for all of them.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	auto    bool
	waiters []*fakeWaiter
	changed chan struct{} // closed and replaced whenever waiters is added to
}

type fakeWaiter struct {
	deadline time.Time
	done     chan struct{}
}

// NewFakeClock returns a FakeClock in manual mode set to start.
func NewFakeClock(start time.Time) *FakeClock {
	return &FakeClock{now: start, changed: make(chan struct{})}
}

// SetAuto turns auto mode on or off.
func (c *FakeClock) SetAuto(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.auto = on
}

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Sleep blocks until the fake time reaches now+d or ctx is done.
func (c *FakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	c.mu.Lock()
	deadline := c.now.Add(d)
	if c.auto && !isTimer(ctx) {
		c.advanceLocked(deadline)
		c.mu.Unlock()
		return nil
	}
	w := &fakeWaiter{deadline: deadline, done: make(chan struct{})}
	c.waiters = append(c.waiters, w)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()

	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		c.waiters = slices.DeleteFunc(c.waiters, func(o *fakeWaiter) bool { return o == w })
		c.mu.Unlock()
		return ctx.Err()
	}
}

// Advance moves the fake time forward by d and wakes every sleeper whose
// deadline it reaches.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advanceLocked(c.now.Add(d))
}

func (c *FakeClock) advanceLocked(to time.Time) {
	if to.After(c.now) {
		c.now = to
	}
	c.waiters = slices.DeleteFunc(c.waiters, func(w *fakeWaiter) bool {
		if w.deadline.After(c.now) {
			return false
		}
		close(w.done)
		return true
	})
}

// Waiters reports how many sleepers are blocked.
func (c *FakeClock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// WaitForWaiters blocks until at least n sleepers are blocked on the clock,
// or ctx is done. Tests use it to know that an execution has reached a wait
// before they advance the clock or cancel.
func (c *FakeClock) WaitForWaiters(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		if len(c.waiters) >= n {
			c.mu.Unlock()
			return nil
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// timeline is the engine's view of time: a Clock whose waits may be
// compressed by a scale factor. A compressed wait sleeps d*scale on the
// underlying clock and then moves the timeline forward so that d has passed,
// so history timestamps and $$ times read as they would on AWS while handlers
// still run (and are measured) in real time.
type timeline struct {
	base  Clock
	scale float64

	mu     sync.Mutex
	offset time.Duration
}

func newTimeline(base Clock, scale float64) *timeline {
	if scale <= 0 {
		scale = 1
	}
	return &timeline{base: base, scale: scale}
}

// Now is the timeline's time: the clock's plus what compressed waits skipped.
func (t *timeline) Now() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.base.Now().Add(t.offset)
}

// wait is a state-machine wait (Wait state, retry interval): compressed by
// the scale factor.
func (t *timeline) wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	if t.scale == 1 {
		return t.base.Sleep(ctx, d)
	}
	target := t.Now().Add(d)
	if err := t.base.Sleep(ctx, time.Duration(float64(d)*t.scale)); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Parallel waits that end together must not add up: move the timeline
	// to this wait's target only if it is not already past it.
	if behind := target.Sub(t.base.Now().Add(t.offset)); behind > 0 {
		t.offset += behind
	}
	return nil
}

// deadline is a task timeout: it measures handler time, which is never
// compressed.
func (t *timeline) deadline(ctx context.Context, d time.Duration) error {
	return t.base.Sleep(withTimer(ctx), d)
}

// until blocks until the timeline reaches end (the execution timeout). The
// timeline can jump ahead when a compressed wait ends, so it sleeps in steps
// and looks again.
func (t *timeline) until(ctx context.Context, end time.Time) error {
	const minStep = 10 * time.Millisecond
	for {
		rem := end.Sub(t.Now())
		if rem <= 0 {
			return nil
		}
		step := rem
		if t.scale != 1 {
			step = max(time.Duration(float64(rem)*t.scale), minStep)
			step = min(step, rem)
		}
		if err := t.base.Sleep(withTimer(ctx), step); err != nil {
			return err
		}
	}
}
