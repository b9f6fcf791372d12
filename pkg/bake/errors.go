package bake

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"time"

	"github.com/aws/smithy-go"
)

// Domain errors. Stages return these (wrapped as they like); ForLambda
// turns them into the named errors the state machine routes on.

// ProvisionerError is a provisioner that failed: it exited with a status
// outside valid_exit_codes, timed out, or could not be started.
type ProvisionerError struct {
	// Provisioner names it (Provisioner.Label).
	Provisioner string
	// ExitStatus is the command's exit status, or -1 if it has none.
	ExitStatus int
	// Tail holds the last lines of its output.
	Tail []string
	// Err is the underlying failure, if any.
	Err error
}

func (e *ProvisionerError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "provisioner %s", e.Provisioner)
	switch {
	case e.Err != nil:
		fmt.Fprintf(&b, ": %v", e.Err)
	default:
		fmt.Fprintf(&b, " exited with status %d", e.ExitStatus)
	}
	if len(e.Tail) > 0 {
		fmt.Fprintf(&b, "; last output:\n%s", strings.Join(e.Tail, "\n"))
	}
	return b.String()
}

func (e *ProvisionerError) Unwrap() error { return e.Err }

// HostKeyError is an SSH server that presented a different host key than
// the one kiln generated for the instance: provisioning stops before running
// anything.
type HostKeyError struct {
	Addr string
	// Want and Got are SHA256 fingerprints.
	Want, Got string
}

func (e *HostKeyError) Error() string {
	return fmt.Sprintf("ssh %s: host key mismatch: want %s, server presented %s", e.Addr, e.Want, e.Got)
}

// WaitTimeoutError is a readiness wait that exceeded its bound.
type WaitTimeoutError struct {
	// For says what was awaited.
	For   string
	After time.Duration
}

func (e *WaitTimeoutError) Error() string {
	return fmt.Sprintf("%s: not ready after %s", e.For, e.After.Round(time.Second))
}

// CleanupError lists the resources cleanup could not delete.
type CleanupError struct {
	Errs []error
	// After is the failure that sent the bake to cleanup, if one did: the
	// execution ends with cleanup's error, which must not hide it.
	After *Failure
}

func (e *CleanupError) Error() string {
	msg := "cleanup incomplete: " + errors.Join(e.Errs...).Error()
	if e.After != nil {
		msg += "\n(cleanup ran because the bake had failed: " + e.After.Error + ": " + e.After.Message() + ")"
	}
	return msg
}

func (e *CleanupError) Unwrap() []error { return e.Errs }

// Routed errors: the error names the state machine's Retry and Catch match.
// aws-lambda-go reports a returned error's Go type name as the Lambda error
// type, and Step Functions matches on that name, so each routed error is its
// own named type. TestForLambdaNames pins the names; statemachine/ uses them.

// RecipeInvalid is a recipe that does not load (no resource was created).
type RecipeInvalid struct{ routed }

// ProvisionFailed is a provisioner that failed.
type ProvisionFailed struct{ routed }

// HostKeyMismatch is an instance presenting an unexpected SSH host key.
type HostKeyMismatch struct{ routed }

// WaitTimedOut is a resource that did not become ready within its bound.
type WaitTimedOut struct{ routed }

// Throttled is an AWS call still throttled after the SDK's retries; the
// state machine retries the task with backoff.
type Throttled struct{ routed }

// Transient is a failure worth retrying: an AWS 5xx, a network error.
type Transient struct{ routed }

// CleanupIncomplete is cleanup that could not delete everything; the state
// machine retries it.
type CleanupIncomplete struct{ routed }

// StageFailed is any other failure.
type StageFailed struct{ routed }

// routed carries the stage and the error message.
type routed struct {
	Stage string
	Err   error
}

func (r routed) Error() string { return r.Stage + ": " + r.Err.Error() }
func (r routed) Unwrap() error { return r.Err }

// ForLambda converts a stage's error into the named error the state machine
// routes on, keeping the message. nil stays nil.
func ForLambda(stage string, err error) error {
	if err == nil {
		return nil
	}
	r := routed{Stage: stage, Err: err}
	var (
		recipe  *RecipeError
		prov    *ProvisionerError
		hostKey *HostKeyError
		wait    *WaitTimeoutError
		cleanup *CleanupError
	)
	switch {
	case errors.As(err, &hostKey):
		return &HostKeyMismatch{r}
	case errors.As(err, &prov):
		return &ProvisionFailed{r}
	case errors.As(err, &recipe), errors.Is(err, ErrUnsafePath), errors.Is(err, ErrBundleLimit), errors.Is(err, ErrInvalidBundle):
		return &RecipeInvalid{r}
	case errors.As(err, &wait):
		return &WaitTimedOut{r}
	case errors.As(err, &cleanup):
		return &CleanupIncomplete{r}
	case IsThrottle(err):
		return &Throttled{r}
	case isTransient(err):
		return &Transient{r}
	}
	return &StageFailed{r}
}

// AWSCode returns the AWS error code of err ("InvalidInstanceID.NotFound"),
// or "" if err is not an AWS API error.
func AWSCode(err error) string {
	if apiErr, ok := errors.AsType[smithy.APIError](err); ok {
		return apiErr.ErrorCode()
	}
	return ""
}

// IsNotFound reports whether err is an AWS "does not exist" error, which
// cleanup treats as already done.
func IsNotFound(err error) bool {
	code := AWSCode(err)
	switch {
	case code == "":
		return false
	case strings.HasSuffix(code, ".NotFound"), strings.HasSuffix(code, "NotFound"),
		code == "ParameterNotFound", code == "NoSuchKey", code == "NoSuchBucket",
		code == "InvalidAMIID.Unavailable", code == "InvalidGroup.NotFound",
		code == "ResourceNotFoundException":
		return true
	}
	return false
}

// IsThrottle reports whether err is AWS throttling.
func IsThrottle(err error) bool {
	switch AWSCode(err) {
	case "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException",
		"TooManyRequestsException", "RequestThrottled", "RequestThrottledException",
		"SlowDown", "PriorRequestNotComplete", "EC2ThrottledException":
		return true
	}
	return false
}

// ErrNotYetVisible is a resource an earlier attempt created that AWS does
// not show yet; a retry finds it.
var ErrNotYetVisible = errors.New("not visible yet")

func isTransient(err error) bool {
	if errors.Is(err, ErrNotYetVisible) {
		return true
	}
	switch AWSCode(err) {
	case "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable",
		"InsufficientInstanceCapacity", "RequestTimeout", "RequestTimeoutException":
		return true
	}
	if respErr, ok := errors.AsType[interface {
		error
		HTTPStatusCode() int
	}](err); ok && respErr.HTTPStatusCode() >= 500 {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	_, isNet := errors.AsType[net.Error](err)
	return isNet
}

// RoutedErrors lists one value of each routed error type, for tests that
// check the state machine only routes on names kiln can produce.
var RoutedErrors = []error{
	&RecipeInvalid{}, &ProvisionFailed{}, &HostKeyMismatch{}, &WaitTimedOut{},
	&Throttled{}, &Transient{}, &CleanupIncomplete{}, &StageFailed{},
}

// ErrorName is the error type name AWS Lambda reports for err returned by
// a Go handler (aws-lambda-go: the Go type name, pointer stripped). The
// local runner names errors the same way.
func ErrorName(err error) string {
	t := reflect.TypeOf(err)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Name()
}
