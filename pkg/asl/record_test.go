package asl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// recordDef runs def with a Recorder and returns the result and recording.
func recordDef(t *testing.T, def string, opts Options, input string) (*Result, Recording) {
	t.Helper()
	rec := NewRecorder()
	res := runDef(t, def, rec.Options(opts), input)
	return res, rec.Recording(res)
}

// rawEqual compares JSON fields as values for cmp.
var rawEqual = cmp.Comparer(func(a, b json.RawMessage) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return string(a) == string(b)
	}
	return cmp.Equal(va, vb)
})

func TestRecorderCalls(t *testing.T) {
	def := `{"StartAt":"Plan","States":{
		"Plan":{"Type":"Task","Resource":"arn:aws:lambda:us-east-1:123456789012:function:launch",
			"Parameters":{"action":"plan","state.$":"$"},"Next":"Check"},
		"Check":{"Type":"Task","Resource":"Work","Parameters":{"id.$":"$.id"},"ResultPath":"$.check",
			"Retry":[{"ErrorEquals":["NotReadyError"],"MaxAttempts":1,"IntervalSeconds":5}],
			"Catch":[{"ErrorEquals":["States.ALL"],"ResultPath":"$.error","Next":"Failed"}],"End":true},
		"Failed":{"Type":"Fail","ErrorPath":"$.error.Error","CausePath":"$.error.Cause"}}}`
	plan := func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`{"id":"b-1","planned":true}`), nil
	}
	work := &flaky{n: 5, err: NotReadyError{What: "image"}}
	res, got := recordDef(t, def, Options{Handlers: map[string]Handler{
		"arn:aws:lambda:us-east-1:123456789012:function:launch": plan,
		"Work": work.handle,
	}}, `{"recipe":"r"}`)

	cause := `{"errorMessage":"image is not ready","errorType":"NotReadyError"}`
	want := Recording{
		Name:  "test",
		ARN:   res.ARN,
		Input: json.RawMessage(`{"recipe":"r"}`),
		Calls: []Call{
			{
				State: "Plan", Resource: "arn:aws:lambda:us-east-1:123456789012:function:launch",
				Input:  json.RawMessage(`{"action":"plan","state":{"recipe":"r"}}`),
				Output: json.RawMessage(`{"id":"b-1","planned":true}`),
			},
			{State: "Check", Resource: "Work", Input: json.RawMessage(`{"id":"b-1"}`), Error: "NotReadyError", Cause: cause},
			{State: "Check", Resource: "Work", Input: json.RawMessage(`{"id":"b-1"}`), Error: "NotReadyError", Cause: cause},
		},
		Path:   Path{{State: "Plan"}, {State: "Check"}, {State: "Check", Retry: 1}, {State: "Failed"}},
		Status: StatusFailed,
		Error:  "NotReadyError",
		Cause:  cause,
	}
	if diff := cmp.Diff(want, got, rawEqual); diff != "" {
		t.Errorf("Recording() mismatch (-want +got):\n%s", diff)
	}

	b, err := json.Marshal(got)
	if err != nil {
		t.Fatalf("json.Marshal(Recording) = %v", err)
	}
	var back Recording
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("json.Unmarshal(%s) = %v", b, err)
	}
	if diff := cmp.Diff(got, back, rawEqual); diff != "" {
		t.Errorf("Recording JSON round trip mismatch (-before +after):\n%s", diff)
	}
}

// TestRecorderConcurrentMap checks that calls of one handler from
// concurrent Map iterations are each put down to their own iteration.
func TestRecorderConcurrentMap(t *testing.T) {
	const items = 30
	def := `{"StartAt":"M","States":{"M":{"Type":"Map","ItemSelector":{"i.$":"$$.Map.Item.Index"},
		"ItemProcessor":{"StartAt":"A","States":{
			"A":{"Type":"Task","Resource":"Work","Next":"B"},
			"B":{"Type":"Task","Resource":"Work","End":true}}},"End":true}}}`
	work := func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		time.Sleep(time.Millisecond) // let iterations overlap
		return in, nil
	}
	input := make([]int, items)
	b, _ := json.Marshal(input)
	_, rec := recordDef(t, def, Options{Handlers: map[string]Handler{"Work": work}}, string(b))
	if len(rec.Calls) != 2*items {
		t.Fatalf("recorded %d calls, want %d", len(rec.Calls), 2*items)
	}
	seen := map[string]int{}
	for _, c := range rec.Calls {
		var in struct{ I int }
		if err := json.Unmarshal(c.Input, &in); err != nil {
			t.Fatalf("call input %s: %v", c.Input, err)
		}
		if want := "M[" + strconv.Itoa(in.I) + "]"; c.Scope != want {
			t.Errorf("call of %s with input %s has scope %q, want %q", c.State, c.Input, c.Scope, want)
		}
		if seen[c.Scope] == 0 && c.State != "A" || seen[c.Scope] == 1 && c.State != "B" {
			t.Errorf("call %d in %s is of %s, want A then B", seen[c.Scope]+1, c.Scope, c.State)
		}
		seen[c.Scope]++
	}
	if len(rec.Path) != 1 || len(rec.Path[0].Branches) != items {
		t.Fatalf("Path = %v, want M with %d iterations", rec.Path, items)
	}
	for i, b := range rec.Path[0].Branches {
		if diff := cmp.Diff(Path{{State: "A"}, {State: "B"}}, b); diff != "" {
			t.Errorf("Path iteration %d mismatch (-want +got):\n%s", i, diff)
		}
	}
}

func TestRecorderTimeoutAndAbort(t *testing.T) {
	def := `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"Work","TimeoutSeconds":10,"End":true}}}`
	t.Run("timeout", func(t *testing.T) {
		clock := autoClock()
		slow := func(context.Context, json.RawMessage) (json.RawMessage, error) {
			clock.Advance(20 * time.Second)
			return json.RawMessage(`"late"`), nil
		}
		_, rec := recordDef(t, def, Options{Clock: clock, Handlers: map[string]Handler{"Work": slow}}, `{}`)
		if len(rec.Calls) != 1 || rec.Calls[0].Error != StatesTimeout || rec.Calls[0].Output != nil {
			t.Errorf("Recording().Calls = %+v, want one call failed with States.Timeout and no output", rec.Calls)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		started := make(chan struct{})
		hang := func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		}
		rec := NewRecorder()
		r := mustNew(t, def, rec.Options(Options{Handlers: map[string]Handler{"Work": hang}}))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e, err := r.Start(ctx, "stop", nil)
		if err != nil {
			t.Fatalf("Start() = %v", err)
		}
		<-started
		e.Stop()
		got := rec.Recording(e.Wait())
		if got.Status != StatusAborted || len(got.Calls) != 1 || !got.Calls[0].Aborted {
			t.Errorf("Recording() = %s with calls %+v, want ABORTED with one aborted call", got.Status, got.Calls)
		}
	})
}

func TestRecorderKeepsObserver(t *testing.T) {
	var mu sync.Mutex
	var kinds []NoticeKind
	obs := ObserverFunc(func(n Notice) {
		mu.Lock()
		defer mu.Unlock()
		kinds = append(kinds, n.Kind)
	})
	def := `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"Work","End":true}}}`
	recordDef(t, def, Options{Observer: obs, Handlers: map[string]Handler{"Work": echo}}, `{}`)
	want := []NoticeKind{StateEntered, TaskStarted, TaskEnded, StateExited, ExecutionEnded}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("Observer saw (-want +got):\n%s", diff)
	}
}

func TestRecordedHandlerOutsideRunner(t *testing.T) {
	opts := NewRecorder().Options(Options{Handlers: map[string]Handler{"Work": echo}})
	if _, err := opts.Handlers["Work"](context.Background(), json.RawMessage(`{}`)); !errors.Is(err, errUnrecorded) {
		t.Errorf("wrapped handler called directly = %v, want errUnrecorded", err)
	}
}

func TestPathOf(t *testing.T) {
	ev := func(scope, state string, attempt int) Event {
		return Event{Scope: scope, State: state, Attempt: attempt}
	}
	tests := []struct {
		name    string
		history []Event
		want    []string
	}{
		{
			name:    "retries",
			history: []Event{ev("", "A", 0), ev("", "A", 1), ev("", "A", 2), ev("", "B", 0)},
			want:    []string{"A", "A (retry 1)", "A (retry 2)", "B"},
		},
		{
			name: "interleaved iterations",
			history: []Event{
				ev("", "M", 0), ev("M[1]", "X", 0), ev("M[0]", "X", 0), ev("M[0]", "Y", 0), ev("M[1]", "Y", 0),
				ev("", "After", 0),
			},
			want: []string{"M", "M[0]/X", "M[0]/Y", "M[1]/X", "M[1]/Y", "After"},
		},
		{
			name: "a Map entered twice",
			history: []Event{
				ev("", "M", 0), ev("M[0]", "X", 0), ev("", "Again?", 0),
				ev("", "M", 0), ev("M[0]", "X", 0), ev("M[1]", "X", 0),
			},
			want: []string{"M", "M[0]/X", "Again?", "M", "M[0]/X", "M[1]/X"},
		},
		{
			name: "a retried Map",
			history: []Event{
				ev("", "M", 0), ev("M[0]", "X", 0), ev("", "M", 1), ev("M[0]", "X", 0),
			},
			want: []string{"M", "M[0]/X", "M (retry 1)", "M[0]/X"},
		},
		{
			name: "nested, with odd names",
			history: []Event{
				ev("", "a/b[0]", 0), ev("a/b[0][1]", "Inner", 0), ev("a/b[0][1]/Inner[0]", "X", 0),
				ev("a/b[0][0]", "Inner", 0),
			},
			want: []string{"a/b[0]", "a/b[0][0]/Inner", "a/b[0][1]/Inner", "a/b[0][1]/Inner[0]/X"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, PathOf(tt.history).Lines()); diff != "" {
				t.Errorf("PathOf().Lines() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPathOfRun checks PathOf on a real run with a Parallel state and a
// nested Map.
func TestPathOfRun(t *testing.T) {
	def := `{"StartAt":"P","States":{"P":{"Type":"Parallel","End":true,"Branches":[
		{"StartAt":"One","States":{"One":{"Type":"Pass","End":true}}},
		{"StartAt":"Outer","States":{"Outer":{"Type":"Map","ItemsPath":"$.rows","End":true,
			"ItemProcessor":{"StartAt":"Inner","States":{"Inner":{"Type":"Map","End":true,
				"ItemProcessor":{"StartAt":"Cell","States":{"Cell":{"Type":"Pass","End":true}}}}}}}}}]}}}`
	res := runDef(t, def, Options{}, `{"rows":[[1,2],[3]]}`)
	want := []string{
		"P", "P[0]/One", "P[1]/Outer",
		"P[1]/Outer[0]/Inner", "P[1]/Outer[0]/Inner[0]/Cell", "P[1]/Outer[0]/Inner[1]/Cell",
		"P[1]/Outer[1]/Inner", "P[1]/Outer[1]/Inner[0]/Cell",
	}
	if diff := cmp.Diff(want, PathOf(res.History).Lines()); diff != "" {
		t.Errorf("PathOf().Lines() mismatch (-want +got):\n%s", diff)
	}
	if got := fmt.Sprint(PathOf(res.History)); got == "" {
		t.Errorf("Path.String() is empty")
	}
}
