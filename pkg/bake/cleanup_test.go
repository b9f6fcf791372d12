package bake

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// launched runs "run" and "check" until the instance runs.
func (e *stageEnv) launched(src AmazonEBS) State {
	e.t.Helper()
	st := e.run(e.planned(src, nil))
	e.cloud.Advance(time.Minute)
	st, err := e.launch.Check(context.Background(), st)
	if err != nil || !st.Wait.Ready {
		e.t.Fatalf("Launch.Check = %+v, %v", st.Wait, err)
	}
	return st
}

// cleanupUntilDone runs cleanup, advancing the clock by each Wait, until it
// is ready or fails; it returns the last state and error and the rounds.
func (e *stageEnv) cleanupUntilDone(st State) (State, error, int) {
	e.t.Helper()
	for round := 1; round <= 100; round++ {
		var err error
		st, err = e.cleanup.Run(context.Background(), st)
		if err != nil || st.Wait.Ready {
			return st, err, round
		}
		e.cloud.Advance(time.Duration(st.Wait.Seconds) * time.Second)
	}
	e.t.Fatalf("cleanup not done after 100 rounds: %+v", st.Wait)
	return st, nil, 0
}

// baked makes the images a failed-late build leaves: the image in the
// build Region and a copy in each extra Region, tagged as the snapshot and
// distribute stages tag them (snapshots included), recorded in st.
func (e *stageEnv) baked(st State) State {
	e.t.Helper()
	ctx := context.Background()
	home := e.cloud.EC2(testRegion)
	tags := ec2Tags(st, nil)
	out, err := home.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(st.Launch.InstanceID), Name: aws.String("app-" + st.BuildID),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: tags}}})
	if err != nil {
		e.t.Fatalf("CreateImage: %v", err)
	}
	img, _ := e.cloud.Image(testRegion, aws.ToString(out.ImageId))
	st.Image = &Image{Name: aws.ToString(img.Name), ID: aws.ToString(img.ImageId), Snapshots: imageSnaps(img.Image)}
	if _, err := home.CreateTags(ctx, &ec2.CreateTagsInput{Resources: st.Image.Snapshots, Tags: tags}); err != nil {
		e.t.Fatalf("CreateTags: %v", err)
	}
	e.cloud.Advance(5 * time.Minute)
	for _, region := range st.Plan.Regions {
		cp, err := e.cloud.EC2(region).CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: out.ImageId, SourceRegion: aws.String(testRegion),
			Name: img.Name, ClientToken: aws.String(st.BuildID + region),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: tags}, {ResourceType: ec2types.ResourceTypeSnapshot, Tags: tags}}})
		if err != nil {
			e.t.Fatalf("CopyImage: %v", err)
		}
		ci, _ := e.cloud.Image(region, aws.ToString(cp.ImageId))
		st.Copies = append(st.Copies, Copy{Region: region, ImageID: aws.ToString(cp.ImageId), Snapshots: imageSnaps(ci.Image)})
	}
	return st
}

func imageSnaps(img ec2types.Image) []string {
	var out []string
	for _, m := range img.BlockDeviceMappings {
		if m.Ebs != nil {
			out = append(out, aws.ToString(m.Ebs.SnapshotId))
		}
	}
	return out
}

func TestCleanupAfterLaunch(t *testing.T) {
	e := newStageEnv(t)
	st := e.launched(e.testSource())
	e.cloud.PutObject(testBucket, StagedPrefix(st.BuildID)+"files/a.conf", []byte("a"))
	e.cloud.PutObject(testBucket, "builds/"+st.BuildID+"/manifest.json", []byte("{}"))

	st, err := e.cleanup.Run(context.Background(), st)
	if err != nil {
		t.Fatalf("Cleanup.Run: %v", err)
	}
	// The instance is shutting down (20 s on the fake clock): the group
	// waits for it.
	if st.Wait == nil || st.Wait.Ready || !strings.Contains(st.Wait.For, "security group") {
		t.Fatalf("Cleanup.Run while the instance shuts down: Wait = %+v, want not ready for the security group", st.Wait)
	}
	st, err, rounds := e.cleanupUntilDone(st)
	if err != nil {
		t.Fatalf("Cleanup.Run: %v", err)
	}
	if left := e.cloud.Leftovers(st.BuildID); len(left) > 0 {
		t.Errorf("after cleanup: %v", left)
	}
	if rounds > 3 {
		t.Errorf("cleanup took %d more rounds", rounds)
	}
	want := []string{
		testRegion + " instance " + st.Launch.InstanceID,
		testRegion + " key-pair " + st.Launch.KeyPairName,
		"ssm parameter " + st.Launch.KeyParameter,
		"s3 object s3://" + testBucket + "/" + StagedPrefix(st.BuildID) + "files/a.conf",
		testRegion + " security-group " + st.Launch.SecurityGroupID,
	}
	for _, w := range want {
		if !slices.Contains(st.Cleanup.Deleted, w) {
			t.Errorf("st.Cleanup.Deleted = %q, missing %q", st.Cleanup.Deleted, w)
		}
	}
	if len(st.Cleanup.Failed) != 0 {
		t.Errorf("st.Cleanup.Failed = %q", st.Cleanup.Failed)
	}
	if _, ok := e.cloud.Object(testBucket, "builds/"+st.BuildID+"/manifest.json"); !ok {
		t.Errorf("cleanup deleted the manifest, which is not staged")
	}
	if _, ok := e.cloud.Group(testRegion, e.provSG); !ok {
		t.Errorf("cleanup deleted the provisioner's group")
	}

	// Idempotent: again, nothing to do, no error.
	calls := len(e.cloud.CallLog())
	again, err := e.cleanup.Run(context.Background(), st)
	if err != nil || !again.Wait.Ready {
		t.Errorf("Cleanup.Run again = %+v, %v; want ready", again.Wait, err)
	}
	for _, c := range e.cloud.CallLog()[calls:] {
		if !strings.HasPrefix(c.Action, "Describe") && !strings.HasPrefix(c.Action, "Get") && !strings.HasPrefix(c.Action, "List") && c.Action != "DeleteParameter" {
			t.Errorf("Cleanup.Run again called %s", c.Action)
		}
	}
}

func TestCleanupFindsByTag(t *testing.T) {
	for _, c := range []struct {
		name  string
		strip func(st State) State
	}{
		{name: "no launch in state", strip: func(st State) State { st.Launch = nil; return st }},
		{name: "only the input", strip: func(st State) State {
			return State{Recipe: st.Recipe, Vars: st.Vars, Error: &Failure{Error: "StageFailed", Cause: "x"}}
		}},
		{name: "build ID only", strip: func(st State) State { return State{BuildID: st.BuildID} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			src := e.testSource()
			st := e.planned(src, nil)
			if c.name == "only the input" {
				// The ID the plan step derives from the input.
				st.BuildID = NewBuildID(st.Recipe, st.Vars, st.Only, st.Trigger)
				st.Plan.Key = PlanKey(st.BuildID)
				p, _, err := fetchPlan(context.Background(), e.cloud.S3(), &PlanRef{Bucket: testBucket, Key: PlanKey(e.planned(src, nil).BuildID), Build: "app"})
				if err != nil {
					t.Fatal(err)
				}
				if err := storePlan(context.Background(), e.cloud.S3(), testBucket, PlanKey(st.BuildID), p); err != nil {
					t.Fatal(err)
				}
			}
			st = e.run(st)
			if c.name == "only the input" {
				e.cloud.Advance(time.Minute)
				st = e.baked(st)
			}
			bare := c.strip(st)
			if bare.Plan == nil && bare.Recipe.Key == "" {
				// Without a plan or recipe, cleanup cannot know the Region: the
				// state machine always passes at least the input.
				bare.Plan = &PlanRef{Region: testRegion}
			}
			_, err, _ := e.cleanupUntilDone(bare)
			if err != nil {
				t.Fatalf("Cleanup.Run: %v", err)
			}
			if left := e.cloud.Leftovers(st.BuildID); len(left) > 0 {
				t.Errorf("after cleanup from %s: %v", c.name, left)
			}
		})
	}
}

func TestCleanupFailedBuildRemovesImagesEverywhere(t *testing.T) {
	e := newStageEnv(t)
	src := e.testSource()
	src.AMIRegions = []string{"us-east-1", "eu-central-1"}
	st := e.baked(e.launched(src))
	// Another build's image in the same Region must stay.
	foreign := e.cloud.AddImage(testRegion, fakeImageSpec{Name: "someone-else", Tags: map[string]string{TagBuild: "other-build"}})
	before := len(e.cloud.Snapshots(testRegion))

	// A successful build keeps its images.
	kept, err, _ := e.cleanupUntilDone(st)
	if err != nil {
		t.Fatalf("Cleanup.Run: %v", err)
	}
	if left := e.cloud.Leftovers(st.BuildID); len(left) != 6 {
		t.Errorf("after a successful build's cleanup: %v, want its 3 images and 3 snapshots", left)
	}

	kept.Error = &Failure{Error: "ProvisionFailed", Cause: "boom"}
	done, err, _ := e.cleanupUntilDone(kept)
	if err != nil {
		t.Fatalf("Cleanup.Run(failed build): %v", err)
	}
	if left := e.cloud.Leftovers(st.BuildID); len(left) > 0 {
		t.Errorf("after a failed build's cleanup: %v", left)
	}
	for _, id := range append([]string{st.Image.ID}, st.Image.Snapshots...) {
		if !slices.ContainsFunc(done.Cleanup.Deleted, func(d string) bool { return strings.HasSuffix(d, " "+id) }) {
			t.Errorf("st.Cleanup.Deleted lacks %s: %q", id, done.Cleanup.Deleted)
		}
	}
	if _, ok := e.cloud.Image(testRegion, foreign); !ok {
		t.Errorf("cleanup deregistered another build's image")
	}
	if got := len(e.cloud.Snapshots(testRegion)); got != before-1 {
		t.Errorf("snapshots in %s: %d, want %d (only the build's one gone)", testRegion, got, before-1)
	}
}

// TestCleanupUntaggedSnapshotOfPendingImage: an image whose snapshots the
// snapshot stage had not tagged yet; deleting one fails once; the next
// round still finds it although the image is gone.
func TestCleanupUntaggedSnapshotOfPendingImage(t *testing.T) {
	e := newStageEnv(t)
	st := e.launched(e.testSource())
	out, err := e.cloud.EC2(testRegion).CreateImage(context.Background(), &ec2.CreateImageInput{
		InstanceId: aws.String(st.Launch.InstanceID), Name: aws.String("app-pending"),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: ec2Tags(st, nil)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	st.Error = &Failure{Error: "StageFailed", Cause: "lambda died"}
	e.cloud.Fail(fakeFault{Action: "DeleteSnapshot", Code: "IncorrectState"})
	st, err, _ = e.cleanupUntilDone(st)
	var ce *CleanupError
	if !errors.As(err, &ce) || len(st.Cleanup.Failed) != 1 || !strings.Contains(st.Cleanup.Failed[0], "IncorrectState") {
		t.Fatalf("Cleanup.Run = %v, failed %q; want one CleanupError for the snapshot", err, st.Cleanup.Failed)
	}
	if _, ok := e.cloud.Image(testRegion, aws.ToString(out.ImageId)); ok {
		t.Errorf("image not deregistered")
	}
	st, err, _ = e.cleanupUntilDone(st)
	if err != nil {
		t.Fatalf("Cleanup.Run again: %v", err)
	}
	if left := e.cloud.Leftovers(st.BuildID); len(left) > 0 {
		t.Errorf("after cleanup: %v", left)
	}
	for _, s := range e.cloud.Snapshots(testRegion) {
		if strings.Contains(aws.ToString(s.Description), aws.ToString(out.ImageId)) {
			t.Errorf("snapshot %s of the image is left", aws.ToString(s.SnapshotId))
		}
	}
}

// TestCleanupLeavesForeignResources: the state names resources of another
// build (a corrupted or crafted state); cleanup must not touch them.
func TestCleanupLeavesForeignResources(t *testing.T) {
	e := newStageEnv(t)
	other := e.launched(e.testSource())
	other = e.baked(other)
	mine := e.planned(e.testSource(), nil)
	mine.Launch = other.Launch
	mine.Image = other.Image
	mine.Copies = other.Copies
	mine.Error = &Failure{Error: "StageFailed", Cause: "x"}
	if _, err, _ := e.cleanupUntilDone(mine); err != nil {
		t.Fatalf("Cleanup.Run: %v", err)
	}
	left := e.cloud.Leftovers(other.BuildID)
	for _, kind := range []string{"instance", "security-group", "key-pair", "image", "snapshot"} {
		if !slices.ContainsFunc(left, func(l string) bool { return strings.Fields(l)[1] == kind }) {
			t.Errorf("cleanup of another build deleted the %s of %s: left %v", kind, other.BuildID, left)
		}
	}
}

func TestCleanupErrors(t *testing.T) {
	for _, c := range []struct {
		name    string
		fault   fakeFault
		failed  bool
		wantErr string
	}{
		{name: "terminate", fault: fakeFault{Action: "TerminateInstances", Code: "UnauthorizedOperation"}, wantErr: "terminate"},
		{name: "delete key pair", fault: fakeFault{Action: "DeleteKeyPair", Code: "UnauthorizedOperation"}, wantErr: "key-pair"},
		{name: "delete parameter", fault: fakeFault{Action: "DeleteParameter", Code: "AccessDeniedException"}, wantErr: "parameter"},
		{name: "list parameters", fault: fakeFault{Action: "GetParametersByPath", Code: "AccessDeniedException"}, wantErr: "parameters"},
		{name: "delete group", fault: fakeFault{Action: "DeleteSecurityGroup", Code: "UnauthorizedOperation", Times: 10}, wantErr: "security-group"},
		{name: "describe groups", fault: fakeFault{Action: "DescribeSecurityGroups", Code: "RequestLimitExceeded"}, wantErr: "security-group"},
		{name: "list staged", fault: fakeFault{Action: "ListObjectsV2", Code: "AccessDenied"}, wantErr: "objects"},
		{name: "delete staged", fault: fakeFault{Action: "DeleteObjects", Code: "AccessDenied"}, wantErr: "objects"},
		{name: "deregister", fault: fakeFault{Action: "DeregisterImage", Code: "UnauthorizedOperation"}, failed: true, wantErr: "image"},
		{name: "describe images", fault: fakeFault{Action: "DescribeImages", Code: "UnauthorizedOperation"}, failed: true, wantErr: "image"},
		{name: "tag snapshots", fault: fakeFault{Action: "CreateTags", Code: "UnauthorizedOperation"}, failed: true, wantErr: "tag before deleting"},
		{name: "describe snapshots", fault: fakeFault{Action: "DescribeSnapshots", Code: "UnauthorizedOperation"}, failed: true, wantErr: "snapshot"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			st := e.baked(e.launched(e.testSource()))
			e.cloud.PutObject(testBucket, StagedPrefix(st.BuildID)+"x", []byte("x"))
			if c.failed {
				st.Error = &Failure{Error: "ProvisionFailed", Cause: `{"errorMessage":"provision: shell \"install\" exited 3","errorType":"ProvisionFailed"}`}
			}
			e.cloud.Fail(c.fault)
			st, err, _ := e.cleanupUntilDone(st)
			var ce *CleanupError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), c.fault.Code) {
				t.Fatalf("Cleanup.Run = %v, want a CleanupError about %s (%s)", err, c.wantErr, c.fault.Code)
			}
			// The execution ends with cleanup's error: it still tells why
			// the bake went to cleanup.
			if after := `the bake had failed: ProvisionFailed: provision: shell "install" exited 3`; c.failed != strings.Contains(err.Error(), after) {
				t.Errorf("Cleanup.Run = %v; mentions %q: %v, want %v", err, after, !c.failed, c.failed)
			}
			if got := routedName(ForLambda("cleanup", err)); got != "CleanupIncomplete" {
				t.Errorf("ForLambda = %s, want CleanupIncomplete", got)
			}
			if len(st.Cleanup.Failed) == 0 || len(st.Cleanup.Deleted) == 0 {
				t.Errorf("st.Cleanup = %+v, want both what was deleted and what failed", st.Cleanup)
			}
			// The state machine retries: the next run finishes the job.
			e.cloud.Advance(time.Minute)
			e.cloud.faults = nil
			if _, err, _ := e.cleanupUntilDone(st); err != nil {
				t.Fatalf("Cleanup.Run retried: %v", err)
			}
			left := e.cloud.Leftovers(st.BuildID)
			if !c.failed {
				left = slices.DeleteFunc(left, func(l string) bool { k := strings.Fields(l)[1]; return k == "image" || k == "snapshot" })
			}
			if len(left) > 0 {
				t.Errorf("after the retry: %v", left)
			}
		})
	}
}

func TestCleanupWaitIsBounded(t *testing.T) {
	e := newStageEnv(t)
	e.cloud.Delays.Terminating = time.Hour
	st := e.launched(e.testSource())
	st, err, rounds := e.cleanupUntilDone(st)
	var ce *CleanupError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "DependencyViolation") {
		t.Fatalf("Cleanup.Run with an instance stuck shutting down = %v, want a CleanupError naming DependencyViolation", err)
	}
	if elapsed := e.cloud.Now().Sub(st.Cleanup.StartedAt); elapsed < DefaultCleanupTimeout || elapsed > DefaultCleanupTimeout+2*time.Minute {
		t.Errorf("gave up after %s (%d rounds), want about %s", elapsed, rounds, DefaultCleanupTimeout)
	}
	if rounds > 40 {
		t.Errorf("cleanup polled %d times in %s", rounds, DefaultCleanupTimeout)
	}
}

func TestCleanupNothingToDo(t *testing.T) {
	e := newStageEnv(t)
	states := map[string]State{
		"empty":       {},
		"input only":  {Recipe: RecipeRef{Bucket: "recipes", Key: "never-planned.pkr.hcl", Version: "v9"}},
		"planned":     e.planned(e.testSource(), nil),
		"plan failed": {BuildID: "nothing-here-000000000000", Error: &Failure{Error: "RecipeInvalid", Cause: "x"}},
	}
	setup := len(e.cloud.CallLog())
	for name, st := range states {
		got, err := e.cleanup.Run(context.Background(), st)
		if err != nil || got.Wait == nil || !got.Wait.Ready || got.Cleanup == nil || len(got.Cleanup.Deleted) != 0 {
			t.Errorf("Cleanup.Run(%s) = %+v %+v, %v; want ready, nothing deleted", name, got.Wait, got.Cleanup, err)
		}
	}
	for _, c := range e.cloud.CallLog()[setup:] {
		if !strings.HasPrefix(c.Action, "Describe") && !strings.HasPrefix(c.Action, "Get") && !strings.HasPrefix(c.Action, "List") && c.Action != "DeleteParameter" {
			t.Errorf("Cleanup.Run with nothing to do called %s", c.Action)
		}
	}
}

// TestCleanupSuccessfulBuildDropsIntermediate: an encrypted build whose
// unencrypted intermediate image is still there keeps only its final image.
func TestCleanupSuccessfulBuildDropsIntermediate(t *testing.T) {
	e := newStageEnv(t)
	src := e.testSource()
	src.AMIRegions = nil
	st := e.baked(e.launched(src))
	inter := *st.Image
	e.cloud.Advance(5 * time.Minute)
	out, err := e.cloud.EC2(testRegion).CopyImage(context.Background(), &ec2.CopyImageInput{SourceImageId: aws.String(inter.ID), SourceRegion: aws.String(testRegion),
		Name: aws.String("app-final"), Encrypted: aws.Bool(true),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: ec2Tags(st, nil)}, {ResourceType: ec2types.ResourceTypeSnapshot, Tags: ec2Tags(st, nil)}}})
	if err != nil {
		t.Fatal(err)
	}
	st.Image = &Image{Name: "app-final", ID: aws.ToString(out.ImageId), Intermediate: inter.ID}
	if _, err, _ := e.cleanupUntilDone(st); err != nil {
		t.Fatalf("Cleanup.Run: %v", err)
	}
	if _, ok := e.cloud.Image(testRegion, inter.ID); ok {
		t.Errorf("intermediate image %s kept", inter.ID)
	}
	if _, ok := e.cloud.Snapshot(testRegion, inter.Snapshots[0]); ok {
		t.Errorf("intermediate snapshot %s kept", inter.Snapshots[0])
	}
	if _, ok := e.cloud.Image(testRegion, st.Image.ID); !ok {
		t.Errorf("final image %s deleted", st.Image.ID)
	}
}
