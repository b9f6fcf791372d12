package asl

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// passDef is a one-state machine made of the given Pass state fields.
func passDef(fields string) string {
	return `{"StartAt":"P","States":{"P":{"Type":"Pass",` + fields + `,"End":true}}}`
}

func TestPassAndPathProcessing(t *testing.T) {
	input := `{"a":{"b":1,"list":[1,2]},"keep":true}`
	tests := []struct {
		name, fields, want string
	}{
		{"passes input through", `"Comment":"noop"`, input},
		{"Result replaces input", `"Result":{"x":1}`, `{"x":1}`},
		{"Result at ResultPath", `"Result":"r","ResultPath":"$.r"`, `{"a":{"b":1,"list":[1,2]},"keep":true,"r":"r"}`},
		{"Parameters", `"Parameters":{"v.$":"$.a.b","lit":"x","deep":{"l.$":"$.a.list"},"arr":[{"k.$":"$.keep"},"plain"]}`,
			`{"v":1,"lit":"x","deep":{"l":[1,2]},"arr":[{"k":true},"plain"]}`},
		{"InputPath then Parameters", `"InputPath":"$.a","Parameters":{"v.$":"$.b"}`, `{"v":1}`},
		{"ResultPath merges into the raw input, not the InputPath view",
			`"InputPath":"$.a","Parameters":{"v.$":"$.b"},"ResultPath":"$.res"`,
			`{"a":{"b":1,"list":[1,2]},"keep":true,"res":{"v":1}}`},
		{"OutputPath applies last", `"InputPath":"$.a","Parameters":{"v.$":"$.b"},"ResultPath":"$.res","OutputPath":"$.res.v"`, `1`},
		{"ResultPath null discards the result", `"Result":"ignored","ResultPath":null`, input},
		{"ResultPath $ replaces", `"Result":[1],"ResultPath":"$"`, `[1]`},
		{"nested ResultPath creates objects", `"Result":1,"ResultPath":"$.x.y.z"`, `{"a":{"b":1,"list":[1,2]},"keep":true,"x":{"y":{"z":1}}}`},
		{"ResultPath into an existing object", `"Result":9,"ResultPath":"$.a.c"`, `{"a":{"b":1,"c":9,"list":[1,2]},"keep":true}`},
		{"InputPath null gives {}", `"InputPath":null,"Parameters":{"x.$":"$"}`, `{"x":{}}`},
		{"OutputPath null gives {}", `"OutputPath":null`, `{}`},
		{"wildcard OutputPath", `"OutputPath":"$.a.list[*]"`, `[1,2]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := succeeded(t, runDef(t, passDef(tt.fields), Options{}, input))
			if diff := cmp.Diff(decoded(t, tt.want), got); diff != "" {
				t.Errorf("Pass {%s} mismatch (-want +got):\n%s", tt.fields, diff)
			}
		})
	}
}

func TestPathRuntimeErrors(t *testing.T) {
	tests := []struct {
		name, fields, want, cause string
	}{
		{"InputPath", `"InputPath":"$.missing"`, StatesRuntime, "Invalid path '$.missing'"},
		{"OutputPath", `"OutputPath":"$.missing"`, StatesRuntime, "Invalid path '$.missing'"},
		{"Parameters", `"Parameters":{"x.$":"$.missing"}`, StatesRuntime, "The JSONPath '$.missing' specified for the field 'x.$' could not be found"},
		{"ResultPath into a string", `"Result":1,"ResultPath":"$.s.x"`, StatesResultPathMatchFailure, "Unable to apply ResultPath '$.s.x'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runDef(t, passDef(tt.fields), Options{}, `{"s":"str"}`)
			if res.Status != StatusFailed || res.Error != tt.want || !strings.Contains(res.Cause, tt.cause) {
				t.Errorf("Run() = %s %q %q, want FAILED %q with a cause containing %q", res.Status, res.Error, res.Cause, tt.want, tt.cause)
			}
		})
	}
}

func TestContextObject(t *testing.T) {
	def := `{"StartAt":"First","States":{
		"First":{"Type":"Wait","Seconds":5,"Next":"P"},
		"P":{"Type":"Pass","Parameters":{
			"name.$":"$$.Execution.Name","id.$":"$$.Execution.Id","input.$":"$$.Execution.Input",
			"start.$":"$$.Execution.StartTime","state.$":"$$.State.Name","entered.$":"$$.State.EnteredTime",
			"retries.$":"$$.State.RetryCount","sm.$":"$$.StateMachine.Id"},"End":true}}}`
	got := succeeded(t, runDef(t, def, Options{StateMachineARN: "arn:aws:states:eu-west-1:111122223333:stateMachine:bake"}, `{"in":1}`))
	want := map[string]any{
		"name":    "test",
		"id":      "arn:aws:states:eu-west-1:111122223333:execution:bake:test",
		"input":   map[string]any{"in": 1.0},
		"start":   "2024-05-01T12:00:00.000Z",
		"state":   "P",
		"entered": "2024-05-01T12:00:05.000Z",
		"retries": 0.0,
		"sm":      "arn:aws:states:eu-west-1:111122223333:stateMachine:bake",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("context object mismatch (-want +got):\n%s", diff)
	}
}

func TestTaskPathProcessingOrder(t *testing.T) {
	var seen string
	h := func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		seen = string(in)
		return json.RawMessage(`{"Id":"i-123","State":{"Name":"running"},"Noise":[1,2,3]}`), nil
	}
	def := `{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"Describe",
		"InputPath":"$.build",
		"Parameters":{"InstanceId.$":"$.instance","Region":"us-east-1"},
		"ResultSelector":{"id.$":"$.Id","state.$":"$.State.Name"},
		"ResultPath":"$.build.describe",
		"OutputPath":"$.build",
		"End":true}}}`
	res := runDef(t, def, Options{Handlers: map[string]Handler{"Describe": h}}, `{"build":{"instance":"i-123"},"other":"dropped"}`)
	got := succeeded(t, res)
	if diff := cmp.Diff(decoded(t, `{"InstanceId":"i-123","Region":"us-east-1"}`), decoded(t, seen)); diff != "" {
		t.Errorf("handler input mismatch (-want +got):\n%s", diff)
	}
	want := `{"instance":"i-123","describe":{"id":"i-123","state":"running"}}`
	if diff := cmp.Diff(decoded(t, want), got); diff != "" {
		t.Errorf("task output mismatch (-want +got):\n%s", diff)
	}
}

func TestWaitState(t *testing.T) {
	tests := []struct {
		name, fields string
		want         time.Duration
	}{
		{"Seconds", `"Seconds":30`, 30 * time.Second},
		{"Seconds zero", `"Seconds":0`, 0},
		{"SecondsPath", `"SecondsPath":"$.delay"`, 45 * time.Second},
		{"SecondsPath after InputPath", `"InputPath":"$.inner","SecondsPath":"$.delay"`, 7 * time.Second},
		{"Timestamp", `"Timestamp":"2024-05-01T12:10:00Z"`, 10 * time.Minute},
		{"Timestamp in the past", `"Timestamp":"2020-01-01T00:00:00Z"`, 0},
		{"TimestampPath", `"TimestampPath":"$.until"`, 90 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := `{"StartAt":"W","States":{"W":{"Type":"Wait",` + tt.fields + `,"Next":"Done"},"Done":{"Type":"Succeed"}}}`
			clock := autoClock()
			res := runDef(t, def, Options{Clock: clock}, `{"delay":45,"until":"2024-05-01T12:01:30Z","inner":{"delay":7}}`)
			succeeded(t, res)
			if got := res.History[0].Duration; got != tt.want {
				t.Errorf("Wait {%s} took %v on the fake clock, want %v", tt.fields, got, tt.want)
			}
			if got := clock.Now().Sub(t0); got != tt.want {
				t.Errorf("Wait {%s} moved the clock by %v, want %v", tt.fields, got, tt.want)
			}
		})
	}
}

func TestWaitBadPaths(t *testing.T) {
	tests := []struct{ name, fields string }{
		{"negative seconds", `"SecondsPath":"$.neg"`},
		{"fractional seconds", `"SecondsPath":"$.frac"`},
		{"seconds not a number", `"SecondsPath":"$.until"`},
		{"bad timestamp", `"TimestampPath":"$.bad"`},
		{"missing", `"SecondsPath":"$.missing"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := `{"StartAt":"W","States":{"W":{"Type":"Wait",` + tt.fields + `,"End":true}}}`
			res := runDef(t, def, Options{}, `{"neg":-1,"frac":1.5,"until":"soon","bad":"2024-05-01 12:00:00"}`)
			if res.Status != StatusFailed || res.Error != StatesRuntime {
				t.Errorf("Wait {%s} = %s %q, want FAILED States.Runtime", tt.fields, res.Status, res.Error)
			}
		})
	}
}

func TestSucceedAndFail(t *testing.T) {
	tests := []struct {
		name, state, wantStatus, wantOut, wantErr, wantCause string
	}{
		{"Succeed with paths", `{"Type":"Succeed","InputPath":"$.a","OutputPath":"$.b"}`, "SUCCEEDED", `1`, "", ""},
		{"Fail", `{"Type":"Fail","Error":"BakeFailed","Cause":"no AMI"}`, "FAILED", "", "BakeFailed", "no AMI"},
		{"Fail paths", `{"Type":"Fail","ErrorPath":"$.err.Error","CausePath":"$.err.Cause"}`, "FAILED", "", "wrapError", "boom"},
		{"Fail intrinsic cause", `{"Type":"Fail","Error":"E","CausePath":"States.Format('stage {} failed', $.a.b)"}`, "FAILED", "", "E", "stage 1 failed"},
		{"Fail ErrorPath not a string", `{"Type":"Fail","ErrorPath":"$.a"}`, "FAILED", "", StatesRuntime, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := `{"StartAt":"S","States":{"S":` + tt.state + `}}`
			res := runDef(t, def, Options{}, `{"a":{"b":1},"err":{"Error":"wrapError","Cause":"boom"}}`)
			if string(res.Status) != tt.wantStatus || res.Error != tt.wantErr || (tt.wantCause != "" && res.Cause != tt.wantCause) {
				t.Fatalf("Run(%s) = %s %q %q, want %s %q %q", tt.state, res.Status, res.Error, res.Cause, tt.wantStatus, tt.wantErr, tt.wantCause)
			}
			if tt.wantOut != "" {
				if diff := cmp.Diff(decoded(t, tt.wantOut), decoded(t, string(res.Output))); diff != "" {
					t.Errorf("Run(%s) output mismatch (-want +got):\n%s", tt.state, diff)
				}
			}
		})
	}
}

func TestParallelState(t *testing.T) {
	def := `{"StartAt":"Par","States":{"Par":{"Type":"Parallel",
		"Parameters":{"n.$":"$.n"},
		"Branches":[
			{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"Double","End":true}}},
			{"StartAt":"B","States":{"B":{"Type":"Pass","Result":"b","End":true}}}],
		"ResultSelector":{"doubled.$":"$[0].n","b.$":"$[1]"},
		"ResultPath":"$.par","End":true}}}`
	double := Typed(func(_ context.Context, in struct{ N int }) (map[string]int, error) {
		return map[string]int{"n": in.N * 2}, nil
	})
	res := runDef(t, def, Options{Handlers: map[string]Handler{"Double": double}}, `{"n":21}`)
	got := succeeded(t, res)
	if diff := cmp.Diff(decoded(t, `{"n":21,"par":{"doubled":42,"b":"b"}}`), got); diff != "" {
		t.Errorf("Parallel output mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"Par", "Par[0]/A", "Par[1]/B"}, sortedStates(res.History)); diff != "" {
		t.Errorf("Parallel transitions mismatch (-want +got):\n%s", diff)
	}
}

func TestMapState(t *testing.T) {
	items := `{"shared":"s","things":[{"v":1},{"v":2},{"v":3}]}`
	iterator := `{"StartAt":"Inc","States":{"Inc":{"Type":"Pass","Parameters":{"v.$":"$.v","i.$":"$.i","s.$":"$.s"},"End":true}}}`
	selector := `{"v.$":"$$.Map.Item.Value.v","i.$":"$$.Map.Item.Index","s.$":"$.shared"}`
	want := `[{"v":1,"i":0,"s":"s"},{"v":2,"i":1,"s":"s"},{"v":3,"i":2,"s":"s"}]`
	tests := []struct{ name, fields string }{
		{"ItemProcessor and ItemSelector", `"ItemProcessor":{"ProcessorConfig":{"Mode":"INLINE"},"StartAt":"Inc","States":` + iterator[strings.Index(iterator, `"States":`)+9:len(iterator)-1] + `},"ItemSelector":` + selector},
		{"Iterator and Parameters", `"Iterator":` + iterator + `,"Parameters":` + selector},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := `{"StartAt":"M","States":{"M":{"Type":"Map","ItemsPath":"$.things",` + tt.fields + `,"ResultPath":"$.out","OutputPath":"$.out","End":true}}}`
			got := succeeded(t, runDef(t, def, Options{}, items))
			if diff := cmp.Diff(decoded(t, want), got); diff != "" {
				t.Errorf("Map output mismatch (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("items are the input by default", func(t *testing.T) {
		def := `{"StartAt":"M","States":{"M":{"Type":"Map","Iterator":{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}},"End":true}}}`
		got := succeeded(t, runDef(t, def, Options{}, `[3,1,2]`))
		if diff := cmp.Diff(decoded(t, `[3,1,2]`), got); diff != "" {
			t.Errorf("Map output mismatch (-want +got):\n%s", diff)
		}
	})
	t.Run("items must be an array", func(t *testing.T) {
		def := `{"StartAt":"M","States":{"M":{"Type":"Map","ItemsPath":"$.shared","Iterator":{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}},"End":true}}}`
		res := runDef(t, def, Options{}, items)
		if res.Status != StatusFailed || res.Error != StatesRuntime {
			t.Errorf("Map over a string = %s %q, want FAILED States.Runtime", res.Status, res.Error)
		}
	})
}

// sortedStates lists the history's states with scope, sorted, for
// comparisons that must not depend on goroutine scheduling.
func sortedStates(h []Event) []string {
	s := states(h)
	slices.Sort(s)
	return s
}
