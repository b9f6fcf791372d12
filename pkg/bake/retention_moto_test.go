package bake

// The retention job against moto (pkg/emulator) with the real SDK clients:
// the acceptance test. moto differs from AWS where retention meets
// it (shared/FACTS.md); the unit tests (retention_test.go) cover AWS:
//   - an image's CreationDate is always "now": ages come from the
//     kiln:built-at tag, which the seeding sets as the stages do;
//   - a snapshot's StartTime is "now" too, so the job's clock runs two
//     hours ahead of moto's, past the grace an orphaned snapshot gets;
//   - EnableImageDeprecation answers 500 (not implemented): the job is
//     told it talks to an emulator (TestMotoRetentionDeprecation);
//   - moto lists a thousand preloaded snapshots as the caller's own:
//     retention finds kiln's by tag, which this test would catch.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/go-cmp/cmp"
	"github.com/kiln-dev/kiln/pkg/emulator"
)

const (
	motoRetHome = "us-east-1"
	motoRetEU   = "eu-west-1"
	motoRetUS   = "us-west-2"
)

var motoRetRegions = []string{motoRetEU, motoRetHome, motoRetUS}

// motoRetWorld is the retention job wired to moto, with a clock two hours
// ahead of moto's.
type motoRetWorld struct {
	t   *testing.T
	ctx context.Context
	cfg aws.Config
	now time.Time
	r   *Retention
	// base is a preloaded image the seeding instance runs; instance is it.
	base, instance string
}

func newMotoRetWorld(t *testing.T) *motoRetWorld {
	t.Helper()
	cfg := emulator.ForTest(t)
	ctx, cancel := context.WithTimeout(WithLogger(context.Background(), sdQuiet), time.Minute)
	t.Cleanup(cancel)
	w := &motoRetWorld{t: t, ctx: ctx, cfg: cfg, now: time.Now().UTC().Add(2 * time.Hour).Truncate(time.Second)}
	w.r = &Retention{
		EC2:      func(region string) retentionEC2API { return w.ec2(region) },
		SSM:      func(region string) parameterGetter { return w.ssm(region) },
		Config:   Config{ParameterPrefix: "/kiln", EventBus: "default"},
		Policy:   RetentionPolicy{Keep: 1, MaxAgeDays: 30},
		Regions:  motoRetRegions,
		Now:      func() time.Time { return w.now },
		Emulator: true,
	}
	home := w.ec2(motoRetHome)
	imgs, err := home.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"099720109477"}})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("DescribeImages(Canonical) = %v; want a preloaded base image", err)
	}
	w.base = aws.ToString(imgs.Images[0].ImageId)
	w.instance = w.run(motoRetHome, w.base)
	return w
}

func (w *motoRetWorld) ec2(region string) *ec2.Client {
	return ec2.NewFromConfig(w.cfg, func(o *ec2.Options) { o.Region = region })
}

func (w *motoRetWorld) ssm(region string) *ssm.Client {
	return ssm.NewFromConfig(w.cfg, func(o *ssm.Options) { o.Region = region })
}

func (w *motoRetWorld) run(region, image string) string {
	w.t.Helper()
	out, err := w.ec2(region).RunInstances(w.ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(image), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
	})
	if err != nil {
		w.t.Fatalf("RunInstances(%s in %s) = %v", image, region, err)
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

// bake makes the images of one build as the stages do: CreateImage in the
// home Region from the instance (tagged at creation), CopyImage to the
// others (tagged after: moto ignores a copy's TagSpecifications), and the
// snapshots tagged from each image's block device mappings. It returns the
// images by Region.
func (w *motoRetWorld) bake(recipe, build string, age time.Duration, regions []string, extra map[string]string) map[string]string {
	w.t.Helper()
	tags := map[string]string{
		TagBuild: build, TagRecipe: recipe, TagRecipeHash: "sha256:feed", TagSourceAMI: w.base,
		TagBuiltAt: w.now.Add(-age).Format(time.RFC3339),
	}
	for k, v := range extra {
		tags[k] = v
	}
	imgTags := ec2Tags(State{BuildID: build, Plan: &PlanRef{Recipe: recipe}}, tags)
	snapTags := ec2Tags(State{BuildID: build, Plan: &PlanRef{Recipe: recipe}}, nil)
	home := w.ec2(motoRetHome)
	out, err := home.CreateImage(w.ctx, &ec2.CreateImageInput{
		InstanceId: aws.String(w.instance), Name: aws.String(build),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: imgTags}},
	})
	if err != nil {
		w.t.Fatalf("CreateImage(%s) = %v", build, err)
	}
	ids := map[string]string{motoRetHome: aws.ToString(out.ImageId)}
	for _, region := range regions {
		if region == motoRetHome {
			continue
		}
		cp, err := w.ec2(region).CopyImage(w.ctx, &ec2.CopyImageInput{Name: aws.String(build), SourceImageId: out.ImageId, SourceRegion: aws.String(motoRetHome)})
		if err != nil {
			w.t.Fatalf("CopyImage(%s to %s) = %v", build, region, err)
		}
		ids[region] = aws.ToString(cp.ImageId)
	}
	for region, id := range ids {
		api := w.ec2(region)
		if _, err := api.CreateTags(w.ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: imgTags}); err != nil {
			w.t.Fatalf("CreateTags(%s) = %v", id, err)
		}
		img, found, err := describeOneImage(w.ctx, api, id)
		if err != nil || !found {
			w.t.Fatalf("describe %s in %s: %v, found %t", id, region, err, found)
		}
		if err := tagImageSnapshots(w.ctx, api, img, snapTags); err != nil {
			w.t.Fatal(err)
		}
	}
	return ids
}

// inventory is every kiln image and kiln snapshot, by Region, sorted.
func (w *motoRetWorld) inventory() map[string][]string {
	w.t.Helper()
	out := map[string][]string{}
	for _, region := range motoRetRegions {
		imgs, err := describeKilnImages(w.ctx, w.ec2(region), region, "")
		if err != nil {
			w.t.Fatal(err)
		}
		for _, img := range imgs {
			out[region] = append(out[region], aws.ToString(img.ImageId))
		}
		snaps, err := describeKilnSnapshots(w.ctx, w.ec2(region), region)
		if err != nil {
			w.t.Fatal(err)
		}
		for _, s := range snaps {
			out[region] = append(out[region], aws.ToString(s.SnapshotId))
		}
		sort.Strings(out[region])
	}
	return out
}

// snapshotsOf lists an image's snapshots.
func (w *motoRetWorld) snapshotsOf(region, id string) []string {
	w.t.Helper()
	img, found, err := describeOneImage(w.ctx, w.ec2(region), id)
	if err != nil || !found {
		w.t.Fatalf("describe %s in %s: %v, found %t", id, region, err, found)
	}
	return imageSnapshotIDs(img)
}

// failDeleteOnce is EC2 whose first DeleteSnapshot fails: a run that dies
// halfway through deleting an image.
type failDeleteOnce struct {
	retentionEC2API
	failed *atomic.Bool
}

func (f failDeleteOnce) DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, optFns ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	if f.failed.CompareAndSwap(false, true) {
		return nil, errors.New("connection reset by peer (injected)")
	}
	return f.retentionEC2API.DeleteSnapshot(ctx, in, optFns...)
}

// TestMotoRetentionSeededHistory is the acceptance test: a dozen
// images of two recipes across three Regions, some in use by instances, a
// launch template and the SSM parameter, one tagged kiln:keep; retention
// deletes exactly the right images and snapshots, an interrupted run is
// finished by the next, and a further run changes nothing.
func TestMotoRetentionSeededHistory(t *testing.T) {
	w := newMotoRetWorld(t)
	all := motoRetRegions
	// web: keep 1 (the stack's default here), 30 days; copied everywhere.
	w1 := w.bake("web", "web-000000000001", 1*retDay, all, nil)
	w2 := w.bake("web", "web-000000000002", 40*retDay, all, nil)
	w3 := w.bake("web", "web-000000000003", 50*retDay, all, map[string]string{TagKeep: "true"})
	// api: its recipe keeps its newest 1 for 5 days; us-east-1 only.
	apiTags := map[string]string{TagKeepNewest: "1", TagMaxAgeDays: "5"}
	a1 := w.bake("api", "api-000000000001", 1*retDay, []string{motoRetHome}, apiTags)
	a2 := w.bake("api", "api-000000000002", 10*retDay, []string{motoRetHome}, apiTags)
	a3 := w.bake("api", "api-000000000003", 20*retDay, []string{motoRetHome}, apiTags)

	// kiln:keep only on w3's home image.
	for _, region := range []string{motoRetEU, motoRetUS} {
		if _, err := w.ec2(region).DeleteTags(w.ctx, &ec2.DeleteTagsInput{Resources: []string{w3[region]}, Tags: []ec2types.Tag{{Key: aws.String(TagKeep)}}}); err != nil {
			t.Fatal(err)
		}
	}
	// The SSM parameter publishes w2 in us-east-1 (rolled back there).
	for region, id := range map[string]string{motoRetHome: w2[motoRetHome], motoRetEU: w1[motoRetEU], motoRetUS: w1[motoRetUS]} {
		if _, err := w.ssm(region).PutParameter(w.ctx, &ssm.PutParameterInput{Name: aws.String("/kiln/web/latest"), Value: aws.String(id), Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(true)}); err != nil {
			t.Fatal(err)
		}
	}
	// Instances: w2 runs in eu-west-1; a2 is stopped; w3 in us-west-2 ran
	// on a terminated instance, which does not count.
	running := w.run(motoRetEU, w2[motoRetEU])
	stopped := w.run(motoRetHome, a2[motoRetHome])
	if _, err := w.ec2(motoRetHome).StopInstances(w.ctx, &ec2.StopInstancesInput{InstanceIds: []string{stopped}}); err != nil {
		t.Fatal(err)
	}
	gone := w.run(motoRetUS, w3[motoRetUS])
	if _, err := w.ec2(motoRetUS).TerminateInstances(w.ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{gone}}); err != nil {
		t.Fatal(err)
	}
	// Launch templates in us-west-2: web-lt's default version runs w2
	// (its latest w1); old-lt ran w3 once, but its default and latest
	// versions now run w1.
	lt := w.launchTemplate(motoRetUS, "web-lt", w2[motoRetUS], w1[motoRetUS])
	old := w.launchTemplate(motoRetUS, "old-lt", w3[motoRetUS], w1[motoRetUS])
	if _, err := w.ec2(motoRetUS).ModifyLaunchTemplate(w.ctx, &ec2.ModifyLaunchTemplateInput{LaunchTemplateId: aws.String(old), DefaultVersion: aws.String("2")}); err != nil {
		t.Fatal(err)
	}
	// A kiln snapshot of w3's build in eu-west-1 that no image maps.
	extra := w.snapshot(motoRetEU, "web-000000000003", "web")
	// An old image kiln did not make (no kiln:recipe).
	notKiln, err := w.ec2(motoRetHome).CreateImage(w.ctx, &ec2.CreateImageInput{InstanceId: aws.String(w.instance), Name: aws.String("hand-made"),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: []ec2types.Tag{
			{Key: aws.String(TagBuild), Value: aws.String("hand")}, {Key: aws.String(TagBuiltAt), Value: aws.String("2020-01-01T00:00:00Z")}}}}})
	if err != nil {
		t.Fatal(err)
	}

	images := 0
	for _, b := range []map[string]string{w1, w2, w3, a1, a2, a3} {
		images += len(b)
	}
	if images != 12 {
		t.Fatalf("seeded %d images, want a dozen", images)
	}

	p, err := w.r.Plan(w.ctx, w.r.Policy, w.r.Regions)
	if err != nil {
		t.Fatalf("Plan() = %v", err)
	}
	type row struct{ Region, Image, Snapshots, Action, Reason string }
	var got []row
	for _, d := range p.Decisions {
		got = append(got, row{d.Region, d.ImageID, strings.Join(d.Snapshots, ","), string(d.Action), d.Reason})
	}
	keep := func(region, id, reason string) row { return row{region, id, "", "keep", reason} }
	del := func(region, id string, days, keep int, extra ...string) row {
		snaps := append(w.snapshotsOf(region, id), extra...)
		return row{region, id, strings.Join(snaps, ","), "delete", fmt.Sprintf("older than %d days and not among the newest %d", days, keep)}
	}
	uses := []string{
		"in use by launch template " + lt + " (web-lt) $Latest version 2",
		"in use by launch template " + old + " (old-lt) $Default version 2",
	}
	sort.Strings(uses)
	want := []row{
		keep(motoRetHome, a1[motoRetHome], "newest 1 kept"),
		keep(motoRetHome, a2[motoRetHome], "in use by instance "+stopped),
		del(motoRetHome, a3[motoRetHome], 5, 1),
		keep(motoRetEU, w1[motoRetEU], "published in /kiln/web/latest"),
		keep(motoRetHome, w1[motoRetHome], "newest 1 kept"),
		keep(motoRetUS, w1[motoRetUS], "published in /kiln/web/latest; "+strings.Join(uses, "; ")),
		keep(motoRetEU, w2[motoRetEU], "in use by instance "+running),
		keep(motoRetHome, w2[motoRetHome], "published in /kiln/web/latest"),
		keep(motoRetUS, w2[motoRetUS], "in use by launch template "+lt+" (web-lt) $Default version 1"),
		del(motoRetEU, w3[motoRetEU], 30, 1, extra),
		keep(motoRetHome, w3[motoRetHome], "tagged kiln:keep"),
		del(motoRetUS, w3[motoRetUS], 30, 1),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Plan() against moto (-want +got):\n%s", diff)
	}

	// What must remain: everything but the three deleted images and their
	// snapshots (with the extra one of w3's build in eu-west-1).
	before := w.inventory()
	deleted := map[string]bool{}
	for _, r := range want {
		if r.Action == "delete" {
			deleted[r.Image] = true
			for s := range strings.SplitSeq(r.Snapshots, ",") {
				deleted[s] = true
			}
		}
	}
	if len(deleted) != 7 {
		t.Fatalf("%d images and snapshots to delete, want 7 (3 images, their 3 snapshots, 1 build snapshot): %v", len(deleted), deleted)
	}
	remain := map[string][]string{}
	for region, ids := range before {
		for _, id := range ids {
			if !deleted[id] {
				remain[region] = append(remain[region], id)
			}
		}
	}

	// An interrupted run: the first snapshot deletion fails.
	var failed atomic.Bool
	interrupted := *w.r
	interrupted.EC2 = func(region string) retentionEC2API { return failDeleteOnce{w.ec2(region), &failed} }
	if _, err := interrupted.Apply(w.ctx, p); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Apply() with a failing DeleteSnapshot = %v, want the failure", err)
	}
	left := 0
	for region, ids := range w.inventory() {
		left += len(ids) - len(remain[region])
	}
	if left != 1 {
		t.Fatalf("the interrupted run left %d of what it should delete, want 1 snapshot", left)
	}

	// The next run finishes it.
	res, err := w.r.Handle(w.ctx, RetentionEvent{})
	if err != nil {
		t.Fatalf("Handle() after the interrupted run = %v", err)
	}
	if res.Deleted != 1 {
		t.Errorf("Handle() after the interrupted run deleted %d, want the 1 orphaned snapshot", res.Deleted)
	}
	if diff := cmp.Diff(remain, w.inventory()); diff != "" {
		t.Errorf("kiln images and snapshots after retention (-want +got):\n%s", diff)
	}
	if _, found, err := describeOneImage(w.ctx, w.ec2(motoRetHome), aws.ToString(notKiln.ImageId)); err != nil || !found {
		t.Errorf("image %s that kiln did not make: found %t, %v; want untouched", aws.ToString(notKiln.ImageId), found, err)
	}

	// Again: nothing changes.
	res, err = w.r.Handle(w.ctx, RetentionEvent{})
	if err != nil || res.Deleted != 0 || res.Deprecated != 0 {
		t.Errorf("third run = %+v, %v; want nothing to do", res, err)
	}
	if diff := cmp.Diff(remain, w.inventory()); diff != "" {
		t.Errorf("third run changed kiln's images and snapshots (-want +got):\n%s", diff)
	}
}

func (w *motoRetWorld) launchTemplate(region, name string, images ...string) string {
	w.t.Helper()
	api := w.ec2(region)
	out, err := api.CreateLaunchTemplate(w.ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(name),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String(images[0])},
	})
	if err != nil {
		w.t.Fatalf("CreateLaunchTemplate(%s) = %v", name, err)
	}
	id := out.LaunchTemplate.LaunchTemplateId
	for _, img := range images[1:] {
		if _, err := api.CreateLaunchTemplateVersion(w.ctx, &ec2.CreateLaunchTemplateVersionInput{
			LaunchTemplateId: id, LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String(img)},
		}); err != nil {
			w.t.Fatalf("CreateLaunchTemplateVersion(%s) = %v", name, err)
		}
	}
	return aws.ToString(id)
}

// snapshot makes a kiln-tagged snapshot of build that no image maps.
func (w *motoRetWorld) snapshot(region, build, recipe string) string {
	w.t.Helper()
	api := w.ec2(region)
	vol, err := api.CreateVolume(w.ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(region + "a"), Size: aws.Int32(8)})
	if err != nil {
		w.t.Fatal(err)
	}
	snap, err := api.CreateSnapshot(w.ctx, &ec2.CreateSnapshotInput{VolumeId: vol.VolumeId})
	if err != nil {
		w.t.Fatal(err)
	}
	tags := ec2Tags(State{BuildID: build, Plan: &PlanRef{Recipe: recipe}}, nil)
	if _, err := api.CreateTags(w.ctx, &ec2.CreateTagsInput{Resources: []string{aws.ToString(snap.SnapshotId)}, Tags: tags}); err != nil {
		w.t.Fatal(err)
	}
	return aws.ToString(snap.SnapshotId)
}

// TestMotoRetentionDeprecation: moto answers EnableImageDeprecation with a
// 500; told it is an emulator, retention warns and goes on.
func TestMotoRetentionDeprecation(t *testing.T) {
	w := newMotoRetWorld(t)
	w.r.Regions = []string{motoRetHome}
	w.bake("web", "web-000000000001", 1*retDay, []string{motoRetHome}, nil)
	w.bake("web", "web-000000000002", 25*retDay, []string{motoRetHome}, nil)
	p, err := w.r.Plan(w.ctx, RetentionPolicy{Keep: 1, MaxAgeDays: 30, DeprecateDays: 10}, w.r.Regions)
	if err != nil || p.Count(RetainDeprecate) != 1 {
		t.Fatalf("Plan() = %v, %d to deprecate; want 1", err, p.Count(RetainDeprecate))
	}
	rep, err := w.r.Apply(w.ctx, p)
	if err != nil || len(rep.Warnings) != 1 {
		t.Errorf("Apply() against moto = %+v, %v; want one warning about the emulator", rep, err)
	}
	strict := *w.r
	strict.Emulator = false
	strict.EC2 = func(region string) retentionEC2API {
		return ec2.NewFromConfig(w.cfg, func(o *ec2.Options) { o.Region, o.RetryMaxAttempts = region, 1 })
	}
	if _, err := strict.Apply(w.ctx, p); err == nil {
		t.Errorf("Apply() against moto with Emulator=false = nil, want the 500")
	}
}
