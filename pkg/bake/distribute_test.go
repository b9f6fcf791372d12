package bake

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/google/go-cmp/cmp"
)

// Unit tests of the distribute stage against the stateful fake. The
// helpers (sdWorld, newSDWorld) are in snapshot_test.go.

// copied runs the Map of copy actions, gathering each iteration's
// copies[0] as the state machine's ResultSelector does.
func (w *sdWorld) copied(st State) State {
	w.t.Helper()
	var copies []Copy
	for _, region := range st.Plan.Regions {
		out := w.must(w.dist.Actions(), "copy", region, st)
		if len(out.Copies) != 1 || out.Copies[0].Region != region {
			w.t.Fatalf("copy(%s): Copies = %+v, want one copy in %s", region, out.Copies, region)
		}
		copies = append(copies, out.Copies[0])
	}
	st.Copies = copies
	st.Wait = nil
	return st
}

// distributed runs snapshot, the copies and their wait.
func (w *sdWorld) distributed() State {
	w.t.Helper()
	st := w.copied(w.imaged(w.st))
	st, _ = w.poll(w.dist.Actions(), "check", st)
	return st
}

// sdParams records the PutParameter calls (the fake does not keep
// DataType).
type sdParams struct {
	parameterPutter
	region string
	log    *[]string
}

func (p sdParams) PutParameter(ctx context.Context, in *ssm.PutParameterInput, optFns ...func(*ssm.Options)) (*ssm.PutParameterOutput, error) {
	*p.log = append(*p.log, p.region+" "+aws.ToString(in.Name)+" "+aws.ToString(in.DataType)+" "+string(in.Type)+" overwrite="+map[bool]string{true: "yes", false: "no"}[aws.ToBool(in.Overwrite)])
	return p.parameterPutter.PutParameter(ctx, in, optFns...)
}

func TestDistributeCopyCheckPublish(t *testing.T) {
	const org = "arn:aws:organizations::123456789012:organization/o-abc"
	const ou = "arn:aws:organizations::123456789012:ou/o-abc/ou-def"
	w := newSDWorld(t, func(p *Plan) {
		s := &p.Builds[0].Source
		s.AMIGroups = []string{"all"}
		s.AMIOrgARNs = []string{org}
		s.AMIOUARNs = []string{ou}
		s.SnapshotGroups = []string{"all"}
		s.IMDSSupport = "v2.0"
		s.DeprecateAt = "2030-01-01T00:00:00Z"
	})
	var params []string
	w.dist.SSM = func(region string) parameterPutter { return sdParams{w.c.SSM(region), region, &params} }
	da := w.dist.Actions()

	st := w.imaged(w.st)
	home := st.Image.ID
	started := w.c.Now()
	st = w.copied(st)
	for i, c := range st.Copies {
		img, ok := w.c.Image(c.Region, c.ImageID)
		if !ok || aws.ToString(img.Name) != "web-app-1" || aws.ToString(img.SourceImageId) != home || aws.ToString(img.Description) != "web app image" {
			t.Errorf("copy %d in %s: %+v", i, c.Region, img.Image)
		}
		if sdTagMap(img.Tags)[TagBuild] != w.st.BuildID || sdTagMap(img.Tags)[TagSourceAMI] != w.st.Launch.SourceAMI {
			t.Errorf("copy in %s tags = %v", c.Region, sdTagMap(img.Tags))
		}
		if !c.StartedAt.Equal(started) || c.State != "pending" {
			t.Errorf("copy in %s: %+v", c.Region, c)
		}
	}
	st = w.must(da, "check", "", st)
	if st.Wait.Ready || st.Wait.Seconds != 270 || !strings.Contains(st.Wait.For, "eu-west-1, us-west-2") {
		t.Errorf("check right after the copies: Wait = %+v, want 270 s (0.9 of 300 s) for both Regions", st.Wait)
	}
	st, polls := w.poll(da, "check", st)
	if !w.c.Now().Equal(started.Add(300*time.Second)) || polls > 7 {
		t.Errorf("copies noticed at +%s after %d checks, want +300s", w.c.Now().Sub(started), polls)
	}
	for _, c := range st.Copies {
		if c.State != "available" || len(c.Snapshots) != 1 {
			t.Fatalf("after check: copy %+v", c)
		}
		snap, _ := w.c.Snapshot(c.Region, c.Snapshots[0])
		if tags := sdTagMap(snap.Tags); tags[TagBuild] != w.st.BuildID || tags["backup"] != "no" {
			t.Errorf("copy snapshot %s in %s tags = %v", c.Snapshots[0], c.Region, tags)
		}
	}

	st = w.must(da, "publish", "", st)
	pub := st.Published
	wantImages := map[string]string{sdHome: home, "eu-west-1": st.Copies[0].ImageID, "us-west-2": st.Copies[1].ImageID}
	if diff := cmp.Diff(wantImages, pub.Images); diff != "" {
		t.Errorf("Published.Images (-want +got):\n%s", diff)
	}
	wantPerms := []ec2types.LaunchPermission{
		{UserId: aws.String(sdShare)}, {Group: ec2types.PermissionGroupAll},
		{OrganizationArn: aws.String(org)}, {OrganizationalUnitArn: aws.String(ou)},
	}
	for region, id := range pub.Images {
		img, _ := w.c.Image(region, id)
		if diff := cmp.Diff(wantPerms, img.LaunchPerms, cmp.AllowUnexported(ec2types.LaunchPermission{})); diff != "" {
			t.Errorf("%s: launch permissions of %s (-want +got):\n%s", region, id, diff)
		}
		if img.ImdsSupport != ec2types.ImdsSupportValuesV20 || aws.ToString(img.DeprecationTime) != "2030-01-01T00:00:00.000Z" {
			t.Errorf("%s: image %s imds %q deprecation %q", region, id, img.ImdsSupport, aws.ToString(img.DeprecationTime))
		}
		for _, sid := range imageSnapshotIDs(img.Image) {
			snap, _ := w.c.Snapshot(region, sid)
			want := []ec2types.CreateVolumePermission{{UserId: aws.String(sdShare)}, {Group: ec2types.PermissionGroupAll}}
			if diff := cmp.Diff(want, snap.VolumePerms, cmp.AllowUnexported(ec2types.CreateVolumePermission{})); diff != "" {
				t.Errorf("%s: createVolumePermission of %s (-want +got):\n%s", region, sid, diff)
			}
		}
		p, ok := w.c.Param(region, "/kiln/web/latest")
		if !ok || aws.ToString(p.Value) != id {
			t.Errorf("%s: /kiln/web/latest = %+v, want %s", region, p.Parameter, id)
		}
		if pub.Parameters[region] != "/kiln/web/latest" {
			t.Errorf("Published.Parameters[%s] = %q", region, pub.Parameters[region])
		}
	}
	slices.Sort(params)
	wantParams := []string{
		"eu-west-1 /kiln/web/latest aws:ec2:image String overwrite=yes",
		"us-east-1 /kiln/web/latest aws:ec2:image String overwrite=yes",
		"us-west-2 /kiln/web/latest aws:ec2:image String overwrite=yes",
	}
	if diff := cmp.Diff(wantParams, params); diff != "" {
		t.Errorf("PutParameter calls (-want +got):\n%s", diff)
	}

	// The manifest, as Packer writes it.
	if pub.Manifest != ManifestKey(w.st.BuildID) {
		t.Errorf("Published.Manifest = %q", pub.Manifest)
	}
	obj, ok := w.c.Object(sdBucket, pub.Manifest)
	if !ok {
		t.Fatalf("no manifest at %s", pub.Manifest)
	}
	want := &ManifestDoc{Builds: []ManifestEntry{{
		Name: "app", BuilderType: "amazon-ebs", BuildTime: w.c.Now().Unix(), ArtifactID: ArtifactID(wantImages),
		PackerRunUUID: RunUUID(w.st.BuildID), CustomData: map[string]string{"channel": "beta"},
	}}, LastRunUUID: RunUUID(w.st.BuildID)}
	wantBody, _ := want.Encode()
	if diff := cmp.Diff(string(wantBody), string(obj.Body)); diff != "" {
		t.Errorf("manifest (-want +got):\n%s", diff)
	}
	if obj.ContentType != "application/json" {
		t.Errorf("manifest content type = %q", obj.ContentType)
	}

	// One event.
	events := w.c.EventsPut()
	if len(events) != 1 {
		t.Fatalf("%d events put, want 1", len(events))
	}
	ev := events[0]
	if aws.ToString(ev.Source) != "kiln" || aws.ToString(ev.DetailType) != "kiln.image.baked" || aws.ToString(ev.EventBusName) != "kiln-bus" {
		t.Errorf("event = %+v", ev)
	}
	var detail ImageBakedDetail
	if err := json.Unmarshal([]byte(aws.ToString(ev.Detail)), &detail); err != nil {
		t.Fatalf("event detail: %v", err)
	}
	wantDetail := ImageBakedDetail{
		BuildID: w.st.BuildID, Recipe: "web", Build: "app", Hash: "sha256:feed", SourceAMI: w.st.Launch.SourceAMI,
		Region: sdHome, Images: wantImages, Parameters: pub.Parameters, Manifest: "s3://" + sdBucket + "/" + pub.Manifest,
	}
	if diff := cmp.Diff(wantDetail, detail); diff != "" {
		t.Errorf("event detail (-want +got):\n%s", diff)
	}
	if pub.Event == "" {
		t.Errorf("Published.Event is empty")
	}
}

// TestDistributeCopyRetryAfterCrash: CopyImage took effect but the Lambda
// died; the retry gets the same copy (client token on AWS, found by tag
// where tokens are ignored).
func TestDistributeCopyRetryAfterCrash(t *testing.T) {
	w := newSDWorld(t, nil)
	st := w.imaged(w.st)
	w.c.Fail(fakeFault{Action: "CopyImage", Region: "eu-west-1", After: true})
	if _, err := w.do(w.dist.Actions(), "copy", "eu-west-1", st); err == nil {
		t.Fatalf("copy with a crash after CopyImage = nil error")
	}
	first := w.must(w.dist.Actions(), "copy", "eu-west-1", st)
	second := w.must(w.dist.Actions(), "copy", "eu-west-1", st)
	if first.Copies[0].ImageID != second.Copies[0].ImageID {
		t.Errorf("copy reruns: %s then %s", first.Copies[0].ImageID, second.Copies[0].ImageID)
	}
	if n := len(w.buildImages("eu-west-1")); n != 1 {
		t.Errorf("%d copies of the build in eu-west-1, want 1", n)
	}
	// The reruns found the copy by name and tag: no second CopyImage.
	if n := w.c.Calls("CopyImage"); n != 1 {
		t.Errorf("CopyImage called %d times, want 1", n)
	}
}

// TestDistributeCopyTokenBeforeVisible: when the copy made before a crash
// is not yet visible to DescribeImages, the client token still returns it.
func TestDistributeCopyTokenBeforeVisible(t *testing.T) {
	w := newSDWorld(t, nil)
	st := w.imaged(w.st)
	w.c.Delays.Invisible = time.Minute
	w.c.Fail(fakeFault{Action: "CopyImage", Region: "eu-west-1", After: true})
	if _, err := w.do(w.dist.Actions(), "copy", "eu-west-1", st); err == nil {
		t.Fatalf("copy with a crash = nil error")
	}
	out := w.must(w.dist.Actions(), "copy", "eu-west-1", st)
	w.c.Advance(time.Minute)
	if imgs := w.buildImages("eu-west-1"); len(imgs) != 1 || aws.ToString(imgs[0].ImageId) != out.Copies[0].ImageID {
		t.Errorf("copies in eu-west-1 = %d, copy = %+v", len(imgs), out.Copies)
	}
}

func TestDistributeCopyEncrypted(t *testing.T) {
	const euKey = "arn:aws:kms:eu-west-1:123456789012:key/eu"
	w := newSDWorld(t, func(p *Plan) {
		s := &p.Builds[0].Source
		s.EncryptBoot = aws.Bool(true)
		s.RegionKMSKeyIDs = map[string]string{"eu-west-1": euKey}
	})
	st := w.copied(w.imaged(w.st))
	for _, c := range st.Copies {
		img, _ := w.c.Image(c.Region, c.ImageID)
		wantKey := euKey
		if c.Region == "us-west-2" {
			wantKey = "arn:aws:kms:us-west-2:123456789012:alias/aws/ebs" // the account's default EBS key
		}
		for _, m := range img.BlockDeviceMappings {
			if !aws.ToBool(m.Ebs.Encrypted) || aws.ToString(m.Ebs.KmsKeyId) != wantKey {
				t.Errorf("copy in %s: encrypted %v with %q, want %q", c.Region, aws.ToBool(m.Ebs.Encrypted), aws.ToString(m.Ebs.KmsKeyId), wantKey)
			}
		}
	}
}

func TestDistributeCopyNameTaken(t *testing.T) {
	for _, force := range []bool{false, true} {
		t.Run(map[bool]string{false: "refused", true: "force_deregister"}[force], func(t *testing.T) {
			w := newSDWorld(t, func(p *Plan) { p.Builds[0].Source.ForceDeregister = force })
			old := w.c.AddImage("eu-west-1", fakeImageSpec{Name: "web-app-1"})
			st := w.imaged(w.st)
			out, err := w.do(w.dist.Actions(), "copy", "eu-west-1", st)
			if !force {
				if err == nil || !strings.Contains(err.Error(), old) || !strings.Contains(err.Error(), "eu-west-1") {
					t.Errorf("copy over %s = %v, want an error naming it and the Region", old, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("copy = %v", err)
			}
			if _, ok := w.c.Image("eu-west-1", old); ok || out.Copies[0].ImageID == old {
				t.Errorf("image %s still there (copy %+v)", old, out.Copies)
			}
		})
	}
}

func TestDistributeCopyErrors(t *testing.T) {
	w := newSDWorld(t, nil)
	st := w.imaged(w.st)
	for _, tc := range []struct {
		name, region string
		st           State
		want         string
	}{
		{"no region", "", st, "no region"},
		{"build region", sdHome, st, "is the build Region"},
		{"no image", "eu-west-1", func() State { s := st; s.Image = nil; return s }(), "no image"},
		{"no build id", "eu-west-1", func() State { s := st; s.BuildID = ""; return s }(), "no build ID"},
	} {
		if _, err := w.do(w.dist.Actions(), "copy", tc.region, tc.st); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("copy, %s = %v, want %q", tc.name, err, tc.want)
		}
	}
	w.c.Fail(fakeFault{Action: "CopyImage", Code: "RequestLimitExceeded", Times: 10})
	_, err := w.do(w.dist.Actions(), "copy", "eu-west-1", st)
	if AWSCode(err) != "RequestLimitExceeded" || !isType[*Throttled](ForLambda("distribute", err)) {
		t.Errorf("throttled copy = %v, want RequestLimitExceeded routed as Throttled", err)
	}
}

func TestDistributeCheck(t *testing.T) {
	t.Run("one region fails", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.copied(w.imaged(w.st))
		w.c.SetImageState("us-west-2", st.Copies[1].ImageID, ec2types.ImageStateFailed, "Server.InternalError", "copy failed")
		_, err := w.do(w.dist.Actions(), "check", "", st)
		if err == nil || !strings.Contains(err.Error(), "copy to us-west-2 failed") || !strings.Contains(err.Error(), "copy failed") {
			t.Errorf("check with a failed copy = %v, want an error naming us-west-2", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.imaged(w.st)
		w.c.Delays.Copy = 24 * time.Hour
		st = w.copied(st)
		w.c.Advance(DefaultCopyTimeout)
		_, err := w.do(w.dist.Actions(), "check", "", st)
		if !isType[*WaitTimeoutError](err) || !strings.Contains(err.Error(), "eu-west-1, us-west-2") {
			t.Errorf("check after %s = %v, want a WaitTimeoutError naming both Regions", DefaultCopyTimeout, err)
		}
	})
	t.Run("eventual consistency", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.imaged(w.st)
		w.c.Delays.Invisible = 30 * time.Second
		st = w.copied(st)
		out := w.must(w.dist.Actions(), "check", "", st)
		if out.Wait.Ready {
			t.Errorf("check of invisible copies: ready")
		}
		out, _ = w.poll(w.dist.Actions(), "check", out)
		if !out.Wait.Ready {
			t.Errorf("check: %+v", out.Wait)
		}
		// A copy that stays unknown is an error.
		gone := st
		gone.Copies = []Copy{{Region: "eu-west-1", ImageID: "ami-00000000000000000", StartedAt: w.c.Now().Add(-imageNotFoundGrace)}}
		if _, err := w.do(w.dist.Actions(), "check", "", gone); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("check of a vanished copy = %v", err)
		}
	})
	t.Run("no copies", func(t *testing.T) {
		w := newSDWorld(t, nil)
		out := w.must(w.dist.Actions(), "check", "", w.st)
		if !out.Wait.Ready {
			t.Errorf("check without copies: %+v", out.Wait)
		}
	})
	t.Run("copy without id", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.st
		st.Copies = []Copy{{Region: "eu-west-1"}}
		if _, err := w.do(w.dist.Actions(), "check", "", st); err == nil {
			t.Errorf("check of a copy without an ID = nil error")
		}
	})
	t.Run("already available copies are not described again", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.distributed()
		before := w.c.Calls("DescribeImages")
		if out := w.must(w.dist.Actions(), "check", "", st); !out.Wait.Ready {
			t.Errorf("check: %+v", out.Wait)
		}
		if n := w.c.Calls("DescribeImages") - before; n != 0 {
			t.Errorf("check of available copies made %d DescribeImages calls", n)
		}
	})
}

func TestDistributePublishIdempotent(t *testing.T) {
	w := newSDWorld(t, nil)
	st := w.distributed()
	da := w.dist.Actions()
	first := w.must(da, "publish", "", st)
	body1, _ := w.c.Object(sdBucket, ManifestKey(w.st.BuildID))

	// A rerun after a crash whose output was lost (st.Published unset).
	w.c.Advance(time.Minute)
	second := w.must(da, "publish", "", st)
	body2, _ := w.c.Object(sdBucket, ManifestKey(w.st.BuildID))
	if string(body1.Body) != string(body2.Body) {
		t.Errorf("manifest after a rerun:\n%s\nwant unchanged:\n%s", body2.Body, body1.Body)
	}
	if !cmp.Equal(first.Published.Images, second.Published.Images) || !cmp.Equal(first.Published.Parameters, second.Published.Parameters) {
		t.Errorf("publish reruns differ: %+v vs %+v", first.Published, second.Published)
	}
	for region, id := range second.Published.Images {
		img, _ := w.c.Image(region, id)
		if len(img.LaunchPerms) != 1 {
			t.Errorf("%s: %d launch permissions after two publishes, want 1", region, len(img.LaunchPerms))
		}
		if p, _ := w.c.Param(region, "/kiln/web/latest"); aws.ToString(p.Value) != id {
			t.Errorf("%s: parameter = %q", region, aws.ToString(p.Value))
		}
	}
	// The event is at least once: the lost run's event and the rerun's.
	if n := len(w.c.EventsPut()); n != 2 {
		t.Errorf("%d events after a lost publish and its rerun, want 2", n)
	}
	// A rerun whose input records the event does not send it again.
	third := w.must(da, "publish", "", second)
	if n := len(w.c.EventsPut()); n != 2 || third.Published.Event != second.Published.Event {
		t.Errorf("rerun with the event recorded: %d events, event %q", n, third.Published.Event)
	}
}

func TestDistributePublishSeveralBuilds(t *testing.T) {
	w := newSDWorld(t, func(p *Plan) {
		other := sdBuild()
		other.Name = "worker"
		p.Builds = append(p.Builds, other)
	})
	st := w.distributed()
	out := w.must(w.dist.Actions(), "publish", "", st)
	for region := range out.Published.Images {
		if got := out.Published.Parameters[region]; got != "/kiln/web/app/latest" {
			t.Errorf("parameter in %s = %q, want /kiln/web/app/latest", region, got)
		}
	}
}

func TestDistributePublishLocalManifest(t *testing.T) {
	dir := t.TempDir()
	w := newSDWorld(t, func(p *Plan) {
		p.Builds[0].PostProcessors = []PostProcessor{
			{Type: "manifest", Manifest: &Manifest{Output: "out/manifest.json", StripTime: true}},
		}
	})
	// A manifest from an earlier Packer run: kiln appends, as Packer does.
	earlier := `{
  "builds": [
    {
      "name": "app",
      "builder_type": "amazon-ebs",
      "build_time": 1700000000,
      "files": null,
      "artifact_id": "us-east-1:ami-0123",
      "packer_run_uuid": "0a1b2c3d-0000-4000-8000-000000000000",
      "custom_data": null
    }
  ],
  "last_run_uuid": "0a1b2c3d-0000-4000-8000-000000000000"
}`
	path := filepath.Join(dir, "out", "manifest.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(earlier), 0o644); err != nil {
		t.Fatal(err)
	}
	w.dist.ManifestDir = dir
	st := w.distributed()
	out := w.must(w.dist.Actions(), "publish", "", st)
	out = w.must(w.dist.Actions(), "publish", "", out) // and again: no second entry
	if out.Published.ManifestPath != path {
		t.Errorf("ManifestPath = %q, want %q", out.Published.ManifestPath, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Builds) != 2 || doc.Builds[0].ArtifactID != "us-east-1:ami-0123" || doc.Builds[1].ArtifactID != ArtifactID(out.Published.Images) {
		t.Errorf("local manifest = %s, want the earlier build then this one", data)
	}
	if doc.Builds[1].BuildTime != 0 || strings.Contains(string(data), `"build_time": 0`) || doc.LastRunUUID != RunUUID(w.st.BuildID) {
		t.Errorf("local manifest with strip_time = %s", data)
	}
}

func TestDistributePublishErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault fakeFault
		want  string
	}{
		{"share refused", fakeFault{Action: "ModifyImageAttribute", Code: "InvalidAMIAttributeItemValue"}, "share image"},
		{"snapshot share refused", fakeFault{Action: "ModifySnapshotAttribute", Code: "InvalidParameter"}, "share snapshot"},
		{"manifest read fails", fakeFault{Action: "GetObject", Code: "AccessDenied"}, "read manifest"},
		{"manifest write fails", fakeFault{Action: "PutObject", Code: "AccessDenied"}, "write manifest"},
		{"parameter throttled", fakeFault{Action: "PutParameter", Code: "ThrottlingException", Times: 10}, "put parameter"},
		{"event bus missing", fakeFault{Action: "PutEvents", Code: "ResourceNotFoundException"}, "put event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newSDWorld(t, nil)
			st := w.distributed()
			w.c.Fail(tc.fault)
			_, err := w.do(w.dist.Actions(), "publish", "", st)
			if err == nil || AWSCode(err) != tc.fault.Code || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("publish with %s failing = %v, want %s (%q)", tc.fault.Action, err, tc.fault.Code, tc.want)
			}
		})
	}
	t.Run("rejected entry", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.distributed()
		w.dist.Events = sdRejectingEvents{}
		if _, err := w.do(w.dist.Actions(), "publish", "", st); err == nil || !strings.Contains(err.Error(), "AccessDeniedException") {
			t.Errorf("publish with the event rejected = %v", err)
		}
	})
	t.Run("no image", func(t *testing.T) {
		w := newSDWorld(t, nil)
		if _, err := w.do(w.dist.Actions(), "publish", "", w.st); err == nil || !strings.Contains(err.Error(), "no image") {
			t.Errorf("publish without an image = %v", err)
		}
	})
	t.Run("no bucket", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.distributed()
		w.dist.Config.Bucket = ""
		if _, err := w.do(w.dist.Actions(), "publish", "", st); err == nil || !strings.Contains(err.Error(), "no bucket") {
			t.Errorf("publish without a bucket = %v", err)
		}
	})
	t.Run("snapshots looked up when state lost them", func(t *testing.T) {
		w := newSDWorld(t, nil)
		st := w.distributed()
		st.Image.Snapshots = nil
		out := w.must(w.dist.Actions(), "publish", "", st)
		img, _ := w.c.Image(sdHome, out.Published.Images[sdHome])
		snap, _ := w.c.Snapshot(sdHome, imageSnapshotIDs(img.Image)[0])
		if len(snap.VolumePerms) != 1 {
			t.Errorf("snapshot permissions = %+v", snap.VolumePerms)
		}
	})
}

// sdRejectingEvents answers PutEvents with a failed entry, as EventBridge
// does for an entry it refuses.
type sdRejectingEvents struct{}

func (sdRejectingEvents) PutEvents(ctx context.Context, in *eventbridge.PutEventsInput, optFns ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error) {
	return &eventbridge.PutEventsOutput{FailedEntryCount: 1, Entries: []ebtypes.PutEventsResultEntry{{
		ErrorCode: aws.String("AccessDeniedException"), ErrorMessage: aws.String("not allowed on this bus"),
	}}}, nil
}

func TestAMIParameterName(t *testing.T) {
	for _, tc := range []struct {
		prefix, recipe, build string
		several               bool
		want                  string
	}{
		{"/kiln", "web", "app", false, "/kiln/web/latest"},
		{"/kiln/", "web", "app", true, "/kiln/web/app/latest"},
		{"/images", "my recipe!", "app", false, "/images/my-recipe-/latest"},
	} {
		if got := amiParameterName(tc.prefix, tc.recipe, tc.build, tc.several); got != tc.want {
			t.Errorf("amiParameterName(%q, %q, %q, %v) = %q, want %q", tc.prefix, tc.recipe, tc.build, tc.several, got, tc.want)
		}
	}
}

func TestDistributeActions(t *testing.T) {
	d := &Distribute{}
	var got []string
	for name := range d.Actions() {
		got = append(got, name)
	}
	if diff := cmp.Diff([]string{"check", "copy", "publish"}, slices.Sorted(slices.Values(got))); diff != "" {
		t.Errorf("Distribute.Actions() (-want +got):\n%s", diff)
	}
}
