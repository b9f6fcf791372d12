package asl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestErrorName(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"named value type", NotReadyError{"ssh"}, "NotReadyError"},
		{"pointer type", &QuotaError{Limit: 5}, "QuotaError"},
		{"errors.New", errPlain, "errorString"},
		{"fmt.Errorf without %w", fmt.Errorf("no wrap %d", 1), "errorString"},
		{"fmt.Errorf with %w", fmt.Errorf("create image %q: %w", "web", &QuotaError{}), "wrapError"},
		{"fmt.Errorf with two %w", fmt.Errorf("%w and %w", errPlain, &QuotaError{}), "wrapErrors"},
		{"errors.Join", errors.Join(errPlain, &QuotaError{}), "joinError"},
		{"context.Canceled", context.Canceled, "errorString"},
		{"context.DeadlineExceeded", context.DeadlineExceeded, "deadlineExceededError"},
		{"panic with a string", &PanicError{Value: "boom"}, "string"},
		{"panic with an error", &PanicError{Value: &QuotaError{}}, "QuotaError"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ErrorName(tt.err); got != tt.want {
				t.Errorf("ErrorName(%#v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestHandlerErrors(t *testing.T) {
	fail := func(err error) Handler {
		return func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, err }
	}
	tests := []struct {
		name      string
		h         Handler
		opts      Options
		wantError string
		wantCause string
	}{
		{"named type", fail(NotReadyError{"ssh"}), Options{}, "NotReadyError",
			`{"errorMessage":"ssh is not ready","errorType":"NotReadyError"}`},
		{"pointer type", fail(&QuotaError{}), Options{}, "QuotaError",
			`{"errorMessage":"quota exceeded","errorType":"QuotaError"}`},
		{"wrapped", fail(fmt.Errorf("create image %q: %w", "web", &QuotaError{})), Options{}, "wrapError",
			`{"errorMessage":"create image \"web\": quota exceeded","errorType":"wrapError"}`},
		{"joined", fail(errors.Join(errPlain, NotReadyError{"ssh"})), Options{}, "joinError",
			`{"errorMessage":"plain failure\nssh is not ready","errorType":"joinError"}`},
		{"escaped like the Lambda runtime", fail(errors.New("a < b & c")), Options{}, "errorString",
			`{"errorMessage":"a \u003c b \u0026 c","errorType":"errorString"}`},
		{"panic", func(context.Context, json.RawMessage) (json.RawMessage, error) { panic("boom") }, Options{}, "string",
			`{"errorMessage":"boom","errorType":"string"}`},
		{"nil dereference", func(context.Context, json.RawMessage) (json.RawMessage, error) {
			var q *QuotaError
			return nil, fmt.Errorf("%d", q.Limit)
		}, Options{}, "errorString",
			`{"errorMessage":"runtime error: invalid memory address or nil pointer dereference","errorType":"errorString"}`},
		{"custom naming", fail(fmt.Errorf("launch: %w", NotReadyError{"ssh"})), Options{ErrorName: func(err error) string {
			var nr NotReadyError
			if errors.As(err, &nr) {
				return "Kiln.NotReady"
			}
			return ErrorName(err)
		}}, "Kiln.NotReady", `{"errorMessage":"launch: ssh is not ready","errorType":"Kiln.NotReady"}`},
		{"invalid JSON output", constant(`{nope`), Options{}, StatesRuntime, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Handlers = map[string]Handler{"Work": tt.h}
			res := runDef(t, `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"Work","End":true}}}`, tt.opts, `{}`)
			if res.Status != StatusFailed || res.Error != tt.wantError {
				t.Fatalf("Run() = %s %q (%s), want FAILED %q", res.Status, res.Error, res.Cause, tt.wantError)
			}
			if tt.wantCause != "" && res.Cause != tt.wantCause {
				t.Errorf("Run() cause = %s, want %s", res.Cause, tt.wantCause)
			}
		})
	}
}

func TestPanicErrorKeepsStack(t *testing.T) {
	var got error
	opts := Options{
		Handlers: map[string]Handler{"Work": func(context.Context, json.RawMessage) (json.RawMessage, error) { panic(errPlain) }},
		ErrorName: func(err error) string {
			got = err
			return ErrorName(err)
		},
	}
	res := runDef(t, `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"Work","End":true}}}`, opts, `{}`)
	var p *PanicError
	if !errors.As(got, &p) || p.Value != errPlain || !strings.Contains(string(p.Stack), "panic") {
		t.Fatalf("ErrorName got %#v, want a *PanicError holding errPlain and a stack", got)
	}
	if res.Error != "errorString" {
		t.Errorf("Run() error = %q, want errorString", res.Error)
	}
}

func TestLambdaInvoke(t *testing.T) {
	var seen string
	launch := func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		seen = string(in)
		return json.RawMessage(`{"InstanceId":"i-1"}`), nil
	}
	def := `{"StartAt":"Launch","States":{"Launch":{"Type":"Task","Resource":"arn:aws:states:::lambda:invoke",
		"Parameters":{"FunctionName":"arn:aws:lambda:us-east-1:123456789012:function:kiln-launch:$LATEST","Payload":{"recipe.$":"$.recipe","n":1}},
		"End":true}}}`
	res := runDef(t, def, Options{Handlers: map[string]Handler{"kiln-launch": launch}}, `{"recipe":"web"}`)
	out := succeeded(t, res).(map[string]any)
	if diff := cmp.Diff(decoded(t, `{"recipe":"web","n":1}`), decoded(t, seen)); diff != "" {
		t.Errorf("lambda:invoke payload mismatch (-want +got):\n%s", diff)
	}
	meta := out["SdkHttpMetadata"].(map[string]any)
	headers := meta["HttpHeaders"].(map[string]any)
	reqID := out["SdkResponseMetadata"].(map[string]any)["RequestId"]
	checks := []struct {
		what      string
		got, want any
	}{
		{"Payload", out["Payload"], map[string]any{"InstanceId": "i-1"}},
		{"ExecutedVersion", out["ExecutedVersion"], "$LATEST"},
		{"StatusCode", out["StatusCode"], 200.0},
		{"HttpStatusCode", meta["HttpStatusCode"], 200.0},
		{"Content-Length", headers["Content-Length"], fmt.Sprint(len(`{"InstanceId":"i-1"}`))},
		{"Content-Type", headers["Content-Type"], "application/json"},
		{"x-amzn-RequestId", headers["x-amzn-RequestId"], reqID},
		{"AllHttpHeaders", meta["AllHttpHeaders"].(map[string]any)["x-amzn-RequestId"], []any{reqID}},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("lambda:invoke result %s mismatch (-want +got):\n%s", c.what, diff)
		}
	}
	if s, _ := reqID.(string); len(s) != 36 {
		t.Errorf("RequestId = %v, want a UUID", reqID)
	}
}

func TestLambdaInvokePayloadAndOutputPath(t *testing.T) {
	def := `{"StartAt":"Echo","States":{"Echo":{"Type":"Task","Resource":"arn:aws:states:::lambda:invoke",
		"Parameters":{"FunctionName":"${EchoFunctionArn}","Payload.$":"$"},
		"ResultSelector":{"body.$":"$.Payload"},"ResultPath":"$.echo","End":true}}}`
	res := runDef(t, def, Options{Handlers: map[string]Handler{"EchoFunctionArn": echo}}, `{"a":[1,2]}`)
	if diff := cmp.Diff(decoded(t, `{"a":[1,2],"echo":{"body":{"a":[1,2]}}}`), succeeded(t, res)); diff != "" {
		t.Errorf("output mismatch (-want +got):\n%s", diff)
	}
}

func TestLambdaInvokeUnknownFunction(t *testing.T) {
	def := `{"StartAt":"Call","States":{
		"Call":{"Type":"Task","Resource":"arn:aws:states:::lambda:invoke","Parameters":{"FunctionName.$":"$.fn"},
			"Catch":[{"ErrorEquals":["Lambda.ResourceNotFoundException"],"Next":"Missing"}],"End":true},
		"Missing":{"Type":"Pass","End":true}}}`
	res := runDef(t, def, Options{Handlers: map[string]Handler{"known": echo}}, `{"fn":"unknown"}`)
	got := succeeded(t, res).(map[string]any)
	if got["Error"] != LambdaResourceNotFound {
		t.Errorf("caught %v, want %s", got, LambdaResourceNotFound)
	}
	if res.History[0].Invoked {
		t.Errorf("History[0].Invoked = true for a function that does not exist")
	}
}

func TestDirectResourceNames(t *testing.T) {
	tests := []struct{ resource, key string }{
		{"Launch", "Launch"},
		{"arn:aws:lambda:us-east-1:123456789012:function:Launch", "Launch"},
		{"${Launch}", "Launch"},
		{"arn:aws:lambda:us-east-1:123456789012:function:Launch", "arn:aws:lambda:eu-west-1:999999999999:function:Launch"},
	}
	for _, tt := range tests {
		t.Run(tt.resource+" via "+tt.key, func(t *testing.T) {
			def := `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"` + tt.resource + `","End":true}}}`
			res := runDef(t, def, Options{Handlers: map[string]Handler{tt.key: constant(`"hi"`)}}, `{}`)
			if got := succeeded(t, res); got != "hi" {
				t.Errorf("Run() output = %v, want hi", got)
			}
			if res.History[0].Resource != tt.key {
				t.Errorf("History[0].Resource = %q, want %q", res.History[0].Resource, tt.key)
			}
		})
	}
}

func TestHandlerJSONRoundTrip(t *testing.T) {
	var seen string
	h := func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		seen = string(in)
		// A handler that scribbles on its input must not change the state.
		for i := range in {
			in[i] = ' '
		}
		return nil, nil
	}
	def := `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"Work","ResultPath":"$.r","End":true}}}`
	res := runDef(t, def, Options{Handlers: map[string]Handler{"Work": h}}, `{ "big": 12345678901234567890, "f": 1.50, "html": "<a&b>" }`)
	if want := `{"big":12345678901234567890,"f":1.50,"html":"<a&b>"}`; seen != want {
		t.Errorf("handler input = %s, want %s", seen, want)
	}
	if want := `{"big":12345678901234567890,"f":1.50,"html":"<a&b>","r":null}`; string(res.Output) != want {
		t.Errorf("Run() output = %s, want %s", res.Output, want)
	}
}

func TestTyped(t *testing.T) {
	type in struct{ Name string }
	h := Typed(func(_ context.Context, i in) (map[string]string, error) {
		return map[string]string{"hello": i.Name}, nil
	})
	def := `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"Hello","End":true}}}`
	if got := succeeded(t, runDef(t, def, Options{Handlers: map[string]Handler{"Hello": h}}, `{"Name":"kiln"}`)); !cmp.Equal(got, map[string]any{"hello": "kiln"}) {
		t.Errorf("Run() output = %v, want hello: kiln", got)
	}
	res := runDef(t, def, Options{Handlers: map[string]Handler{"Hello": h}}, `{"Name":7}`)
	if res.Error != "UnmarshalTypeError" {
		t.Errorf("Run() with a bad input = %s %q, want FAILED UnmarshalTypeError", res.Status, res.Error)
	}
}

func TestTaskTimeout(t *testing.T) {
	def := `{"StartAt":"T","States":{
		"T":{"Type":"Task","Resource":"Work","TimeoutSeconds":10,
			"Catch":[{"ErrorEquals":["States.TaskFailed"],"Next":"Failed"},{"ErrorEquals":["States.ALL"],"Next":"TimedOut"}],"End":true},
		"Failed":{"Type":"Pass","End":true},
		"TimedOut":{"Type":"Pass","End":true}}}`
	t.Run("handler that hangs", func(t *testing.T) {
		clock := NewFakeClock(t0)
		stopped := make(chan struct{})
		hang := func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			<-ctx.Done()
			close(stopped)
			return nil, ctx.Err()
		}
		r := mustNew(t, def, Options{Clock: clock, Handlers: map[string]Handler{"Work": hang}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e, err := r.Start(ctx, "hang", nil)
		if err != nil {
			t.Fatalf("Start() = %v", err)
		}
		if err := clock.WaitForWaiters(ctx, 1); err != nil {
			t.Fatalf("WaitForWaiters() = %v", err)
		}
		clock.Advance(9 * time.Second)
		select {
		case <-e.Done():
			t.Fatalf("execution ended after 9 s of a 10 s timeout: %+v", e.Wait())
		default:
		}
		clock.Advance(time.Second)
		got := succeeded(t, e.Wait()).(map[string]any)
		if got["Error"] != StatesTimeout {
			t.Errorf("caught %v, want States.Timeout via the States.ALL catcher", got)
		}
		select {
		case <-stopped:
		case <-ctx.Done():
			t.Errorf("the timed-out handler's context was not cancelled")
		}
	})
	tests := []struct {
		name  string
		takes time.Duration
		want  string
	}{
		{"handler that takes 9 s", 9 * time.Second, ""},
		{"handler that takes 20 s", 20 * time.Second, StatesTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := autoClock()
			slow := func(context.Context, json.RawMessage) (json.RawMessage, error) {
				clock.Advance(tt.takes)
				return json.RawMessage(`"done"`), nil
			}
			res := runDef(t, def, Options{Clock: clock, Handlers: map[string]Handler{"Work": slow}}, `{}`)
			out := succeeded(t, res)
			var got string
			if m, ok := out.(map[string]any); ok {
				got, _ = m["Error"].(string)
			}
			if got != tt.want {
				t.Errorf("Run() caught %q, want %q (output %v)", got, tt.want, out)
			}
			if d := res.History[0].TaskDuration; d != tt.takes {
				t.Errorf("History[0].TaskDuration = %v, want %v", d, tt.takes)
			}
		})
	}
	t.Run("TimeoutSecondsPath", func(t *testing.T) {
		clock := autoClock()
		slow := func(context.Context, json.RawMessage) (json.RawMessage, error) {
			clock.Advance(6 * time.Second)
			return nil, nil
		}
		def := `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"Work","TimeoutSecondsPath":"$.timeout","End":true}}}`
		res := runDef(t, def, Options{Clock: clock, Handlers: map[string]Handler{"Work": slow}}, `{"timeout":5}`)
		if res.Status != StatusFailed || res.Error != StatesTimeout {
			t.Errorf("Run() = %s %q, want FAILED States.Timeout", res.Status, res.Error)
		}
	})
}
