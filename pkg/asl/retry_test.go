package asl

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// taskDef is a Task named T calling resource Work with the given Retry and
// Catch, storing its result at $.result and going on to Done; catchers go
// to Recover, which ends.
func taskDef(retry, catch string) string {
	extra, recover := "", ""
	if retry != "" {
		extra += `,"Retry":` + retry
	}
	if catch != "" {
		extra += `,"Catch":` + catch
		recover = `,"Recover":{"Type":"Pass","End":true}`
	}
	return `{"StartAt":"T","States":{
		"T":{"Type":"Task","Resource":"Work","ResultPath":"$.result","Next":"Done"` + extra + `},
		"Done":{"Type":"Pass","Result":"done","ResultPath":"$.status","End":true}` + recover + `}}`
}

func TestRetryBeforeCatch(t *testing.T) {
	retry := `[{"ErrorEquals":["NotReadyError"],"MaxAttempts":2,"IntervalSeconds":1}]`
	catch := `[{"ErrorEquals":["States.ALL"],"ResultPath":"$.error","Next":"Recover"}]`
	tests := []struct {
		name      string
		failures  int
		wantCalls int
		wantOut   string
		wantTrans []string
	}{
		{
			name:      "fails twice then succeeds",
			failures:  2,
			wantCalls: 3,
			wantOut:   `{"id":"b-1","result":"ok","status":"done"}`,
			wantTrans: []string{"T", "T", "T", "Done"},
		},
		{
			name:      "fails three times and is caught",
			failures:  3,
			wantCalls: 3,
			wantOut: `{"id":"b-1","error":{"Error":"NotReadyError",
				"Cause":"{\"errorMessage\":\"instance is not ready\",\"errorType\":\"NotReadyError\"}"}}`,
			wantTrans: []string{"T", "T", "T", "Recover"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			work := &flaky{n: tt.failures, err: NotReadyError{What: "instance"}, out: `"ok"`}
			res := runDef(t, taskDef(retry, catch), Options{Handlers: map[string]Handler{"Work": work.handle}}, `{"id":"b-1"}`)
			got := succeeded(t, res)
			if work.callCount() != tt.wantCalls {
				t.Errorf("handler called %d times, want %d", work.callCount(), tt.wantCalls)
			}
			if diff := cmp.Diff(decoded(t, tt.wantOut), got); diff != "" {
				t.Errorf("output mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantTrans, states(res.History)); diff != "" {
				t.Errorf("transitions mismatch (-want +got):\n%s", diff)
			}
			for i, ev := range res.History[:3] {
				if ev.Attempt != i {
					t.Errorf("History[%d].Attempt = %d, want %d", i, ev.Attempt, i)
				}
			}
		})
	}
}

// gaps returns the waits between consecutive attempts of state name.
func gaps(h []Event, name string) []time.Duration {
	var out []time.Duration
	var prev *Event
	for i := range h {
		ev := &h[i]
		if ev.State != name {
			continue
		}
		if prev != nil {
			out = append(out, ev.Entered.Sub(prev.Exited))
		}
		prev = ev
	}
	return out
}

func TestRetryBackoff(t *testing.T) {
	tests := []struct {
		name, retry string
		want        []time.Duration
	}{
		{"defaults", `[{"ErrorEquals":["States.ALL"]}]`, []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second}},
		{"backoff and MaxDelaySeconds", `[{"ErrorEquals":["States.TaskFailed"],"IntervalSeconds":2,"BackoffRate":3,"MaxDelaySeconds":10,"MaxAttempts":4}]`,
			[]time.Duration{2 * time.Second, 6 * time.Second, 10 * time.Second, 10 * time.Second}},
		{"fractional backoff", `[{"ErrorEquals":["errorString"],"IntervalSeconds":3,"BackoffRate":1.5,"MaxAttempts":3}]`,
			[]time.Duration{3 * time.Second, 4500 * time.Millisecond, 6750 * time.Millisecond}},
		{"MaxAttempts 0 never retries", `[{"ErrorEquals":["States.ALL"],"MaxAttempts":0}]`, nil},
		{"other errors are not retried", `[{"ErrorEquals":["NotReadyError"]}]`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			work := &flaky{n: 1000, err: errPlain}
			clock := autoClock()
			res := runDef(t, taskDef(tt.retry, ""), Options{Clock: clock, Handlers: map[string]Handler{"Work": work.handle}}, `{}`)
			if res.Status != StatusFailed || res.Error != "errorString" {
				t.Fatalf("Run() = %s %q, want FAILED errorString", res.Status, res.Error)
			}
			if diff := cmp.Diff(tt.want, gaps(res.History, "T")); diff != "" {
				t.Errorf("retry intervals mismatch (-want +got):\n%s", diff)
			}
			if got, want := work.callCount(), len(tt.want)+1; got != want {
				t.Errorf("handler called %d times, want %d", got, want)
			}
		})
	}
}

func TestRetryJitter(t *testing.T) {
	retry := `[{"ErrorEquals":["States.ALL"],"IntervalSeconds":8,"BackoffRate":2,"MaxDelaySeconds":20,"MaxAttempts":40,"JitterStrategy":"FULL"}]`
	work := &flaky{n: 1000, err: errPlain}
	res := runDef(t, taskDef(retry, ""), Options{Handlers: map[string]Handler{"Work": work.handle}}, `{}`)
	got := gaps(res.History, "T")
	if len(got) != 40 {
		t.Fatalf("got %d retries, want 40", len(got))
	}
	distinct := map[time.Duration]bool{}
	for i, d := range got {
		ceiling := 20 * time.Second
		if i < 2 {
			ceiling = 8 * time.Second << i // 8 s, 16 s, then capped at 20 s
		}
		if d < 0 || d > ceiling {
			t.Errorf("retry %d waited %v, want within [0, %v]", i+1, d, ceiling)
		}
		distinct[d] = true
	}
	if len(distinct) < 20 {
		t.Errorf("FULL jitter gave only %d distinct delays in 40 retries: %v", len(distinct), got)
	}
}

// scripted returns its errors in order, then succeeds.
type scripted struct {
	mu    sync.Mutex
	errs  []error
	calls int
}

func (s *scripted) handle(context.Context, json.RawMessage) (json.RawMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.calls <= len(s.errs) {
		return nil, s.errs[s.calls-1]
	}
	return json.RawMessage(`{}`), nil
}

func TestRetryCountsPerRetrier(t *testing.T) {
	// The first retrier that matches applies, even once its attempts are
	// used up: a later States.ALL retrier does not take over.
	retry := `[{"ErrorEquals":["NotReadyError"],"MaxAttempts":1},{"ErrorEquals":["States.ALL"],"MaxAttempts":2}]`
	work := &scripted{errs: []error{NotReadyError{"ssh"}, &QuotaError{}, &QuotaError{}, NotReadyError{"ssh"}}}
	res := runDef(t, taskDef(retry, ""), Options{Handlers: map[string]Handler{"Work": work.handle}}, `{}`)
	if res.Status != StatusFailed || res.Error != "NotReadyError" {
		t.Errorf("Run() = %s %q, want FAILED NotReadyError", res.Status, res.Error)
	}
	if work.calls != 4 {
		t.Errorf("handler called %d times, want 4", work.calls)
	}
}

func TestRetryCountInContext(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	h := func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, string(in))
		if len(seen) < 3 {
			return nil, errPlain
		}
		return in, nil
	}
	def := `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"Work","Parameters":{"retry.$":"$$.State.RetryCount"},
		"Retry":[{"ErrorEquals":["States.ALL"]}],"End":true}}}`
	succeeded(t, runDef(t, def, Options{Handlers: map[string]Handler{"Work": h}}, `{}`))
	if diff := cmp.Diff([]string{`{"retry":0}`, `{"retry":1}`, `{"retry":2}`}, seen); diff != "" {
		t.Errorf("$$.State.RetryCount per attempt mismatch (-want +got):\n%s", diff)
	}
}

func TestCatchResultPath(t *testing.T) {
	cause := `{"errorMessage":"plain failure","errorType":"errorString"}`
	tests := []struct {
		name, catch, want string
	}{
		{"default replaces the input", `{"ErrorEquals":["States.ALL"],"Next":"Recover"}`,
			`{"Error":"errorString","Cause":` + mustJSON(cause) + `}`},
		{"null keeps the input", `{"ErrorEquals":["States.ALL"],"ResultPath":null,"Next":"Recover"}`, `{"id":"b-1"}`},
		{"nested path", `{"ErrorEquals":["errorString"],"ResultPath":"$.failure.detail","Next":"Recover"}`,
			`{"id":"b-1","failure":{"detail":{"Error":"errorString","Cause":` + mustJSON(cause) + `}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			work := &flaky{n: 1, err: errPlain}
			res := runDef(t, taskDef("", "["+tt.catch+"]"), Options{Handlers: map[string]Handler{"Work": work.handle}}, `{"id":"b-1"}`)
			if diff := cmp.Diff(decoded(t, tt.want), succeeded(t, res)); diff != "" {
				t.Errorf("catch output mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestErrorMatches(t *testing.T) {
	tests := []struct {
		equals []string
		name   string
		want   bool
	}{
		{[]string{"NotReadyError"}, "NotReadyError", true},
		{[]string{"NotReadyError"}, "QuotaError", false},
		{[]string{"States.ALL"}, "QuotaError", true},
		{[]string{"States.ALL"}, StatesTimeout, true},
		{[]string{"States.ALL"}, StatesNoChoiceMatched, true},
		{[]string{"States.ALL"}, StatesRuntime, false},
		{[]string{"States.Runtime"}, StatesRuntime, false},
		{[]string{"States.ALL"}, StatesDataLimitExceeded, false},
		{[]string{"States.DataLimitExceeded"}, StatesDataLimitExceeded, true},
		{[]string{"States.TaskFailed"}, "wrapError", true},
		{[]string{"States.TaskFailed"}, "Lambda.ServiceException", true},
		{[]string{"States.TaskFailed"}, StatesTimeout, false},
		{[]string{"States.Timeout"}, StatesTimeout, true},
		{[]string{"A", "B"}, "B", true},
	}
	for _, tt := range tests {
		if got := errorMatches(tt.equals, tt.name); got != tt.want {
			t.Errorf("errorMatches(%q, %q) = %v, want %v", tt.equals, tt.name, got, tt.want)
		}
	}
}

func TestRuntimeErrorsAreNeverCaught(t *testing.T) {
	work := &flaky{out: `{}`}
	def := `{"StartAt":"T","States":{
		"T":{"Type":"Task","Resource":"Work","Parameters":{"id.$":"$.missing"},
			"Retry":[{"ErrorEquals":["States.ALL"]}],"Catch":[{"ErrorEquals":["States.ALL"],"Next":"Recover"}],"End":true},
		"Recover":{"Type":"Pass","End":true}}}`
	res := runDef(t, def, Options{Handlers: map[string]Handler{"Work": work.handle}}, `{}`)
	if res.Status != StatusFailed || res.Error != StatesRuntime {
		t.Errorf("Run() = %s %q, want FAILED States.Runtime", res.Status, res.Error)
	}
	if !strings.Contains(res.Cause, "An error occurred while executing the state 'T'") {
		t.Errorf("Run() cause = %q, want it to name state T", res.Cause)
	}
	if work.callCount() != 0 || len(res.History) != 1 {
		t.Errorf("handler called %d times with %d transitions, want 0 and 1", work.callCount(), len(res.History))
	}
}

func TestPayloadLimit(t *testing.T) {
	big := func(n int) Handler {
		return func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return json.Marshal(strings.Repeat("x", n))
		}
	}
	tests := []struct {
		name      string
		size      int
		catch     string
		want      Status
		wantError string
	}{
		{"at the limit", MaxPayloadBytes - 2, "", StatusSucceeded, ""},
		{"one byte over", MaxPayloadBytes - 1, "", StatusFailed, StatesDataLimitExceeded},
		{"States.ALL does not catch it", MaxPayloadBytes, `[{"ErrorEquals":["States.ALL"],"Next":"Recover"}]`, StatusFailed, StatesDataLimitExceeded},
		{"a catcher naming it does", MaxPayloadBytes, `[{"ErrorEquals":["States.DataLimitExceeded"],"Next":"Recover"}]`, StatusSucceeded, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"Work","End":true` +
				map[bool]string{true: `,"Catch":` + tt.catch, false: ""}[tt.catch != ""] + `},"Recover":{"Type":"Pass","End":true}}}`
			if tt.catch == "" {
				def = strings.Replace(def, `,"Recover":{"Type":"Pass","End":true}`, "", 1)
			}
			res := runDef(t, def, Options{Handlers: map[string]Handler{"Work": big(tt.size)}}, `{}`)
			if res.Status != tt.want || res.Error != tt.wantError {
				t.Errorf("Run() with a %d byte result = %s %q, want %s %q", tt.size+2, res.Status, res.Error, tt.want, tt.wantError)
			}
		})
	}
	t.Run("execution input", func(t *testing.T) {
		r := mustNew(t, passDef(`"Comment":"x"`), Options{})
		in := fmt.Sprintf(`{"x":%q}`, strings.Repeat("y", MaxPayloadBytes))
		if _, err := r.Start(context.Background(), "big", json.RawMessage(in)); err == nil {
			t.Errorf("Start() with %d bytes of input = nil error, want one", len(in))
		}
	})
}
