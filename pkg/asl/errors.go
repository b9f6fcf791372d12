package asl

import (
	"errors"
	"fmt"
	"strings"
)

// Error names the States Language reserves, as a state machine matches them
// in ErrorEquals. See
// https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html.
const (
	// StatesALL matches any error except States.Runtime and
	// States.DataLimitExceeded. It must be alone and in the last retrier or
	// catcher.
	StatesALL = "States.ALL"
	// StatesTaskFailed matches any error a task reports (any name outside
	// the States. namespace), but not States.Timeout.
	StatesTaskFailed = "States.TaskFailed"
	// StatesTimeout is a Task that ran past TimeoutSeconds, or an execution
	// past its top-level TimeoutSeconds.
	StatesTimeout = "States.Timeout"
	// StatesRuntime is an error in the definition's use of data: a path that
	// matches nothing, a value of the wrong type. It cannot be retried or
	// caught and always fails the execution.
	StatesRuntime = "States.Runtime"
	// StatesDataLimitExceeded is a payload over MaxPayloadBytes. States.ALL
	// does not catch it; a catcher naming it does.
	StatesDataLimitExceeded = "States.DataLimitExceeded"
	// StatesNoChoiceMatched is a Choice state with no matching rule and no
	// Default.
	StatesNoChoiceMatched = "States.NoChoiceMatched"
	// StatesIntrinsicFailure is an intrinsic function that failed on its
	// arguments.
	StatesIntrinsicFailure = "States.IntrinsicFailure"
	// StatesResultPathMatchFailure is a ResultPath that cannot be applied to
	// the state's input (for example "$.x" on an input that is an array).
	StatesResultPathMatchFailure = "States.ResultPathMatchFailure"
	// StatesBranchFailed is reserved for failed Parallel branches. Like AWS,
	// this engine reports a failed branch or Map iteration under the
	// branch's own error name, which is what Retry and Catch on the Parallel
	// or Map state see.
	StatesBranchFailed = "States.BranchFailed"
	// StatesHeartbeatTimeout is reserved for tasks that miss a heartbeat;
	// this engine has no callback tasks and never raises it.
	StatesHeartbeatTimeout = "States.HeartbeatTimeout"
	// StatesPermissions is reserved for tasks without the rights to run;
	// this engine never raises it.
	StatesPermissions = "States.Permissions"
	// LambdaResourceNotFound is what lambda:invoke reports for a
	// FunctionName that names no handler.
	LambdaResourceNotFound = "Lambda.ResourceNotFoundException"
)

// failure is an error a state reports: a name Retry and Catch match on and
// a human cause.
type failure struct {
	name, cause string
}

func (f *failure) Error() string {
	if f.cause == "" {
		return f.name
	}
	return f.name + ": " + f.cause
}

func failf(name, format string, args ...any) *failure {
	return &failure{name: name, cause: fmt.Sprintf(format, args...)}
}

// errAborted is returned by every step once the execution's context is done.
var errAborted = errors.New("execution aborted")

// asFailure turns an internal error into the failure to report.
func asFailure(err error) *failure {
	var f *failure
	if errors.As(err, &f) {
		return f
	}
	return &failure{name: StatesRuntime, cause: err.Error()}
}

// errorMatches reports whether an ErrorEquals list matches the error name.
func errorMatches(equals []string, name string) bool {
	if name == StatesRuntime {
		// Never retriable and never caught.
		return false
	}
	for _, e := range equals {
		switch {
		case e == name:
			return true
		case e == StatesALL:
			if name != StatesDataLimitExceeded {
				return true
			}
		case e == StatesTaskFailed:
			if !strings.HasPrefix(name, "States.") {
				return true
			}
		}
	}
	return false
}

// DefinitionError lists every problem found in a state machine definition.
type DefinitionError struct {
	// Problems are located by a JSON-pointer-like path such as
	// "/States/Launch/Next".
	Problems []string
}

// Error lists the problems, one per line when there are several.
func (e *DefinitionError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid state machine definition: " + e.Problems[0]
	}
	return "invalid state machine definition:\n  " + strings.Join(e.Problems, "\n  ")
}
