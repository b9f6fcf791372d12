package bake

// Integration tests of the launch and cleanup stages: the real
// aws-sdk-go-v2 clients (EC2, SSM, S3) against moto in server mode
// (pkg/emulator). The build runs in eu-west-1 while the clients are made
// for us-east-1, so every call goes through the stages' per-call Region.
//
// Where moto differs from AWS (shared/FACTS.md), the unit tests cover AWS's
// behaviour with the fake (fakeaws_test.go):
//   - moto ignores RunInstances' ClientToken: here only the find-by-tag
//     check keeps a rerun from launching a second instance
//     (TestMotoStagesRerunMakesNothingTwice); TestLaunchCrashAfterCreate
//     covers the token on the fake, which honours it as AWS does;
//   - moto runs instances at once, so "check" is ready at first and cleanup
//     never meets DependencyViolation here (TestCleanupAfterLaunch covers
//     the wait);
//   - moto answers 500 to a snapshot TagSpecification on CreateImage, so
//     the failed-build test tags the image at creation and its snapshots
//     with CreateTags, as the snapshot stage does;
//   - moto's DescribeVolumes leaves DeleteOnTermination out of a volume's
//     attachments, so TestMotoStagesKeptVolumeCleanup tells the kept volume
//     by the instance's block device mapping.

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/kiln-dev/kiln/pkg/emulator"
	"golang.org/x/crypto/ssh"
)

const (
	motoStagesRegion  = "eu-west-1"
	motoStagesBucket  = "kiln-moto-stages"
	motoStagesRecipes = "kiln-moto-recipes"
)

// motoStagesWorld is one test's moto, clients and stages.
type motoStagesWorld struct {
	t       *testing.T
	ctx     context.Context
	ec2     *ec2.Client
	ssm     *ssm.Client
	s3      *s3.Client
	provSG  string
	launch  *Launch
	cleanup *Cleanup
}

func motoStagesSetup(t *testing.T) *motoStagesWorld {
	t.Helper()
	cfg := emulator.ForTest(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(WithLogger(context.Background(), quiet), 2*time.Minute)
	t.Cleanup(cancel)
	w := &motoStagesWorld{t: t, ctx: ctx, ec2: ec2.NewFromConfig(cfg), ssm: ssm.NewFromConfig(cfg), s3: s3.NewFromConfig(cfg, emulator.S3Options)}
	for _, b := range []string{motoStagesBucket, motoStagesRecipes} {
		if _, err := w.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)}); err != nil {
			t.Fatalf("CreateBucket(%s) = %v", b, err)
		}
	}
	if _, err := w.s3.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: aws.String(motoStagesRecipes),
		VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled}}); err != nil {
		t.Fatalf("PutBucketVersioning = %v", err)
	}
	vpcs, err := w.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []ec2types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}}}, ec2In(motoStagesRegion))
	if err != nil || len(vpcs.Vpcs) == 0 {
		t.Fatalf("DescribeVpcs(default) = %v, %v", vpcs, err)
	}
	sg, err := w.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("kiln-provisioner"),
		Description: aws.String("the provisioning Lambda"), VpcId: vpcs.Vpcs[0].VpcId}, ec2In(motoStagesRegion))
	if err != nil {
		t.Fatalf("CreateSecurityGroup(provisioner) = %v", err)
	}
	w.provSG = aws.ToString(sg.GroupId)
	conf := Config{Bucket: motoStagesBucket, ProvisionerSecurityGroup: w.provSG}.withDefaults()
	w.launch = &Launch{EC2: w.ec2, SSM: w.ssm, S3: w.s3, Config: conf}
	w.cleanup = &Cleanup{EC2: w.ec2, SSM: w.ssm, S3: w.s3, Config: conf}
	return w
}

// motoStagesPlan uploads the moto recipe and runs "plan" through the
// stage's Lambda handler (JSON round trip included).
func (w *motoStagesWorld) motoStagesPlan() State {
	w.t.Helper()
	return w.motoStagesPlanEdited(func(body string) string { return body })
}

// motoStagesPlanEdited is motoStagesPlan with the recipe changed by edit.
func (w *motoStagesWorld) motoStagesPlanEdited(edit func(body string) string) State {
	w.t.Helper()
	raw, err := os.ReadFile("testdata/stages/moto.pkr.hcl")
	if err != nil {
		w.t.Fatal(err)
	}
	body := edit(string(raw))
	out, err := w.s3.PutObject(w.ctx, &s3.PutObjectInput{Bucket: aws.String(motoStagesRecipes), Key: aws.String("recipes/moto-app.pkr.hcl"), Body: strings.NewReader(body)})
	if err != nil {
		w.t.Fatalf("PutObject(recipe) = %v", err)
	}
	in := State{Recipe: RecipeRef{Bucket: motoStagesRecipes, Key: "recipes/moto-app.pkr.hcl", Version: aws.ToString(out.VersionId)}}
	return w.motoStagesAct("launch", w.launch.Actions(), "plan", in)
}

func (w *motoStagesWorld) motoStagesAct(stage string, actions map[string]Action, action string, st State) State {
	w.t.Helper()
	st, err := w.motoStagesTry(stage, actions, action, st)
	if err != nil {
		w.t.Fatalf("%s %s: %v", stage, action, err)
	}
	return st
}

func (w *motoStagesWorld) motoStagesTry(stage string, actions map[string]Action, action string, st State) (State, error) {
	h := Handler(stage, actions, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return h(w.ctx, Event{Action: action, State: st})
}

// motoStagesLive lists the build's live kiln-tagged resources in moto.
func (w *motoStagesWorld) motoStagesLive(st State) []string {
	w.t.Helper()
	var out []string
	ctx, in := w.ctx, ec2In(motoStagesRegion)
	insts, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{buildFilter(st.BuildID)}}, in)
	if err != nil {
		w.t.Fatalf("DescribeInstances = %v", err)
	}
	for _, r := range insts.Reservations {
		for _, i := range r.Instances {
			if i.State.Name != ec2types.InstanceStateNameTerminated {
				out = append(out, "instance "+aws.ToString(i.InstanceId))
			}
		}
	}
	vols, err := w.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{buildFilter(st.BuildID)}}, in)
	if err != nil {
		w.t.Fatalf("DescribeVolumes = %v", err)
	}
	for _, v := range vols.Volumes {
		out = append(out, "volume "+aws.ToString(v.VolumeId))
	}
	sgs, err := w.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{buildFilter(st.BuildID)}}, in)
	if err != nil {
		w.t.Fatalf("DescribeSecurityGroups = %v", err)
	}
	for _, g := range sgs.SecurityGroups {
		out = append(out, "security-group "+aws.ToString(g.GroupId))
	}
	kps, err := w.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{}, in)
	if err != nil {
		w.t.Fatalf("DescribeKeyPairs = %v", err)
	}
	for _, k := range kps.KeyPairs {
		if strings.Contains(aws.ToString(k.KeyName), st.BuildID) || tagOf(k.Tags, TagBuild) == st.BuildID {
			out = append(out, "key-pair "+aws.ToString(k.KeyName))
		}
	}
	params, err := w.ssm.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String("/kiln/builds/" + st.BuildID), Recursive: aws.Bool(true)})
	if err != nil {
		w.t.Fatalf("GetParametersByPath = %v", err)
	}
	for _, p := range params.Parameters {
		out = append(out, "parameter "+aws.ToString(p.Name))
	}
	for _, region := range []string{motoStagesRegion, "us-east-1"} {
		imgs, err := w.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []ec2types.Filter{buildFilter(st.BuildID)}}, ec2In(region))
		if err != nil {
			w.t.Fatalf("DescribeImages = %v", err)
		}
		for _, img := range imgs.Images {
			out = append(out, region+" image "+aws.ToString(img.ImageId))
		}
		snaps, err := w.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []ec2types.Filter{buildFilter(st.BuildID)}}, ec2In(region))
		if err != nil {
			w.t.Fatalf("DescribeSnapshots = %v", err)
		}
		for _, s := range snaps.Snapshots {
			out = append(out, region+" snapshot "+aws.ToString(s.SnapshotId))
		}
	}
	return out
}

func TestMotoStagesLaunchAndCleanup(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "process-secret-must-not-reach-the-recipe")
	w := motoStagesSetup(t)
	st := w.motoStagesPlan()

	// plan: the recipe saw no environment.
	_, b, err := fetchPlan(w.ctx, w.s3, st.Plan)
	if err != nil {
		t.Fatalf("fetchPlan: %v", err)
	}
	if b.Source.AMIDescription != "leak=[]" {
		t.Errorf("ami_description = %q, want env(\"AWS_SECRET_ACCESS_KEY\") to be \"\"", b.Source.AMIDescription)
	}
	if st.Plan.Region != motoStagesRegion || !slices.Equal(st.Plan.Regions, []string{"us-east-1"}) || st.Plan.Transport != "ssh" {
		t.Errorf("st.Plan = %+v", st.Plan)
	}

	st = w.motoStagesAct("launch", w.launch.Actions(), "run", st)
	ln := st.Launch
	ctx, in := w.ctx, ec2In(motoStagesRegion)

	// Base image: the newest preloaded Ubuntu xenial image.
	img, err := w.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ln.SourceAMI}}, in)
	if err != nil || len(img.Images) != 1 || !strings.Contains(aws.ToString(img.Images[0].Name), "ubuntu-xenial") {
		t.Errorf("source image %s: %v %v", ln.SourceAMI, img, err)
	}

	// Security group: tagged, ingress only from the provisioner's group.
	sgs, err := w.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{ln.SecurityGroupID}}, in)
	if err != nil || len(sgs.SecurityGroups) != 1 {
		t.Fatalf("DescribeSecurityGroups(%s) = %v", ln.SecurityGroupID, err)
	}
	g := sgs.SecurityGroups[0]
	if tagOf(g.Tags, TagBuild) != st.BuildID || tagOf(g.Tags, "team") != "core" {
		t.Errorf("security group tags = %v", motoStagesTags(g.Tags))
	}
	if len(g.IpPermissions) != 1 {
		t.Fatalf("security group ingress = %+v, want one rule", g.IpPermissions)
	}
	rule := g.IpPermissions[0]
	if aws.ToString(rule.IpProtocol) != "tcp" || aws.ToInt32(rule.FromPort) != 22 || aws.ToInt32(rule.ToPort) != 22 ||
		len(rule.IpRanges) != 0 || len(rule.Ipv6Ranges) != 0 || len(rule.UserIdGroupPairs) != 1 || aws.ToString(rule.UserIdGroupPairs[0].GroupId) != w.provSG {
		t.Errorf("security group rule = %+v, want TCP 22 from %s only", rule, w.provSG)
	}

	// Login key: a SecureString holding the key pair's private half.
	p, err := w.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(ln.KeyParameter), WithDecryption: aws.Bool(true)})
	if err != nil {
		t.Fatalf("GetParameter(%s) = %v", ln.KeyParameter, err)
	}
	if p.Parameter.Type != ssmtypes.ParameterTypeSecureString {
		t.Errorf("key parameter type = %s, want SecureString", p.Parameter.Type)
	}
	signer, err := ssh.ParsePrivateKey([]byte(aws.ToString(p.Parameter.Value)))
	if err != nil || signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("stored login key: %v", err)
	}
	kps, err := w.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{ln.KeyPairName}}, in)
	if err != nil || len(kps.KeyPairs) != 1 {
		t.Fatalf("DescribeKeyPairs(%s) = %v", ln.KeyPairName, err)
	}

	// Instance: tags, IMDSv2, volumes, user data.
	insts, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{ln.InstanceID}}, in)
	if err != nil {
		t.Fatalf("DescribeInstances = %v", err)
	}
	inst := insts.Reservations[0].Instances[0]
	for k, v := range map[string]string{TagBuild: st.BuildID, TagRecipe: "moto-app", "team": "core", tagHostKey: ln.HostKey} {
		if got := tagOf(inst.Tags, k); got != v {
			t.Errorf("instance tag %s = %q, want %q", k, got, v)
		}
	}
	if inst.MetadataOptions == nil || inst.MetadataOptions.HttpTokens != ec2types.HttpTokensStateRequired {
		t.Errorf("instance metadata options = %+v, want HttpTokens required", inst.MetadataOptions)
	}
	if aws.ToString(inst.KeyName) != ln.KeyPairName {
		t.Errorf("instance key = %s, want %s", aws.ToString(inst.KeyName), ln.KeyPairName)
	}
	vols, err := w.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{ln.InstanceID}}}}, in)
	if err != nil || len(vols.Volumes) == 0 {
		t.Fatalf("DescribeVolumes = %v, %v", vols, err)
	}
	for _, v := range vols.Volumes {
		if tagOf(v.Tags, TagBuild) != st.BuildID || tagOf(v.Tags, "volume") != "root" {
			t.Errorf("volume %s tags = %v", aws.ToString(v.VolumeId), motoStagesTags(v.Tags))
		}
	}
	ud, err := w.ec2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(ln.InstanceID), Attribute: ec2types.InstanceAttributeNameUserData}, in)
	if err != nil {
		t.Fatalf("DescribeInstanceAttribute(userData) = %v", err)
	}
	raw, _ := base64.StdEncoding.DecodeString(aws.ToString(ud.UserData.Value))
	kud, err := ParseKilnUserData(raw)
	if err != nil {
		t.Fatalf("ParseKilnUserData(instance user data): %v", err)
	}
	if kud.HostPublicKey != ln.HostKey || kud.User != "ubuntu" || string(kud.Recipe) != "#!/bin/sh\necho recipe user data\n" {
		t.Errorf("user data: host %q user %q recipe %q", kud.HostPublicKey, kud.User, kud.Recipe)
	}

	// check: moto runs instances at once.
	st = w.motoStagesAct("launch", w.launch.Actions(), "check", st)
	if !st.Wait.Ready || st.Launch.PrivateIP == "" {
		t.Errorf("check: Wait %+v, private IP %q", st.Wait, st.Launch.PrivateIP)
	}

	if live := w.motoStagesLive(st); len(live) != 6 {
		t.Errorf("after launch: %v, want instance, volume, group, key pair, login and host key parameters", live)
	}
	st = w.motoStagesAct("cleanup", w.cleanup.Actions(), "run", st)
	if !st.Wait.Ready {
		t.Errorf("cleanup: Wait = %+v, want ready", st.Wait)
	}
	if live := w.motoStagesLive(st); len(live) > 0 {
		t.Errorf("after cleanup: %v", live)
	}
	// And once more, with nothing left.
	st = w.motoStagesAct("cleanup", w.cleanup.Actions(), "run", st)
	if len(st.Cleanup.Failed) > 0 {
		t.Errorf("cleanup again: failed %v", st.Cleanup.Failed)
	}
}

func TestMotoStagesRerunMakesNothingTwice(t *testing.T) {
	w := motoStagesSetup(t)
	st := w.motoStagesPlan()
	first := w.motoStagesAct("launch", w.launch.Actions(), "run", st)
	// moto ignores client tokens; the rerun must find what the first made.
	second := w.motoStagesAct("launch", w.launch.Actions(), "run", st)
	if second.Launch.InstanceID != first.Launch.InstanceID || second.Launch.SecurityGroupID != first.Launch.SecurityGroupID || second.Launch.HostKey != first.Launch.HostKey {
		t.Errorf("rerun launched %+v, first %+v", second.Launch, first.Launch)
	}
	if live := w.motoStagesLive(first); len(live) != 6 {
		t.Errorf("after two runs: %v, want one of each", live)
	}
	// Cleanup from the input alone (as after a failure in "plan" or a lost
	// "run" response) finds everything by tag.
	bare := State{Recipe: st.Recipe, BuildID: st.BuildID, Error: &Failure{Error: "StageFailed", Cause: "lost"}}
	if _, err := w.motoStagesTry("cleanup", w.cleanup.Actions(), "run", bare); err != nil {
		t.Fatalf("cleanup from the input: %v", err)
	}
	if live := w.motoStagesLive(first); len(live) > 0 {
		t.Errorf("after cleanup: %v", live)
	}
}

// TestMotoStagesFailedBuildCleanup: a build that failed after making its
// image and a copy; cleanup removes both and their snapshots in both
// Regions, and leaves moto's preloaded snapshots alone.
func TestMotoStagesFailedBuildCleanup(t *testing.T) {
	w := motoStagesSetup(t)
	st := w.motoStagesPlan()
	st = w.motoStagesAct("launch", w.launch.Actions(), "run", st)
	ctx, in := w.ctx, ec2In(motoStagesRegion)
	tags := ec2Tags(st, nil)
	out, err := w.ec2.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(st.Launch.InstanceID), Name: aws.String("kiln-moto-app"),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: tags}}}, in)
	if err != nil {
		t.Fatalf("CreateImage = %v", err)
	}
	imgs, err := w.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(out.ImageId)}}, in)
	if err != nil {
		t.Fatalf("DescribeImages = %v", err)
	}
	snaps := imageSnaps(imgs.Images[0])
	if _, err := w.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: snaps, Tags: tags}, in); err != nil {
		t.Fatalf("CreateTags(snapshots) = %v", err)
	}
	cp, err := w.ec2.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: out.ImageId, SourceRegion: aws.String(motoStagesRegion), Name: aws.String("kiln-moto-app")}, ec2In("us-east-1"))
	if err != nil {
		t.Fatalf("CopyImage = %v", err)
	}
	if _, err := w.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{aws.ToString(cp.ImageId)}, Tags: tags}, ec2In("us-east-1")); err != nil {
		t.Fatalf("CreateTags(copy) = %v", err)
	}
	st.Image = &Image{Name: "kiln-moto-app", ID: aws.ToString(out.ImageId), Snapshots: snaps}
	// The copy is known only by its tag (its ID was lost with a response).
	ownSnaps := func(region string) int {
		s, err := w.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}}, ec2In(region))
		if err != nil {
			t.Fatalf("DescribeSnapshots = %v", err)
		}
		return len(s.Snapshots)
	}
	before := ownSnaps(motoStagesRegion)

	st.Error = &Failure{Error: "ProvisionFailed", Cause: "shell exited 1"}
	st, err = w.motoStagesTry("cleanup", w.cleanup.Actions(), "run", st)
	if err != nil {
		t.Fatalf("cleanup: %v (failed %v)", err, st.Cleanup.Failed)
	}
	if live := w.motoStagesLive(st); len(live) > 0 {
		t.Errorf("after cleanup of a failed build: %v", live)
	}
	for _, region := range []string{motoStagesRegion, "us-east-1"} {
		left, err := w.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}}, ec2In(region))
		if err != nil {
			t.Fatalf("DescribeImages = %v", err)
		}
		for _, img := range left.Images {
			if aws.ToString(img.Name) == "kiln-moto-app" {
				t.Errorf("%s: image %s left", region, aws.ToString(img.ImageId))
			}
		}
	}
	if after := ownSnaps(motoStagesRegion); after != before-len(snaps) {
		t.Errorf("own snapshots in %s: %d before, %d after, want %d deleted", motoStagesRegion, before, after, len(snaps))
	}
}

// TestMotoStagesKeptVolumeCleanup: a launch volume with
// delete_on_termination = false outlives the instance (moto 5.2.5, like
// AWS, detaches it on termination and keeps it, available); cleanup
// deletes it.
func TestMotoStagesKeptVolumeCleanup(t *testing.T) {
	w := motoStagesSetup(t)
	const mapping = "  launch_block_device_mappings {\n"
	st := w.motoStagesPlanEdited(func(body string) string {
		if !strings.Contains(body, mapping) {
			t.Fatalf("moto.pkr.hcl has no %q to add a volume next to", mapping)
		}
		return strings.Replace(body, mapping, mapping+`    device_name           = "/dev/sdb"
    volume_size           = 4
    volume_type           = "gp3"
    delete_on_termination = false
  }
`+mapping, 1)
	})
	st = w.motoStagesAct("launch", w.launch.Actions(), "run", st)
	st = w.motoStagesAct("launch", w.launch.Actions(), "check", st)
	ctx, in := w.ctx, ec2In(motoStagesRegion)
	tagged := func() []ec2types.Volume {
		t.Helper()
		out, err := w.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{buildFilter(st.BuildID)}}, in)
		if err != nil {
			t.Fatalf("DescribeVolumes(tagged) = %v", err)
		}
		return out.Volumes
	}
	// The instance's mapping says which volume is kept (moto's
	// DescribeVolumes leaves DeleteOnTermination out of attachments).
	insts, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{st.Launch.InstanceID}}, in)
	if err != nil || len(insts.Reservations) != 1 {
		t.Fatalf("DescribeInstances(%s) = %v", st.Launch.InstanceID, err)
	}
	var kept string
	for _, m := range insts.Reservations[0].Instances[0].BlockDeviceMappings {
		if m.Ebs != nil && aws.ToString(m.DeviceName) == "/dev/sdb" && !aws.ToBool(m.Ebs.DeleteOnTermination) {
			kept = aws.ToString(m.Ebs.VolumeId)
		}
	}
	if vols := tagged(); kept == "" || !slices.ContainsFunc(vols, func(v ec2types.Volume) bool { return aws.ToString(v.VolumeId) == kept }) {
		t.Fatalf("no tagged volume of %s kept on termination (kept %q, tagged %+v)", st.Launch.InstanceID, kept, vols)
	}

	// Cleanup terminates the instance (moto: at once), then finds the
	// volume left behind and deletes it. Had moto deleted it with the
	// instance, it would not be in st.Cleanup.Deleted.
	st = w.motoStagesAct("cleanup", w.cleanup.Actions(), "run", st)
	if !st.Wait.Ready || len(st.Cleanup.Failed) > 0 {
		t.Errorf("cleanup: Wait = %+v, failed %v; want ready", st.Wait, st.Cleanup.Failed)
	}
	for _, want := range []string{motoStagesRegion + " instance " + st.Launch.InstanceID, motoStagesRegion + " volume " + kept} {
		if !slices.Contains(st.Cleanup.Deleted, want) {
			t.Errorf("st.Cleanup.Deleted = %q, missing %q", st.Cleanup.Deleted, want)
		}
	}
	if live := w.motoStagesLive(st); len(live) > 0 {
		t.Errorf("after cleanup: %v", live)
	}
}

func motoStagesTags(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}
