package asl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefinitionErrors(t *testing.T) {
	pass := `{"Type":"Pass","End":true}`
	tests := []struct {
		name, def string
		want      []string
	}{
		{"not JSON", `{"StartAt":`, []string{"not JSON"}},
		{"missing StartAt", `{"States":{"A":` + pass + `}}`, []string{"/StartAt: is required"}},
		{"StartAt names no state", `{"StartAt":"B","States":{"A":` + pass + `}}`, []string{`/StartAt: names no state: "B"`}},
		{"no states", `{"StartAt":"A","States":{}}`, []string{"/States: must be a non-empty object"}},
		{"unknown type", `{"StartAt":"A","States":{"A":{"Type":"Sleep","End":true}}}`, []string{`/States/A/Type: unknown state type "Sleep"`}},
		{"missing Next and End", `{"StartAt":"A","States":{"A":{"Type":"Pass"}}}`, []string{`/States/A: needs Next or "End": true`}},
		{"both Next and End", `{"StartAt":"A","States":{"A":{"Type":"Pass","Next":"A","End":true}}}`, []string{"/States/A: has both Next and End"}},
		{"Next to a missing state", `{"StartAt":"A","States":{"A":{"Type":"Pass","Next":"Nowhere"}}}`, []string{`/States/A: transition to "Nowhere"`}},
		{"Catch Next to a missing state", `{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"x","End":true,
			"Catch":[{"ErrorEquals":["States.ALL"],"Next":"Gone"}]}}}`, []string{`transition to "Gone"`}},
		{"States.ALL not last in Retry", `{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"x","End":true,
			"Retry":[{"ErrorEquals":["States.ALL"]},{"ErrorEquals":["E"]}]}}}`, []string{"/States/A/Retry/0: a retrier with States.ALL must be the last one"}},
		{"States.ALL not alone", `{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"x","End":true,
			"Catch":[{"ErrorEquals":["E","States.ALL"],"Next":"A"}]}}}`, []string{"/States/A/Catch/0/ErrorEquals: States.ALL must appear alone"}},
		{"bad retrier fields", `{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"x","End":true,
			"Retry":[{"ErrorEquals":["E"],"IntervalSeconds":0,"BackoffRate":0.5,"MaxAttempts":-1,"JitterStrategy":"SOME"}]}}}`,
			[]string{"IntervalSeconds: must be an integer", "BackoffRate: must be a number of at least 1.0", "MaxAttempts: must be an integer", "JitterStrategy: must be FULL or NONE"}},
		{"unreachable state", `{"StartAt":"A","States":{"A":` + pass + `,"B":` + pass + `}}`, []string{"/States/B: state is not reachable"}},
		{"unknown field", `{"StartAt":"A","States":{"A":{"Type":"Task","Resouce":"x","End":true}}}`,
			[]string{"/States/A/Resource: is required", "/States/A/Resouce: field is not supported in a Task state"}},
		{"Choice with End", `{"StartAt":"A","States":{"A":{"Type":"Choice","End":true,"Choices":[{"Variable":"$.x","IsNull":true,"Next":"A"}]}}}`,
			[]string{"a Choice state transitions only through Choices and Default"}},
		{"choice rule problems", `{"StartAt":"A","States":{"A":{"Type":"Choice","Choices":[
			{"Variable":"$.x","NumericEquals":"1","Next":"A"},
			{"Variable":"$.x","StringEquals":"a"},
			{"And":[{"Variable":"$.x","IsNull":true,"Next":"A"}],"Next":"A"},
			{"Variable":"$.x","Frobnicates":1,"Next":"A"}]}}}`,
			[]string{"Choices/0/NumericEquals: must be a number", "Choices/1: a top-level choice rule needs Next",
				"Choices/2/And/0/Next: only top-level choice rules may have Next", "Choices/3/Frobnicates: unknown field"}},
		{"Wait needs one time", `{"StartAt":"A","States":{"A":{"Type":"Wait","Seconds":1,"SecondsPath":"$.s","End":true}}}`,
			[]string{"needs exactly one of Seconds"}},
		{"bad paths", `{"StartAt":"A","States":{"A":{"Type":"Pass","InputPath":"$..x","ResultPath":"$.a[*]","End":true}}}`,
			[]string{"/States/A/InputPath: path \"$..x\": deep scan", "/States/A/ResultPath: \"$.a[*]\" must be a reference path"}},
		{"bad Parameters", `{"StartAt":"A","States":{"A":{"Type":"Pass","Parameters":{"a.$":"x","b.$":3},"End":true}}}`,
			[]string{`/States/A/Parameters/a.$: "x" is neither a path nor an intrinsic function`, "/States/A/Parameters/b.$: the value of a field ending in '.$' must be a string"}},
		{"Map problems", `{"StartAt":"A","States":{"A":{"Type":"Map","ItemReader":{},"ItemProcessor":{"ProcessorConfig":{"Mode":"DISTRIBUTED"},
			"StartAt":"B","States":{"B":` + pass + `}},"End":true}}}`,
			[]string{"/States/A/ItemReader: distributed Map features are not supported", `only INLINE Map states are supported, not "DISTRIBUTED"`}},
		{"Map without processor", `{"StartAt":"A","States":{"A":{"Type":"Map","End":true}}}`, []string{"needs an ItemProcessor"}},
		{"duplicate names across scopes", `{"StartAt":"A","States":{"A":{"Type":"Parallel","End":true,"Branches":[
			{"StartAt":"A","States":{"A":` + pass + `}}]}}}`, []string{"state name is already used"}},
		{"JSONata", `{"QueryLanguage":"JSONata","StartAt":"A","States":{"A":` + pass + `}}`, []string{"only JSONPath is supported"}},
		{"Fail with Cause and CausePath", `{"StartAt":"A","States":{"A":{"Type":"Fail","Cause":"x","CausePath":"$.c"}}}`, []string{"has both Cause and CausePath"}},
		{"callback tasks", `{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"arn:aws:states:::lambda:invoke.waitForTaskToken","End":true}}}`,
			[]string{"callback and .sync integration patterns are not supported"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate([]byte(tt.def))
			var de *DefinitionError
			if !errors.As(err, &de) {
				t.Fatalf("Validate() = %v, want a *DefinitionError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant a problem containing %q", err, w)
				}
			}
			if len(de.Problems) < len(tt.want) {
				t.Errorf("Validate() reported %d problems, want at least %d: %q", len(de.Problems), len(tt.want), de.Problems)
			}
		})
	}
}

func TestNewNeedsHandlers(t *testing.T) {
	def := `{"StartAt":"A","States":{
		"A":{"Type":"Task","Resource":"arn:aws:lambda:us-east-1:123456789012:function:launch","Next":"B"},
		"B":{"Type":"Task","Resource":"arn:aws:states:::lambda:invoke","Parameters":{"FunctionName":"provision"},"Next":"C"},
		"C":{"Type":"Task","Resource":"arn:aws:states:::lambda:invoke","Parameters":{"FunctionName.$":"$.fn"},"End":true}}}`
	if err := Validate([]byte(def)); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	_, err := New([]byte(def), Options{Handlers: map[string]Handler{"other": echo}})
	for _, want := range []string{`state "A": no handler for "arn:aws:lambda:us-east-1:123456789012:function:launch"`, `state "B": no handler for "provision"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New() = %v, want a problem containing %q", err, want)
		}
	}
	if _, err := New([]byte(def), Options{Handlers: map[string]Handler{"launch": echo, "provision": echo}}); err != nil {
		t.Errorf("New() with both handlers = %v, want nil", err)
	}
}

func TestStartNames(t *testing.T) {
	r := mustNew(t, passDef(`"Comment":"x"`), Options{})
	e, err := r.Start(context.Background(), "", nil)
	if err != nil {
		t.Fatalf("Start() with no name = %v", err)
	}
	if res := e.Wait(); len(res.Name) != 36 || !strings.HasSuffix(res.ARN, ":execution:kiln-local:"+res.Name) {
		t.Errorf("Start() with no name gave name %q, ARN %q; want a UUID name", res.Name, res.ARN)
	}
	for _, bad := range []string{"has space", strings.Repeat("x", 81), "a/b"} {
		if _, err := r.Start(context.Background(), bad, nil); err == nil {
			t.Errorf("Start(%q) = nil error, want one", bad)
		}
	}
	if _, err := r.Start(context.Background(), "ok", json.RawMessage(`{bad`)); err == nil {
		t.Errorf("Start() with bad JSON input = nil error, want one")
	}
}

func TestCancellation(t *testing.T) {
	tests := []struct {
		name     string
		def      string
		handler  Handler
		waiters  int
		stop     bool
		wantLast string
	}{
		{"during a Wait", `{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":3600,"Next":"After"},"After":{"Type":"Pass","End":true}}}`,
			nil, 1, false, "W"},
		{"during a retry interval", taskDef(`[{"ErrorEquals":["States.ALL"],"IntervalSeconds":600}]`, ""),
			func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, errPlain }, 1, false, "T"},
		{"during a task", `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"Work","TimeoutSeconds":900,"End":true}}}`,
			func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			}, 1, false, "T"},
		{"by Stop", `{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":3600,"End":true}}}`, nil, 1, true, "W"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := NewFakeClock(t0)
			opts := Options{Clock: clock}
			if tt.handler != nil {
				opts.Handlers = map[string]Handler{"Work": tt.handler}
			}
			r := mustNew(t, tt.def, opts)
			safety, done := context.WithTimeout(context.Background(), 10*time.Second)
			defer done()
			ctx, cancel := context.WithCancel(safety)
			defer cancel()
			e, err := r.Start(ctx, "cancel-me", nil)
			if err != nil {
				t.Fatalf("Start() = %v", err)
			}
			if err := clock.WaitForWaiters(safety, tt.waiters); err != nil {
				t.Fatalf("WaitForWaiters() = %v", err)
			}
			if tt.stop {
				e.Stop()
			} else {
				cancel()
			}
			select {
			case <-e.Done():
			case <-safety.Done():
				t.Fatalf("execution did not stop after cancellation")
			}
			res := e.Wait()
			if res.Status != StatusAborted {
				t.Errorf("Run() status = %s (%s), want ABORTED", res.Status, res.Error)
			}
			if got := res.History[len(res.History)-1].State; got != tt.wantLast {
				t.Errorf("last state = %q, want %q", got, tt.wantLast)
			}
			if clock.Now() != t0 {
				t.Errorf("clock moved to %v; cancellation must not need time to pass", clock.Now())
			}
		})
	}
}

func TestExecutionTimeout(t *testing.T) {
	def := `{"TimeoutSeconds":60,"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":120,"End":true}}}`
	clock := NewFakeClock(t0)
	r := mustNew(t, def, Options{Clock: clock})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := r.Start(ctx, "slow", nil)
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	if err := clock.WaitForWaiters(ctx, 2); err != nil {
		t.Fatalf("WaitForWaiters() = %v", err)
	}
	clock.Advance(60 * time.Second)
	res := e.Wait()
	if res.Status != StatusTimedOut || res.Error != StatesTimeout {
		t.Errorf("Run() = %s %q, want TIMED_OUT States.Timeout", res.Status, res.Error)
	}
	if d := res.StopTime.Sub(res.StartTime); d != 60*time.Second {
		t.Errorf("execution ran %v, want 60s", d)
	}
}

func TestTimeScale(t *testing.T) {
	def := `{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":30,"Next":"T"},
		"T":{"Type":"Task","Resource":"Work","Retry":[{"ErrorEquals":["States.ALL"],"IntervalSeconds":10}],"End":true}}}`
	t.Run("fake clock", func(t *testing.T) {
		base := autoClock()
		work := &flaky{n: 1, err: errPlain, out: `{}`}
		res := runDef(t, def, Options{Clock: base, TimeScale: 0.01, Handlers: map[string]Handler{"Work": work.handle}}, `{}`)
		succeeded(t, res)
		if got, want := base.Now().Sub(t0), 400*time.Millisecond; got != want {
			t.Errorf("underlying clock moved %v, want %v (30 s wait and 10 s retry at 0.01)", got, want)
		}
		if got, want := res.StopTime.Sub(res.StartTime), 40*time.Second; got != want {
			t.Errorf("execution took %v on its own timeline, want %v", got, want)
		}
		if got := res.History[0].Duration; got != 30*time.Second {
			t.Errorf("Wait took %v in the history, want 30s", got)
		}
	})
	t.Run("wall clock", func(t *testing.T) {
		work := &flaky{out: `{}`}
		start := time.Now()
		res := runDef(t, def, Options{Clock: RealClock{}, TimeScale: 0.001, Handlers: map[string]Handler{"Work": work.handle}}, `{}`)
		succeeded(t, res)
		if real := time.Since(start); real > 5*time.Second {
			t.Errorf("a 30 s wait at scale 0.001 took %v of real time", real)
		}
		if got := res.History[0].Duration; got < 30*time.Second {
			t.Errorf("Wait took %v in the history, want at least 30s", got)
		}
	})
}

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu      sync.Mutex
	notices []Notice
}

func (r *recorder) Observe(n Notice) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notices = append(r.notices, n)
}

func TestObserver(t *testing.T) {
	def := `{"StartAt":"T","States":{
		"T":{"Type":"Task","Resource":"Work","Retry":[{"ErrorEquals":["States.ALL"],"MaxAttempts":1}],
			"Catch":[{"ErrorEquals":["States.ALL"],"Next":"W"}],"Next":"W"},
		"W":{"Type":"Wait","Seconds":5,"End":true}}}`
	rec := &recorder{}
	work := &flaky{n: 2, err: errPlain}
	res := runDef(t, def, Options{Observer: rec, Handlers: map[string]Handler{"Work": work.handle}}, `{}`)
	succeeded(t, res)
	var got []string
	for _, n := range rec.notices {
		s := n.Kind.String()
		if n.State != "" {
			s += " " + n.State
		}
		switch n.Kind {
		case Retrying, WaitStarted:
			s += " " + n.Duration.String()
		case Caught:
			s += " -> " + n.Next
		case TaskEnded, StateExited:
			if n.Error != "" {
				s += " " + n.Error
			}
		case ExecutionEnded:
			s += " " + string(n.Status)
		}
		got = append(got, s)
	}
	want := []string{
		"StateEntered T", "TaskStarted T", "TaskEnded T errorString", "StateExited T errorString", "Retrying T 1s",
		"StateEntered T", "TaskStarted T", "TaskEnded T errorString", "StateExited T errorString", "Caught T -> W",
		"StateEntered W", "WaitStarted W 5s", "StateExited W",
		"ExecutionEnded SUCCEEDED",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("notices mismatch (-want +got):\n%s", diff)
	}
}

func ExampleRunner_Run() {
	def := []byte(`{
	  "StartAt": "Greet",
	  "States": {
	    "Greet": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
	      "Parameters": {"FunctionName": "greet", "Payload": {"name.$": "$.name"}},
	      "OutputPath": "$.Payload", "End": true}
	  }
	}`)
	greet := Typed(func(_ context.Context, in struct{ Name string }) (string, error) {
		return "hello, " + in.Name, nil
	})
	r, err := New(def, Options{Handlers: map[string]Handler{"greet": greet}})
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := r.Run(context.Background(), "example", json.RawMessage(`{"name":"kiln"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	rep := res.Report(Pricing{})
	fmt.Println(res.Status, string(res.Output), rep.Transitions, rep.Invocations)
	// Output: SUCCEEDED "hello, kiln" 1 1
}
