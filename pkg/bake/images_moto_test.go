package bake

// Integration tests of the snapshot and distribute stages: the real
// aws-sdk-go-v2 clients against moto in server mode (pkg/emulator).
//
// moto differs from AWS in ways these stages meet (shared/FACTS.md); the
// unit tests (snapshot_test.go, distribute_test.go) cover AWS's behaviour
// for each of them:
//   - moto accepts duplicate AMI names and ignores client tokens, so the
//     create-if-absent lookups are what keeps a rerun from making a second
//     AMI or copy here (TestMotoImgRerunMakesNothingTwice);
//   - moto ignores CopyImage's TagSpecifications: copies are tagged by
//     CreateTags right after (tagNewCopy);
//   - moto answers 500 to EnableImageDeprecation: the stages are told they
//     talk to an emulator (Emulator: true) and log a warning instead
//     (TestMotoImgDeprecation shows both sides);
//   - moto makes state changes at once, so every check is ready at first.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/google/go-cmp/cmp"
	"github.com/kiln-dev/kiln/pkg/emulator"
)

const (
	motoImgHome    = emulator.TestRegion // us-east-1
	motoImgShareTo = "210987654321"
	motoImgBucket  = "kiln-moto-images"
)

var motoImgRegions = []string{"eu-west-1", "us-west-2"}

// motoImgWorld is one test's view of moto: clients per Region and the
// stages wired to them.
type motoImgWorld struct {
	t    *testing.T
	ctx  context.Context
	cfg  aws.Config
	s3   *s3.Client
	snap *Snapshot
	dist *Distribute
}

func motoImgSetup(t *testing.T) *motoImgWorld {
	t.Helper()
	cfg := emulator.ForTest(t)
	ctx, cancel := context.WithTimeout(WithLogger(context.Background(), sdQuiet), 2*time.Minute)
	t.Cleanup(cancel)
	w := &motoImgWorld{t: t, ctx: ctx, cfg: cfg, s3: s3.NewFromConfig(cfg, emulator.S3Options)}
	if _, err := w.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(motoImgBucket)}); err != nil {
		t.Fatalf("CreateBucket(%s) = %v", motoImgBucket, err)
	}
	conf := Config{Bucket: motoImgBucket, ParameterPrefix: "/kiln", EventBus: "default"}
	w.snap = &Snapshot{EC2: w.ec2(motoImgHome), S3: w.s3, Config: conf, Emulator: true}
	w.dist = &Distribute{
		EC2:      func(region string) distributeEC2API { return w.ec2(region) },
		SSM:      func(region string) parameterPutter { return w.ssm(region) },
		S3:       w.s3,
		Events:   eventbridge.NewFromConfig(cfg),
		Config:   conf,
		Emulator: true,
	}
	return w
}

func (w *motoImgWorld) ec2(region string) *ec2.Client {
	return ec2.NewFromConfig(w.cfg, func(o *ec2.Options) { o.Region = region })
}

func (w *motoImgWorld) ssm(region string) *ssm.Client {
	return ssm.NewFromConfig(w.cfg, func(o *ssm.Options) { o.Region = region })
}

// motoImgBuild is the recipe these tests bake: shared with one account, two
// extra Regions, tags, snapshot tags, imds_support, a manifest.
func motoImgBuild(amiName string) Build {
	return Build{
		Name: "app",
		Type: "amazon-ebs",
		Source: AmazonEBS{
			Region:         motoImgHome,
			InstanceType:   "t3.micro",
			AMIName:        amiName,
			AMIDescription: "kiln moto test",
			AMIRegions:     motoImgRegions,
			AMIUsers:       []string{motoImgShareTo},
			SnapshotUsers:  []string{motoImgShareTo},
			Tags:           map[string]string{"team": "platform"},
			SnapshotTags:   map[string]string{"backup": "no"},
			IMDSSupport:    "v2.0",
		},
		PostProcessors: []PostProcessor{{Type: "manifest", Manifest: &Manifest{CustomData: map[string]string{"channel": "beta"}}}},
	}
}

// motoImgStart stores the plan, launches a tagged instance from a preloaded
// image and returns the state the snapshot stage receives.
func (w *motoImgWorld) motoImgStart(b Build) State {
	t := w.t
	t.Helper()
	buildID := fmt.Sprintf("motoimg-%012x", rand.Uint64()&0xffffffffffff)
	plan := &Plan{Name: "web", Format: "hcl2", Hash: "sha256:feed", Builds: []Build{b}}
	key := PlanKey(buildID)
	if err := storePlan(w.ctx, w.s3, motoImgBucket, key, plan); err != nil {
		t.Fatalf("storePlan: %v", err)
	}
	home := w.ec2(motoImgHome)
	imgs, err := home.DescribeImages(w.ctx, &ec2.DescribeImagesInput{Owners: []string{"099720109477"}})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("DescribeImages(Canonical) = %d images, %v; want a preloaded base image", len(imgs.Images), err)
	}
	base := aws.ToString(imgs.Images[0].ImageId)
	st := State{BuildID: buildID, Plan: &PlanRef{
		Bucket: motoImgBucket, Key: key, Recipe: plan.Name, Build: b.Name, Hash: plan.Hash,
		Region: motoImgHome, Regions: b.Source.AMIRegions, Transport: "ssh",
		Encrypt: b.Source.EncryptBoot != nil && *b.Source.EncryptBoot,
	}}
	run, err := home.RunInstances(w.ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(base), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		TagSpecifications: []ec2types.TagSpecification{tagSpec(ec2types.ResourceTypeInstance, st, nil)},
	})
	if err != nil {
		t.Fatalf("RunInstances: %v", err)
	}
	st.Launch = &Launched{Region: motoImgHome, SourceAMI: base, InstanceID: aws.ToString(run.Instances[0].InstanceId)}
	return st
}

// motoImgRun runs one action through the stage's Lambda handler, with the
// JSON round trip the state machine makes, and fails the test on error.
func (w *motoImgWorld) motoImgRun(stage string, actions map[string]Action, action, region string, st State) State {
	w.t.Helper()
	out, err := w.motoImgTry(stage, actions, action, region, st)
	if err != nil {
		w.t.Fatalf("%s %s(%s) = %v", stage, action, region, err)
	}
	return out
}

func (w *motoImgWorld) motoImgTry(stage string, actions map[string]Action, action, region string, st State) (State, error) {
	w.t.Helper()
	raw, err := json.Marshal(Event{Action: action, Region: region, State: st})
	if err != nil {
		w.t.Fatalf("encode event: %v", err)
	}
	var ev Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		w.t.Fatalf("decode event: %v", err)
	}
	out, err := Handler(stage, actions, sdQuiet)(w.ctx, ev)
	if err != nil {
		return out, err
	}
	raw, err = json.Marshal(out)
	if err != nil {
		w.t.Fatalf("encode state: %v", err)
	}
	var back State
	if err := json.Unmarshal(raw, &back); err != nil {
		w.t.Fatalf("decode state: %v", err)
	}
	return back, nil
}

// motoImgBake runs snapshot and distribute end to end and returns the
// published state.
func (w *motoImgWorld) motoImgBake(st State) State {
	w.t.Helper()
	sa, da := w.snap.Actions(), w.dist.Actions()
	st = w.motoImgRun("snapshot", sa, "stop", "", st)
	st = w.motoImgRun("snapshot", sa, "check-stopped", "", st)
	if !st.Wait.Ready {
		w.t.Fatalf("check-stopped: Wait = %+v, want ready (moto stops at once)", st.Wait)
	}
	st = w.motoImgRun("snapshot", sa, "create", "", st)
	st = w.motoImgRun("snapshot", sa, "check", "", st)
	if !st.Wait.Ready {
		w.t.Fatalf("check: Wait = %+v, want ready", st.Wait)
	}
	st = w.motoImgCopies(st)
	st = w.motoImgRun("distribute", da, "check", "", st)
	if !st.Wait.Ready {
		w.t.Fatalf("distribute check: Wait = %+v, want ready", st.Wait)
	}
	return w.motoImgRun("distribute", da, "publish", "", st)
}

// motoImgCopies runs the Map of copy actions and gathers copies[0] of each,
// as the state machine's ResultSelector does.
func (w *motoImgWorld) motoImgCopies(st State) State {
	w.t.Helper()
	var copies []Copy
	for _, region := range st.Plan.Regions {
		out := w.motoImgRun("distribute", w.dist.Actions(), "copy", region, st)
		if len(out.Copies) != 1 || out.Copies[0].Region != region || out.Copies[0].ImageID == "" {
			w.t.Fatalf("copy(%s): Copies = %+v, want one copy in %s", region, out.Copies, region)
		}
		copies = append(copies, out.Copies[0])
	}
	st.Copies = copies
	return st
}

// motoImgBuildImages returns the images in region tagged with the build.
func (w *motoImgWorld) motoImgBuildImages(region, buildID string) []ec2types.Image {
	w.t.Helper()
	out, err := w.ec2(region).DescribeImages(w.ctx, &ec2.DescribeImagesInput{
		Owners: []string{"self"}, Filters: []ec2types.Filter{buildFilter(buildID)},
	})
	if err != nil {
		w.t.Fatalf("DescribeImages(%s, tag) = %v", region, err)
	}
	return out.Images
}

func motoImgTags(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func TestMotoImgBakeAndPublish(t *testing.T) {
	w := motoImgSetup(t)
	// An event archive on the default bus records what PutEvents delivered.
	events := eventbridge.NewFromConfig(w.cfg)
	bus, err := events.DescribeEventBus(w.ctx, &eventbridge.DescribeEventBusInput{Name: aws.String("default")})
	if err != nil {
		t.Fatalf("DescribeEventBus(default) = %v", err)
	}
	if _, err := events.CreateArchive(w.ctx, &eventbridge.CreateArchiveInput{
		ArchiveName: aws.String("kiln-baked"), EventSourceArn: bus.Arn,
		EventPattern: aws.String(`{"source":["kiln"],"detail-type":["kiln.image.baked"]}`),
	}); err != nil {
		t.Fatalf("CreateArchive = %v", err)
	}

	b := motoImgBuild("kiln-app-moto")
	st := w.motoImgStart(b)
	st = w.motoImgBake(st)

	pub := st.Published
	if pub == nil {
		t.Fatalf("publish: Published = nil")
	}
	allRegions := append([]string{motoImgHome}, motoImgRegions...)
	if got := slices.Sorted(func(yield func(string) bool) {
		for r := range pub.Images {
			if !yield(r) {
				return
			}
		}
	}); !cmp.Equal(got, slices.Sorted(slices.Values(allRegions))) {
		t.Errorf("Published.Images regions = %v, want %v", got, allRegions)
	}

	for _, region := range allRegions {
		api := w.ec2(region)
		imgs := w.motoImgBuildImages(region, st.BuildID)
		if len(imgs) != 1 {
			t.Fatalf("%s: %d images tagged %s, want 1", region, len(imgs), st.BuildID)
		}
		img := imgs[0]
		id := aws.ToString(img.ImageId)
		if id != pub.Images[region] {
			t.Errorf("%s: tagged image %s, Published.Images = %s", region, id, pub.Images[region])
		}
		if aws.ToString(img.Name) != "kiln-app-moto" {
			t.Errorf("%s: image name = %q, want kiln-app-moto", region, aws.ToString(img.Name))
		}
		tags := motoImgTags(img.Tags)
		for k, v := range map[string]string{TagBuild: st.BuildID, TagRecipe: "web", "team": "platform", TagRecipeHash: "sha256:feed", TagSourceAMI: st.Launch.SourceAMI} {
			if tags[k] != v {
				t.Errorf("%s: image %s tag %s = %q, want %q", region, id, k, tags[k], v)
			}
		}
		attr, err := api.DescribeImageAttribute(w.ctx, &ec2.DescribeImageAttributeInput{ImageId: aws.String(id), Attribute: ec2types.ImageAttributeNameLaunchPermission})
		if err != nil {
			t.Fatalf("DescribeImageAttribute(%s, launchPermission) = %v", id, err)
		}
		if len(attr.LaunchPermissions) != 1 || aws.ToString(attr.LaunchPermissions[0].UserId) != motoImgShareTo {
			t.Errorf("%s: launch permissions of %s = %+v, want user %s", region, id, attr.LaunchPermissions, motoImgShareTo)
		}

		// Snapshots: found through the image's block device mappings
		// (moto lists ~1000 unrelated snapshots as the caller's own).
		snaps := imageSnapshotIDs(img)
		if len(snaps) == 0 {
			t.Fatalf("%s: image %s has no snapshots", region, id)
		}
		out, err := api.DescribeSnapshots(w.ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: snaps})
		if err != nil {
			t.Fatalf("DescribeSnapshots(%v) = %v", snaps, err)
		}
		for _, s := range out.Snapshots {
			tags := motoImgTags(s.Tags)
			if tags[TagBuild] != st.BuildID || tags["backup"] != "no" {
				t.Errorf("%s: snapshot %s tags = %v, want %s=%s and backup=no", region, aws.ToString(s.SnapshotId), tags, TagBuild, st.BuildID)
			}
			perm, err := api.DescribeSnapshotAttribute(w.ctx, &ec2.DescribeSnapshotAttributeInput{SnapshotId: s.SnapshotId, Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission})
			if err != nil {
				t.Fatalf("DescribeSnapshotAttribute(%s) = %v", aws.ToString(s.SnapshotId), err)
			}
			if len(perm.CreateVolumePermissions) != 1 || aws.ToString(perm.CreateVolumePermissions[0].UserId) != motoImgShareTo {
				t.Errorf("%s: createVolumePermission of %s = %+v, want user %s", region, aws.ToString(s.SnapshotId), perm.CreateVolumePermissions, motoImgShareTo)
			}
		}

		param, err := w.ssm(region).GetParameter(w.ctx, &ssm.GetParameterInput{Name: aws.String("/kiln/web/latest")})
		if err != nil {
			t.Fatalf("%s: GetParameter(/kiln/web/latest) = %v", region, err)
		}
		if got := aws.ToString(param.Parameter.Value); got != id {
			t.Errorf("%s: /kiln/web/latest = %q, want %q", region, got, id)
		}
		if got := aws.ToString(param.Parameter.DataType); got != "aws:ec2:image" {
			t.Errorf("%s: /kiln/web/latest DataType = %q, want aws:ec2:image", region, got)
		}
		if pub.Parameters[region] != "/kiln/web/latest" {
			t.Errorf("Published.Parameters[%s] = %q, want /kiln/web/latest", region, pub.Parameters[region])
		}
	}

	// The manifest, in Packer's format.
	obj, err := w.s3.GetObject(w.ctx, &s3.GetObjectInput{Bucket: aws.String(motoImgBucket), Key: aws.String(ManifestKey(st.BuildID))})
	if err != nil {
		t.Fatalf("GetObject(manifest) = %v", err)
	}
	body, _ := io.ReadAll(obj.Body)
	obj.Body.Close()
	var m struct {
		Builds []map[string]any `json:"builds"`
		Last   string           `json:"last_run_uuid"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest %s: %v", body, err)
	}
	if len(m.Builds) != 1 {
		t.Fatalf("manifest builds = %d, want 1:\n%s", len(m.Builds), body)
	}
	want := ArtifactID(pub.Images)
	if got := m.Builds[len(m.Builds)-1]["artifact_id"]; got != want || !strings.HasPrefix(want, "eu-west-1:ami-") || strings.Count(want, ",") != 2 {
		t.Errorf("manifest .builds[-1].artifact_id = %v, want %q (three sorted region:ami pairs)", got, want)
	}
	if m.Builds[0]["name"] != "app" || m.Builds[0]["builder_type"] != "amazon-ebs" || m.Last != RunUUID(st.BuildID) {
		t.Errorf("manifest = %s", body)
	}
	if pub.Manifest != ManifestKey(st.BuildID) {
		t.Errorf("Published.Manifest = %q, want %q", pub.Manifest, ManifestKey(st.BuildID))
	}

	// One event, delivered to the archive.
	if pub.Event == "" {
		t.Errorf("Published.Event is empty")
	}
	arch, err := events.DescribeArchive(w.ctx, &eventbridge.DescribeArchiveInput{ArchiveName: aws.String("kiln-baked")})
	if err != nil {
		t.Fatalf("DescribeArchive = %v", err)
	}
	if arch.EventCount != 1 {
		t.Errorf("archive EventCount = %d, want 1 kiln.image.baked event", arch.EventCount)
	}
}

// TestMotoImgRerunMakesNothingTwice reruns every create action after it
// succeeded, as a retried Lambda would: moto ignores client tokens and
// accepts duplicate AMI names, so only the lookups keep the count at one.
func TestMotoImgRerunMakesNothingTwice(t *testing.T) {
	w := motoImgSetup(t)
	st := w.motoImgStart(motoImgBuild("kiln-app-rerun"))
	sa, da := w.snap.Actions(), w.dist.Actions()
	st = w.motoImgRun("snapshot", sa, "stop", "", st)
	st = w.motoImgRun("snapshot", sa, "stop", "", st)
	st = w.motoImgRun("snapshot", sa, "check-stopped", "", st)
	first := w.motoImgRun("snapshot", sa, "create", "", st)
	again := w.motoImgRun("snapshot", sa, "create", "", st) // the retry never saw first's output
	if first.Image.ID != again.Image.ID {
		t.Errorf("create twice: image %s then %s, want the same", first.Image.ID, again.Image.ID)
	}
	st = w.motoImgRun("snapshot", sa, "check", "", again)
	st = w.motoImgRun("snapshot", sa, "check", "", st)
	copied := w.motoImgCopies(st)
	copiedAgain := w.motoImgCopies(st)
	ids := func(cs []Copy) map[string]string {
		m := map[string]string{}
		for _, c := range cs {
			m[c.Region] = c.ImageID
		}
		return m
	}
	if !cmp.Equal(ids(copied.Copies), ids(copiedAgain.Copies)) {
		t.Errorf("copy twice: %+v then %+v, want the same copies", copied.Copies, copiedAgain.Copies)
	}
	st = w.motoImgRun("distribute", da, "check", "", copiedAgain)
	published := w.motoImgRun("distribute", da, "publish", "", st)
	st.Published = nil // a rerun whose input does not record the first publish
	republished := w.motoImgRun("distribute", da, "publish", "", st)
	if !cmp.Equal(published.Published.Images, republished.Published.Images) {
		t.Errorf("publish twice: images %v then %v", published.Published.Images, republished.Published.Images)
	}
	for _, region := range append([]string{motoImgHome}, motoImgRegions...) {
		if n := len(w.motoImgBuildImages(region, st.BuildID)); n != 1 {
			t.Errorf("%s: %d images of the build after reruns, want 1", region, n)
		}
	}
	obj, err := w.s3.GetObject(w.ctx, &s3.GetObjectInput{Bucket: aws.String(motoImgBucket), Key: aws.String(ManifestKey(st.BuildID))})
	if err != nil {
		t.Fatalf("GetObject(manifest) = %v", err)
	}
	body, _ := io.ReadAll(obj.Body)
	obj.Body.Close()
	doc, err := ParseManifest(body)
	if err != nil || len(doc.Builds) != 1 {
		t.Errorf("manifest after two publishes = %s (%v), want one build", body, err)
	}
}

// TestMotoImgForceDeregister: an image of the same name that is not the
// build's blocks create, unless force_deregister replaces it.
func TestMotoImgForceDeregister(t *testing.T) {
	w := motoImgSetup(t)
	b := motoImgBuild("kiln-app-taken")
	st := w.motoImgStart(b)
	home := w.ec2(motoImgHome)
	old, err := home.CreateImage(w.ctx, &ec2.CreateImageInput{InstanceId: aws.String(st.Launch.InstanceID), Name: aws.String("kiln-app-taken")})
	if err != nil {
		t.Fatalf("CreateImage(squatter) = %v", err)
	}
	sa := w.snap.Actions()
	st = w.motoImgRun("snapshot", sa, "stop", "", st)
	_, err = w.motoImgTry("snapshot", sa, "create", "", st)
	if err == nil || !strings.Contains(err.Error(), aws.ToString(old.ImageId)) || !strings.Contains(err.Error(), "force_deregister") {
		t.Fatalf("create over an existing name = %v, want an error naming %s and force_deregister", err, aws.ToString(old.ImageId))
	}

	b.Source.ForceDeregister, b.Source.ForceDeleteSnapshot = true, true
	st2 := w.motoImgStart(b)
	st2 = w.motoImgRun("snapshot", sa, "stop", "", st2)
	st2 = w.motoImgRun("snapshot", sa, "create", "", st2)
	if _, found, err := describeOneImage(w.ctx, home, aws.ToString(old.ImageId)); err != nil || found {
		t.Errorf("after force_deregister, DescribeImages(%s) found=%v err=%v, want gone", aws.ToString(old.ImageId), found, err)
	}
	if st2.Image.ID == "" || st2.Image.ID == aws.ToString(old.ImageId) {
		t.Errorf("create with force_deregister: Image = %+v", st2.Image)
	}
}

// TestMotoImgDeprecation: moto does not implement EnableImageDeprecation.
// Told it talks to an emulator, the stage warns and goes on; otherwise the
// failure is the bake's, as it must be on AWS.
func TestMotoImgDeprecation(t *testing.T) {
	w := motoImgSetup(t)
	b := motoImgBuild("kiln-app-deprecated")
	b.Source.DeprecateAt = "2031-01-01T00:00:00Z"
	st := w.motoImgStart(b)
	sa := w.snap.Actions()
	st = w.motoImgRun("snapshot", sa, "stop", "", st)
	st = w.motoImgRun("snapshot", sa, "create", "", st)

	strict := *w.snap
	strict.Emulator = false
	// No SDK retries of moto's 500: the answer is known.
	strict.EC2 = ec2.NewFromConfig(w.cfg, func(o *ec2.Options) { o.Region = motoImgHome; o.RetryMaxAttempts = 1 })
	if _, err := w.motoImgTry("snapshot", strict.Actions(), "check", "", st); err == nil || !strings.Contains(err.Error(), "deprecate image") {
		t.Errorf("check with deprecate_at against moto, Emulator=false = %v, want the deprecation error", err)
	}
	out := w.motoImgRun("snapshot", sa, "check", "", st)
	if !out.Wait.Ready {
		t.Errorf("check with Emulator=true: Wait = %+v, want ready", out.Wait)
	}
}

// TestMotoImgEncryptBoot runs the encrypt_boot path: an intermediate image,
// its encrypted copy under ami_name, and the intermediate removed.
func TestMotoImgEncryptBoot(t *testing.T) {
	w := motoImgSetup(t)
	b := motoImgBuild("kiln-app-encrypted")
	b.Source.EncryptBoot = aws.Bool(true)
	st := w.motoImgStart(b)
	sa := w.snap.Actions()
	st = w.motoImgRun("snapshot", sa, "stop", "", st)
	st = w.motoImgRun("snapshot", sa, "create", "", st)
	intermediate := st.Image.Intermediate
	if intermediate == "" || st.Image.ID != "" {
		t.Fatalf("create with encrypt_boot: Image = %+v, want only an intermediate", st.Image)
	}
	st = w.motoImgRun("snapshot", sa, "check", "", st)
	if st.Wait.Ready || st.Image.ID == "" {
		t.Fatalf("check after the intermediate is available: Wait = %+v, Image = %+v; want the encrypted copy started", st.Wait, st.Image)
	}
	st = w.motoImgRun("snapshot", sa, "check", "", st)
	if !st.Wait.Ready || st.Image.Intermediate != "" {
		t.Fatalf("check: Wait = %+v, Image = %+v; want ready and the intermediate gone", st.Wait, st.Image)
	}
	imgs := w.motoImgBuildImages(motoImgHome, st.BuildID)
	if len(imgs) != 1 || aws.ToString(imgs[0].ImageId) != st.Image.ID || aws.ToString(imgs[0].Name) != "kiln-app-encrypted" {
		t.Errorf("images of the build = %d (%v), want only the encrypted %s", len(imgs), imgs, st.Image.ID)
	}
}
