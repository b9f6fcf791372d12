package bake

// The rebuild job against moto (pkg/emulator) with the real SDK clients:
// S3 (a versioned bucket), EC2 (base and kiln images) and Step Functions
// (running bakes and StartExecution). moto differs from AWS where rebuild
// meets it (shared/FACTS.md); the unit tests (rebuild_test.go) cover AWS:
//   - every image's CreationDate is "now" (to the second), so two base
//     images registered together tie for most_recent: the new base image
//     here replaces the old one (deregistered, as an old AMI is retired)
//     instead of merely being newer;
//   - moto's executions never run: they stay RUNNING until stopped, which
//     stands for a bake in progress; stopping one stands for its end.

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/kiln-dev/kiln/pkg/emulator"
)

const motoRBBucket = "kiln-moto-rebuild"

// TestMotoRebuildDecisions walks one recipe through the rebuild decisions
// against moto: no image yet (bake), a bake running (skip), unchanged
// (skip), a new base image (bake, once), a changed recipe (bake), and the
// maximum age reached (bake).
func TestMotoRebuildDecisions(t *testing.T) {
	cfg := emulator.ForTest(t)
	ctx, cancel := context.WithTimeout(WithLogger(context.Background(), sdQuiet), time.Minute)
	defer cancel()
	s3c := s3.NewFromConfig(cfg, emulator.S3Options)
	ec2c := ec2.NewFromConfig(cfg)
	sfnc := sfn.NewFromConfig(cfg)
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(motoRBBucket)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s3c.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: aws.String(motoRBBucket),
		VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled}}); err != nil {
		t.Fatal(err)
	}
	sm, err := sfnc.CreateStateMachine(ctx, &sfn.CreateStateMachineInput{
		Name: aws.String("kiln"), RoleArn: aws.String("arn:aws:iam::123456789012:role/kiln-states"),
		Definition: aws.String(`{"StartAt":"Plan","States":{"Plan":{"Type":"Pass","End":true}}}`),
	})
	if err != nil {
		t.Fatalf("CreateStateMachine() = %v", err)
	}
	smARN := aws.ToString(sm.StateMachineArn)

	now := time.Now().UTC()
	bakes := NewStepFunctions(sfnc, smARN)
	r := &Rebuild{
		S3: s3c, EC2: ec2c, SSM: ssm.NewFromConfig(cfg), Bakes: bakes, Starter: bakes,
		Events: eventbridge.NewFromConfig(cfg), Config: Config{Bucket: motoRBBucket, EventBus: "default"},
		MaxAge: 30 * retDay, Now: func() time.Time { return now },
	}
	recipe := strings.Replace(string(rbRecipe(t, "")), `["137112412989"]`, `["self"]`, 1)
	put := func(body string) string {
		out, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(motoRBBucket), Key: aws.String(rbKey), Body: bytes.NewReader([]byte(body))})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.VersionId)
	}
	register := func(name string, tags map[string]string) string {
		out, err := ec2c.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String(name), RootDeviceName: aws.String("/dev/xvda")})
		if err != nil {
			t.Fatal(err)
		}
		if len(tags) > 0 {
			if _, err := ec2c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{aws.ToString(out.ImageId)}, Tags: fakeTags(tags)}); err != nil {
				t.Fatal(err)
			}
		}
		return aws.ToString(out.ImageId)
	}
	decide := func(step string, action RebuildAction, reason string) RebuildDecision {
		t.Helper()
		ds, err := r.Decide(ctx, nil)
		if err != nil || len(ds) != 1 {
			t.Fatalf("%s: Decide() = %+v, %v; want one decision", step, ds, err)
		}
		if ds[0].Action != action || !strings.HasPrefix(ds[0].Reason, reason) {
			t.Fatalf("%s: Decide() = %s %q, want %s %q...", step, ds[0].Action, ds[0].Reason, action, reason)
		}
		return ds[0]
	}
	start := func(step string, d RebuildDecision, status string) RebuildDecision {
		t.Helper()
		out, err := r.Start(ctx, []RebuildDecision{d})
		if err != nil || out[0].Status != status {
			t.Fatalf("%s: Start() = %+v, %v; want status %q", step, out, err, status)
		}
		return out[0]
	}
	stop := func(arn string) {
		if _, err := sfnc.StopExecution(ctx, &sfn.StopExecutionInput{ExecutionArn: aws.String(arn)}); err != nil {
			t.Fatal(err)
		}
	}
	// baked stands for a bake's outcome: a kiln image of d's hash and base.
	build := 0
	baked := func(d RebuildDecision, age time.Duration) {
		build++
		register("web-"+d.BuildID, map[string]string{
			TagBuild: d.BuildID, TagRecipe: "web", TagRecipeHash: d.Hash, TagSourceAMI: d.BaseAMI,
			TagBuiltAt: now.Add(-age).Format(time.RFC3339),
		})
	}

	oldBase := register("base-linux-2025.05", nil)
	v1 := put(recipe)

	d := decide("first", RebuildBake, "no image of this recipe in us-east-1 yet")
	if d.Ref.Version != v1 || d.BaseAMI != oldBase {
		t.Errorf("first decision on version %q base %q, want %q and %q", d.Ref.Version, d.BaseAMI, v1, oldBase)
	}
	d = start("first", d, "started")
	if !strings.HasSuffix(d.Execution, ":"+d.BuildID) {
		t.Errorf("execution %s is not named by build %s", d.Execution, d.BuildID)
	}
	decide("while baking", RebuildSkip, "a bake is running: "+d.Execution)
	stop(d.Execution)
	baked(d, 2*retDay)
	decide("unchanged", RebuildSkip, "up to date: build "+d.BuildID+" is 2d old (max 30d)")

	if _, err := ec2c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(oldBase)}); err != nil {
		t.Fatal(err)
	}
	newBase := register("base-linux-2025.06", nil)
	d = decide("new base image", RebuildBake, "base image changed ("+oldBase+" → "+newBase+")")
	d = start("new base image", d, "started")
	stop(d.Execution)
	// The same decision again (say the bake failed): the same build, which
	// Step Functions will not start twice.
	again := decide("new base image again", RebuildBake, "base image changed")
	if again.BuildID != d.BuildID {
		t.Errorf("repeated decision: build %s, want %s", again.BuildID, d.BuildID)
	}
	start("new base image again", again, "already started")
	baked(d, retDay)

	put(strings.Replace(recipe, "echo web", "echo web v2", 1))
	d = decide("changed recipe", RebuildBake, "recipe changed (")
	d = start("changed recipe", d, "started")
	stop(d.Execution)
	baked(d, 0)

	now = now.Add(31 * retDay)
	decide("max age", RebuildBake, "newest image is 31d old (max 30d)")

	if _, err := r.Handle(ctx, RebuildEvent{DryRun: true}); err != nil {
		t.Errorf("Handle(dry run) against moto = %v", err)
	}
	images, err := ec2c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []ec2types.Filter{{Name: aws.String("tag:" + TagRecipe), Values: []string{"web"}}}})
	if err != nil || len(images.Images) != build {
		t.Errorf("kiln images of web: %d, %v; want %d (rebuild itself makes none)", len(images.Images), err, build)
	}
}
