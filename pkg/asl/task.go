package asl

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"runtime/debug"
	"strconv"
	"time"
)

// ErrorName returns the error name Step Functions sees when a Go Lambda
// function built on github.com/aws/aws-lambda-go returns err: the Go type
// name of the error value, with a pointer stripped. So a *ProvisionerError
// is "ProvisionerError", an error made by fmt.Errorf with %w is "wrapError",
// one made by errors.Join is "joinError" and one from errors.New is
// "errorString". A *PanicError is named for the panic value the same way,
// as aws-lambda-go reports a panic: panic("boom") is "string".
func ErrorName(err error) string {
	if p, ok := err.(*PanicError); ok {
		return goTypeName(p.Value)
	}
	return goTypeName(err)
}

// goTypeName is aws-lambda-go's getErrorType.
func goTypeName(v any) string {
	t := reflect.TypeOf(v)
	if t == nil {
		return ""
	}
	if t.Kind() == reflect.Pointer {
		return t.Elem().Name()
	}
	return t.Name()
}

// PanicError is a handler that panicked. The runner recovers the panic and
// fails the task with it, as the Lambda Go runtime reports the panic (it
// then exits, which Lambda shows as Runtime.ExitError in the logs, but the
// error Step Functions receives is the one reported before exiting). With
// the default naming its error name is the panic value's type name and its
// message the value printed with %v.
type PanicError struct {
	// Value is what was passed to panic.
	Value any
	// Stack is the handler goroutine's stack at the panic.
	Stack []byte
}

// Error returns the panic value printed with %v, as the Lambda runtime
// reports it.
func (e *PanicError) Error() string { return fmt.Sprintf("%v", e.Value) }

// lambdaCause is the Cause Step Functions reports for a failed Lambda: the
// error document the runtime posted, as JSON.
func lambdaCause(message, name string) string {
	b, err := json.Marshal(struct {
		ErrorMessage string `json:"errorMessage"`
		ErrorType    string `json:"errorType"`
	}{message, name})
	if err != nil {
		return message
	}
	return string(b)
}

func (x *run) errorName(err error) string {
	if fn := x.r.opts.ErrorName; fn != nil {
		return fn(err)
	}
	return ErrorName(err)
}

// invoke runs a Task's handler on the effective input and returns the
// task result.
func (x *run) invoke(st *stepCtx, eff any) (any, error) {
	s := st.s
	name, payload := s.resource, eff
	if s.lambdaInvoke {
		m, _ := eff.(map[string]any)
		fn, ok := m["FunctionName"].(string)
		if !ok {
			return nil, failf(StatesRuntime, "lambda:invoke needs Parameters.FunctionName to be a string, got %s", kind(m["FunctionName"]))
		}
		name = fn
		if payload, ok = m["Payload"]; !ok {
			payload = map[string]any{}
		}
	}
	key, ok := x.r.lookup(name)
	if !ok {
		if s.lambdaInvoke {
			return nil, failf(LambdaResourceNotFound, "Function not found: %s (Service: AWSLambda; Status Code: 404; Error Code: ResourceNotFoundException)", name)
		}
		return nil, failf(StatesRuntime, "no handler for resource %q", name)
	}
	timeout := s.timeout
	if s.timeoutPath != nil {
		eff0, err := x.inputPath(st)
		if err != nil {
			return nil, err
		}
		v, err := x.env(st, eff0).resolve(s.timeoutPath)
		if err != nil {
			return nil, err
		}
		n, ok := exactInt(v)
		if !ok || n <= 0 || n > maxTimeoutSeconds {
			return nil, failf(StatesRuntime, "TimeoutSecondsPath must reference a positive integer, got %s", mustJSON(v))
		}
		timeout = time.Duration(n) * time.Second
	}
	in, err := encodeJSON(payload)
	if err != nil {
		return nil, err
	}

	start := x.r.tl.Now()
	x.notify(Notice{Kind: TaskStarted, Time: start, Scope: st.scope, State: s.name, Type: s.typ, Resource: key})
	res := x.call(st.ctx, x.r.opts.Handlers[key], in, timeout)
	end := x.r.tl.Now()
	x.recordTask(st.event, key, end.Sub(start))
	done := Notice{Kind: TaskEnded, Time: end, Scope: st.scope, State: s.name, Type: s.typ, Resource: key, Duration: end.Sub(start)}

	var f *failure
	switch {
	case res.aborted:
		return nil, errAborted
	case res.timedOut:
		f = failf(StatesTimeout, "The task %q ran longer than its timeout of %s.", s.name, timeout)
	case res.err != nil:
		n := x.errorName(res.err)
		f = &failure{name: n, cause: lambdaCause(res.err.Error(), n)}
	}
	var result any
	if f == nil {
		if len(res.out) == 0 {
			result = nil
		} else if result, err = decodeJSON(res.out); err != nil {
			f = failf(StatesRuntime, "the handler for %q returned invalid JSON: %v", key, err)
		}
	}
	if f != nil {
		done.Error, done.Cause = f.name, f.cause
		x.notify(done)
		return nil, f
	}
	x.notify(done)
	if s.lambdaInvoke {
		result = lambdaInvokeResult(result, len(res.out), x.rand.uuid(), end)
	}
	if n := jsonSize(result); n > MaxPayloadBytes {
		return nil, failf(StatesDataLimitExceeded, "The task %q returned a result of %d bytes, over the %d byte limit.", s.name, n, MaxPayloadBytes)
	}
	return result, nil
}

type callResult struct {
	out      []byte
	err      error
	timedOut bool
	aborted  bool
}

// call runs a handler in its own goroutine so that a timeout or an abort
// can stop waiting for it; a handler that ignores its context is left to
// finish on its own. A panic becomes a *PanicError.
func (x *run) call(ctx context.Context, h Handler, in []byte, timeout time.Duration) callResult {
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan callResult, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- callResult{err: &PanicError{Value: p, Stack: debug.Stack()}}
			}
		}()
		out, err := h(hctx, json.RawMessage(in))
		done <- callResult{out: out, err: err}
	}()
	start := x.r.tl.Now()
	var expired chan struct{}
	if timeout > 0 {
		expired = make(chan struct{})
		go func() {
			if x.r.tl.deadline(hctx, timeout) == nil {
				close(expired)
			}
		}()
	}
	select {
	case r := <-done:
		if ctx.Err() != nil {
			return callResult{aborted: true}
		}
		// A handler that used up its time counts as timed out even if it
		// returned at the same moment the deadline fired.
		if timeout > 0 && x.r.tl.Now().Sub(start) >= timeout {
			return callResult{timedOut: true}
		}
		return r
	case <-expired:
		return callResult{timedOut: true}
	case <-ctx.Done():
		return callResult{aborted: true}
	}
}

// httpDate is the format of an HTTP Date header.
const httpDate = "Mon, 02 Jan 2006 15:04:05 GMT"

// lambdaInvokeResult wraps a function's output the way the optimized
// lambda:invoke integration does.
func lambdaInvokeResult(payload any, size int, requestID string, at time.Time) map[string]any {
	if size == 0 {
		size = len("null")
	}
	headers := map[string]string{
		"Connection":                     "keep-alive",
		"Content-Length":                 strconv.Itoa(size),
		"Content-Type":                   "application/json",
		"Date":                           at.UTC().Format(httpDate),
		"X-Amz-Executed-Version":         "$LATEST",
		"x-amzn-Remapped-Content-Length": "0",
		"x-amzn-RequestId":               requestID,
	}
	h := map[string]any{}
	all := map[string]any{}
	for k, v := range headers {
		h[k] = v
		all[k] = []any{v}
	}
	return map[string]any{
		"ExecutedVersion": "$LATEST",
		"Payload":         payload,
		"SdkHttpMetadata": map[string]any{
			"AllHttpHeaders": all,
			"HttpHeaders":    h,
			"HttpStatusCode": jsonNumber(200),
		},
		"SdkResponseMetadata": map[string]any{"RequestId": requestID},
		"StatusCode":          jsonNumber(200),
	}
}
