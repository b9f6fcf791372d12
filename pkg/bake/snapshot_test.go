package bake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/google/go-cmp/cmp"
)

// Unit tests of the snapshot stage against the stateful fake
// (fakeaws_test.go), whose semantics follow AWS: duplicate AMI names are
// refused, client tokens are honoured, new images can be invisible for a
// while, and time passes only when the test advances the clock.

const (
	sdHome   = "us-east-1"
	sdBucket = "kiln-test"
	sdShare  = "210987654321"
)

var sdRegions = []string{"eu-west-1", "us-west-2"}

// sdWorld is one test's fake AWS with a launched, running build instance
// and the two stages wired to it.
type sdWorld struct {
	t    *testing.T
	ctx  context.Context
	c    *fakeCloud
	plan *Plan
	st   State
	snap *Snapshot
	dist *Distribute
}

// sdQuiet discards the stages' logs.
var sdQuiet = slog.New(slog.DiscardHandler)

// sdBuild is the recipe of these tests.
func sdBuild() Build {
	return Build{
		Name: "app",
		Type: "amazon-ebs",
		Source: AmazonEBS{
			Region:         sdHome,
			InstanceType:   "t3.micro",
			AMIName:        "web-app-1",
			AMIDescription: "web app image",
			AMIRegions:     sdRegions,
			AMIUsers:       []string{sdShare},
			SnapshotUsers:  []string{sdShare},
			Tags:           map[string]string{"team": "platform", TagBuild: "spoofed"},
			SnapshotTags:   map[string]string{"backup": "no"},
		},
		PostProcessors: []PostProcessor{{Type: "manifest", Manifest: &Manifest{CustomData: map[string]string{"channel": "beta"}}}},
	}
}

// newSDWorld stores the plan (edit may change it first), launches the
// instance and waits until it runs.
func newSDWorld(t *testing.T, edit func(p *Plan)) *sdWorld {
	t.Helper()
	c := newFakeCloud(t)
	ctx := WithLogger(context.Background(), sdQuiet)
	base := c.AddImage(sdHome, fakeImageSpec{Name: "ubuntu-base", Owner: "099720109477", Public: true})
	plan := &Plan{Name: "web", Format: "hcl2", Hash: "sha256:feed", Builds: []Build{sdBuild()}}
	if edit != nil {
		edit(plan)
	}
	b := &plan.Builds[0]
	// The build ID names the stored plan, which fetchPlan caches by key:
	// one per test.
	sum := sha256.Sum256([]byte(t.Name()))
	buildID := "web-" + hex.EncodeToString(sum[:6])
	c.AddBucket(sdBucket)
	if err := storePlan(ctx, c.S3(), sdBucket, PlanKey(buildID), plan); err != nil {
		t.Fatalf("storePlan: %v", err)
	}
	st := State{BuildID: buildID, Plan: &PlanRef{
		Bucket: sdBucket, Key: PlanKey(buildID), Recipe: plan.Name, Build: b.Name, Hash: plan.Hash,
		Region: sdHome, Regions: b.Source.AMIRegions, Transport: "ssh",
		Encrypt: b.Source.EncryptBoot != nil && *b.Source.EncryptBoot,
	}}
	run, err := c.EC2(sdHome).RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(base), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		TagSpecifications: []ec2types.TagSpecification{tagSpec(ec2types.ResourceTypeInstance, st, nil), tagSpec(ec2types.ResourceTypeVolume, st, nil)},
	})
	if err != nil {
		t.Fatalf("RunInstances: %v", err)
	}
	c.Advance(c.Delays.Running)
	st.Launch = &Launched{Region: sdHome, SourceAMI: base, InstanceID: aws.ToString(run.Instances[0].InstanceId), LaunchedAt: c.Now()}
	conf := Config{Bucket: sdBucket, ParameterPrefix: "/kiln", EventBus: "kiln-bus", Expect: AWSTimings}
	w := &sdWorld{t: t, ctx: ctx, c: c, plan: plan, st: st}
	w.snap = &Snapshot{EC2: c.EC2(sdHome), S3: c.S3(), Config: conf, Now: c.Now}
	w.dist = &Distribute{
		EC2:    func(region string) distributeEC2API { return c.EC2(region) },
		SSM:    func(region string) parameterPutter { return c.SSM(region) },
		S3:     c.S3(),
		Events: c.Events(sdHome),
		Config: conf,
		Now:    c.Now,
	}
	return w
}

// do runs one action of a stage directly (errors unconverted).
func (w *sdWorld) do(actions map[string]Action, action, region string, st State) (State, error) {
	w.t.Helper()
	act, ok := actions[action]
	if !ok {
		w.t.Fatalf("no action %q", action)
	}
	return act(w.ctx, Event{Action: action, Region: region, State: st})
}

// must runs an action and fails the test on error.
func (w *sdWorld) must(actions map[string]Action, action, region string, st State) State {
	w.t.Helper()
	out, err := w.do(actions, action, region, st)
	if err != nil {
		w.t.Fatalf("%s(%s) = %v", action, region, err)
	}
	return out
}

// poll runs a readiness check as the state machine's wait loop does: wait
// the seconds the previous task asked for (on the fake clock), check, and
// repeat until ready. It returns the ready state and the checks made.
func (w *sdWorld) poll(actions map[string]Action, action string, st State) (State, int) {
	w.t.Helper()
	if st.Wait != nil && !st.Wait.Ready {
		w.c.Advance(time.Duration(st.Wait.Seconds) * time.Second)
	}
	for n := 1; n <= 200; n++ {
		st = w.must(actions, action, "", st)
		if st.Wait == nil {
			w.t.Fatalf("%s: Wait = nil", action)
		}
		if st.Wait.Ready {
			return st, n
		}
		if st.Wait.Seconds < 1 {
			w.t.Fatalf("%s: Wait.Seconds = %d, want >= 1", action, st.Wait.Seconds)
		}
		w.c.Advance(time.Duration(st.Wait.Seconds) * time.Second)
	}
	w.t.Fatalf("%s: not ready after 200 checks: %+v", action, st.Wait)
	return st, 0
}

// stopped runs stop and waits for the instance to stop.
func (w *sdWorld) stopped(st State) State {
	w.t.Helper()
	st = w.must(w.snap.Actions(), "stop", "", st)
	st, _ = w.poll(w.snap.Actions(), "check-stopped", st)
	return st
}

// imaged runs the whole snapshot stage.
func (w *sdWorld) imaged(st State) State {
	w.t.Helper()
	st = w.stopped(st)
	st = w.must(w.snap.Actions(), "create", "", st)
	st, _ = w.poll(w.snap.Actions(), "check", st)
	return st
}

// buildImages lists the images of region that carry the build's tag.
func (w *sdWorld) buildImages(region string) []fakeImage {
	var out []fakeImage
	for _, img := range w.c.Images(region) {
		if fakeTagValue(img.Tags, TagBuild) == w.st.BuildID {
			out = append(out, img)
		}
	}
	return out
}

func sdTagMap(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func TestSnapshotStopAndCheckStopped(t *testing.T) {
	w := newSDWorld(t, nil)
	sa := w.snap.Actions()
	st := w.must(sa, "stop", "", w.st)
	if st.Image == nil || !st.Image.StopAt.Equal(w.c.Now()) {
		t.Fatalf("stop: Image = %+v, want StopAt = now", st.Image)
	}
	// The first wait sleeps through most of the expected 45 s.
	if st.Wait == nil || st.Wait.Ready || st.Wait.Seconds != 41 {
		t.Errorf("stop: Wait = %+v, want not ready for 41 s (0.9 of 45 s)", st.Wait)
	}
	inst, _ := w.c.Instance(sdHome, st.Launch.InstanceID)
	if inst.State.Name != ec2types.InstanceStateNameStopping {
		t.Errorf("after stop, instance is %s, want stopping", inst.State.Name)
	}

	// A retried stop (after a crash) keeps the original StopAt.
	w.c.Advance(10 * time.Second)
	again := w.must(sa, "stop", "", st)
	if !again.Image.StopAt.Equal(st.Image.StopAt) {
		t.Errorf("stop rerun: StopAt = %v, want %v kept", again.Image.StopAt, st.Image.StopAt)
	}

	st, polls := w.poll(sa, "check-stopped", again)
	if !st.Wait.Ready || st.Wait.For != "instance "+st.Launch.InstanceID+" stopped" {
		t.Errorf("check-stopped: Wait = %+v", st.Wait)
	}
	// The rerun at 10 s asked for 31 s; then 2 s polls: 41, 43, 45 s.
	if polls != 3 || !w.c.Now().Equal(st.Image.StopAt.Add(45*time.Second)) {
		t.Errorf("check-stopped took %d checks, ready at +%s; want 3 checks, ready at +45s", polls, w.c.Now().Sub(st.Image.StopAt))
	}
	// Stopping a stopped instance is fine.
	if _, err := w.do(sa, "stop", "", st); err != nil {
		t.Errorf("stop of a stopped instance = %v, want nil", err)
	}
}

func TestSnapshotCheckStoppedErrors(t *testing.T) {
	t.Run("terminated", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.must(w.snap.Actions(), "stop", "", w.st)
		w.c.KillInstance(sdHome, st.Launch.InstanceID, "Server.SpotInstanceTermination", "capacity went away")
		_, err := w.do(w.snap.Actions(), "check-stopped", "", st)
		if err == nil || !strings.Contains(err.Error(), "terminated") || !strings.Contains(err.Error(), "capacity went away") {
			t.Errorf("check-stopped of a terminated instance = %v, want an error with the state reason", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		w := newSDWorld(t, nil)
		w.c.Delays.Stopping = 5 * time.Hour
		st := w.must(w.snap.Actions(), "stop", "", w.st)
		w.c.Advance(DefaultStopTimeout)
		_, err := w.do(w.snap.Actions(), "check-stopped", "", st)
		var wt *WaitTimeoutError
		if !errors.As(err, &wt) {
			t.Fatalf("check-stopped after %s = %v, want a WaitTimeoutError", DefaultStopTimeout, err)
		}
		if got := ForLambda("snapshot", err); !isType[*WaitTimedOut](got) {
			t.Errorf("ForLambda(%v) = %T, want *WaitTimedOut", err, got)
		}
	})
	t.Run("gone", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.st
		st.Launch = &Launched{InstanceID: "i-0000000000000dead"}
		_, err := w.do(w.snap.Actions(), "check-stopped", "", st)
		if err == nil || !strings.Contains(err.Error(), "i-0000000000000dead") {
			t.Errorf("check-stopped of an unknown instance = %v, want an error naming it", err)
		}
		_, err = w.do(w.snap.Actions(), "stop", "", st)
		if AWSCode(err) != "InvalidInstanceID.NotFound" {
			t.Errorf("stop of an unknown instance = %v, want InvalidInstanceID.NotFound", err)
		}
	})
	t.Run("no instance in state", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.st
		st.Launch = nil
		for _, action := range []string{"stop", "check-stopped", "create"} {
			if _, err := w.do(w.snap.Actions(), action, "", st); err == nil || !strings.Contains(err.Error(), "no launched instance") {
				t.Errorf("%s without an instance = %v, want an error", action, err)
			}
		}
	})
}

func isType[T error](err error) bool {
	_, ok := errors.AsType[T](err)
	return ok
}

func TestSnapshotCreateAndCheck(t *testing.T) {
	w := newSDWorld(t, func(p *Plan) {
		s := &p.Builds[0].Source
		s.IMDSSupport = "v2.0"
		s.DeprecateAt = "2030-01-01T00:00:00Z"
		s.ENASupport = aws.Bool(true)
		s.SRIOVSupport = true
		s.AMIBlockDeviceMappings = []BlockDevice{{DeviceName: "/dev/sdb", VolumeType: "gp3", VolumeSize: 20, DeleteOnTermination: aws.Bool(true)}}
	})
	sa := w.snap.Actions()
	st := w.stopped(w.st)
	createdAt := w.c.Now()
	st = w.must(sa, "create", "", st)
	if st.Image == nil || st.Image.ID == "" || st.Image.Name != "web-app-1" || st.Image.Intermediate != "" {
		t.Fatalf("create: Image = %+v", st.Image)
	}
	if !st.Image.CreatedAt.Equal(createdAt) || st.Wait.Ready || st.Wait.Seconds != 108 {
		t.Errorf("create: CreatedAt = %v, Wait = %+v; want now and a 108 s wait (0.9 of 120 s)", st.Image.CreatedAt, st.Wait)
	}
	img, _ := w.c.Image(sdHome, st.Image.ID)
	wantTags := map[string]string{
		TagBuild: w.st.BuildID, TagRecipe: "web", TagRecipeHash: "sha256:feed", TagSourceAMI: w.st.Launch.SourceAMI, "team": "platform",
	}
	if diff := cmp.Diff(wantTags, sdTagMap(img.Tags)); diff != "" {
		t.Errorf("image tags at creation (-want +got):\n%s", diff)
	}
	if aws.ToString(img.Description) != "web app image" || !aws.ToBool(img.EnaSupport) || aws.ToString(img.SriovNetSupport) != "simple" {
		t.Errorf("image = description %q, ena %v, sriov %q", aws.ToString(img.Description), aws.ToBool(img.EnaSupport), aws.ToString(img.SriovNetSupport))
	}
	if len(img.BlockDeviceMappings) != 2 || aws.ToString(img.BlockDeviceMappings[1].DeviceName) != "/dev/sdb" {
		t.Errorf("image mappings = %+v, want the root volume and /dev/sdb", img.BlockDeviceMappings)
	}

	st, polls := w.poll(sa, "check", st)
	// One 108 s wait, then 2 s polls (120 s / 60) until the fake's 120 s:
	// the image is noticed at once, for 7 checks.
	if polls != 7 || !w.c.Now().Equal(createdAt.Add(120*time.Second)) {
		t.Errorf("check took %d checks, ready at +%s; want 7, at +120s", polls, w.c.Now().Sub(createdAt))
	}
	img, _ = w.c.Image(sdHome, st.Image.ID)
	if img.ImdsSupport != ec2types.ImdsSupportValuesV20 {
		t.Errorf("image imds_support = %q, want v2.0", img.ImdsSupport)
	}
	if aws.ToString(img.DeprecationTime) != "2030-01-01T00:00:00.000Z" {
		t.Errorf("image deprecation = %q, want 2030-01-01", aws.ToString(img.DeprecationTime))
	}
	if st.Image.State != "available" || len(st.Image.Snapshots) != 1 {
		t.Fatalf("check: Image = %+v, want available with one snapshot (the root; /dev/sdb is a new volume)", st.Image)
	}
	snap, _ := w.c.Snapshot(sdHome, st.Image.Snapshots[0])
	if diff := cmp.Diff(map[string]string{TagBuild: w.st.BuildID, TagRecipe: "web", "backup": "no"}, sdTagMap(snap.Tags)); diff != "" {
		t.Errorf("snapshot tags (-want +got):\n%s", diff)
	}
	// Rerunning check is harmless.
	again := w.must(sa, "check", "", st)
	if !again.Wait.Ready || !cmp.Equal(again.Image, st.Image) {
		t.Errorf("check rerun: %+v, %+v", again.Wait, again.Image)
	}
	if n := len(w.buildImages(sdHome)); n != 1 {
		t.Errorf("%d images of the build, want 1", n)
	}
}

// TestSnapshotCreateRetryAfterCrash: CreateImage took effect but the
// Lambda died before returning; the retry must find that image, not make a
// second one.
func TestSnapshotCreateRetryAfterCrash(t *testing.T) {
	w := newSDWorld(t, nil)
	sa := w.snap.Actions()
	st := w.stopped(w.st)
	w.c.Fail(fakeFault{Action: "CreateImage", After: true, Code: "InternalError"})
	if _, err := w.do(sa, "create", "", st); err == nil {
		t.Fatalf("create with a crash after CreateImage = nil error")
	}
	out := w.must(sa, "create", "", st)
	imgs := w.buildImages(sdHome)
	if len(imgs) != 1 || aws.ToString(imgs[0].ImageId) != out.Image.ID {
		t.Fatalf("after the retry: %d images of the build, Image = %+v; want the one made before the crash", len(imgs), out.Image)
	}
	if n := w.c.Calls("CreateImage"); n != 1 {
		t.Errorf("CreateImage called %d times, want 1", n)
	}
	if !out.Image.CreatedAt.Equal(w.c.Now()) {
		t.Errorf("CreatedAt = %v, want the image's creation date %v", out.Image.CreatedAt, w.c.Now())
	}
}

// TestSnapshotCreateNotYetVisible: the retry cannot see the image it made
// before the crash (eventual consistency), so CreateImage answers
// InvalidAMIName.Duplicate; once it is visible the retry reuses it.
func TestSnapshotCreateNotYetVisible(t *testing.T) {
	w := newSDWorld(t, nil)
	w.c.Delays.Invisible = 20 * time.Second
	sa := w.snap.Actions()
	st := w.stopped(w.st)
	w.c.Fail(fakeFault{Action: "CreateImage", After: true})
	if _, err := w.do(sa, "create", "", st); err == nil {
		t.Fatalf("create with a crash = nil error")
	}
	_, err := w.do(sa, "create", "", st)
	if AWSCode(err) != "InvalidAMIName.Duplicate" {
		t.Fatalf("retry while the image is invisible = %v, want InvalidAMIName.Duplicate", err)
	}
	w.c.Advance(20 * time.Second)
	out := w.must(sa, "create", "", st)
	if imgs := w.buildImages(sdHome); len(imgs) != 1 || aws.ToString(imgs[0].ImageId) != out.Image.ID {
		t.Errorf("after it became visible: %d images, Image = %+v", len(imgs), out.Image)
	}
}

func TestSnapshotCreateNameTaken(t *testing.T) {
	for _, tc := range []struct {
		name            string
		force, delSnaps bool
		wantErr         string
		wantSnapKept    bool
	}{
		{name: "refused", wantErr: "set force_deregister"},
		{name: "force_deregister", force: true, wantSnapKept: true},
		{name: "force_delete_snapshot", force: true, delSnaps: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newSDWorld(t, func(p *Plan) {
				p.Builds[0].Source.ForceDeregister = tc.force
				p.Builds[0].Source.ForceDeleteSnapshot = tc.delSnaps
			})
			old := w.c.AddImage(sdHome, fakeImageSpec{Name: "web-app-1", Tags: map[string]string{TagBuild: "web-previous"}})
			oldImg, _ := w.c.Image(sdHome, old)
			oldSnap := aws.ToString(oldImg.BlockDeviceMappings[0].Ebs.SnapshotId)
			st := w.stopped(w.st)
			out, err := w.do(w.snap.Actions(), "create", "", st)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), old) {
					t.Fatalf("create over %s = %v, want an error naming it and %q", old, err, tc.wantErr)
				}
				if w.c.Calls("CreateImage") != 0 {
					t.Errorf("CreateImage was called")
				}
				return
			}
			if err != nil {
				t.Fatalf("create = %v", err)
			}
			if _, ok := w.c.Image(sdHome, old); ok {
				t.Errorf("image %s still registered", old)
			}
			if _, ok := w.c.Snapshot(sdHome, oldSnap); ok != tc.wantSnapKept {
				t.Errorf("snapshot %s exists = %v, want %v", oldSnap, ok, tc.wantSnapKept)
			}
			if out.Image.ID == "" || out.Image.ID == old {
				t.Errorf("Image = %+v", out.Image)
			}
		})
	}
}

func TestSnapshotCheckEventualConsistency(t *testing.T) {
	w := newSDWorld(t, nil)
	w.c.Delays.Invisible = 30 * time.Second
	w.c.Delays.Image = 10 * time.Second
	sa := w.snap.Actions()
	st := w.must(sa, "create", "", w.stopped(w.st))
	// Right after CreateImage, DescribeImages does not know the image.
	out := w.must(sa, "check", "", st)
	if out.Wait.Ready {
		t.Fatalf("check of an invisible image: Wait = %+v, want not ready", out.Wait)
	}
	out, _ = w.poll(sa, "check", out)
	if out.Image.State != "available" {
		t.Errorf("Image = %+v, want available", out.Image)
	}

	// An image that stays unknown is gone, not late.
	st.Image = &Image{Name: "web-app-1", ID: "ami-00000000000000000", CreatedAt: w.c.Now()}
	if out := w.must(sa, "check", "", st); out.Wait.Ready {
		t.Errorf("check of an unknown image just created: ready")
	}
	w.c.Advance(imageNotFoundGrace)
	_, err := w.do(sa, "check", "", st)
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("check of an image unknown for %s = %v, want not found", imageNotFoundGrace, err)
	}
}

func TestSnapshotCheckFailures(t *testing.T) {
	t.Run("failed image", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.must(w.snap.Actions(), "create", "", w.stopped(w.st))
		w.c.SetImageState(sdHome, st.Image.ID, ec2types.ImageStateFailed, "Server.InternalError", "snapshot creation failed")
		_, err := w.do(w.snap.Actions(), "check", "", st)
		if err == nil || !strings.Contains(err.Error(), "failed") || !strings.Contains(err.Error(), "snapshot creation failed") || !strings.Contains(err.Error(), st.Image.ID) {
			t.Errorf("check of a failed image = %v, want an error with the image and its state reason", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		w := newSDWorld(t, nil)
		w.c.Delays.Image = 10 * time.Hour
		st := w.must(w.snap.Actions(), "create", "", w.stopped(w.st))
		w.c.Advance(DefaultImageTimeout)
		_, err := w.do(w.snap.Actions(), "check", "", st)
		if !isType[*WaitTimeoutError](err) {
			t.Errorf("check after %s = %v, want a WaitTimeoutError", DefaultImageTimeout, err)
		}
	})
	t.Run("no image in state", func(t *testing.T) {
		w := newSDWorld(t, nil)
		if _, err := w.do(w.snap.Actions(), "check", "", w.st); err == nil || !strings.Contains(err.Error(), "no image") {
			t.Errorf("check without an image = %v", err)
		}
	})
	t.Run("no ami_name", func(t *testing.T) {
		w := newSDWorld(t, func(p *Plan) { p.Builds[0].Source.AMIName = "" })
		if _, err := w.do(w.snap.Actions(), "create", "", w.stopped(w.st)); err == nil || !strings.Contains(err.Error(), "ami_name") {
			t.Errorf("create without ami_name = %v", err)
		}
	})
	t.Run("plan missing", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.stopped(w.st)
		st.Plan = &PlanRef{Bucket: sdBucket, Key: "builds/nope/plan.json"}
		if _, err := w.do(w.snap.Actions(), "create", "", st); AWSCode(err) != "NoSuchKey" {
			t.Errorf("create with a missing plan = %v, want NoSuchKey", err)
		}
	})
	t.Run("tagging snapshots fails", func(t *testing.T) {
		w := newSDWorld(t, nil)
		w.c.Delays.Image = 0
		st := w.must(w.snap.Actions(), "create", "", w.stopped(w.st))
		w.c.Fail(fakeFault{Action: "CreateTags", Code: "UnauthorizedOperation"})
		if _, err := w.do(w.snap.Actions(), "check", "", st); AWSCode(err) != "UnauthorizedOperation" || !strings.Contains(err.Error(), "tag snapshots") {
			t.Errorf("check with CreateTags refused = %v", err)
		}
	})
	t.Run("imds_support fails", func(t *testing.T) {
		w := newSDWorld(t, func(p *Plan) { p.Builds[0].Source.IMDSSupport = "v2.0" })
		w.c.Delays.Image = 0
		st := w.must(w.snap.Actions(), "create", "", w.stopped(w.st))
		w.c.Fail(fakeFault{Action: "ModifyImageAttribute", Code: "UnauthorizedOperation"})
		if _, err := w.do(w.snap.Actions(), "check", "", st); AWSCode(err) != "UnauthorizedOperation" || !strings.Contains(err.Error(), "imds_support") {
			t.Errorf("check with ModifyImageAttribute refused = %v", err)
		}
	})
	t.Run("networking attributes fail", func(t *testing.T) {
		w := newSDWorld(t, func(p *Plan) { p.Builds[0].Source.ENASupport = aws.Bool(false) })
		// The instance is still running: EC2 refuses the attribute.
		_, err := w.do(w.snap.Actions(), "create", "", w.st)
		if AWSCode(err) != "IncorrectInstanceState" || !strings.Contains(err.Error(), "ena_support") {
			t.Errorf("create on a running instance with ena_support = %v, want IncorrectInstanceState", err)
		}
		if w.c.Calls("CreateImage") != 0 {
			t.Errorf("CreateImage was called")
		}
	})
}

// emulator500 is how moto answers an operation it lacks: HTTP 500, no
// AWS error code.
func emulator500() error {
	return &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 500}},
		Err:      errors.New("error while fetching xml error response code"),
	}
}

func TestSnapshotDeprecation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		emulator bool
		fault    error
		wantErr  bool
	}{
		{name: "aws", fault: nil},
		{name: "aws 500 fails the check", fault: emulator500(), wantErr: true},
		{name: "emulator lacking the call warns", emulator: true, fault: emulator500()},
		{name: "emulator, other errors still fail", emulator: true, fault: fakeAPIErr("InvalidParameterValue", "bad time"), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newSDWorld(t, func(p *Plan) { p.Builds[0].Source.DeprecateAt = "2030-01-01T00:00:00Z" })
			w.c.Delays.Image = 0
			w.snap.Emulator = tc.emulator
			st := w.must(w.snap.Actions(), "create", "", w.stopped(w.st))
			if tc.fault != nil {
				w.c.Fail(fakeFault{Action: "EnableImageDeprecation", Err: tc.fault})
			}
			out, err := w.do(w.snap.Actions(), "check", "", st)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "deprecate image") {
					t.Errorf("check = %v, want the deprecation error", err)
				}
				return
			}
			if err != nil || !out.Wait.Ready {
				t.Errorf("check = %+v, %v; want ready", out.Wait, err)
			}
		})
	}
}

func TestSnapshotEncryptBoot(t *testing.T) {
	const key = "arn:aws:kms:us-east-1:123456789012:key/boot"
	w := newSDWorld(t, func(p *Plan) {
		s := &p.Builds[0].Source
		s.EncryptBoot = aws.Bool(true)
		s.KMSKeyID = key
		s.IMDSSupport = "v2.0"
	})
	sa := w.snap.Actions()
	st := w.must(sa, "create", "", w.stopped(w.st))
	if st.Image.ID != "" || st.Image.Intermediate == "" {
		t.Fatalf("create with encrypt_boot: Image = %+v, want an intermediate only", st.Image)
	}
	inter, _ := w.c.Image(sdHome, st.Image.Intermediate)
	if got := aws.ToString(inter.Name); got != intermediateImageName(w.st.BuildID) {
		t.Errorf("intermediate name = %q", got)
	}
	interSnaps := imageSnapshotIDs(inter.Image)

	// The intermediate becomes available: check starts the encrypted copy.
	w.c.Advance(w.c.Delays.Image)
	w.c.Fail(fakeFault{Action: "CopyImage", After: true}) // and dies after it
	if _, err := w.do(sa, "check", "", st); err == nil {
		t.Fatalf("check with a crash after CopyImage = nil error")
	}
	mid := w.must(sa, "check", "", st)
	if mid.Wait.Ready || mid.Image.ID == "" || mid.Image.Intermediate != st.Image.Intermediate {
		t.Fatalf("check after the intermediate is available: Wait %+v, Image %+v", mid.Wait, mid.Image)
	}
	if n := len(w.buildImages(sdHome)); n != 2 {
		t.Errorf("%d images of the build during the copy, want 2 (intermediate and one encrypted copy)", n)
	}
	enc, _ := w.c.Image(sdHome, mid.Image.ID)
	if aws.ToString(enc.Name) != "web-app-1" || sdTagMap(enc.Tags)[TagBuild] != w.st.BuildID {
		t.Errorf("encrypted copy: name %q, tags %v", aws.ToString(enc.Name), sdTagMap(enc.Tags))
	}
	for _, m := range enc.BlockDeviceMappings {
		if !aws.ToBool(m.Ebs.Encrypted) || aws.ToString(m.Ebs.KmsKeyId) != key {
			t.Errorf("encrypted copy mapping %s: encrypted %v key %q, want %s", aws.ToString(m.DeviceName), aws.ToBool(m.Ebs.Encrypted), aws.ToString(m.Ebs.KmsKeyId), key)
		}
	}

	done, _ := w.poll(sa, "check", mid)
	if done.Image.Intermediate != "" || done.Image.ID != mid.Image.ID || len(done.Image.Snapshots) != 1 {
		t.Fatalf("check: Image = %+v, want the encrypted image, intermediate gone", done.Image)
	}
	if _, ok := w.c.Image(sdHome, st.Image.Intermediate); ok {
		t.Errorf("intermediate %s still registered", st.Image.Intermediate)
	}
	for _, s := range interSnaps {
		if _, ok := w.c.Snapshot(sdHome, s); ok {
			t.Errorf("intermediate snapshot %s still exists", s)
		}
	}
	final, _ := w.c.Image(sdHome, done.Image.ID)
	if final.ImdsSupport != ec2types.ImdsSupportValuesV20 {
		t.Errorf("imds_support of the encrypted image = %q", final.ImdsSupport)
	}
	snap, _ := w.c.Snapshot(sdHome, done.Image.Snapshots[0])
	if sdTagMap(snap.Tags)["backup"] != "no" || !aws.ToBool(snap.Encrypted) {
		t.Errorf("encrypted snapshot: tags %v, encrypted %v", sdTagMap(snap.Tags), aws.ToBool(snap.Encrypted))
	}
	// The deregistration is idempotent: a rerun of the last check passes.
	if again := w.must(sa, "check", "", mid); !again.Wait.Ready {
		t.Errorf("rerun of the last check: %+v", again.Wait)
	}
}

func TestSnapshotEncryptBootFailures(t *testing.T) {
	t.Run("intermediate failed", func(t *testing.T) {
		w := newSDWorld(t, func(p *Plan) { p.Builds[0].Source.EncryptBoot = aws.Bool(true) })
		st := w.must(w.snap.Actions(), "create", "", w.stopped(w.st))
		w.c.SetImageState(sdHome, st.Image.Intermediate, ec2types.ImageStateFailed, "Server.InternalError", "boom")
		if _, err := w.do(w.snap.Actions(), "check", "", st); err == nil || !strings.Contains(err.Error(), "boom") {
			t.Errorf("check of a failed intermediate = %v", err)
		}
	})
	t.Run("intermediate pending too long", func(t *testing.T) {
		w := newSDWorld(t, func(p *Plan) { p.Builds[0].Source.EncryptBoot = aws.Bool(true) })
		w.c.Delays.Image = 10 * time.Hour
		st := w.must(w.snap.Actions(), "create", "", w.stopped(w.st))
		if out := w.must(w.snap.Actions(), "check", "", st); out.Wait.Ready {
			t.Errorf("check of a pending intermediate: ready")
		}
		w.c.Advance(DefaultImageTimeout)
		if _, err := w.do(w.snap.Actions(), "check", "", st); !isType[*WaitTimeoutError](err) {
			t.Errorf("check after %s = %v, want a WaitTimeoutError", DefaultImageTimeout, err)
		}
	})
	t.Run("copy refused", func(t *testing.T) {
		w := newSDWorld(t, func(p *Plan) { p.Builds[0].Source.EncryptBoot = aws.Bool(true) })
		w.c.Delays.Image = 0
		st := w.must(w.snap.Actions(), "create", "", w.stopped(w.st))
		w.c.Fail(fakeFault{Action: "CopyImage", Code: "InvalidParameterValue", Message: "kms key not usable"})
		if _, err := w.do(w.snap.Actions(), "check", "", st); err == nil || !strings.Contains(err.Error(), "kms key not usable") {
			t.Errorf("check with CopyImage refused = %v", err)
		}
	})
}

// TestSnapshotThrottled: a throttled call (after the SDK's own retries)
// surfaces as the AWS error, which the Lambda boundary names Throttled so
// that the state machine retries it with backoff.
func TestSnapshotThrottled(t *testing.T) {
	for _, action := range []string{"StopInstances", "DescribeInstances", "CreateImage", "DescribeImages"} {
		t.Run(action, func(t *testing.T) {
			w := newSDWorld(t, nil)
			st := w.st
			run := []string{"stop"}
			switch action {
			case "DescribeInstances":
				run = []string{"stop", "check-stopped"}
			case "CreateImage", "DescribeImages":
				st = w.stopped(st)
				run = []string{"create"}
			}
			w.c.Fail(fakeFault{Action: action, Code: "RequestLimitExceeded", Times: 100})
			var err error
			for _, a := range run {
				if st, err = w.do(w.snap.Actions(), a, "", st); err != nil {
					break
				}
			}
			if AWSCode(err) != "RequestLimitExceeded" {
				t.Fatalf("%v with %s throttled = %v, want RequestLimitExceeded", run, action, err)
			}
			h := Handler("snapshot", w.snap.Actions(), sdQuiet)
			_, herr := h(w.ctx, Event{Action: run[len(run)-1], State: st})
			if !isType[*Throttled](herr) {
				t.Errorf("Handler error = %T %v, want *Throttled", herr, herr)
			}
		})
	}
}

func TestSnapshotActions(t *testing.T) {
	s := &Snapshot{}
	var got []string
	for name := range s.Actions() {
		got = append(got, name)
	}
	want := []string{"check", "check-stopped", "create", "stop"}
	if diff := cmp.Diff(want, slices.Sorted(slices.Values(got))); diff != "" {
		t.Errorf("Snapshot.Actions() (-want +got):\n%s", diff)
	}
	_, err := Handler("snapshot", s.Actions(), sdQuiet)(context.Background(), Event{Action: "bake"})
	if err == nil || !strings.Contains(err.Error(), `unknown action "bake"`) {
		t.Errorf("Handler(bake) = %v", err)
	}
}

func TestAMIBlockDevices(t *testing.T) {
	got := amiBlockDevices([]BlockDevice{
		{DeviceName: "/dev/sda1", VolumeType: "gp3", VolumeSize: 30, IOPS: 4000, Throughput: 250, DeleteOnTermination: aws.Bool(true), Encrypted: aws.Bool(true), KMSKeyID: "k"},
		{DeviceName: "/dev/sdb", VolumeType: "gp2", VolumeSize: 10, IOPS: 100, Throughput: 1},
		{DeviceName: "/dev/sdc", NoDevice: true},
		{DeviceName: "/dev/sdd", VirtualName: "ephemeral0"},
		{DeviceName: "/dev/sde", SnapshotID: "snap-1"},
	})
	want := []ec2types.BlockDeviceMapping{
		{DeviceName: aws.String("/dev/sda1"), Ebs: &ec2types.EbsBlockDevice{
			DeleteOnTermination: aws.Bool(true), VolumeType: "gp3", VolumeSize: aws.Int32(30), Iops: aws.Int32(4000),
			Throughput: aws.Int32(250), Encrypted: aws.Bool(true), KmsKeyId: aws.String("k"),
		}},
		{DeviceName: aws.String("/dev/sdb"), Ebs: &ec2types.EbsBlockDevice{DeleteOnTermination: aws.Bool(false), VolumeType: "gp2", VolumeSize: aws.Int32(10)}},
		{DeviceName: aws.String("/dev/sdc"), NoDevice: aws.String("")},
		{DeviceName: aws.String("/dev/sdd"), VirtualName: aws.String("ephemeral0")},
		{DeviceName: aws.String("/dev/sde"), Ebs: &ec2types.EbsBlockDevice{DeleteOnTermination: aws.Bool(false), SnapshotId: aws.String("snap-1")}},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(ec2types.BlockDeviceMapping{}, ec2types.EbsBlockDevice{})); diff != "" {
		t.Errorf("amiBlockDevices (-want +got):\n%s", diff)
	}
	if amiBlockDevices(nil) != nil {
		t.Errorf("amiBlockDevices(nil) != nil")
	}
}

func TestClientToken(t *testing.T) {
	a, b := clientToken("web-0123456789ab", "copy", "eu-west-1"), clientToken("web-0123456789ab", "copy", "us-west-2")
	if len(a) > 64 || a == b || a != clientToken("web-0123456789ab", "copy", "eu-west-1") {
		t.Errorf("clientToken: %q, %q: want stable, distinct per Region, at most 64 characters", a, b)
	}
}
