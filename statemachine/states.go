package statemachine

import "strings"

// Builders for the few ASL shapes the flow uses. They keep Flow reading as
// the lifecycle rather than as JSON.

type states struct{ m map[string]any }

func (s *states) add(name string, state map[string]any) {
	if s.m == nil {
		s.m = map[string]any{}
	}
	if _, dup := s.m[name]; dup {
		panic("statemachine: duplicate state " + name)
	}
	s.m[name] = state
}

type taskState map[string]any

// retrier is one Retry entry.
type retrier struct {
	ErrorEquals     []string `json:"ErrorEquals"`
	IntervalSeconds int      `json:"IntervalSeconds,omitempty"`
	MaxAttempts     int      `json:"MaxAttempts"`
	BackoffRate     float64  `json:"BackoffRate,omitempty"`
	MaxDelaySeconds int      `json:"MaxDelaySeconds,omitempty"`
	JitterStrategy  string   `json:"JitterStrategy,omitempty"`
}

// LambdaTransient are the Lambda service errors AWS recommends retrying.
var LambdaTransient = []string{
	"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
	"Lambda.TooManyRequestsException", "Lambda.ClientExecutionTimeoutException",
}

// Retry policy shared by every task, tried in order before any Catch:
// Lambda's own transient errors (AWS's recommendation: 2 s, 6 attempts,
// backoff 2), AWS throttling that outlasted the SDK's retries (kiln's
// Throttled: up to 20 attempts, at most 20 s apart, about 3 minutes in all
// on average: long enough for a burst of bakes to drain through
// RunInstances' bucket at 2 a second, and brisk enough that the bucket's
// tokens do not go unused while everyone backs off; waiting here is free,
// where a Lambda sleeping is billed. make bench's scale run measures it), 5xx and
// resources not yet visible (Transient), and a Lambda that died (out of
// memory, timeout), retried once more because every action is idempotent.
var defaultRetry = []retrier{
	{ErrorEquals: LambdaTransient, IntervalSeconds: 2, MaxAttempts: 6, BackoffRate: 2, JitterStrategy: "FULL"},
	{ErrorEquals: []string{"Throttled"}, IntervalSeconds: 2, MaxAttempts: 20, BackoffRate: 1.5, MaxDelaySeconds: 20, JitterStrategy: "FULL"},
	{ErrorEquals: []string{"Transient"}, IntervalSeconds: 5, MaxAttempts: 6, BackoffRate: 2, MaxDelaySeconds: 60, JitterStrategy: "FULL"},
	{ErrorEquals: []string{"Lambda.Unknown", "States.Timeout"}, IntervalSeconds: 5, MaxAttempts: 2, BackoffRate: 2},
}

// task calls a stage's action with the whole state; the stage returns the
// whole state. The Resource is a placeholder the deployer substitutes.
func task(function, action string, timeoutSeconds int) taskState {
	return taskState{
		"Type":           "Task",
		"Comment":        function + ": " + action,
		"Resource":       Placeholder(function),
		"Parameters":     map[string]any{"action": action, "state.$": "$"},
		"TimeoutSeconds": timeoutSeconds,
		"Retry":          append([]retrier(nil), defaultRetry...),
		"Catch":          []map[string]any{{"ErrorEquals": []string{"States.ALL"}, "ResultPath": "$.error", "Next": "Cleanup"}},
	}
}

// Placeholder is the definition's stand-in for a stage function's ARN, as
// in "${LaunchFunctionArn}".
func Placeholder(function string) string {
	return "${" + PlaceholderName(function) + "}"
}

// PlaceholderName is the substitution key for a stage function's ARN.
func PlaceholderName(function string) string {
	return strings.ToUpper(function[:1]) + function[1:] + "FunctionArn"
}

func (t taskState) next(n string) taskState { t["Next"] = n; return t }

func (t taskState) retry(r retrier) taskState {
	t["Retry"] = append(t["Retry"].([]retrier), r)
	return t
}

// catchFirst routes the named errors to next before the catch-all.
func (t taskState) catchFirst(errs []string, next string) taskState {
	c, _ := t["Catch"].([]map[string]any)
	t["Catch"] = append([]map[string]any{{"ErrorEquals": errs, "ResultPath": "$.error", "Next": next}}, c...)
	return t
}

// catchAll replaces the catch-all: any error is recorded at resultPath.
func (t taskState) catchAll(resultPath, next string) taskState {
	var kept []map[string]any
	c, _ := t["Catch"].([]map[string]any)
	for _, x := range c {
		if errs := x["ErrorEquals"].([]string); len(errs) == 1 && errs[0] == "States.ALL" {
			continue
		}
		kept = append(kept, x)
	}
	t["Catch"] = append(kept, map[string]any{"ErrorEquals": []string{"States.ALL"}, "ResultPath": resultPath, "Next": next})
	return t
}

func wait(comment, next string) map[string]any {
	return map[string]any{"Type": "Wait", "Comment": comment, "SecondsPath": "$.wait.seconds", "Next": next}
}

func choice(otherwise string, rules ...map[string]any) map[string]any {
	return map[string]any{"Type": "Choice", "Choices": rules, "Default": otherwise}
}

func rule(cond map[string]any, next string) map[string]any {
	cond["Next"] = next
	return cond
}

func isTrue(path string) map[string]any {
	return map[string]any{"Variable": path, "BooleanEquals": true}
}

func isPresent(path string) map[string]any {
	return map[string]any{"Variable": path, "IsPresent": true}
}

func stringEquals(path, v string) map[string]any {
	return map[string]any{"Variable": path, "StringEquals": v}
}

func and(conds ...map[string]any) map[string]any {
	return map[string]any{"And": conds}
}

func fail(comment, errPath string) map[string]any {
	return map[string]any{"Type": "Fail", "Comment": comment, "ErrorPath": errPath + ".Error", "CausePath": errPath + ".Cause"}
}
