// Package asl runs Amazon States Language state machines in process, so
// that `kiln bake --local` executes the very definition JSON that Step
// Functions runs in the cloud, with Go handlers standing in for the Lambda
// functions.
//
// # Usage
//
//	r, err := asl.New(definition, asl.Options{
//		Handlers: map[string]asl.Handler{"Launch": launch, "Cleanup": cleanup},
//	})
//	if err != nil { ... }            // *DefinitionError lists every problem
//	res, err := r.Run(ctx, "bake-1", input)
//	fmt.Println(res.Status, res.Error, res.Report(asl.Pricing{}))
//
// # What is supported
//
// The JSONPath flavour of the States Language
// (https://states-language.net/spec.html and the Step Functions developer
// guide):
//
//   - State types Task, Pass, Choice, Wait, Succeed, Fail, Parallel and
//     inline Map (Iterator or ItemProcessor, ItemsPath, ItemSelector or the
//     older Parameters, MaxConcurrency and MaxConcurrencyPath; iterations run
//     concurrently and results keep item order).
//   - Input and output processing in AWS order: InputPath, Parameters, the
//     task, ResultSelector, ResultPath (null, "$", and nested paths that
//     create objects), OutputPath; Pass Result. Payload templates take paths
//     and intrinsic calls in fields ending ".$", at any depth.
//   - Paths: $, $.a.b, $.a[0], $.a[-1], $['x'], $.a.['x y'], wildcards
//     ([*], .*) in InputPath, OutputPath and Parameters, and the context
//     object $$ (Execution.Id/Input/Name/StartTime/RoleArn, State.Name/
//     EnteredTime/RetryCount, StateMachine.Id/Name, Map.Item.Index/Value).
//     A definite path that matches nothing is States.Runtime.
//   - All intrinsic functions of the JSONPath language (States.Format,
//     StringToJson, JsonToString, Array, ArrayPartition, ArrayContains,
//     ArrayRange, ArrayGetItem, ArrayLength, ArrayUnique, Base64Encode,
//     Base64Decode, Hash, JsonMerge, MathRandom, MathAdd, StringSplit,
//     UUID), nested up to 10 deep.
//   - Every Choice comparison operator and its Path form, the Is* tests,
//     And/Or/Not and Default.
//   - Retry (IntervalSeconds, MaxAttempts, BackoffRate, MaxDelaySeconds,
//     JitterStrategy) before Catch (ResultPath), States.ALL,
//     States.TaskFailed, Task TimeoutSeconds/TimeoutSecondsPath, the
//     256 KiB payload limit, and the top-level TimeoutSeconds (TIMED_OUT).
//   - Tasks call Handlers, either directly ("Resource": a function ARN or
//     any name) or through "arn:aws:states:::lambda:invoke" with
//     Parameters.FunctionName and Payload, whose result is wrapped like the
//     real integration's (ExecutedVersion, Payload, SdkHttpMetadata,
//     SdkResponseMetadata, StatusCode). Inputs and outputs go through JSON.
//     A handler's error is named as the Go Lambda runtime names it (see
//     ErrorName) with the runtime's {"errorMessage","errorType"} document as
//     Cause; a panic becomes a *PanicError.
//
// Time goes through a Clock: FakeClock for tests, and Options.TimeScale to
// compress waits when running against the wall clock. Each execution keeps
// a History of billable transitions, which Report prices; an Observer sees
// progress live.
//
// # Where it differs from AWS
//
//   - JSONata, workflow variables (Assign, Output, Arguments), distributed
//     Map (ItemReader, ItemBatcher, ResultWriter, tolerated failures),
//     activities, callback (.waitForTaskToken) and .sync integrations are
//     rejected when the definition is loaded. HeartbeatSeconds and
//     Credentials are accepted and ignored.
//   - JsonPath deep scans (..), filters, slices and unions are rejected.
//   - Object keys come out sorted rather than in insertion order, and
//     States.Format prints objects with sorted keys.
//   - A seeded States.MathRandom is deterministic but does not produce the
//     numbers AWS would for the same seed.
//   - A failed handler's Cause carries no stackTrace; a panic's stack is in
//     PanicError.Stack instead.
//   - A caught error's output has "Cause" only when the error has one.
//   - A lambda:invoke task without Payload sends its handler {}.
//   - States.BranchFailed is never raised: like AWS, a failed Map iteration
//     or Parallel branch fails its state with the branch's own error.
//   - MaxConcurrency 0 (or above 40) runs 40 iterations at a time, the
//     inline Map limit on AWS.
//   - When a Task times out or the execution is stopped, the handler's
//     context is cancelled but the runner does not wait for it to return.
//   - TimeoutSecondsPath and a Wait's SecondsPath/TimestampPath read the
//     input after InputPath.
//   - A Choice Variable that matches nothing is States.Runtime for every
//     operator except IsPresent.
//   - States.TaskFailed matches error names outside the States. namespace
//     (what tasks report); States.Runtime is never retried or caught and
//     States.DataLimitExceeded only by a catcher that names it.
package asl
