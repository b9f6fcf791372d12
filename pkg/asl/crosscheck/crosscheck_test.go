package crosscheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/statemachine"
)

// functionARN is the fake ARN each stage function gets in the definition.
func functionARN(function string) string {
	return "arn:aws:lambda:us-east-1:123456789012:function:kiln-" + function
}

// definition is kiln's real definition with fake function ARNs.
func definition(t *testing.T) []byte {
	t.Helper()
	subs := map[string]string{}
	for _, f := range statemachine.Functions {
		subs[statemachine.PlaceholderName(f)] = functionARN(f)
	}
	def, err := statemachine.Substitute(subs)
	if err != nil {
		t.Fatalf("Substitute() = %v", err)
	}
	return def
}

// ProvisionFailed stands in for kiln's provisioner failure: Step Functions
// routes on its type name.
type ProvisionFailed struct{ Provisioner string }

func (e *ProvisionFailed) Error() string {
	return fmt.Sprintf("provisioner %s: exit status 2", e.Provisioner)
}

// Throttled stands in for an AWS throttling error.
type Throttled struct{ Op string }

func (e Throttled) Error() string { return e.Op + ": Rate exceeded" }

// stages is a stateful fake of kiln's five stage functions. Each receives
// {"action", "state"} (plan also "execution", copy also "region") and
// returns the state with its own fields filled in, as the real stages do;
// long operations become ready after a number of polls.
type stages struct {
	// readyAfter is how many checks of an action ("launch check") answer
	// not ready before one answers ready; provisionRounds is how many
	// provision runs it takes to finish.
	readyAfter      map[string]int
	provisionRounds int
	// failProvision makes provision run fail with ProvisionFailed.
	failProvision bool
	// throttle is how many times a call ("launch run", "distribute copy
	// eu-west-1") fails with Throttled before it succeeds.
	throttle map[string]int

	mu    sync.Mutex
	calls map[string]int
}

type stageInput struct {
	Action    string         `json:"action"`
	Execution string         `json:"execution,omitempty"`
	Region    string         `json:"region,omitempty"`
	State     map[string]any `json:"state"`
}

func (s *stages) handlers() map[string]asl.Handler {
	h := map[string]asl.Handler{}
	for _, f := range statemachine.Functions {
		h[functionARN(f)] = asl.Typed(func(ctx context.Context, in stageInput) (any, error) {
			return s.handle(f, in)
		})
	}
	return h
}

// count counts a call and reports how many came before it.
func (s *stages) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	s.calls[key]++
	return s.calls[key] - 1
}

// wait sets the state's wait: ready once readyAfter checks have said no.
func (s *stages) wait(st map[string]any, key string, seconds int) bool {
	ready := s.count(key) >= s.readyAfter[key]
	st["wait"] = map[string]any{"ready": ready, "seconds": seconds}
	return ready
}

func (s *stages) handle(function string, in stageInput) (any, error) {
	key := function + " " + in.Action
	if in.Region != "" {
		key += " " + in.Region
	}
	if s.count("throttle "+key) < s.throttle[key] {
		return nil, Throttled{Op: key}
	}
	st := in.State
	switch key {
	case "launch plan":
		st["build_id"] = "webapp-3f2a"
		st["started_by"] = in.Execution
		st["plan"] = map[string]any{"region": "us-east-1", "regions": []string{"us-west-2", "eu-west-1"}, "transport": "ssh"}
	case "launch run":
		st["launch"] = map[string]any{"instance_id": "i-0123456789abcdef0", "security_group_id": "sg-0a1b"}
		st["wait"] = map[string]any{"ready": false, "seconds": 30}
	case "launch check":
		s.wait(st, key, 5)
	case "provision run":
		if s.failProvision {
			return nil, &ProvisionFailed{Provisioner: "1 (shell)"}
		}
		done := s.count(key) >= s.provisionRounds-1
		st["provision"] = map[string]any{"next": 1, "done": done}
		st["wait"] = map[string]any{"ready": done, "seconds": 10}
	case "provision error-cleanup":
		st["provision"] = map[string]any{"done": false, "error_cleanup_ran": true}
	case "snapshot stop":
		st["wait"] = map[string]any{"ready": false, "seconds": 45}
	case "snapshot check-stopped":
		s.wait(st, key, 10)
	case "snapshot create":
		st["image"] = map[string]any{"id": "ami-0base", "state": "pending"}
		st["wait"] = map[string]any{"ready": false, "seconds": 120}
	case "snapshot check":
		if s.wait(st, key, 15) {
			st["image"] = map[string]any{"id": "ami-0base", "state": "available"}
		}
	case "distribute copy " + in.Region:
		return map[string]any{"copies": []any{map[string]any{"region": in.Region, "image_id": "ami-" + in.Region}}}, nil
	case "distribute check":
		s.wait(st, key, 30)
	case "distribute publish":
		st["published"] = map[string]any{"parameters": []string{"/kiln/webapp/latest"}}
	case "cleanup run":
		st["wait"] = map[string]any{"ready": true, "seconds": 0}
		st["cleanup"] = map[string]any{}
	default:
		return nil, fmt.Errorf("stage %s: unknown action %q", function, in.Action)
	}
	return st, nil
}

// record runs def in kiln's runner with fake time and records the run.
func record(t *testing.T, def []byte, handlers map[string]asl.Handler, input string) asl.Recording {
	t.Helper()
	rec := asl.NewRecorder()
	clock := asl.NewFakeClock(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	clock.SetAuto(true)
	r, err := asl.New(def, rec.Options(asl.Options{Handlers: handlers, Clock: clock, Seed: 7}))
	if err != nil {
		t.Fatalf("asl.New() = %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := r.Run(ctx, "bake-"+strings.ReplaceAll(t.Name(), "/", "-"), json.RawMessage(input))
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	return rec.Recording(res)
}

// replay cross-checks a recording, failing the test on any disagreement.
func replay(t *testing.T, def []byte, rec asl.Recording) Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := Run(ctx, def, rec)
	if err != nil {
		b, _ := json.MarshalIndent(rec, "", "  ")
		t.Fatalf("Run() = %v\nrecording: %s", err, b)
	}
	return out
}

const bakeInput = `{"recipe":{"bucket":"kiln-recipes","key":"webapp/recipe.pkr.hcl","version":"3"},"vars":{"env":"test"}}`

// contains reports whether want appears in lines in order, not
// necessarily next to each other.
func contains(lines, want []string) bool {
	for _, w := range want {
		i := slices.Index(lines, w)
		if i < 0 {
			return false
		}
		lines = lines[i+1:]
	}
	return true
}

func TestScenarios(t *testing.T) {
	SkipIfUnavailable(t)
	def := definition(t)
	tests := []struct {
		name   string
		stages *stages
		status asl.Status
		// path lists states the path must go through, in order, so that the
		// scenario is the one its name says.
		path  []string
		error string
	}{
		{
			name: "successful bake",
			stages: &stages{
				readyAfter: map[string]int{
					"launch check": 2, "snapshot check-stopped": 1, "snapshot check": 3, "distribute check": 2,
				},
				provisionRounds: 3,
			},
			status: asl.StatusSucceeded,
			path: []string{
				"Plan", "Launch", "CheckInstance", "WaitForInstance", "CheckInstance", "WaitForInstance", "CheckInstance",
				"Provision", "WaitForProvisioning", "Provision", "WaitForProvisioning", "Provision", "StopInstance",
				"CheckStopped", "WaitForStop", "CheckStopped", "CreateImage", "CheckImage", "CheckImage", "CheckImage", "CheckImage",
				"CopyToRegions", "CopyToRegions[0]/CopyImage", "CopyToRegions[1]/CopyImage",
				"CheckCopies", "CheckCopies", "CheckCopies", "Publish", "Cleanup", "Outcome?", "Baked",
			},
		},
		{
			name:   "provisioning failure",
			stages: &stages{readyAfter: map[string]int{"launch check": 1}, failProvision: true},
			status: asl.StatusFailed,
			path:   []string{"Provision", "ErrorCleanupProvisioner", "Cleanup", "CleanedUp?", "Outcome?", "BakeFailed"},
			error:  "ProvisionFailed",
		},
		{
			name: "throttled call succeeds on retry",
			stages: &stages{
				throttle:        map[string]int{"launch run": 1, "distribute copy eu-west-1": 1},
				provisionRounds: 1,
			},
			status: asl.StatusSucceeded,
			path: []string{
				"Launch", "Launch (retry 1)", "WaitForInstance",
				"CopyToRegions[1]/CopyImage", "CopyToRegions[1]/CopyImage (retry 1)", "Baked",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := record(t, def, tt.stages.handlers(), bakeInput)
			if rec.Status != tt.status || rec.Error != tt.error {
				t.Fatalf("kiln's runner ended %s %q (%s), want %s %q", rec.Status, rec.Error, rec.Cause, tt.status, tt.error)
			}
			if lines := rec.Path.Lines(); !contains(lines, tt.path) {
				t.Fatalf("kiln's path does not go through %q:\n%s", tt.path, strings.Join(lines, "\n"))
			}
			if tt.error == "ProvisionFailed" {
				want := `{"errorMessage":"provisioner 1 (shell): exit status 2","errorType":"ProvisionFailed"}`
				if rec.Cause != want {
					t.Errorf("kiln's Cause = %s, want %s", rec.Cause, want)
				}
			}
			out := replay(t, def, rec)
			if diff := cmp.Diff(rec.Path.Lines(), out.Path.Lines()); diff != "" {
				t.Errorf("Run() returned no error but the paths differ (-kiln +library):\n%s", diff)
			}
		})
	}
}

// TestTamperedRecording proves the check can fail: a recording whose
// first instance check says ready makes the library skip the wait rounds,
// and Run reports it.
func TestTamperedRecording(t *testing.T) {
	SkipIfUnavailable(t)
	t.Parallel()
	def := definition(t)
	s := &stages{readyAfter: map[string]int{"launch check": 2}, provisionRounds: 1}
	rec := record(t, def, s.handlers(), bakeInput)
	tampered := false
	for i, c := range rec.Calls {
		if c.State == "CheckInstance" {
			rec.Calls[i].Output = json.RawMessage(strings.Replace(string(c.Output), `"ready":false`, `"ready":true`, 1))
			tampered = true
			break
		}
	}
	if !tampered {
		t.Fatalf("no CheckInstance call in the recording")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Run(ctx, def, rec)
	var mm *MismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("Run(tampered recording) = %v, want a *MismatchError", err)
	}
	for _, want := range []string{"path (-kiln +aws-local-stepfunctions)", "calls of CheckInstance: kiln 3, aws-local-stepfunctions 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run(tampered recording) error does not mention %q:\n%v", want, err)
		}
	}
}

// TestNestedScopes replays a definition with a Parallel state, a Map in a
// Map and a retry inside an iteration, where calls must be told apart by
// scope.
func TestNestedScopes(t *testing.T) {
	SkipIfUnavailable(t)
	t.Parallel()
	work := functionARN("work")
	def := []byte(`{"StartAt":"P","States":{"P":{"Type":"Parallel","Next":"Done","ResultPath":"$.parallel","Branches":[
		{"StartAt":"Hello","States":{"Hello":{"Type":"Task","Resource":"` + work + `","Parameters":{"say":"hello"},"End":true}}},
		{"StartAt":"Rows","States":{"Rows":{"Type":"Map","ItemsPath":"$.rows","End":true,
			"ItemProcessor":{"StartAt":"Cells","States":{"Cells":{"Type":"Map","End":true,
				"ItemSelector":{"cell.$":"$$.Map.Item.Value"},
				"ItemProcessor":{"StartAt":"Cell","States":{
					"Cell":{"Type":"Task","Resource":"` + work + `","Parameters":{"cell.$":"$.cell"},"ResultPath":"$.result","Next":"Ready?",
						"Retry":[{"ErrorEquals":["Throttled"],"IntervalSeconds":3,"JitterStrategy":"FULL"}]},
					"Ready?":{"Type":"Choice","Choices":[{"Variable":"$.result.ready","BooleanEquals":true,"Next":"Shown"}],"Default":"Pause"},
					"Pause":{"Type":"Wait","Seconds":60,"Next":"Cell"},
					"Shown":{"Type":"Pass","End":true}}}}}}}}}]},
		"Done":{"Type":"Succeed"}}}`)
	var mu sync.Mutex
	calls := map[string]int{}
	handle := func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		mu.Lock()
		calls[string(in)]++
		n := calls[string(in)]
		mu.Unlock()
		switch string(in) {
		case `{"cell":2}`:
			if n == 1 {
				return nil, Throttled{Op: "cell 2"}
			}
		case `{"cell":3}`:
			if n < 3 {
				return json.RawMessage(`{"ready":false}`), nil
			}
		}
		return json.RawMessage(`{"ready":true,"got":` + string(in) + `}`), nil
	}
	rec := record(t, def, map[string]asl.Handler{work: handle}, `{"rows":[[1,2],[3]]}`)
	if rec.Status != asl.StatusSucceeded {
		t.Fatalf("kiln's runner ended %s %s: %s", rec.Status, rec.Error, rec.Cause)
	}
	out := replay(t, def, rec)
	want := []string{
		"P", "P[0]/Hello", "P[1]/Rows",
		"P[1]/Rows[0]/Cells",
		"P[1]/Rows[0]/Cells[0]/Cell", "P[1]/Rows[0]/Cells[0]/Ready?", "P[1]/Rows[0]/Cells[0]/Shown",
		"P[1]/Rows[0]/Cells[1]/Cell", "P[1]/Rows[0]/Cells[1]/Cell (retry 1)", "P[1]/Rows[0]/Cells[1]/Ready?", "P[1]/Rows[0]/Cells[1]/Shown",
		"P[1]/Rows[1]/Cells",
		"P[1]/Rows[1]/Cells[0]/Cell", "P[1]/Rows[1]/Cells[0]/Ready?", "P[1]/Rows[1]/Cells[0]/Pause",
		"P[1]/Rows[1]/Cells[0]/Cell", "P[1]/Rows[1]/Cells[0]/Ready?", "P[1]/Rows[1]/Cells[0]/Pause",
		"P[1]/Rows[1]/Cells[0]/Cell", "P[1]/Rows[1]/Cells[0]/Ready?", "P[1]/Rows[1]/Cells[0]/Shown",
		"Done",
	}
	if diff := cmp.Diff(want, out.Path.Lines()); diff != "" {
		t.Errorf("library path mismatch (-want +got):\n%s", diff)
	}
}

// TestCompare checks the comparison itself, without Node.
func TestCompare(t *testing.T) {
	rec := asl.Recording{
		Calls: []asl.Call{
			{State: "A", Input: json.RawMessage(`{"x":1,"y":[1,2]}`)},
			{Scope: "M[0]", State: "B", Input: json.RawMessage(`{}`)},
		},
		Path:   asl.Path{{State: "A"}, {State: "M", Branches: []asl.Path{{{State: "B"}}}}},
		Status: asl.StatusSucceeded,
		Output: json.RawMessage(`{"a":1.0,"b":"x"}`),
	}
	same := Outcome{
		Calls: []Invocation{
			{Scope: "M[0]", State: "B", Input: json.RawMessage(`{}`)},
			{State: "A", Input: json.RawMessage(`{"y":[1,2],"x":1}`)},
		},
		Path:   asl.Path{{State: "A"}, {State: "M", Branches: []asl.Path{{{State: "B"}}}}},
		Status: asl.StatusSucceeded,
		Output: json.RawMessage(`{"b":"x","a":1}`),
	}
	if diffs := compare(rec, same); len(diffs) != 0 {
		t.Errorf("compare(equal runs) = %q, want no differences", diffs)
	}
	tests := []struct {
		name   string
		change func(*Outcome)
		want   string
	}{
		{"output", func(o *Outcome) { o.Output = json.RawMessage(`{"a":2,"b":"x"}`) }, "output (-kiln +aws-local-stepfunctions)"},
		{"status", func(o *Outcome) { o.Status, o.Output, o.Error = asl.StatusFailed, nil, "X" }, "status: kiln SUCCEEDED, aws-local-stepfunctions FAILED"},
		{"cause", func(o *Outcome) { o.Cause = "boom" }, `cause: kiln "", aws-local-stepfunctions "boom"`},
		{"input", func(o *Outcome) { o.Calls[1].Input = json.RawMessage(`{"x":2,"y":[1,2]}`) }, "call 1 of A: input"},
		{"extra call", func(o *Outcome) { o.Calls = append(o.Calls, Invocation{State: "Z"}) }, "calls of Z: kiln 0, aws-local-stepfunctions 1"},
		{"iteration path", func(o *Outcome) { o.Path = asl.Path{{State: "A"}, {State: "M"}} }, "M[0]/B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := same
			out.Calls = slices.Clone(same.Calls)
			tt.change(&out)
			diffs := compare(rec, out)
			if !strings.Contains(strings.Join(diffs, "\n"), tt.want) {
				t.Errorf("compare() = %q, want a difference mentioning %q", diffs, tt.want)
			}
		})
	}
}

func TestRunRefusesUnfinished(t *testing.T) {
	for _, st := range []asl.Status{asl.StatusAborted, asl.StatusTimedOut, asl.StatusRunning} {
		if _, err := Run(context.Background(), []byte(`{}`), asl.Recording{Status: st}); err == nil {
			t.Errorf("Run(recording %s) = nil error, want a refusal", st)
		}
	}
}
