package asl

import (
	"slices"
	"time"
)

// Event is one billable state transition: a state being entered, or a
// retry attempt of a Task, Map or Parallel state. Step Functions bills each
// of these, including every state entered inside Map iterations and
// Parallel branches.
type Event struct {
	// Seq numbers events in the order they began, from 1.
	Seq int
	// Scope locates the state: "" at the top level, "Copy[2]" inside
	// iteration 2 of Map state Copy (or branch 2 of Parallel state Copy),
	// "Outer[0]/Inner[3]" when nested.
	Scope string
	// State and Type are the state's name and type.
	State, Type string
	// Attempt is 0 for the first attempt and n for the n-th retry.
	Attempt int
	// Entered and Exited bound the attempt; Exited is zero while it runs.
	Entered, Exited time.Time
	Duration        time.Duration
	// InputBytes and OutputBytes are the JSON sizes of the state's input
	// and output (0 when it failed).
	InputBytes, OutputBytes int
	// Resource is the Handlers key a Task called, and TaskDuration how long
	// the handler ran; Invoked says whether a handler ran at all.
	Resource     string
	Invoked      bool
	TaskDuration time.Duration
	// Error and Cause are set when the attempt failed.
	Error, Cause string
}

// Observer is told about an execution's progress as it happens, for
// example to draw live progress in a CLI. Calls are serialized, but may
// come from different goroutines when Map or Parallel states run branches
// at once; an Observer must not block for long.
type Observer interface {
	Observe(Notice)
}

// ObserverFunc adapts a function to an Observer.
type ObserverFunc func(Notice)

// Observe calls f(n).
func (f ObserverFunc) Observe(n Notice) { f(n) }

// NoticeKind says what a Notice reports.
type NoticeKind int

// Notice kinds.
const (
	// StateEntered: a state (or a retry attempt of it) began.
	StateEntered NoticeKind = iota + 1
	// StateExited: the attempt ended; Error is set if it failed.
	StateExited
	// TaskStarted: a Task is about to call Resource.
	TaskStarted
	// TaskEnded: the handler returned (Duration is how long it ran) or
	// failed (Error, Cause).
	TaskEnded
	// Retrying: the state will be retried after Duration, for Error.
	Retrying
	// Caught: a Catch matched Error and the execution goes on at Next.
	Caught
	// WaitStarted: a Wait state waits Duration, until Until.
	WaitStarted
	// ExecutionEnded: the execution finished with Status.
	ExecutionEnded
)

var noticeNames = map[NoticeKind]string{
	StateEntered:   "StateEntered",
	StateExited:    "StateExited",
	TaskStarted:    "TaskStarted",
	TaskEnded:      "TaskEnded",
	Retrying:       "Retrying",
	Caught:         "Caught",
	WaitStarted:    "WaitStarted",
	ExecutionEnded: "ExecutionEnded",
}

// String returns the kind's name.
func (k NoticeKind) String() string {
	if s, ok := noticeNames[k]; ok {
		return s
	}
	return "NoticeKind(?)"
}

// Notice is one progress report. Fields that do not apply to the Kind are
// zero.
type Notice struct {
	Kind  NoticeKind
	Time  time.Time
	Scope string
	State string
	Type  string
	// Attempt is the retry attempt (0 for the first).
	Attempt int
	// Resource is the Handlers key of a task.
	Resource string
	// Duration is the handler's run time (TaskEnded), the delay before a
	// retry (Retrying) or the wait (WaitStarted).
	Duration time.Duration
	// Until is when a Wait ends.
	Until time.Time
	// Next is where a Catch goes.
	Next         string
	Error, Cause string
	// Status is the final status (ExecutionEnded).
	Status Status
}

func (x *run) notify(n Notice) {
	obs := x.r.opts.Observer
	if obs == nil {
		return
	}
	x.obsMu.Lock()
	defer x.obsMu.Unlock()
	obs.Observe(n)
}

// enter records a transition and returns its index in the history.
func (x *run) enter(s *state, scope string, attempt int, inputBytes int, at time.Time) int {
	x.mu.Lock()
	i := len(x.events)
	x.events = append(x.events, Event{
		Seq:        i + 1,
		Scope:      scope,
		State:      s.name,
		Type:       s.typ,
		Attempt:    attempt,
		Entered:    at,
		InputBytes: inputBytes,
	})
	x.mu.Unlock()
	x.notify(Notice{Kind: StateEntered, Time: at, Scope: scope, State: s.name, Type: s.typ, Attempt: attempt})
	return i
}

// exit completes a transition.
func (x *run) exit(i int, outputBytes int, f *failure) {
	now := x.r.tl.Now()
	x.mu.Lock()
	ev := &x.events[i]
	ev.Exited = now
	ev.Duration = now.Sub(ev.Entered)
	ev.OutputBytes = outputBytes
	if f != nil {
		ev.Error, ev.Cause = f.name, f.cause
	}
	n := Notice{Kind: StateExited, Time: now, Scope: ev.Scope, State: ev.State, Type: ev.Type, Attempt: ev.Attempt, Error: ev.Error, Cause: ev.Cause}
	x.mu.Unlock()
	x.notify(n)
}

// recordTask notes a handler call on a transition.
func (x *run) recordTask(i int, resource string, d time.Duration) {
	x.mu.Lock()
	defer x.mu.Unlock()
	ev := &x.events[i]
	ev.Resource = resource
	ev.Invoked = true
	ev.TaskDuration += d
}

func (x *run) history() []Event {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.events)
}
