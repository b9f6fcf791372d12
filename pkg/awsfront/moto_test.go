package awsfront

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/emulator"
)

// TestThroughMoto runs the front against one moto server whose state its
// subtests share (a reset and each Region's first call cost moto about a
// second): each subtest starts its own front and tags or names what it
// makes, so that it sees only its own resources.
func TestThroughMoto(t *testing.T) {
	direct := emulator.ForTest(t)
	env := &motoEnv{direct: direct, ami: ubuntu(t, ec2.NewFromConfig(direct), "us-east-1")}
	for _, tt := range []struct {
		name string
		run  func(*testing.T, *motoEnv)
	}{
		{"CountsAndPassThrough", testCountsAndPassThrough},
		{"UntrackedDescribesAreByteIdentical", testUntrackedDescribesAreByteIdentical},
		{"StormIsRetried", testStormIsRetried},
		{"PermanentFailureReachesCaller", testPermanentFailureReachesCaller},
		{"EventualConsistency", testEventualConsistency},
		{"TimeModel", testTimeModel},
		{"RunInstancesBucket", testRunInstancesBucket},
		{"HookInterruptsCaller", testHookInterruptsCaller},
		{"ClientTokens", testClientTokens},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, env) })
	}
}

// motoEnv is the moto server the subtests of TestThroughMoto share.
type motoEnv struct {
	direct aws.Config // pointed at moto itself, to look behind the front
	ami    string     // a public image in us-east-1
}

// front starts a front before moto and returns it with a config pointed at
// it, SDK retries off so that a test sees each answer.
func (env *motoEnv) front(t *testing.T, opts Options) (*Front, aws.Config) {
	t.Helper()
	f, cfg := ForTest(t, env.direct, opts)
	cfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
	return f, cfg
}

// mine lists the instances moto has that launch tagged for t.
func (env *motoEnv) mine(t *testing.T) []string {
	t.Helper()
	out, err := ec2.NewFromConfig(env.direct).DescribeInstances(t.Context(), taggedFor(t))
	if err != nil {
		t.Fatalf("DescribeInstances(tagged %s) in moto: %v", t.Name(), err)
	}
	var ids []string
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			ids = append(ids, aws.ToString(in.InstanceId))
		}
	}
	return ids
}

func taggedFor(t *testing.T, more ...ec2types.Filter) *ec2.DescribeInstancesInput {
	return &ec2.DescribeInstancesInput{Filters: append([]ec2types.Filter{
		{Name: aws.String("tag:kiln:test"), Values: []string{t.Name()}}}, more...)}
}

// quickRetries is the SDK's standard retryer without its waits or its
// retry quota: what kiln uses, minus the time.
func quickRetries() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = 30
		o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		o.RateLimiter = ratelimit.None
	})
}

func code(err error) string {
	if ae, ok := errors.AsType[smithy.APIError](err); ok {
		return ae.ErrorCode()
	}
	return ""
}

func inRegion(r string) func(*ec2.Options) { return func(o *ec2.Options) { o.Region = r } }

// ubuntu returns a public image moto preloads in region.
func ubuntu(t *testing.T, c *ec2.Client, region string) string {
	t.Helper()
	out, err := c.DescribeImages(t.Context(), &ec2.DescribeImagesInput{Owners: []string{"099720109477"}}, inRegion(region))
	if err != nil || len(out.Images) == 0 {
		t.Fatalf("DescribeImages(owner Canonical) in %s = %v images, %v", region, len(out.Images), err)
	}
	return aws.ToString(out.Images[0].ImageId)
}

// runInput is a RunInstances of one instance tagged for t.
func runInput(t *testing.T, ami string) *ec2.RunInstancesInput {
	return &ec2.RunInstancesInput{
		ImageId: aws.String(ami), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance,
			Tags: []ec2types.Tag{{Key: aws.String("kiln:test"), Value: aws.String(t.Name())}}}},
	}
}

func launch(t *testing.T, c *ec2.Client, ami string) string {
	t.Helper()
	out, err := c.RunInstances(t.Context(), runInput(t, ami))
	if err != nil {
		t.Fatalf("RunInstances: %v", err)
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

func instanceState(t *testing.T, c *ec2.Client, id string) (string, int32) {
	t.Helper()
	out, err := c.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatalf("DescribeInstances(%s): %v", id, err)
	}
	st := out.Reservations[0].Instances[0].State
	return string(st.Name), aws.ToInt32(st.Code)
}

func imageState(t *testing.T, c *ec2.Client, id, region string) string {
	t.Helper()
	out, err := c.DescribeImages(t.Context(), &ec2.DescribeImagesInput{ImageIds: []string{id}}, inRegion(region))
	if err != nil || len(out.Images) != 1 {
		t.Fatalf("DescribeImages(%s) in %s = %d images, %v", id, region, len(out.Images), err)
	}
	return string(out.Images[0].State)
}

// TestCountsAndPassThrough sends EC2, SSM, S3 and EventBridge calls
// through the front: each is named and counted per Region, and what comes
// back is what moto stored.
func testCountsAndPassThrough(t *testing.T, env *motoEnv) {
	f, cfg := env.front(t, Options{})
	ctx := t.Context()
	e, p, s, ev := ec2.NewFromConfig(cfg), ssm.NewFromConfig(cfg), s3.NewFromConfig(cfg, emulator.S3Options), eventbridge.NewFromConfig(cfg)

	for _, region := range []string{"us-east-1", "us-east-1", "eu-west-1"} {
		if _, err := e.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}, inRegion(region)); err != nil {
			t.Fatalf("DescribeVpcs in %s: %v", region, err)
		}
	}
	if _, err := p.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/kiln/x"), Value: aws.String("v1"), Type: "String"}); err != nil {
		t.Fatalf("PutParameter: %v", err)
	}
	got, err := p.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/kiln/x")})
	if err != nil || aws.ToString(got.Parameter.Value) != "v1" {
		t.Fatalf("GetParameter = %v, %v; want v1", got, err)
	}
	if _, err := p.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/kiln/nope")}); code(err) != "ParameterNotFound" {
		t.Errorf("GetParameter(missing) = %v, want ParameterNotFound", err)
	}
	bucket, content := "kiln-front", []byte("line one\nline two\n")
	if _, err := s.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
	if _, err := s.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("a/b.txt"), Body: bytes.NewReader(content)}); err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	obj, err := s.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("a/b.txt")})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	body, _ := io.ReadAll(obj.Body)
	obj.Body.Close()
	if !bytes.Equal(body, content) {
		t.Errorf("GetObject body = %q, want %q", body, content)
	}
	head, err := s.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("a/b.txt")})
	if err != nil {
		t.Errorf("HeadObject: %v", err)
	} else if n := aws.ToInt64(head.ContentLength); n != int64(len(content)) {
		t.Errorf("HeadObject length = %d, want %d", n, len(content))
	}
	if list, err := s.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)}); err != nil || len(list.Contents) != 1 {
		t.Errorf("ListObjectsV2 = %v; want 1 object", err)
	}
	if _, err := s.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(bucket),
		Delete: &s3types.Delete{Objects: []s3types.ObjectIdentifier{{Key: aws.String("a/b.txt")}}}}); err != nil {
		t.Errorf("DeleteObjects: %v", err)
	}
	if _, err := s.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("a/b.txt")}); err != nil {
		t.Errorf("DeleteObject (a 204): %v", err)
	}
	if _, err := ev.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{{
		Source: aws.String("kiln"), DetailType: aws.String("test"), Detail: aws.String("{}")}}}); err != nil {
		t.Errorf("PutEvents: %v", err)
	}

	want := map[string]int{
		"ec2:DescribeVpcs": 3, "ssm:PutParameter": 1, "ssm:GetParameter": 2,
		"s3:CreateBucket": 1, "s3:PutObject": 1, "s3:GetObject": 1, "s3:HeadObject": 1,
		"s3:ListObjectsV2": 1, "s3:DeleteObjects": 1, "s3:DeleteObject": 1, "events:PutEvents": 1,
	}
	if diff := cmp.Diff(want, f.Counts()); diff != "" {
		t.Errorf("Counts() (-want +got):\n%s", diff)
	}
	if rc := f.RegionCounts(); rc["us-east-1"]["ec2:DescribeVpcs"] != 2 || rc["eu-west-1"]["ec2:DescribeVpcs"] != 1 {
		t.Errorf("RegionCounts() DescribeVpcs = %d in us-east-1, %d in eu-west-1; want 2 and 1",
			rc["us-east-1"]["ec2:DescribeVpcs"], rc["eu-west-1"]["ec2:DescribeVpcs"])
	}
	for i, c := range f.Calls() {
		if c.Seq != i+1 || !c.Forwarded || c.Fault != "" || c.Attempt != 1 || c.Invocation == "" {
			t.Errorf("call %d = %+v, want seq %d, forwarded, attempt 1, no fault", i, c, i+1)
		}
		switch c.Action {
		case "s3:PutObject":
			if !cmp.Equal(c.IDs, []string{bucket + "/a/b.txt"}) {
				t.Errorf("PutObject IDs = %q, want the bucket and key", c.IDs)
			}
		case "ssm:GetParameter":
			if c.N == 2 && (c.Status != 400 || c.Code != "ParameterNotFound") {
				t.Errorf("second GetParameter logged %d %q, want 400 ParameterNotFound", c.Status, c.Code)
			}
		}
	}
}

// TestUntrackedDescribesAreByteIdentical compares raw answers through the
// front with moto's own: untouched unless the model tracks the resource,
// and then only in the state.
func testUntrackedDescribesAreByteIdentical(t *testing.T, env *motoEnv) {
	clock := asl.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f, cfg := env.front(t, Options{Clock: clock, Timings: DefaultTimings})
	e, direct, ami := ec2.NewFromConfig(cfg), env.direct, env.ami
	raw := func(base, body string) string {
		req, _ := http.NewRequest(http.MethodPost, base+"/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", authFor("us-east-1", "ec2"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	imgs := url.Values{"Action": {"DescribeImages"}, "Version": {ec2APIVersion}, "ImageId.1": {ami}}.Encode()
	if a, b := raw(f.URL(), imgs), raw(*direct.BaseEndpoint, imgs); a != b {
		t.Errorf("DescribeImages through the front differs from moto's:\n%s\nwant\n%s", a, b)
	}
	id := launch(t, e, ami)
	insts := url.Values{"Action": {"DescribeInstances"}, "Version": {ec2APIVersion}, "InstanceId.1": {id}}.Encode()
	got, moto := raw(f.URL(), insts), raw(*direct.BaseEndpoint, insts)
	want := strings.Replace(moto, "<instanceState><code>16</code><name>running</name></instanceState>",
		"<instanceState><code>0</code><name>pending</name></instanceState>", 1)
	if want == moto {
		t.Fatalf("moto's answer shows no running instance:\n%s", moto)
	}
	if got != want {
		t.Errorf("DescribeInstances of a booting instance through the front:\n%s\nwant moto's with the state pending:\n%s", got, want)
	}
}

// TestStormIsRetried throttles 30% of all calls and fails 5% with 500s:
// the SDK's standard retryer must get every call through.
func testStormIsRetried(t *testing.T, env *motoEnv) {
	f, cfg := env.front(t, Options{})
	cfg.Retryer = quickRetries
	ctx := t.Context()
	if err := f.SetFaults(Faults{ThrottleRate: 0.3, ServerErrorRate: 0.05, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	e, p, s := ec2.NewFromConfig(cfg), ssm.NewFromConfig(cfg), s3.NewFromConfig(cfg, emulator.S3Options)
	if _, err := s.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("kiln-storm")}); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
	for i := range 12 {
		if _, err := e.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
			t.Fatalf("DescribeVpcs %d: %v", i, err)
		}
		name := "/storm/" + string(rune('a'+i))
		if _, err := p.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String("v"), Type: "String"}); err != nil {
			t.Fatalf("PutParameter %d: %v", i, err)
		}
		if _, err := s.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("kiln-storm"), Key: aws.String(name), Body: strings.NewReader("x")}); err != nil {
			t.Fatalf("PutObject %d: %v", i, err)
		}
	}
	codes := map[string]map[string]int{} // service -> code -> count
	retried := 0
	calls := f.Calls()
	for i, c := range calls {
		if c.Fault == "" {
			continue
		}
		svc, _, _ := strings.Cut(c.Action, ":")
		if codes[svc] == nil {
			codes[svc] = map[string]int{}
		}
		codes[svc][c.Code]++
		// The SDK's next attempt of the same invocation follows.
		for _, n := range calls[i+1:] {
			if n.Invocation == c.Invocation && n.Attempt == c.Attempt+1 {
				retried++
				break
			}
		}
	}
	faulted := 0
	for _, m := range codes {
		for _, n := range m {
			faulted += n
		}
	}
	if faulted == 0 || retried != faulted {
		t.Errorf("%d faulted calls, %d of them retried; want some, all retried", faulted, retried)
	}
	wantCodes := map[string][]string{
		"ec2": {"RequestLimitExceeded", "InternalError"},
		"ssm": {"ThrottlingException", "InternalServerError"},
		"s3":  {"SlowDown", "InternalError"},
	}
	for svc, cs := range wantCodes {
		if codes[svc][cs[0]] == 0 {
			t.Errorf("no %s call throttled with %s; faults %v", svc, cs[0], codes[svc])
		}
		for c := range codes[svc] {
			if c != cs[0] && c != cs[1] {
				t.Errorf("%s call faulted with %q, want %v", svc, c, cs)
			}
		}
	}
	if codes["ec2"]["InternalError"]+codes["ssm"]["InternalServerError"]+codes["s3"]["InternalError"] == 0 {
		t.Errorf("no call answered 500: %v", codes)
	}
}

// TestPermanentFailureReachesCaller fails RunInstances and PutParameter
// for good: the SDK caller sees the code at once (no retries), moto never
// sees the call, and repeats fail too.
func testPermanentFailureReachesCaller(t *testing.T, env *motoEnv) {
	f, cfg := env.front(t, Options{})
	cfg.Retryer = quickRetries
	ctx := t.Context()
	e, p, direct := ec2.NewFromConfig(cfg), ssm.NewFromConfig(cfg), env.direct
	f.FailNth("ec2:RunInstances", 1, "")
	in := runInput(t, env.ami)
	for i := range 2 { // the second is a new invocation with a new client token
		if _, err := e.RunInstances(ctx, in); code(err) != "UnauthorizedOperation" {
			t.Errorf("RunInstances %d = %v, want UnauthorizedOperation", i+1, err)
		}
	}
	if n := f.Counts()["ec2:RunInstances"]; n != 2 {
		t.Errorf("%d RunInstances calls, want 2 (no SDK retries of a permanent failure)", n)
	}
	if ids := env.mine(t); len(ids) != 0 {
		t.Errorf("moto has instances %q, want none: a failed call must not reach it", ids)
	}
	other := *in
	other.InstanceType = ec2types.InstanceTypeT3Small
	if _, err := e.RunInstances(ctx, &other); err != nil {
		t.Errorf("RunInstances(t3.small) = %v, want success: another request", err)
	}

	seq := len(f.Calls()) + 1
	f.FailCall(seq, "AccessDeniedException")
	_, err := p.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/x"), Value: aws.String("v"), Type: "String"})
	if code(err) != "AccessDeniedException" || !strings.Contains(err.Error(), "permanent failure of ssm:PutParameter") {
		t.Errorf("PutParameter = %v, want AccessDeniedException naming the call", err)
	}
	if c := f.Calls()[seq-1]; c.Action != "ssm:PutParameter" || c.Fault != FaultFail || c.Status != 400 {
		t.Errorf("call %d = %s %q %d, want ssm:PutParameter %q 400", seq, c.Action, c.Fault, c.Status, FaultFail)
	}

	if err := f.Fail(Failure{Action: "ec2:RunInstances", N: 4, AfterUpstream: true}); err != nil {
		t.Fatal(err)
	}
	fourth := *in // not a repeat of the first, which the first rule still catches
	fourth.InstanceType = ec2types.InstanceTypeT3Nano
	if _, err := e.RunInstances(ctx, &fourth); code(err) != "UnauthorizedOperation" {
		t.Fatalf("RunInstances 4 = %v, want UnauthorizedOperation", err)
	}
	last := f.Calls()[len(f.Calls())-1]
	if !last.Forwarded || len(last.Created) != 1 {
		t.Fatalf("RunInstances 4 logged forwarded %v created %q, want forwarded with one instance", last.Forwarded, last.Created)
	}
	if st, _ := instanceState(t, ec2.NewFromConfig(direct), last.Created[0]); st != "running" {
		t.Errorf("instance %s behind a lost answer is %s in moto, want running", last.Created[0], st)
	}
}

// TestEventualConsistency hides new instances and images from their first
// describes.
func testEventualConsistency(t *testing.T, env *motoEnv) {
	f, cfg := env.front(t, Options{})
	ctx := t.Context()
	e, ami := ec2.NewFromConfig(cfg), env.ami
	f.SetConsistencyDelay(2)
	id := launch(t, e, ami)
	for i := range 2 {
		_, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if code(err) != "InvalidInstanceID.NotFound" {
			t.Errorf("DescribeInstances %d of a new instance = %v, want InvalidInstanceID.NotFound", i+1, err)
		}
	}
	if st, _ := instanceState(t, e, id); st != "running" {
		t.Errorf("third DescribeInstances: %s, want running", st)
	}

	// A listing leaves the new instance out, and uses up its one describe.
	f.SetConsistencyDelay(1)
	id2 := launch(t, e, ami)
	listed := func() []string {
		out, err := e.DescribeInstances(ctx, taggedFor(t))
		if err != nil {
			t.Fatalf("DescribeInstances(by tag): %v", err)
		}
		var ids []string
		for _, r := range out.Reservations {
			for _, in := range r.Instances {
				ids = append(ids, aws.ToString(in.InstanceId))
			}
		}
		return ids
	}
	if got := listed(); !cmp.Equal(got, []string{id}) {
		t.Errorf("listing right after launch = %q, want only the older %s", got, id)
	}
	if got := listed(); len(got) != 2 || !slices.Contains(got, id2) {
		t.Errorf("second listing = %q, want both instances (%s and %s)", got, id, id2)
	}

	img, err := e.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("kiln-ec")})
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	_, err = e.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(img.ImageId)}})
	if code(err) != "InvalidAMIID.NotFound" {
		t.Errorf("DescribeImages of a new image = %v, want InvalidAMIID.NotFound", err)
	}
	if st := imageState(t, e, aws.ToString(img.ImageId), "us-east-1"); st != "available" {
		t.Errorf("second DescribeImages: %s, want available", st)
	}
	if n := len(f.Calls()); f.Calls()[n-2].Fault != FaultNotFound {
		t.Errorf("the NotFound describe logged fault %q, want %q", f.Calls()[n-2].Fault, FaultNotFound)
	}
}

// TestTimeModel runs instances and images through their states on a fake
// clock at TimeScale 0.01.
func testTimeModel(t *testing.T, env *motoEnv) {
	clock := asl.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	_, cfg := env.front(t, Options{Clock: clock, TimeScale: 0.01, Timings: DefaultTimings})
	ctx := t.Context()
	e := ec2.NewFromConfig(cfg)
	aws30s := 300 * time.Millisecond // 30 s of AWS time
	check := func(what string, gotName string, gotCode int32, wantName string, wantCode int32) {
		t.Helper()
		if gotName != wantName || gotCode != wantCode {
			t.Errorf("%s: %s (%d), want %s (%d)", what, gotName, gotCode, wantName, wantCode)
		}
	}

	id := launch(t, e, env.ami)
	n, c := instanceState(t, e, id)
	check("at launch", n, c, "pending", 0)
	out, err := e.DescribeInstances(ctx, taggedFor(t, ec2types.Filter{
		Name: aws.String("instance-state-name"), Values: []string{"running"}}))
	if err != nil || len(out.Reservations) != 0 {
		t.Errorf("DescribeInstances(running) at launch = %d reservations, %v; want none", len(out.Reservations), err)
	}
	clock.Advance(aws30s - time.Millisecond)
	n, c = instanceState(t, e, id)
	check("29.9 s after launch", n, c, "pending", 0)
	clock.Advance(time.Millisecond)
	n, c = instanceState(t, e, id)
	check("30 s after launch", n, c, "running", 16)

	if _, err := e.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatalf("StopInstances: %v", err)
	}
	n, c = instanceState(t, e, id)
	check("after stop", n, c, "stopping", 64)
	clock.Advance(450 * time.Millisecond)
	n, c = instanceState(t, e, id)
	check("45 s after stop", n, c, "stopped", 80)

	img, err := e.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("kiln-time")})
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	ami := aws.ToString(img.ImageId)
	if st := imageState(t, e, ami, "us-east-1"); st != "pending" {
		t.Errorf("new image: %s, want pending", st)
	}
	avail, err := e.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("state"), Values: []string{"available"}}, {Name: aws.String("name"), Values: []string{"kiln-time"}}}})
	if err != nil || len(avail.Images) != 0 {
		t.Errorf("DescribeImages(self, available) with the image pending = %d images, %v; want none", len(avail.Images), err)
	}
	cp, err := e.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(ami), SourceRegion: aws.String("us-east-1"), Name: aws.String("kiln-time")}, inRegion("us-west-2"))
	if err != nil {
		t.Fatalf("CopyImage: %v", err)
	}
	clock.Advance(1200 * time.Millisecond)
	if st := imageState(t, e, ami, "us-east-1"); st != "available" {
		t.Errorf("image 120 s on: %s, want available", st)
	}
	if st := imageState(t, e, aws.ToString(cp.ImageId), "us-west-2"); st != "pending" {
		t.Errorf("copy 120 s on: %s, want pending", st)
	}
	clock.Advance(1800 * time.Millisecond)
	if st := imageState(t, e, aws.ToString(cp.ImageId), "us-west-2"); st != "available" {
		t.Errorf("copy 300 s on: %s, want available", st)
	}

	if _, err := e.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatalf("TerminateInstances: %v", err)
	}
	n, c = instanceState(t, e, id)
	check("after terminate", n, c, "shutting-down", 32)
	clock.Advance(aws30s)
	n, c = instanceState(t, e, id)
	check("30 s after terminate", n, c, "terminated", 48)
}

// TestRunInstancesBucket empties the RunInstances bucket (5) and waits on
// a fake clock for it to refill (2 a second).
func testRunInstancesBucket(t *testing.T, env *motoEnv) {
	clock := asl.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f, cfg := env.front(t, Options{Clock: clock})
	e := ec2.NewFromConfig(cfg)
	f.EnableBuckets(true)
	run := func() error {
		_, err := e.RunInstances(t.Context(), runInput(t, env.ami))
		return err
	}
	for i := range 5 {
		if err := run(); err != nil {
			t.Fatalf("RunInstances %d: %v", i+1, err)
		}
	}
	if err := run(); code(err) != "RequestLimitExceeded" {
		t.Errorf("RunInstances 6 = %v, want RequestLimitExceeded", err)
	}
	if err := run(); err == nil || !retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err).Bool() {
		t.Errorf("RunInstances 7 = %v, want an error the standard retryer retries", err)
	}
	clock.Advance(500 * time.Millisecond)
	if err := run(); err != nil {
		t.Errorf("RunInstances after 0.5 s = %v, want success (one token back)", err)
	}
	if tok, _ := f.Tokens("us-east-1", "RunInstances"); tok != 0 {
		t.Errorf("Tokens(RunInstances) = %v, want 0", tok)
	}
}

// TestHookInterruptsCaller cancels the caller right after RunInstances
// took effect, as the crash-and-retry test will: the caller sees its
// context cancelled, the instance exists, and the log names it.
func testHookInterruptsCaller(t *testing.T, env *motoEnv) {
	f, cfg := env.front(t, Options{})
	e, direct, ami := ec2.NewFromConfig(cfg), env.direct, env.ami
	ctx, cancel := context.WithCancel(t.Context())
	returned := make(chan struct{})
	var seen []Call
	remove := f.OnResponse("ec2:RunInstances", func(c Call) {
		seen = append(seen, c)
		cancel()
		select { // hold the answer until the caller has given up
		case <-returned:
		case <-time.After(10 * time.Second):
		}
	})
	_, err := e.RunInstances(ctx, runInput(t, ami))
	close(returned)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("RunInstances = %v, want context.Canceled", err)
	}
	if len(seen) != 1 || seen[0].Status != 200 || len(seen[0].Created) != 1 {
		t.Fatalf("hook saw %+v, want one successful RunInstances with its instance", seen)
	}
	if st, _ := instanceState(t, ec2.NewFromConfig(direct), seen[0].Created[0]); st != "running" {
		t.Errorf("instance %s is %s in moto, want running", seen[0].Created[0], st)
	}
	remove()
	if _, err := e.DescribeVpcs(t.Context(), &ec2.DescribeVpcsInput{}); err != nil {
		t.Fatal(err)
	}
	launch(t, e, ami)
	if len(seen) != 1 {
		t.Errorf("hook ran %d times, want 1 (only matching calls, not after remove)", len(seen))
	}
}

// TestClientTokens makes a repeated RunInstances with one client token
// launch one instance, as AWS does and moto does not.
func testClientTokens(t *testing.T, env *motoEnv) {
	f, cfg := env.front(t, Options{})
	e := ec2.NewFromConfig(cfg)
	f.SetClientTokens(true)
	in := runInput(t, env.ami)
	in.ClientToken = aws.String("kiln-build-1")
	var ids []string
	for range 2 {
		out, err := e.RunInstances(t.Context(), in)
		if err != nil {
			t.Fatalf("RunInstances: %v", err)
		}
		ids = append(ids, aws.ToString(out.Instances[0].InstanceId))
	}
	if ids[0] != ids[1] {
		t.Errorf("RunInstances twice with one client token launched %q, want one instance", ids)
	}
	if got := env.mine(t); len(got) != 1 {
		t.Errorf("moto has instances %q, want one", got)
	}
	if c := f.Calls()[len(f.Calls())-1]; !c.Replayed || c.Forwarded {
		t.Errorf("second RunInstances logged replayed %v forwarded %v, want a replay", c.Replayed, c.Forwarded)
	}
	other := *in
	other.InstanceType = ec2types.InstanceTypeT3Small
	if _, err := e.RunInstances(t.Context(), &other); code(err) != "IdempotentParameterMismatch" {
		t.Errorf("RunInstances(same token, other type) = %v, want IdempotentParameterMismatch", err)
	}
}
