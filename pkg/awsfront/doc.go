// Package awsfront is test tooling: an HTTP proxy on 127.0.0.1 between
// kiln's real aws-sdk-go-v2 clients and an AWS emulator (moto) that counts
// and records every call, injects faults, enforces EC2's request-rate
// buckets, and makes moto's instant state changes take realistic time. The
// fault sweep, throttle storm, crash-and-retry, concurrency tests and the
// benchmark of issue 8 are built on it.
//
// # Starting one
//
//	cfg := emulator.ForTest(t)                       // moto, reset
//	front, cfg := awsfront.ForTest(t, cfg, awsfront.Options{
//		TimeScale: 0.01,                             // 30 s of AWS time = 0.3 s
//		Timings:   awsfront.DefaultTimings,          // zero = instant, as moto
//	})
//	ec2c := ec2.NewFromConfig(cfg)                   // every call now goes through front
//	s3c := s3.NewFromConfig(cfg, emulator.S3Options) // path-style addressing is required
//
// Start(Options) does the same without a testing.TB; Close stops it. The
// front never signs anything and forwards requests byte for byte, so it
// works only with an emulator that does not check signatures.
//
// # Naming calls
//
// Every request is one Call (an SDK retry is a call of its own, with
// Call.Attempt and Call.Invocation telling them apart). A call is named
// "<service>:<operation>": the service and the Region come from the SigV4
// credential scope (".../us-east-1/ec2/aws4_request"), the operation from
// the query protocol's Action (EC2), the X-Amz-Target header (SSM,
// EventBridge: "ssm:PutParameter", "events:PutEvents") or, for S3, the SDK's
// x-id parameter or else the method, path and subresource ("s3:PutObject",
// "s3:ListObjectsV2", "s3:DeleteObjects"). Requests that are no AWS call
// (moto's /moto-api/) pass through unrecorded; a POST /moto-api/reset
// through the front also clears what the front tracks.
//
// # Reading what happened
//
// Calls returns the ordered log: sequence number (Seq), the call's ordinal
// within its action (N) and within its action and Region (RegionN), action,
// Region, SDK attempt, the IDs the request named, the IDs the answer says it
// created (instances, images, security groups, key pairs, snapshots,
// volumes, launch templates), the status and error code returned, the fault
// injected if any, and whether moto saw the call (Forwarded). Counts and
// RegionCounts count calls per action. Reset forgets everything and drops
// every setting, back to how Start left the front.
//
// # Faults
//
// All settings change at run time and apply to calls that arrive after the
// change. For each call the front decides, in this order:
//
//  1. Permanent failures (Fail, FailCall, FailNth). A Failure strikes one
//     call, chosen by sequence number or as the Nth call of an action
//     (optionally of one Region), and from then on every later call that
//     repeats it: by default the same action in the same Region with the
//     same parameters apart from an idempotency token (ClientToken,
//     ClientRequestToken), so the SDK's retries and a re-invoked stage's
//     identical call fail as well while other calls of the action pass;
//     with Repeat: RepeatAction, every later call of the action. The error
//     is non-retryable: by default EC2 UnauthorizedOperation (403), S3
//     AccessDenied (403), SSM/EventBridge AccessDeniedException (400), or
//     the Code and Status asked for. The message names the struck call. The
//     call does not reach moto, unless AfterUpstream: then moto carries it
//     out and the caller still sees the error (a lost answer).
//  2. Random faults (SetFaults): a fraction ThrottleRate of the calls that
//     Only admits gets the service's throttling error (EC2
//     RequestLimitExceeded 503, SSM/EventBridge ThrottlingException 400, S3
//     SlowDown 503) and a fraction ServerErrorRate an HTTP 500
//     (InternalError and the like), without reaching moto; draws come from a
//     PCG seeded with Seed. The SDK's standard retryer retries all of them.
//  3. Token buckets (EnableBuckets; SetBuckets to change them): EC2's
//     documented buckets per Region, EC2Buckets: RunInstances 5 burst
//     refilling 2/s, CopyImage 100/1, TerminateInstances, DeregisterImage and
//     ModifyImageAttribute 100/5 each, Describe*/Get*/List*/Search* 100/20
//     together, every other EC2 action 50/5 together. Refills run in AWS
//     time, so TimeScale speeds them up. A call that finds its bucket empty
//     gets RequestLimitExceeded (503) and takes no token. Tokens reports a
//     bucket's level.
//  4. Eventual consistency (SetConsistencyDelay(k)): an instance or image
//     created through the front while k > 0 stays invisible to its first k
//     describes. A DescribeInstances/DescribeImages naming it by ID is
//     answered InvalidInstanceID.NotFound / InvalidAMIID.NotFound (400); one
//     that lists (by filter) leaves it out. Each such describe uses one up.
//  5. Client tokens (SetClientTokens, off by default): moto ignores EC2's
//     ClientToken; with this on, a repeat of a successful call with the same
//     token is answered with the first answer and never reaches moto, and
//     one with other parameters gets IdempotentParameterMismatch.
//
// A fixed latency (SetLatency, in AWS time) delays every call before all
// of this.
//
// # Time
//
// moto changes state at once. The front models the change as AWS makes it
// (SetTimings or Options.Timings; DefaultTimings match kiln's
// bake.AWSTimings): after RunInstances or StartInstances an instance reads
// pending (code 0) for Running, after StopInstances stopping (64) for
// Stopped, after TerminateInstances shutting-down (32) for Terminated;
// after CreateImage an image reads pending for Image, after CopyImage the
// copy reads pending for Copy. It learns the IDs from the answers
// (<instanceId>, <imageId>) and rewrites the state in later
// DescribeInstances and DescribeImages answers in place, leaving every
// other byte as moto sent it; answers in Regions where it tracks nothing
// are not even parsed. It shows the intermediate state only while moto
// shows the state the change leads to, so a later change (a terminate
// during a stop) wins. An item whose shown state fails the request's state
// filter (instance-state-name, instance-state-code, an image's state) is
// left out, and a reservation left empty with it.
//
// Durations are AWS time: each takes TimeScale times as long on the
// Clock (Options.Clock; the wall clock by default). With a fake clock
// (asl.FakeClock fits) a test moves the model and the buckets by hand.
// Under the local state machine runner, give the front the runner's clock
// and time scale: its compressed Wait states then last exactly as long as
// the front's compressed boots, stops and copies.
//
// # Hooks
//
// OnResponse runs a callback after moto answered a matching call and
// before the answer goes back, holding it until the callback returns:
// cancel the caller's context there to interrupt a Lambda right after its
// call took effect. As on AWS, a call the front has forwarded is carried
// out even if its client goes away meanwhile, and the log shows the answer
// the front tried to give; a client that goes away during SetLatency's
// delay never reaches moto, and its call keeps Status 0.
//
// # Limits
//
//   - S3 must use path-style addressing (emulator.S3Options).
//   - Eventual consistency covers DescribeInstances and DescribeImages only
//     (not CreateTags or DescribeInstanceStatus on a new ID), and the time
//     model does not touch snapshots, volumes or DescribeInstanceStatus.
//   - A state filter asking for an intermediate state (instance-state-name
//     = pending) cannot find what moto already moved on: moto filters
//     first.
//   - The RunInstances instance-count bucket is not modelled.
//   - Bodies are held in memory: fine for tests, not for large objects.
package awsfront
