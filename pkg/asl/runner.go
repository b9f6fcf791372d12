package asl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Handler is a task's code: what a Go Lambda function does, minus the
// runtime. The runner marshals the task's input to JSON, hands the bytes to
// the handler, and parses what it returns, so a handler sees exactly what it
// would on AWS. A nil or empty output is JSON null.
type Handler func(ctx context.Context, input json.RawMessage) (json.RawMessage, error)

// Typed adapts a typed function, such as the one a Lambda's main passes to
// lambda.Start, to a Handler. Like aws-lambda-go, it reports a failure to
// unmarshal the input as the handler's error.
func Typed[In, Out any](fn func(context.Context, In) (Out, error)) Handler {
	return func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
		var in In
		if err := json.Unmarshal(input, &in); err != nil {
			return nil, err
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}
}

// Options configures a Runner. The zero value of each field is a sensible
// default.
type Options struct {
	// Handlers maps resource names to handlers. A Task's Resource, or a
	// lambda:invoke task's Parameters.FunctionName, finds its handler by
	// exact key first, then by function name: a Lambda function ARN
	// (arn:aws:lambda:region:account:function:NAME[:qualifier]) and a
	// placeholder "${NAME}" both match the key NAME.
	Handlers map[string]Handler
	// Clock is the source of time; nil means the wall clock.
	Clock Clock
	// TimeScale compresses state-machine waits (Wait states and retry
	// intervals): 0.01 makes a 30 s Wait take 0.3 s on Clock. History and
	// $$ timestamps still advance by the full 30 s. Task timeouts and
	// handler durations are not compressed. Zero means 1.
	TimeScale float64
	// Observer, if set, is told about progress as it happens.
	Observer Observer
	// ErrorName names a handler's error for Retry and Catch. Nil means
	// ErrorName, the rule the Go Lambda runtime follows.
	ErrorName func(error) string
	// Seed seeds States.UUID, States.MathRandom without a seed, retry
	// jitter and lambda:invoke request IDs; zero picks a random seed.
	Seed uint64
	// StateMachineARN is $$.StateMachine.Id, and execution ARNs derive from
	// it. Empty means arn:aws:states:us-east-1:123456789012:stateMachine:kiln-local.
	StateMachineARN string
}

// DefaultStateMachineARN is the StateMachineARN used when Options leaves it
// empty.
const DefaultStateMachineARN = "arn:aws:states:us-east-1:123456789012:stateMachine:kiln-local"

// Runner runs executions of one state machine definition.
type Runner struct {
	def      *machine
	opts     Options
	handlers map[string]string // function name -> Handlers key
	tl       *timeline
}

// Validate parses and checks a definition without running it or needing
// handlers. It reports every problem at once as a *DefinitionError.
func Validate(definition []byte) error {
	_, err := parse(definition)
	return err
}

func parse(definition []byte) (*machine, error) {
	v, err := decodeJSON(definition)
	if err != nil {
		return nil, &DefinitionError{Problems: []string{"/: not JSON: " + err.Error()}}
	}
	return parseDefinition(v)
}

// New parses and checks a definition and returns a Runner for it. Beyond
// Validate, it checks that every Task with a fixed resource or FunctionName
// has a handler. Problems with the definition or the options come back
// together as a *DefinitionError.
func New(definition []byte, opts Options) (*Runner, error) {
	def, err := parse(definition)
	var probs []string
	var defErr *DefinitionError
	if errors.As(err, &defErr) {
		probs = defErr.Problems
	} else if err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = RealClock{}
	}
	if opts.StateMachineARN == "" {
		opts.StateMachineARN = DefaultStateMachineARN
	}
	if opts.TimeScale < 0 {
		probs = append(probs, fmt.Sprintf("options: TimeScale must not be negative, got %v", opts.TimeScale))
	}
	r := &Runner{def: def, opts: opts, handlers: map[string]string{}, tl: newTimeline(opts.Clock, opts.TimeScale)}
	for key := range opts.Handlers {
		fn := functionName(key)
		if other, dup := r.handlers[fn]; dup && other != key {
			probs = append(probs, fmt.Sprintf("options: handlers %q and %q both name function %q", other, key, fn))
		}
		r.handlers[fn] = key
	}
	if def != nil {
		def.walk(func(s *state) {
			if s.typ != typeTask {
				return
			}
			name := s.resource
			if s.lambdaInvoke {
				var ok bool
				if name, ok = s.parameters.staticString("FunctionName"); !ok {
					return // chosen at run time
				}
			}
			if name != "" {
				if _, ok := r.lookup(name); !ok {
					probs = append(probs, fmt.Sprintf("state %q: no handler for %q", s.name, name))
				}
			}
		})
	}
	if len(probs) > 0 {
		return nil, &DefinitionError{Problems: probs}
	}
	return r, nil
}

// functionName reduces a Lambda function ARN or a "${NAME}" placeholder to
// the function name.
func functionName(s string) string {
	if inner, ok := strings.CutPrefix(s, "${"); ok && strings.HasSuffix(inner, "}") {
		return strings.TrimSuffix(inner, "}")
	}
	parts := strings.Split(s, ":")
	if len(parts) >= 7 && parts[0] == "arn" && parts[2] == "lambda" && parts[5] == "function" {
		return parts[6]
	}
	return s
}

// lookup finds the Handlers key for a resource or function name.
func (r *Runner) lookup(name string) (string, bool) {
	if _, ok := r.opts.Handlers[name]; ok {
		return name, true
	}
	key, ok := r.handlers[functionName(name)]
	return key, ok
}

// Status is an execution's status, named as Step Functions names it.
type Status string

// Execution statuses.
const (
	// StatusRunning is an execution that has not finished.
	StatusRunning Status = "RUNNING"
	// StatusSucceeded is an execution that reached an End or a Succeed.
	StatusSucceeded Status = "SUCCEEDED"
	// StatusFailed is an execution that ended with an uncaught error.
	StatusFailed Status = "FAILED"
	// StatusAborted is an execution stopped by its context or by Stop.
	StatusAborted Status = "ABORTED"
	// StatusTimedOut is an execution that ran past the definition's
	// top-level TimeoutSeconds.
	StatusTimedOut Status = "TIMED_OUT"
)

// Result is a finished execution.
type Result struct {
	// Name and ARN identify the execution ($$.Execution.Name and .Id).
	Name, ARN string
	Status    Status
	// Input is the execution input; Output is set when Status is
	// SUCCEEDED.
	Input, Output json.RawMessage
	// Error and Cause are set when Status is FAILED or TIMED_OUT.
	Error, Cause        string
	StartTime, StopTime time.Time
	// History holds one Event per billable state transition.
	History []Event
}

// Execution is a running (or finished) execution.
type Execution struct {
	run    *run
	cancel context.CancelCauseFunc
	done   chan struct{}
	result *Result
}

// errStopped and errExecTimeout tell an abort by Stop or by the top-level
// TimeoutSeconds from a cancelled parent context.
var (
	errStopped     = errors.New("execution stopped")
	errExecTimeout = errors.New("execution timed out")
)

// Start begins an execution in the background and returns at once. An
// empty name gets a random UUID, as on AWS; empty input means {}. The
// execution stops (ABORTED) when ctx is cancelled. Start returns an error
// only for a bad name or input, never for a failing execution.
func (r *Runner) Start(ctx context.Context, name string, input json.RawMessage) (*Execution, error) {
	x := newRun(r)
	if name == "" {
		name = x.rand.uuid()
	}
	if len(name) > 80 || strings.ContainsAny(name, " \t\n<>{}[]?*\"#%\\^|~`$&,;:/") {
		return nil, fmt.Errorf("start execution %q: invalid name", name)
	}
	in := any(map[string]any{})
	if len(bytes.TrimSpace(input)) > 0 {
		v, err := decodeJSON(input)
		if err != nil {
			return nil, fmt.Errorf("start execution %q: input is not JSON: %w", name, err)
		}
		in = v
	}
	if n := jsonSize(in); n > MaxPayloadBytes {
		return nil, fmt.Errorf("start execution %q: input is %d bytes, over the %d byte limit", name, n, MaxPayloadBytes)
	}
	x.name = name
	x.arn = strings.Replace(r.opts.StateMachineARN, ":stateMachine:", ":execution:", 1) + ":" + name
	x.input = in
	x.start = r.tl.Now()

	ectx, cancel := context.WithCancelCause(ctx)
	e := &Execution{run: x, cancel: cancel, done: make(chan struct{})}
	go e.execute(ectx)
	return e, nil
}

// Run starts an execution and waits for it to finish. The error is only
// Start's; a failed execution is a Result with Status FAILED.
func (r *Runner) Run(ctx context.Context, name string, input json.RawMessage) (*Result, error) {
	e, err := r.Start(ctx, name, input)
	if err != nil {
		return nil, err
	}
	return e.Wait(), nil
}

func (e *Execution) execute(ctx context.Context) {
	defer close(e.done)
	x := e.run
	if t := x.r.def.timeout; t > 0 {
		go func() {
			if x.r.tl.until(ctx, x.start.Add(t)) == nil {
				e.cancel(errExecTimeout)
			}
		}()
	}
	out, err := x.runMachine(ctx, x.r.def, x.input, "")
	res := &Result{
		Name:      x.name,
		ARN:       x.arn,
		Input:     json.RawMessage(mustJSON(x.input)),
		StartTime: x.start,
		StopTime:  x.r.tl.Now(),
	}
	switch {
	case err == nil:
		res.Status = StatusSucceeded
		res.Output = json.RawMessage(mustJSON(out))
	case errors.Is(context.Cause(ctx), errExecTimeout):
		res.Status = StatusTimedOut
		res.Error = StatesTimeout
		res.Cause = fmt.Sprintf("The execution ran longer than its TimeoutSeconds (%s).", x.r.def.timeout)
	case errors.Is(err, errAborted) || ctx.Err() != nil:
		res.Status = StatusAborted
	default:
		f := asFailure(err)
		res.Status = StatusFailed
		res.Error, res.Cause = f.name, f.cause
	}
	res.History = x.history()
	e.result = res
	x.notify(Notice{Kind: ExecutionEnded, Time: res.StopTime, Status: res.Status, Error: res.Error, Cause: res.Cause})
	e.cancel(nil)
}

// Name returns the execution name.
func (e *Execution) Name() string { return e.run.name }

// ARN returns the execution ARN ($$.Execution.Id).
func (e *Execution) ARN() string { return e.run.arn }

// Done is closed when the execution has finished.
func (e *Execution) Done() <-chan struct{} { return e.done }

// Wait blocks until the execution finishes and returns its result.
func (e *Execution) Wait() *Result {
	<-e.done
	return e.result
}

// Stop aborts the execution, like StopExecution; it ends ABORTED.
func (e *Execution) Stop() { e.cancel(errStopped) }

// History returns the transitions so far; states still running have a
// zero Exited time.
func (e *Execution) History() []Event { return e.run.history() }

// run is the mutable state of one execution.
type run struct {
	r     *Runner
	rand  *lockedRand
	name  string
	arn   string
	input any
	start time.Time

	mu     sync.Mutex
	events []Event

	obsMu sync.Mutex
}

func newRun(r *Runner) *run {
	return &run{r: r, rand: newLockedRand(r.opts.Seed, r.opts.Seed != 0)}
}
