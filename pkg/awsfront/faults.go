package awsfront

import (
	"errors"
	"fmt"
	"math/rand/v2"
)

// Faults are random faults: each call that Only admits is answered with
// the service's throttling error with probability ThrottleRate, or with an
// HTTP 500 with probability ServerErrorRate, without reaching the
// emulator. The SDK's standard retryer retries both.
//
// Throttling errors are EC2's RequestLimitExceeded (HTTP 503), the JSON
// services' ThrottlingException (400), S3's SlowDown (503) and the other
// query services' Throttling (400). Server errors are InternalError (EC2,
// S3), InternalServerError (SSM), InternalException (EventBridge) or
// InternalFailure, all HTTP 500.
type Faults struct {
	// ThrottleRate is the fraction of calls throttled, in [0, 1].
	ThrottleRate float64
	// ServerErrorRate is the fraction of calls answered HTTP 500, in
	// [0, 1 - ThrottleRate].
	ServerErrorRate float64
	// Seed seeds the draws. One draw is made per admitted call in order
	// of arrival, so a sequential client sees the same faults for the
	// same seed; concurrent clients share the sequence.
	Seed uint64
	// Only restricts the faults to calls whose action matches one of
	// these patterns (path.Match syntax: "ec2:*", "ec2:Describe*",
	// "s3:PutObject"); empty means every call.
	Only []string
}

// SetFaults replaces the random faults; the zero Faults turns them off.
// It restarts the random sequence from fs.Seed.
func (f *Front) SetFaults(fs Faults) error {
	if fs.ThrottleRate < 0 || fs.ServerErrorRate < 0 || fs.ThrottleRate+fs.ServerErrorRate > 1 {
		return fmt.Errorf("set faults: rates %v and %v: want each >= 0 and a sum <= 1", fs.ThrottleRate, fs.ServerErrorRate)
	}
	if err := validPatterns(fs.Only); err != nil {
		return fmt.Errorf("set faults: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = fs
	f.rng = rand.New(rand.NewPCG(fs.Seed, fs.Seed^0x6b696c6e)) // "kiln"
	return nil
}

// Repeat says which later calls a permanent failure catches once it has
// struck.
type Repeat int

const (
	// RepeatSame fails every later call that repeats the struck one: same
	// action, same Region, same parameters apart from an idempotency
	// token (EC2's ClientToken, a JSON ClientToken or
	// ClientRequestToken). The SDK's retries of it and a re-invoked
	// stage's identical call fail too; other calls of the action pass.
	RepeatSame Repeat = iota
	// RepeatAction fails every later call of the struck call's action (in
	// Failure.Region if set, else in any Region), whatever its
	// parameters.
	RepeatAction
)

// Failure is a permanent failure: it strikes one call, chosen by sequence
// number or as the Nth call of an action, and from then on every call
// Repeat catches. The failing calls are answered with a non-retryable
// error and, unless AfterUpstream, never reach the emulator.
type Failure struct {
	// Seq strikes the call with this sequence number (Call.Seq). Set
	// either Seq or Action and N.
	Seq int
	// Action and N strike the Nth call of Action ("ec2:RunInstances"),
	// counted from 1 since Start or Reset as Call.N counts: every HTTP
	// request, an SDK retry or a faulted call included. A failure set
	// after its call has passed never strikes.
	Action string
	N      int
	// Region, if set, counts only Action's calls in that Region (as
	// Call.RegionN does) and confines RepeatAction to it.
	Region string
	// Code is the error code; empty means the service's access-denied
	// code: EC2 UnauthorizedOperation (403), S3 and query services
	// AccessDenied (403), JSON services AccessDeniedException (400).
	Code string
	// Status is the HTTP status; zero means the one AWS uses for Code
	// (400 for codes the front does not know). A status of 500 or more,
	// or a throttling code, makes the SDK retry: the retries fail too,
	// but slowly.
	Status int
	// Message is the error message; empty means one that names the
	// struck call.
	Message string
	// Repeat says which later calls fail too.
	Repeat Repeat
	// AfterUpstream lets the emulator carry each failing call out before
	// the front answers with the error: a call that took effect although
	// its caller saw it fail (a lost answer). The log shows such calls as
	// Forwarded with their Created IDs.
	AfterUpstream bool
}

// rule is a Failure and what it has struck.
type rule struct {
	Failure
	struck         bool
	seq            int
	fp             string
	action, region string
}

func (r *rule) match(c *Call, fp string) bool {
	if !r.struck {
		hit := false
		switch {
		case r.Seq > 0:
			hit = c.Seq == r.Seq
		case r.Region != "":
			hit = c.Action == r.Action && c.Region == r.Region && c.RegionN == r.N
		default:
			hit = c.Action == r.Action && c.N == r.N
		}
		if hit {
			r.struck, r.seq, r.fp, r.action, r.region = true, c.Seq, fp, c.Action, c.Region
		}
		return hit
	}
	if r.Repeat == RepeatAction {
		return c.Action == r.action && (r.Region == "" || c.Region == r.Region)
	}
	return fp == r.fp
}

func (r *rule) apiError(req *request, seq int) apiError {
	code := r.Code
	if code == "" {
		code = defaultFailCode(req)
	}
	status := r.Status
	if status == 0 {
		status = statusFor(req, code)
	}
	msg := r.Message
	if msg == "" {
		msg = fmt.Sprintf("awsfront: permanent failure of %s (struck call %d, this call %d)", r.action, r.seq, seq)
	}
	return apiError{status, code, msg}
}

// Fail adds a permanent failure. Failures add up; the first that catches a
// call answers it.
func (f *Front) Fail(fl Failure) error {
	switch {
	case fl.Seq > 0 && fl.Action == "" && fl.N == 0:
	case fl.Seq == 0 && fl.Action != "" && fl.N > 0:
	default:
		return errors.New("fail: set Seq >= 1, or Action and N >= 1, not both")
	}
	if fl.Status != 0 && (fl.Status < 400 || fl.Status > 599) {
		return fmt.Errorf("fail: status %d is no error", fl.Status)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{Failure: fl})
	return nil
}

// FailCall fails call number seq (Call.Seq) permanently with code (empty
// for the service's access-denied code), and every later call repeating
// it. It panics if seq < 1.
func (f *Front) FailCall(seq int, code string) {
	if err := f.Fail(Failure{Seq: seq, Code: code}); err != nil {
		panic(err)
	}
}

// FailNth fails the nth call of action (Call.N) permanently with code
// (empty for the service's access-denied code), and every later call
// repeating it. It panics if action is empty or n < 1.
func (f *Front) FailNth(action string, n int, code string) {
	if err := f.Fail(Failure{Action: action, N: n, Code: code}); err != nil {
		panic(err)
	}
}

// ClearFailures removes every permanent failure.
func (f *Front) ClearFailures() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}
