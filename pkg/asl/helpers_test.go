package asl

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"
)

// t0 is where every fake clock starts.
var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// autoClock is a fake clock in auto mode: waits complete at once and move
// the fake time.
func autoClock() *FakeClock {
	c := NewFakeClock(t0)
	c.SetAuto(true)
	return c
}

// mustNew builds a runner, failing the test on a definition error.
func mustNew(t *testing.T, def string, opts Options) *Runner {
	t.Helper()
	if opts.Clock == nil {
		opts.Clock = autoClock()
	}
	if opts.Seed == 0 {
		opts.Seed = 42
	}
	r, err := New([]byte(def), opts)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return r
}

// runDef runs def on input with a 10 s real-time safety net.
func runDef(t *testing.T, def string, opts Options, input string) *Result {
	t.Helper()
	r := mustNew(t, def, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := r.Run(ctx, "test", json.RawMessage(input))
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	return res
}

// decoded parses JSON for comparison (numbers as float64).
func decoded(t *testing.T, s string) any {
	t.Helper()
	if s == "" {
		return nil
	}
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON %q: %v", s, err)
	}
	return v
}

// succeeded checks that res succeeded and returns its decoded output.
func succeeded(t *testing.T, res *Result) any {
	t.Helper()
	if res.Status != StatusSucceeded {
		t.Fatalf("Run() status = %s (%s: %s), want SUCCEEDED", res.Status, res.Error, res.Cause)
	}
	return decoded(t, string(res.Output))
}

// echo returns its input.
func echo(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil }

// constant returns a handler that always returns out.
func constant(out string) Handler {
	return func(context.Context, json.RawMessage) (json.RawMessage, error) { return json.RawMessage(out), nil }
}

// flaky is a stateful fake: it fails with err for its first n calls, then
// returns out. It records every input it saw.
type flaky struct {
	mu     sync.Mutex
	n      int
	err    error
	out    string
	calls  int
	inputs []string
}

func (f *flaky) handle(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.inputs = append(f.inputs, string(in))
	if f.calls <= f.n {
		return nil, f.err
	}
	return json.RawMessage(f.out), nil
}

func (f *flaky) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// NotReadyError is a named error type, routed on by name.
type NotReadyError struct{ What string }

func (e NotReadyError) Error() string { return e.What + " is not ready" }

// QuotaError is routed on as a pointer.
type QuotaError struct{ Limit int }

func (e *QuotaError) Error() string { return "quota exceeded" }

var errPlain = errors.New("plain failure")

// states lists "scope/State" for each history event, in order.
func states(h []Event) []string {
	var out []string
	for _, ev := range h {
		name := ev.State
		if ev.Scope != "" {
			name = ev.Scope + "/" + name
		}
		out = append(out, name)
	}
	return out
}
