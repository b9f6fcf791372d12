package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/asl/crosscheck"
	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/emulator"
	"github.com/kiln-dev/kiln/pkg/sandbox"
)

// newCloud returns a Cloud on the test binary's shared moto (reset for this
// test) and checks that the sandbox can run here.
func newCloud(t *testing.T) *Cloud {
	t.Helper()
	needSandbox(t)
	cfg := emulator.ForTest(t)
	c, err := Start(context.Background(), Options{Endpoint: aws.ToString(cfg.BaseEndpoint)})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func needSandbox(t *testing.T) {
	t.Helper()
	var why string
	switch {
	case os.Geteuid() != 0:
		why = sandbox.ErrNotRoot.Error()
	default:
		if _, err := os.Stat(sandbox.SSHDPath); err != nil {
			why = sandbox.ErrNoSSHD.Error()
		} else if _, err := exec.LookPath("sudo"); err != nil {
			why = "sudo is not installed (make deps installs it)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("local bakes cannot run here: %s", why)
	}
	t.Skipf("SKIPPING local bake test: %s", why)
}

// logLines collects the stages' log lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) handler() slog.Handler {
	return slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, strings.TrimRight(string(p), "\n"))
		return len(p), nil
	}), nil)
}

func (l *logLines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func bakeRecipe(t *testing.T, c *Cloud, recipe string, opts BakeOptions) (*BakeResult, *logLines) {
	t.Helper()
	logs := &logLines{}
	opts.Log = logs.handler()
	if opts.ManifestDir == "" {
		opts.ManifestDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := c.Bake(ctx, filepath.Join("testdata", recipe), opts)
	if err != nil {
		t.Fatalf("Bake(%s) = %v\nlogs:\n%s", recipe, err, logs.text())
	}
	return res, logs
}

// TestBakeEndToEnd bakes a recipe with two shell provisioners, a folder
// upload, two extra Regions, sharing and SSM parameters through the real
// state machine definition, the real stages, moto and a real sshd, and checks
// what AWS would hold afterwards. An independent States Language engine then
// replays the recorded run and must take the same path.
func TestBakeEndToEnd(t *testing.T) {
	c := newCloud(t)
	rec := asl.NewRecorder()
	res, logs := bakeRecipe(t, c, "app", BakeOptions{Recorder: rec})
	if !res.Succeeded() {
		t.Fatalf("bake failed: %s: %s\nlogs:\n%s", res.Execution.Error, res.Execution.Cause, logs.text())
	}
	st := res.State
	ctx := context.Background()

	// Three tagged AMIs, shared with the account, with tagged snapshots.
	if got := len(st.Published.Images); got != 3 {
		t.Fatalf("published images = %v, want 3 Regions", st.Published.Images)
	}
	for region, ami := range st.Published.Images {
		e := c.EC2(region)
		out, err := e.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
		if err != nil || len(out.Images) != 1 {
			t.Fatalf("DescribeImages(%s in %s) = %v, %v", ami, region, out, err)
		}
		img := out.Images[0]
		tags := tagMap(img.Tags)
		if tags[bake.TagBuild] != st.BuildID || tags["Team"] != "platform" || tags[bake.TagRecipeHash] == "" {
			t.Errorf("image %s in %s tags = %v, want kiln:build=%s, Team=platform and the recipe hash", ami, region, tags, st.BuildID)
		}
		perm, err := e.DescribeImageAttribute(ctx, &ec2.DescribeImageAttributeInput{ImageId: aws.String(ami), Attribute: ec2types.ImageAttributeNameLaunchPermission})
		if err != nil {
			t.Fatalf("DescribeImageAttribute(%s): %v", ami, err)
		}
		var users []string
		for _, p := range perm.LaunchPermissions {
			users = append(users, aws.ToString(p.UserId))
		}
		if !slices.Contains(users, "210987654321") {
			t.Errorf("image %s in %s launch permissions = %v, want 210987654321", ami, region, users)
		}
		for _, bdm := range img.BlockDeviceMappings {
			if bdm.Ebs == nil || bdm.Ebs.SnapshotId == nil {
				continue
			}
			snaps, err := e.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{*bdm.Ebs.SnapshotId}})
			if err != nil || len(snaps.Snapshots) != 1 {
				t.Fatalf("DescribeSnapshots(%s): %v", *bdm.Ebs.SnapshotId, err)
			}
			if st := tagMap(snaps.Snapshots[0].Tags); st[bake.TagBuild] == "" || st["Backup"] != "no" {
				t.Errorf("snapshot %s of %s tags = %v, want kiln:build and Backup=no", *bdm.Ebs.SnapshotId, ami, st)
			}
		}
		// Three SSM parameters, one per Region, naming the AMI.
		p, err := c.SSM(region).GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/kiln/app/latest")})
		if err != nil || aws.ToString(p.Parameter.Value) != ami {
			t.Errorf("GetParameter(/kiln/app/latest in %s) = %v, %v; want %s", region, p, err, ami)
		}
	}
	// The manifest in S3, in Packer's format.
	obj, err := c.S3().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(c.Bucket()), Key: aws.String(st.Published.Manifest)})
	if err != nil {
		t.Fatalf("GetObject(manifest %s): %v", st.Published.Manifest, err)
	}
	var manifest struct {
		Builds []struct {
			Name       string `json:"name"`
			ArtifactID string `json:"artifact_id"`
		} `json:"builds"`
	}
	if err := json.NewDecoder(obj.Body).Decode(&manifest); err != nil || len(manifest.Builds) == 0 {
		t.Fatalf("manifest: %v %+v", err, manifest)
	}
	if b := manifest.Builds[len(manifest.Builds)-1]; b.Name != "app" || strings.Count(b.ArtifactID, ":ami-") != 3 {
		t.Errorf("manifest build = %+v, want name app and three region:ami pairs", b)
	}
	// Nothing temporary is left, and the sandbox is gone.
	if left := res.Left.Temporaries(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if n := c.Sandboxes(); n != 0 {
		t.Errorf("%d sandboxes still running", n)
	}
	// The provisioners ran in the sandbox, in order, and their output was
	// logged with the sensitive value redacted.
	text := logs.text()
	for _, want := range []string{"hello from ubuntu", "configured-with-yes", "installed into /opt/app (password length 15)"} {
		if !strings.Contains(text, want) {
			t.Errorf("logs lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "s3cr3t-Pa55word") {
		t.Errorf("logs contain the sensitive variable's value")
	}
	// The image's content is what provisioning changed.
	content, err := c.S3().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(c.Bucket()), Key: aws.String(ImageContentKey(st.Image.ID))})
	if err != nil || aws.ToInt64(content.ContentLength) == 0 {
		t.Errorf("image content %s: %v", ImageContentKey(st.Image.ID), err)
	}
	// Few transitions: the definition's waits are not a busy loop.
	if res.Report.Transitions > 80 {
		t.Errorf("transitions = %d, want at most 80 for a three-Region bake", res.Report.Transitions)
	}
	t.Logf("bake: %d transitions, %s Lambda time", res.Report.Transitions, res.Report.TaskTime)

	crossCheck(t, rec.Recording(res.Execution))
}

// TestBakeFailingProvisioner: a provisioner exiting 3 fails the bake with
// an error naming it, its exit status and its last output, and leaves
// nothing of the build behind.
func TestBakeFailingProvisioner(t *testing.T) {
	c := newCloud(t)
	rec := asl.NewRecorder()
	res, logs := bakeRecipe(t, c, "failing", BakeOptions{Recorder: rec})
	if res.Succeeded() {
		t.Fatalf("bake succeeded, want a failure")
	}
	if res.Execution.Error != "ProvisionFailed" {
		t.Errorf("error = %q, want ProvisionFailed", res.Execution.Error)
	}
	var cause struct {
		ErrorMessage string `json:"errorMessage"`
	}
	if err := json.Unmarshal([]byte(res.Execution.Cause), &cause); err != nil {
		t.Fatalf("cause %q is not Lambda's error JSON: %v", res.Execution.Cause, err)
	}
	for _, want := range []string{`shell "smoke test" (failing.pkr.hcl:17)`, "status 3", "service did not answer"} {
		if !strings.Contains(cause.ErrorMessage, want) {
			t.Errorf("error message %q lacks %q", cause.ErrorMessage, want)
		}
	}
	if left := res.Left.All(); len(left) > 0 {
		t.Errorf("left behind: %v\nlogs:\n%s", left, logs.text())
	}
	crossCheck(t, rec.Recording(res.Execution))
}

// TestBakeFailureAfterImagesRemovesThem: when publishing fails after the
// image and its copies exist, cleanup deregisters them all and deletes their
// snapshots, in every Region.
func TestBakeFailureAfterImagesRemovesThem(t *testing.T) {
	c := newCloud(t)
	res, logs := bakeRecipe(t, c, "app", BakeOptions{Wrap: failAction("distribute", "publish", permanent)})
	if res.Succeeded() {
		t.Fatalf("bake succeeded, want a failure")
	}
	if res.Execution.Error != "StageFailed" || !strings.Contains(res.Execution.Cause, "distribute") {
		t.Errorf("error = %s: %s, want StageFailed naming distribute", res.Execution.Error, res.Execution.Cause)
	}
	if res.State.Image == nil || res.State.Image.ID == "" {
		t.Fatalf("the failure came before the image existed; the test needs it after")
	}
	if left := res.Left.All(); len(left) > 0 {
		t.Errorf("left behind: %v\nlogs:\n%s", left, logs.text())
	}
}

// TestBakeRetriesThrottling: a stage throttled once is retried by the state
// machine and the bake succeeds; the independent engine agrees on the path.
func TestBakeRetriesThrottling(t *testing.T) {
	c := newCloud(t)
	rec := asl.NewRecorder()
	res, logs := bakeRecipe(t, c, "failing", BakeOptions{
		Recorder:  rec,
		TimeScale: 0.01,
		Wrap:      failAction("launch", "run", throttledOnce()),
	})
	var retried bool
	for _, ev := range res.Execution.History {
		if ev.State == "Launch" && ev.Attempt == 1 {
			retried = true
		}
	}
	if !retried {
		t.Errorf("Launch was not retried after Throttled\nlogs:\n%s", logs.text())
	}
	if res.Execution.Error != "ProvisionFailed" {
		t.Errorf("error = %q, want the recipe's own ProvisionFailed after the retry", res.Execution.Error)
	}
	crossCheck(t, rec.Recording(res.Execution))
}

func crossCheck(t *testing.T, rec asl.Recording) {
	t.Helper()
	crosscheck.SkipIfUnavailable(t)
	if _, err := crosscheck.Run(context.Background(), definition(), rec); err != nil {
		t.Errorf("aws-local-stepfunctions disagrees with kiln's runner: %v", err)
	}
}

// injected decides whether a call fails: it returns the error to fail
// with, or nil.
type injected func() error

func permanent() error {
	return bake.ForLambda("distribute", errors.New("injected permanent failure"))
}

func throttledOnce() injected {
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() { err = bake.ForLambda("launch", fmt.Errorf("injected: %w", throttleErr{})) })
		return err
	}
}

type throttleErr struct{}

func (throttleErr) Error() string     { return "api error RequestLimitExceeded: Request limit exceeded." }
func (throttleErr) ErrorCode() string { return "RequestLimitExceeded" }
func (throttleErr) ErrorMessage() string {
	return "Request limit exceeded."
}
func (throttleErr) ErrorFault() smithy.ErrorFault { return smithy.FaultServer }

// failAction wraps one function's handler so that the given action fails
// when fail says so, before the stage runs.
func failAction(function, action string, fail injected) func(string, asl.Handler) asl.Handler {
	return func(f string, h asl.Handler) asl.Handler {
		if f != function {
			return h
		}
		return func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			var ev struct {
				Action string `json:"action"`
			}
			_ = json.Unmarshal(in, &ev)
			if ev.Action == action {
				if err := fail(); err != nil {
					return nil, err
				}
			}
			return h(ctx, in)
		}
	}
}

func tagMap(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// TestBakeFailureRestoresParameters: a build that fails after publishing
// gives the recipe's AMI parameters back their earlier value (or removes
// them where there was none), so they never name a deregistered image.
func TestBakeFailureRestoresParameters(t *testing.T) {
	c := newCloud(t)
	ctx := context.Background()
	// An earlier, good image of the recipe, published in us-east-1.
	e := c.EC2("us-east-1")
	run, err := e.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-785db401"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	img, err := e.CreateImage(ctx, &ec2.CreateImageInput{
		InstanceId: run.Instances[0].InstanceId, Name: aws.String("app-earlier"),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: []ec2types.Tag{
			{Key: aws.String(bake.TagBuild), Value: aws.String("app-earlier")}, {Key: aws.String(bake.TagRecipe), Value: aws.String("app")},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	earlier := aws.ToString(img.ImageId)
	if _, err := c.SSM("us-east-1").PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/kiln/app/latest"), Value: aws.String(earlier), Type: "String"}); err != nil {
		t.Fatal(err)
	}

	res, logs := bakeRecipe(t, c, "app", BakeOptions{Wrap: failAfter("distribute", "publish")})
	if res.Succeeded() {
		t.Fatalf("bake succeeded, want a failure")
	}
	for _, region := range []string{"us-east-1", "us-west-2", "eu-west-1"} {
		p, err := c.SSM(region).GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/kiln/app/latest")})
		switch region {
		case "us-east-1":
			if err != nil || aws.ToString(p.Parameter.Value) != earlier {
				t.Errorf("/kiln/app/latest in %s = %v, %v; want the earlier image %s\nlogs:\n%s", region, p, err, earlier, logs.text())
			}
		default:
			if err == nil {
				t.Errorf("/kiln/app/latest in %s = %s, want it removed (there was none before)", region, aws.ToString(p.Parameter.Value))
			}
		}
	}
	if left := res.Left.All(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// failAfter wraps one function's handler so that the given action runs and
// then fails, as if the Lambda died after its work.
func failAfter(function, action string) func(string, asl.Handler) asl.Handler {
	return func(f string, h asl.Handler) asl.Handler {
		if f != function {
			return h
		}
		return func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			out, err := h(ctx, in)
			var ev struct {
				Action string `json:"action"`
			}
			_ = json.Unmarshal(in, &ev)
			if err == nil && ev.Action == action {
				return nil, bake.ForLambda(function, errors.New("injected failure after "+action))
			}
			return out, err
		}
	}
}

// TestBakeOneRegion: a recipe without ami_regions bakes (the Map over the
// extra Regions has nothing to do) and leaves nothing temporary.
func TestBakeOneRegion(t *testing.T) {
	c := newCloud(t)
	res, logs := bakeRecipe(t, c, "single", BakeOptions{})
	if !res.Succeeded() {
		t.Fatalf("bake failed: %s: %s\nlogs:\n%s", res.Execution.Error, res.Execution.Cause, logs.text())
	}
	if got := len(res.State.Published.Images); got != 1 {
		t.Errorf("published %v, want one Region", res.State.Published.Images)
	}
	if left := res.Left.Temporaries(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
