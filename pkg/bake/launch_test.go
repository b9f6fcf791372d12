package bake

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

const (
	// testRegion is the builds' Region; clientRegion the clients' (the
	// deployment's), where the login key is stored.
	testRegion   = "eu-west-1"
	clientRegion = "us-west-2"
	testBucket   = "kiln-test-bucket"
)

// testBuildSeq makes build IDs unique across the test binary: fetchPlan
// caches plans by bucket and key for the life of the process.
var testBuildSeq atomic.Int64

// stageEnv is one test's fake world with the launch and cleanup stages
// wired to it.
type stageEnv struct {
	t       *testing.T
	cloud   *fakeCloud
	cfg     Config
	launch  *Launch
	cleanup *Cleanup
	// vpc and subnets are the default VPC of testRegion; provSG is the
	// provisioning Lambda's group; base is a public Amazon image.
	vpc     string
	subnets []string
	provSG  string
	base    string
	keys    int
}

func newStageEnv(t *testing.T) *stageEnv {
	t.Helper()
	c := newFakeCloud(t)
	e := &stageEnv{t: t, cloud: c}
	e.vpc, e.subnets = c.DefaultVPC(testRegion)
	e.provSG = c.AddSecurityGroup(testRegion, e.vpc, "kiln-provisioner")
	e.base = c.AddImage(testRegion, fakeImageSpec{Name: "al2023-ami-2025.1-x86_64", Owner: "137112412989", OwnerAlias: "amazon", Public: true})
	c.AddBucket(testBucket)
	e.cfg = Config{Bucket: testBucket, ProvisionerSecurityGroup: e.provSG, InstanceProfile: "kiln-build", Expect: AWSTimings}.withDefaults()
	e.launch = &Launch{
		EC2: c.EC2(clientRegion), SSM: c.SSM(clientRegion), S3: c.S3(), Config: e.cfg, Now: c.Now,
		NewKey: e.newKey,
	}
	e.cleanup = &Cleanup{EC2: c.EC2(clientRegion), SSM: c.SSM(clientRegion), S3: c.S3(), Config: e.cfg, Now: c.Now}
	return e
}

// newKey makes deterministic keys, so tests are repeatable.
func (e *stageEnv) newKey(keyType string) (crypto.Signer, error) {
	if keyType != "" && keyType != "ed25519" {
		return generateKey(keyType)
	}
	e.keys++
	seed := sha256.Sum256(fmt.Appendf(nil, "%s/%d", e.t.Name(), e.keys))
	return ed25519.NewKeyFromSeed(seed[:]), nil
}

// testSource is a typical amazon-ebs source as the loader makes it.
func (e *stageEnv) testSource() AmazonEBS {
	return AmazonEBS{
		Region:               testRegion,
		SourceAMI:            e.base,
		InstanceType:         "t3.micro",
		AMIName:              "app-1",
		AMIRegions:           []string{"us-east-1"},
		Communicator:         "ssh",
		SSHInterface:         "private_ip",
		SSHUsername:          "ec2-user",
		RunTags:              map[string]string{"team": "core"},
		RunVolumeTags:        map[string]string{"volume": "root"},
		MetadataOptions:      MetadataOptions{HTTPEndpoint: "enabled", HTTPTokens: "required", HTTPPutResponseHopLimit: 1},
		TemporaryKeyPairType: "ed25519",
		ShutdownBehavior:     "stop",
	}
}

// planned stores a plan of one build with src and returns the state the
// "plan" action would have returned for it.
func (e *stageEnv) planned(src AmazonEBS, data map[string]DataSource) State {
	e.t.Helper()
	id := fmt.Sprintf("app-%012x", testBuildSeq.Add(1))
	plan := &Plan{Name: "app", Format: "hcl2", Hash: "sha256:00", Data: data,
		Builds: []Build{{Name: "app", Type: "amazon-ebs", Source: src}}}
	if err := storePlan(context.Background(), e.cloud.S3(), testBucket, PlanKey(id), plan); err != nil {
		e.t.Fatalf("storePlan: %v", err)
	}
	var extra []string
	for _, r := range src.AMIRegions {
		if r != src.Region {
			extra = append(extra, r)
		}
	}
	return State{
		Recipe:    RecipeRef{Bucket: "recipes", Key: "app.pkr.hcl", Version: "v1"},
		BuildID:   id,
		StartedAt: e.cloud.Now(),
		Plan: &PlanRef{Bucket: testBucket, Key: PlanKey(id), Recipe: "app", Build: "app", Hash: plan.Hash,
			Region: src.Region, Regions: extra, Transport: transportOf(src, e.cfg)},
	}
}

func (e *stageEnv) run(st State) State {
	e.t.Helper()
	st, err := e.launch.Run(context.Background(), st)
	if err != nil {
		e.t.Fatalf("Launch.Run: %v", err)
	}
	return st
}

// live counts a Region's resources of the build.
type liveCounts struct{ Instances, Groups, KeyPairs, Params int }

func (e *stageEnv) live(buildID string) liveCounts {
	var n liveCounts
	for _, l := range e.cloud.Leftovers(buildID) {
		switch strings.Fields(l)[1] {
		case "instance":
			n.Instances++
		case "security-group":
			n.Groups++
		case "key-pair":
			n.KeyPairs++
		case "parameter":
			n.Params++
		}
	}
	return n
}

func tagMap(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func TestLaunchRunCreatesTaggedResources(t *testing.T) {
	e := newStageEnv(t)
	src := e.testSource()
	src.UserData = "#!/bin/sh\necho recipe user data\n"
	st := e.planned(src, nil)
	st = e.run(st)

	ln := st.Launch
	if ln == nil || ln.InstanceID == "" || ln.SecurityGroupID == "" || ln.KeyPairName == "" || ln.KeyParameter == "" || ln.HostKey == "" {
		t.Fatalf("Launch.Run: st.Launch = %+v, want every resource recorded", ln)
	}
	if ln.Region != testRegion || ln.SourceAMI != e.base || ln.VPCID != e.vpc {
		t.Errorf("Launch.Run: region/ami/vpc = %s/%s/%s, want %s/%s/%s", ln.Region, ln.SourceAMI, ln.VPCID, testRegion, e.base, e.vpc)
	}
	if st.Wait == nil || st.Wait.Ready || st.Wait.Seconds != 27 {
		t.Errorf("Launch.Run: st.Wait = %+v, want not ready, 27 s (0.9 of the expected 30 s)", st.Wait)
	}
	wantIdentity := map[string]string{TagBuild: st.BuildID, TagRecipe: "app"}

	// Security group: tagged; only ingress is TCP 22 from the provisioner's group.
	g, ok := e.cloud.Group(testRegion, ln.SecurityGroupID)
	if !ok {
		t.Fatalf("security group %s not created", ln.SecurityGroupID)
	}
	if tags := tagMap(g.Tags); tags[TagBuild] != st.BuildID || tags[TagRecipe] != "app" || tags["team"] != "core" {
		t.Errorf("security group tags = %v, want identity and run_tags", tags)
	}
	wantRule := []ec2types.IpPermission{{
		IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
		UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: aws.String(e.provSG), Description: aws.String("SSH from the kiln provisioner")}},
	}}
	if diff := cmp.Diff(wantRule, g.IpPermissions, cmpSDK); diff != "" {
		t.Errorf("security group ingress (-want +got):\n%s", diff)
	}

	// Login key: SecureString private half, tagged; key pair holds its public half.
	p, ok := e.cloud.Param(clientRegion, ln.KeyParameter)
	if !ok {
		t.Fatalf("parameter %s not stored", ln.KeyParameter)
	}
	if p.Type != ssmtypes.ParameterTypeSecureString || p.Tags[TagBuild] != st.BuildID {
		t.Errorf("parameter %s: type %s tags %v, want SecureString tagged with the build", ln.KeyParameter, p.Type, p.Tags)
	}
	if want := "/kiln/builds/" + st.BuildID + "/ssh-key"; ln.KeyParameter != want {
		t.Errorf("KeyParameter = %q, want %q", ln.KeyParameter, want)
	}
	signer, err := ssh.ParsePrivateKey([]byte(aws.ToString(p.Value)))
	if err != nil {
		t.Fatalf("stored login key does not parse: %v", err)
	}
	loginPub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	kps := e.cloud.KeyPairs(testRegion)
	if len(kps) != 1 || aws.ToString(kps[0].KeyName) != "kiln-"+st.BuildID || kps[0].KeyType != ec2types.KeyTypeEd25519 {
		t.Fatalf("key pairs = %+v, want one ed25519 kiln-%s", kps, st.BuildID)
	}
	if !sameKey(aws.ToString(kps[0].PublicKey), loginPub) {
		t.Errorf("key pair public key does not match the stored private key")
	}
	if tags := tagMap(kps[0].Tags); tags[TagBuild] != st.BuildID {
		t.Errorf("key pair tags = %v", tags)
	}

	// Instance.
	inst, ok := e.cloud.Instance(testRegion, ln.InstanceID)
	if !ok {
		t.Fatalf("instance %s not launched", ln.InstanceID)
	}
	tags := tagMap(inst.Tags)
	for k, v := range map[string]string{TagBuild: st.BuildID, TagRecipe: "app", "team": "core", "Name": "kiln-" + st.BuildID, tagHostKey: ln.HostKey} {
		if tags[k] != v {
			t.Errorf("instance tag %s = %q, want %q", k, tags[k], v)
		}
	}
	if inst.MetadataOptions.HttpTokens != ec2types.HttpTokensStateRequired {
		t.Errorf("instance HttpTokens = %s, want required", inst.MetadataOptions.HttpTokens)
	}
	if got := aws.ToString(inst.ClientToken); got == "" || len(got) > 64 {
		t.Errorf("ClientToken = %q, want 1-64 characters", got)
	}
	if aws.ToString(inst.KeyName) != ln.KeyPairName || aws.ToString(inst.SubnetId) != ln.SubnetID {
		t.Errorf("instance key/subnet = %s/%s, want %s/%s", aws.ToString(inst.KeyName), aws.ToString(inst.SubnetId), ln.KeyPairName, ln.SubnetID)
	}
	if len(inst.SecurityGroups) != 1 || aws.ToString(inst.SecurityGroups[0].GroupId) != ln.SecurityGroupID {
		t.Errorf("instance groups = %+v, want only %s", inst.SecurityGroups, ln.SecurityGroupID)
	}
	for _, m := range inst.BlockDeviceMappings {
		v, _ := e.cloud.Volume(testRegion, aws.ToString(m.Ebs.VolumeId))
		vt := tagMap(v.Tags)
		if vt[TagBuild] != st.BuildID || vt["volume"] != "root" || vt["team"] != "" {
			t.Errorf("volume %s tags = %v, want identity and run_volume_tags only", aws.ToString(v.VolumeId), vt)
		}
	}

	// User data: kiln's cloud-config carries the host key (whose public
	// half is in the state) and the login key; the recipe's part is kept.
	ud, err := ParseKilnUserData(inst.UserData)
	if err != nil {
		t.Fatalf("ParseKilnUserData: %v", err)
	}
	hostSigner, err := ssh.ParsePrivateKey(ud.HostKey)
	if err != nil {
		t.Fatalf("host key in user data: %v", err)
	}
	if !sameKey(string(ssh.MarshalAuthorizedKey(hostSigner.PublicKey())), ln.HostKey) || ud.HostPublicKey != ln.HostKey {
		t.Errorf("host key in user data does not match st.Launch.HostKey")
	}
	if ud.User != "ec2-user" || len(ud.AuthorizedKeys) != 1 || !sameKey(ud.AuthorizedKeys[0], loginPub) {
		t.Errorf("user data user %q keys %v, want ec2-user with the login key", ud.User, ud.AuthorizedKeys)
	}
	if string(ud.Recipe) != src.UserData {
		t.Errorf("recipe user data = %q, want %q", ud.Recipe, src.UserData)
	}

	// No secret in the state.
	stJSON, _ := json.Marshal(st)
	if bytes.Contains(stJSON, []byte("PRIVATE KEY")) || bytes.Contains(stJSON, []byte(aws.ToString(p.Value))) {
		t.Errorf("state holds a private key: %s", stJSON)
	}
	_ = wantIdentity
}

// cmpSDK compares SDK structs, ignoring their unexported no-serde markers.
var cmpSDK = cmp.Exporter(func(reflect.Type) bool { return true })

func TestLaunchRunTwiceIsIdempotent(t *testing.T) {
	e := newStageEnv(t)
	st0 := e.planned(e.testSource(), nil)
	first := e.run(st0)
	second := e.run(st0)
	third := e.run(first)
	for _, st := range []State{second, third} {
		if st.Launch.InstanceID != first.Launch.InstanceID || st.Launch.SecurityGroupID != first.Launch.SecurityGroupID ||
			st.Launch.HostKey != first.Launch.HostKey || st.Launch.KeyPairName != first.Launch.KeyPairName {
			t.Errorf("Launch.Run again: %+v, want the first run's %+v", st.Launch, first.Launch)
		}
	}
	if got, want := e.live(st0.BuildID), (liveCounts{Instances: 1, Groups: 1, KeyPairs: 1, Params: 2}); got != want {
		t.Errorf("after three runs: %+v, want %+v", got, want)
	}
	if n := e.cloud.Calls("RunInstances"); n != 1 {
		t.Errorf("RunInstances called %d times, want 1", n)
	}
}

// TestLaunchCrashAfterCreate: the Lambda dies right after each create call
// (the call took effect, its response is lost); the rerun makes no second
// of anything and leaves a complete launch.
func TestLaunchCrashAfterCreate(t *testing.T) {
	for _, action := range []string{"CreateSecurityGroup", "AuthorizeSecurityGroupIngress", "PutParameter", "ImportKeyPair", "RunInstances"} {
		for _, invisible := range []time.Duration{0, time.Minute} {
			t.Run(fmt.Sprintf("%s/invisible=%s", action, invisible), func(t *testing.T) {
				e := newStageEnv(t)
				e.cloud.Delays.Invisible = invisible
				st0 := e.planned(e.testSource(), nil)
				e.cloud.Fail(fakeFault{Action: action, Code: "InternalError", After: true})
				if _, err := e.launch.Run(context.Background(), st0); err == nil {
					t.Fatalf("Launch.Run with %s failing after the call: no error", action)
				}
				st, err := e.launch.Run(context.Background(), st0)
				if err != nil && action == "RunInstances" && invisible > 0 {
					// The instance is not visible yet and the rerun chose
					// another subnet (the first took an address): a
					// transient error, and the retry after it adopts the
					// instance.
					if _, ok := ForLambda("launch", err).(*Transient); !ok {
						t.Fatalf("Launch.Run while the instance is invisible = %v, want a Transient error", err)
					}
					e.cloud.Advance(invisible)
					st, err = e.launch.Run(context.Background(), st0)
				}
				if err != nil {
					t.Fatalf("Launch.Run after a crash in %s: %v", action, err)
				}
				if got, want := e.live(st0.BuildID), (liveCounts{Instances: 1, Groups: 1, KeyPairs: 1, Params: 2}); got != want {
					t.Errorf("after crash and rerun: %+v, want %+v", got, want)
				}
				g, _ := e.cloud.Group(testRegion, st.Launch.SecurityGroupID)
				if len(g.IpPermissions) != 1 {
					t.Errorf("security group rules = %+v, want the SSH rule once", g.IpPermissions)
				}
				inst, _ := e.cloud.Instance(testRegion, st.Launch.InstanceID)
				ud, err := ParseKilnUserData(inst.UserData)
				if err != nil {
					t.Fatal(err)
				}
				if ud.HostPublicKey != st.Launch.HostKey {
					t.Errorf("st.Launch.HostKey is not the instance's host key")
				}
				p, _ := e.cloud.Param(clientRegion, st.Launch.KeyParameter)
				signer, err := ssh.ParsePrivateKey([]byte(aws.ToString(p.Value)))
				if err != nil {
					t.Fatal(err)
				}
				kp := e.cloud.KeyPairs(testRegion)[0]
				if !sameKey(aws.ToString(kp.PublicKey), string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) ||
					!sameKey(ud.AuthorizedKeys[0], aws.ToString(kp.PublicKey)) {
					t.Errorf("key pair, stored key and user data disagree after a crash in %s", action)
				}
			})
		}
	}
}

// TestLaunchReplacesStrayKeyPair: a key pair of the build's name whose
// private half was never stored is replaced rather than used.
func TestLaunchReplacesStrayKeyPair(t *testing.T) {
	e := newStageEnv(t)
	st0 := e.planned(e.testSource(), nil)
	k, _ := e.newKey("ed25519")
	pub, _ := ssh.NewPublicKey(k.Public())
	if _, err := e.cloud.EC2(testRegion).ImportKeyPair(context.Background(), keyPairInput("kiln-"+st0.BuildID, pub)); err != nil {
		t.Fatal(err)
	}
	st := e.run(st0)
	p, _ := e.cloud.Param(clientRegion, st.Launch.KeyParameter)
	signer, _ := ssh.ParsePrivateKey([]byte(aws.ToString(p.Value)))
	kp := e.cloud.KeyPairs(testRegion)
	if len(kp) != 1 || !sameKey(aws.ToString(kp[0].PublicKey), string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) {
		t.Errorf("key pair was not replaced by the stored key's public half")
	}
}

func TestLaunchSourceImage(t *testing.T) {
	type tc struct {
		name    string
		src     func(e *stageEnv, s *AmazonEBS)
		data    func(e *stageEnv) map[string]DataSource
		want    func(e *stageEnv) string
		wantErr string
	}
	newest := func(e *stageEnv) string {
		e.cloud.AddImage(testRegion, fakeImageSpec{Name: "ubuntu-noble-20240101", Owner: "099720109477", Public: true, Created: e.cloud.Now().Add(-72 * time.Hour)})
		id := e.cloud.AddImage(testRegion, fakeImageSpec{Name: "ubuntu-noble-20250101", Owner: "099720109477", Public: true, Created: e.cloud.Now().Add(-24 * time.Hour)})
		e.cloud.AddImage(testRegion, fakeImageSpec{Name: "ubuntu-noble-20250301", Owner: "099720109477", Public: true, Deprecated: true, Created: e.cloud.Now().Add(-1 * time.Hour)})
		e.cloud.AddImage(testRegion, fakeImageSpec{Name: "ubuntu-noble-29990101", Owner: "666666666666", Public: true, Created: e.cloud.Now()})
		return id
	}
	ubuntu := func(mostRecent bool) *AMIFilter {
		return &AMIFilter{Filters: map[string]string{"name": "ubuntu-noble-*"}, Owners: []string{"099720109477"}, MostRecent: mostRecent}
	}
	cases := []tc{
		{name: "source_ami", want: func(e *stageEnv) string { return e.base }},
		{name: "source_ami missing", src: func(e *stageEnv, s *AmazonEBS) { s.SourceAMI = "ami-00000000000000000" }, wantErr: "InvalidAMIID.NotFound"},
		{name: "filter most_recent", src: func(e *stageEnv, s *AmazonEBS) { newest(e); s.SourceAMI, s.SourceAMIFilter = "", ubuntu(true) },
			want: func(e *stageEnv) string { return findImage(e, "ubuntu-noble-20250101") }},
		{name: "filter several without most_recent", src: func(e *stageEnv, s *AmazonEBS) { newest(e); s.SourceAMI, s.SourceAMIFilter = "", ubuntu(false) },
			wantErr: "2 images in eu-west-1 match"},
		{name: "filter none", src: func(e *stageEnv, s *AmazonEBS) { s.SourceAMI, s.SourceAMIFilter = "", ubuntu(true) }, wantErr: "no image in eu-west-1 matches"},
		{name: "filter include_deprecated", src: func(e *stageEnv, s *AmazonEBS) {
			newest(e)
			f := ubuntu(true)
			f.IncludeDeprecated = true
			s.SourceAMI, s.SourceAMIFilter = "", f
		}, want: func(e *stageEnv) string { return findImage(e, "ubuntu-noble-20250301") }},
		{name: "data amazon-ami", src: func(e *stageEnv, s *AmazonEBS) { newest(e); s.SourceAMI, s.SourceAMIData = "", "amazon-ami.ubuntu" },
			data: func(e *stageEnv) map[string]DataSource {
				return map[string]DataSource{"amazon-ami.ubuntu": {Type: "amazon-ami", Filter: ubuntu(true)}}
			},
			want: func(e *stageEnv) string { return findImage(e, "ubuntu-noble-20250101") }},
		{name: "data amazon-parameterstore", src: func(e *stageEnv, s *AmazonEBS) {
			e.cloud.PutParam(testRegion, "/base/ami", e.base)
			s.SourceAMI, s.SourceAMIData = "", "amazon-parameterstore.base"
		},
			data: func(e *stageEnv) map[string]DataSource {
				return map[string]DataSource{"amazon-parameterstore.base": {Type: "amazon-parameterstore", Parameter: "/base/ami"}}
			},
			want: func(e *stageEnv) string { return e.base }},
		{name: "data amazon-parameterstore not an image", src: func(e *stageEnv, s *AmazonEBS) {
			e.cloud.PutParam(testRegion, "/base/ami", "hello")
			s.SourceAMI, s.SourceAMIData = "", "amazon-parameterstore.base"
		},
			data: func(e *stageEnv) map[string]DataSource {
				return map[string]DataSource{"amazon-parameterstore.base": {Type: "amazon-parameterstore", Parameter: "/base/ami"}}
			},
			wantErr: `holds "hello", not an image ID`},
		{name: "data amazon-parameterstore missing", src: func(e *stageEnv, s *AmazonEBS) { s.SourceAMI, s.SourceAMIData = "", "amazon-parameterstore.base" },
			data: func(e *stageEnv) map[string]DataSource {
				return map[string]DataSource{"amazon-parameterstore.base": {Type: "amazon-parameterstore", Parameter: "/base/ami"}}
			},
			wantErr: "ParameterNotFound"},
		{name: "data undeclared", src: func(e *stageEnv, s *AmazonEBS) { s.SourceAMI, s.SourceAMIData = "", "amazon-ami.nope" }, wantErr: "not declared"},
		{name: "none", src: func(e *stageEnv, s *AmazonEBS) { s.SourceAMI = "" }, wantErr: "no source_ami"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			src := e.testSource()
			if c.src != nil {
				c.src(e, &src)
			}
			var data map[string]DataSource
			if c.data != nil {
				data = c.data(e)
			}
			st0 := e.planned(src, data)
			st, err := e.launch.Run(context.Background(), st0)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Launch.Run = %v, want error containing %q", err, c.wantErr)
				}
				if left := e.cloud.Leftovers(st0.BuildID); len(left) > 0 {
					t.Errorf("Launch.Run failed resolving the image but created %v", left)
				}
				return
			}
			if err != nil {
				t.Fatalf("Launch.Run: %v", err)
			}
			if want := c.want(e); st.Launch.SourceAMI != want {
				t.Errorf("SourceAMI = %s, want %s", st.Launch.SourceAMI, want)
			}
			inst, _ := e.cloud.Instance(testRegion, st.Launch.InstanceID)
			if aws.ToString(inst.ImageId) != st.Launch.SourceAMI {
				t.Errorf("instance image = %s, want %s", aws.ToString(inst.ImageId), st.Launch.SourceAMI)
			}
		})
	}
}

func findImage(e *stageEnv, name string) string {
	for _, img := range e.cloud.Images(testRegion) {
		if aws.ToString(img.Name) == name {
			return aws.ToString(img.ImageId)
		}
	}
	e.t.Fatalf("no image %s", name)
	return ""
}

func TestLaunchNetwork(t *testing.T) {
	type tc struct {
		name    string
		setup   func(e *stageEnv, s *AmazonEBS) (wantSubnet string)
		cfg     func(c *Config, e *stageEnv)
		wantErr string
	}
	twoSubnets := func(e *stageEnv) (vpc, small, big string) {
		vpc = e.cloud.AddVPC(testRegion, "10.1.0.0/16", map[string]string{"env": "build"})
		small = e.cloud.AddSubnet(testRegion, vpc, testRegion+"a", "10.1.1.0/24", 10, map[string]string{"tier": "build"})
		big = e.cloud.AddSubnet(testRegion, vpc, testRegion+"b", "10.1.2.0/24", 200, map[string]string{"tier": "build"})
		return
	}
	cases := []tc{
		{name: "default VPC", setup: func(e *stageEnv, s *AmazonEBS) string { return e.subnets[0] }},
		{name: "subnet_id", setup: func(e *stageEnv, s *AmazonEBS) string {
			_, small, _ := twoSubnets(e)
			s.SubnetID = small
			return small
		}},
		{name: "subnet_id missing", setup: func(e *stageEnv, s *AmazonEBS) string { s.SubnetID = "subnet-404"; return "" }, wantErr: "InvalidSubnetID.NotFound"},
		{name: "subnet_filter most_free", setup: func(e *stageEnv, s *AmazonEBS) string {
			_, _, big := twoSubnets(e)
			s.SubnetFilter = &SubnetFilter{Filters: map[string]string{"tag:tier": "build"}, MostFree: true}
			return big
		}},
		{name: "subnet_filter several", setup: func(e *stageEnv, s *AmazonEBS) string {
			twoSubnets(e)
			s.SubnetFilter = &SubnetFilter{Filters: map[string]string{"tag:tier": "build"}}
			return ""
		}, wantErr: "2 subnets in eu-west-1 match"},
		{name: "subnet_filter none", setup: func(e *stageEnv, s *AmazonEBS) string {
			s.SubnetFilter = &SubnetFilter{Filters: map[string]string{"tag:tier": "nope"}, MostFree: true}
			return ""
		}, wantErr: "no subnet in eu-west-1 matches"},
		{name: "subnet_filter random", setup: func(e *stageEnv, s *AmazonEBS) string {
			twoSubnets(e)
			s.SubnetFilter = &SubnetFilter{Filters: map[string]string{"tag:tier": "build"}, Random: true}
			return "*"
		}},
		{name: "vpc_id", setup: func(e *stageEnv, s *AmazonEBS) string {
			vpc, _, big := twoSubnets(e)
			s.VPCID = vpc
			return big
		}},
		{name: "vpc_filter", setup: func(e *stageEnv, s *AmazonEBS) string {
			_, _, big := twoSubnets(e)
			s.VPCFilter = &VPCFilter{Filters: map[string]string{"tag:env": "build"}}
			return big
		}},
		{name: "vpc_filter typo", setup: func(e *stageEnv, s *AmazonEBS) string {
			s.VPCFilter = &VPCFilter{Filters: map[string]string{"tags:env": "build"}}
			return ""
		}, wantErr: "InvalidParameterValue"},
		{name: "config subnet", setup: func(e *stageEnv, s *AmazonEBS) string { return e.subnets[2] },
			cfg: func(c *Config, e *stageEnv) { c.SubnetID = e.subnets[2] }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			src := e.testSource()
			want := c.setup(e, &src)
			if c.cfg != nil {
				c.cfg(&e.launch.Config, e)
			}
			st0 := e.planned(src, nil)
			st, err := e.launch.Run(context.Background(), st0)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Launch.Run = %v, want error containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Launch.Run: %v", err)
			}
			if want != "*" && st.Launch.SubnetID != want {
				t.Errorf("SubnetID = %s, want %s", st.Launch.SubnetID, want)
			}
			g, _ := e.cloud.Group(testRegion, st.Launch.SecurityGroupID)
			inst, _ := e.cloud.Instance(testRegion, st.Launch.InstanceID)
			if aws.ToString(g.VpcId) != st.Launch.VPCID || aws.ToString(inst.VpcId) != st.Launch.VPCID {
				t.Errorf("group VPC %s, instance VPC %s, want %s", aws.ToString(g.VpcId), aws.ToString(inst.VpcId), st.Launch.VPCID)
			}
			if want == "*" {
				// random: the same pick on a rerun
				again := e.run(st0)
				if again.Launch.SubnetID != st.Launch.SubnetID {
					t.Errorf("random subnet differs on a rerun: %s then %s", st.Launch.SubnetID, again.Launch.SubnetID)
				}
			}
		})
	}
}

func TestLaunchTransports(t *testing.T) {
	for _, c := range []struct {
		name        string
		src         func(s *AmazonEBS)
		cfg         func(c *Config)
		wantProfile string
		// wantUser is the user kiln's cloud-config makes sure of (no keys);
		// empty: the recipe's user data goes unchanged.
		wantUser string
	}{
		{name: "session_manager", src: func(s *AmazonEBS) { s.SSHInterface = "session_manager"; s.SSHUsername = "" },
			wantProfile: "arn:aws:iam::123456789012:instance-profile/kiln-build"},
		{name: "session_manager by default", src: func(s *AmazonEBS) { s.SSHInterface = "" },
			cfg: func(c *Config) { c.DefaultTransport = "session_manager" }, wantProfile: "arn:aws:iam::123456789012:instance-profile/kiln-build",
			wantUser: "ec2-user"},
		{name: "none", src: func(s *AmazonEBS) { s.Communicator = "none" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			if c.cfg != nil {
				c.cfg(&e.cfg)
				e.launch.Config = e.cfg
			}
			src := e.testSource()
			src.UserData = "#cloud-config\npackages: [htop]\n"
			c.src(&src)
			st := e.run(e.planned(src, nil))
			if st.Launch.KeyPairName != "" || st.Launch.KeyParameter != "" || st.Launch.HostKey != "" {
				t.Errorf("st.Launch = %+v, want no login key or host key", st.Launch)
			}
			if got, want := e.live(st.BuildID), (liveCounts{Instances: 1, Groups: 1}); got != want {
				t.Errorf("resources = %+v, want %+v", got, want)
			}
			g, _ := e.cloud.Group(testRegion, st.Launch.SecurityGroupID)
			if len(g.IpPermissions) != 0 {
				t.Errorf("security group ingress = %+v, want none", g.IpPermissions)
			}
			inst, _ := e.cloud.Instance(testRegion, st.Launch.InstanceID)
			if c.wantUser == "" && string(inst.UserData) != src.UserData {
				t.Errorf("user data = %q, want the recipe's unchanged", inst.UserData)
			}
			if c.wantUser != "" {
				ud, err := ParseKilnUserData(inst.UserData)
				if err != nil {
					t.Fatalf("ParseKilnUserData: %v", err)
				}
				want := &KilnUserData{User: c.wantUser, Recipe: []byte(src.UserData)}
				if diff := cmp.Diff(want, ud); diff != "" {
					t.Errorf("user data (-want +got):\n%s", diff)
				}
			}
			gotProfile := ""
			if inst.IamInstanceProfile != nil {
				gotProfile = aws.ToString(inst.IamInstanceProfile.Arn)
			}
			if gotProfile != c.wantProfile {
				t.Errorf("instance profile = %q, want %q", gotProfile, c.wantProfile)
			}
		})
	}
}

func TestLaunchRunOptions(t *testing.T) {
	e := newStageEnv(t)
	src := e.testSource()
	ownSG := e.cloud.AddSecurityGroup(testRegion, e.vpc, "users-own")
	src.SecurityGroupIDs = []string{ownSG}
	src.AssociatePublicIPAddress = aws.Bool(true)
	src.IAMInstanceProfile = "arn:aws:iam::123456789012:instance-profile/builder"
	src.ShutdownBehavior = "terminate"
	src.MetadataOptions = MetadataOptions{HTTPEndpoint: "enabled", HTTPTokens: "optional", HTTPPutResponseHopLimit: 3, InstanceMetadataTags: "enabled"}
	src.LaunchBlockDeviceMappings = []BlockDevice{
		{DeviceName: "/dev/xvda", VolumeSize: 20, VolumeType: "gp3", DeleteOnTermination: aws.Bool(true)},
		{DeviceName: "/dev/xvdb", VolumeSize: 50, VolumeType: "io2", IOPS: 3000, Encrypted: aws.Bool(true)},
	}
	st := e.run(e.planned(src, nil))
	if st.Launch.SecurityGroupID != "" {
		t.Errorf("SecurityGroupID = %s, want none created", st.Launch.SecurityGroupID)
	}
	if n := e.live(st.BuildID).Groups; n != 0 {
		t.Errorf("created %d security groups, want 0", n)
	}
	inst, _ := e.cloud.Instance(testRegion, st.Launch.InstanceID)
	if len(inst.SecurityGroups) != 1 || aws.ToString(inst.SecurityGroups[0].GroupId) != ownSG {
		t.Errorf("instance groups = %+v, want %s", inst.SecurityGroups, ownSG)
	}
	if inst.ShutdownBehavior != ec2types.ShutdownBehaviorTerminate {
		t.Errorf("shutdown behaviour = %s", inst.ShutdownBehavior)
	}
	if aws.ToString(inst.IamInstanceProfile.Arn) != src.IAMInstanceProfile {
		t.Errorf("instance profile = %v", aws.ToString(inst.IamInstanceProfile.Arn))
	}
	md := inst.MetadataOptions
	if md.HttpTokens != "optional" || aws.ToInt32(md.HttpPutResponseHopLimit) != 3 || md.InstanceMetadataTags != "enabled" {
		t.Errorf("metadata options = %+v", md)
	}
	var sizes []int32
	for _, m := range inst.BlockDeviceMappings {
		v, _ := e.cloud.Volume(testRegion, aws.ToString(m.Ebs.VolumeId))
		sizes = append(sizes, aws.ToInt32(v.Size))
	}
	if diff := cmp.Diff([]int32{20, 50}, sizes); diff != "" {
		t.Errorf("volume sizes (-want +got):\n%s", diff)
	}
	e.cloud.Advance(time.Minute)
	st, err := e.launch.Check(context.Background(), st)
	if err != nil || !st.Wait.Ready || st.Launch.PublicIP == "" {
		t.Errorf("Launch.Check = %+v, %v; want ready with a public IP", st.Launch, err)
	}
}

func TestLaunchRunErrors(t *testing.T) {
	for _, c := range []struct {
		name      string
		fault     fakeFault
		cfg       func(c *Config)
		wantErr   string
		wantRoute string
	}{
		{name: "no provisioner group", cfg: func(c *Config) { c.ProvisionerSecurityGroup = "" }, wantErr: "no provisioner security group", wantRoute: "StageFailed"},
		{name: "provisioner group missing", cfg: func(c *Config) { c.ProvisionerSecurityGroup = "sg-404" }, wantErr: "InvalidGroup.NotFound", wantRoute: "StageFailed"},
		{name: "capacity", fault: fakeFault{Action: "RunInstances", Code: "InsufficientInstanceCapacity"}, wantErr: "run instance of", wantRoute: "Transient"},
		{name: "throttled", fault: fakeFault{Action: "CreateSecurityGroup", Code: "RequestLimitExceeded"}, wantErr: "create security group", wantRoute: "Throttled"},
		{name: "put parameter", fault: fakeFault{Action: "PutParameter", Code: "AccessDeniedException"}, wantErr: "store login key", wantRoute: "StageFailed"},
		{name: "import key pair", fault: fakeFault{Action: "ImportKeyPair", Code: "UnauthorizedOperation"}, wantErr: "import key pair", wantRoute: "StageFailed"},
		{name: "authorize", fault: fakeFault{Action: "AuthorizeSecurityGroupIngress", Code: "RulesPerSecurityGroupLimitExceeded"}, wantErr: "allow ssh", wantRoute: "StageFailed"},
		{name: "describe instances", fault: fakeFault{Action: "DescribeInstances", Code: "UnauthorizedOperation"}, wantErr: "find instance", wantRoute: "StageFailed"},
		{name: "get parameter", fault: fakeFault{Action: "GetParameter", Code: "AccessDeniedException"}, wantErr: "read login key", wantRoute: "StageFailed"},
		{name: "plan object gone", fault: fakeFault{Action: "GetObject", Code: "NoSuchKey"}, wantErr: "fetch plan", wantRoute: "StageFailed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			if c.cfg != nil {
				c.cfg(&e.launch.Config)
			}
			if c.fault.Action != "" {
				e.cloud.Fail(c.fault)
			}
			_, err := e.launch.Run(context.Background(), e.planned(e.testSource(), nil))
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Launch.Run = %v, want error containing %q", err, c.wantErr)
			}
			if c.fault.Code != "" && AWSCode(err) != c.fault.Code {
				t.Errorf("AWSCode(err) = %q, want %q (wrapped, not flattened)", AWSCode(err), c.fault.Code)
			}
			if got := routedName(ForLambda("launch", err)); got != c.wantRoute {
				t.Errorf("ForLambda(err) is %s, want %s", got, c.wantRoute)
			}
		})
	}
}

func routedName(err error) string {
	return strings.TrimPrefix(fmt.Sprintf("%T", err), "*bake.")
}

func TestLaunchCheck(t *testing.T) {
	e := newStageEnv(t)
	st := e.run(e.planned(e.testSource(), nil))
	ctx := context.Background()

	e.cloud.Advance(10 * time.Second)
	st, err := e.launch.Check(ctx, st)
	if err != nil || st.Wait.Ready || st.Wait.Seconds != 17 || st.Wait.Polls != 2 {
		t.Fatalf("Launch.Check while pending = %+v, %v; want not ready, 17 s, poll 2", st.Wait, err)
	}
	e.cloud.Advance(17 * time.Second)
	st, err = e.launch.Check(ctx, st)
	if err != nil || st.Wait.Ready || st.Wait.Seconds != 2 || st.Wait.Polls != 3 {
		t.Fatalf("Launch.Check at 27 s = %+v, %v; want not ready, 2 s", st.Wait, err)
	}
	e.cloud.Advance(4 * time.Second)
	st, err = e.launch.Check(ctx, st)
	if err != nil || !st.Wait.Ready {
		t.Fatalf("Launch.Check after 31 s = %+v, %v; want ready", st.Wait, err)
	}
	inst, _ := e.cloud.Instance(testRegion, st.Launch.InstanceID)
	if st.Launch.PrivateIP == "" || st.Launch.PrivateIP != aws.ToString(inst.PrivateIpAddress) {
		t.Errorf("PrivateIP = %q, want %q", st.Launch.PrivateIP, aws.ToString(inst.PrivateIpAddress))
	}
}

func TestLaunchCheckStates(t *testing.T) {
	for _, c := range []struct {
		name      string
		running   time.Duration // how long the instance stays pending
		invisible time.Duration
		advance   time.Duration
		kill      bool
		fault     fakeFault
		src       func(s *AmazonEBS)
		wantReady bool
		wantErr   string
		wantRoute string
	}{
		{name: "not yet visible", invisible: time.Minute, advance: 5 * time.Second},
		{name: "never visible", invisible: time.Hour, advance: 6 * time.Minute, wantErr: "InvalidInstanceID.NotFound", wantRoute: "StageFailed"},
		{name: "terminated on its own", kill: true, wantErr: "is terminated: Server.InsufficientInstanceCapacity", wantRoute: "StageFailed"},
		{name: "pending too long", running: time.Hour, advance: 11 * time.Minute, wantErr: "not ready after 11m0s", wantRoute: "WaitTimedOut"},
		{name: "pending a while", running: time.Hour, advance: 9 * time.Minute},
		{name: "describe fails", fault: fakeFault{Action: "DescribeInstances", Code: "UnauthorizedOperation"}, wantErr: "describe instance", wantRoute: "StageFailed"},
		{name: "no public IP", advance: time.Minute, src: func(s *AmazonEBS) { s.SSHInterface = "public_ip"; s.AssociatePublicIPAddress = aws.Bool(false) },
			wantErr: "no address for ssh_interface", wantRoute: "StageFailed"},
		{name: "public IP", advance: time.Minute, src: func(s *AmazonEBS) { s.SSHInterface = "public_ip"; s.AssociatePublicIPAddress = aws.Bool(true) }, wantReady: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			if c.running > 0 {
				e.cloud.Delays.Running = c.running
			}
			src := e.testSource()
			if c.src != nil {
				c.src(&src)
			}
			st := e.run(e.planned(src, nil))
			e.cloud.Delays.Invisible = c.invisible
			if c.kill {
				e.cloud.KillInstance(testRegion, st.Launch.InstanceID, "Server.InsufficientInstanceCapacity", "Server.InsufficientInstanceCapacity: Insufficient capacity.")
			}
			e.cloud.Advance(c.advance)
			if c.fault.Action != "" {
				e.cloud.Fail(c.fault)
			}
			st, err := e.launch.Check(context.Background(), st)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Launch.Check = %v, want error containing %q", err, c.wantErr)
				}
				if got := routedName(ForLambda("launch", err)); got != c.wantRoute {
					t.Errorf("ForLambda = %s, want %s", got, c.wantRoute)
				}
				return
			}
			if err != nil {
				t.Fatalf("Launch.Check: %v", err)
			}
			if st.Wait.Ready != c.wantReady {
				t.Errorf("Launch.Check: ready = %v, want %v", st.Wait.Ready, c.wantReady)
			}
		})
	}
}

func keyPairInput(name string, pub ssh.PublicKey) *ec2.ImportKeyPairInput {
	return &ec2.ImportKeyPairInput{KeyName: aws.String(name), PublicKeyMaterial: ssh.MarshalAuthorizedKey(pub)}
}

// ---------------------------------------------------------------- plan

// recipeObject uploads a testdata recipe to the fake S3 and returns its
// state.
func (e *stageEnv) recipeObject(key string, body []byte) State {
	v := e.cloud.PutObject("recipes", key, body)
	return State{Recipe: RecipeRef{Bucket: "recipes", Key: key, Version: v}, Vars: map[string]string{"version": "2.0"}}
}

func TestLaunchPlan(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak-this")
	e := newStageEnv(t)
	body, err := os.ReadFile("testdata/stages/app.pkr.hcl")
	if err != nil {
		t.Fatal(err)
	}
	st0 := e.recipeObject(fmt.Sprintf("recipes/app-%d.pkr.hcl", testBuildSeq.Add(1)), body)
	st, err := e.launch.Plan(context.Background(), st0)
	if err != nil {
		t.Fatalf("Launch.Plan: %v", err)
	}
	if want := NewBuildID(st0.Recipe, st0.Vars, "", ""); st.BuildID != want {
		t.Errorf("BuildID = %q, want %q", st.BuildID, want)
	}
	if !st.StartedAt.Equal(e.cloud.Now()) {
		t.Errorf("StartedAt = %v, want the clock's %v", st.StartedAt, e.cloud.Now())
	}
	want := &PlanRef{Bucket: testBucket, Key: PlanKey(st.BuildID), Recipe: RecipeName(st0.Recipe.Key), Build: "app",
		Region: "eu-west-1", Regions: []string{"eu-central-1", "us-east-1"}, Transport: "ssh"}
	got := *st.Plan
	got.Hash = ""
	if diff := cmp.Diff(want, &got); diff != "" {
		t.Errorf("st.Plan (-want +got):\n%s", diff)
	}
	plan, b, err := fetchPlan(context.Background(), e.cloud.S3(), st.Plan)
	if err != nil {
		t.Fatalf("fetchPlan: %v", err)
	}
	if plan.Hash != st.Plan.Hash || plan.Hash == "" {
		t.Errorf("stored plan hash %q, state %q", plan.Hash, st.Plan.Hash)
	}
	// env() sees nothing of the process environment.
	if strings.Contains(b.Source.AMIDescription, "do-not-leak-this") || !strings.Contains(b.Source.AMIDescription, "secret=[]") {
		t.Errorf("ami_description = %q: env() must be empty in the pipeline", b.Source.AMIDescription)
	}
	// timestamp() is StartedAt; var given; uuidv4 derived from the build.
	if !strings.Contains(b.Source.AMIDescription, st.StartedAt.Format(time.RFC3339)) {
		t.Errorf("ami_description = %q, want timestamp() = %s", b.Source.AMIDescription, st.StartedAt.Format(time.RFC3339))
	}
	if !regexp.MustCompile(`^app-2\.0-[0-9a-f-]{36}$`).MatchString(b.Source.AMIName) {
		t.Errorf("ami_name = %q", b.Source.AMIName)
	}

	// A rerun (same input, later) gives the same plan, start kept if set.
	e.cloud.Advance(time.Hour)
	again, err := e.launch.Plan(context.Background(), st0)
	if err != nil {
		t.Fatalf("Launch.Plan again: %v", err)
	}
	plan2, b2, _ := fetchPlan(context.Background(), e.cloud.S3(), again.Plan)
	if b2.Source.AMIName != b.Source.AMIName || plan2.Hash != plan.Hash {
		t.Errorf("rerun planned %q, first %q", b2.Source.AMIName, b.Source.AMIName)
	}
	kept, _ := e.launch.Plan(context.Background(), st)
	if !kept.StartedAt.Equal(st.StartedAt) || kept.BuildID != st.BuildID {
		t.Errorf("Plan of a planned state changed StartedAt/BuildID")
	}
	if n := e.cloud.Calls("RunInstances") + e.cloud.Calls("CreateSecurityGroup"); n != 0 {
		t.Errorf("Plan made %d EC2 create calls", n)
	}
}

func TestLaunchPlanThenRunResolvesDataSource(t *testing.T) {
	e := newStageEnv(t)
	body, _ := os.ReadFile("testdata/stages/app.pkr.hcl")
	st, err := e.launch.Plan(context.Background(), e.recipeObject(fmt.Sprintf("app-%d.pkr.hcl", testBuildSeq.Add(1)), body))
	if err != nil {
		t.Fatalf("Launch.Plan: %v", err)
	}
	st = e.run(st)
	if st.Launch.SourceAMI != e.base {
		t.Errorf("SourceAMI = %s, want the amazon-ami data source's %s", st.Launch.SourceAMI, e.base)
	}
}

func TestLaunchPlanBundle(t *testing.T) {
	e := newStageEnv(t)
	body, _ := os.ReadFile("testdata/stages/app.pkr.hcl")
	var buf bytes.Buffer
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/app.pkr.hcl", body, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteBundle(dir, &buf, "tar.gz"); err != nil {
		t.Fatalf("WriteBundle: %v", err)
	}
	st, err := e.launch.Plan(context.Background(), e.recipeObject(fmt.Sprintf("bundles/web-%d.tar.gz", testBuildSeq.Add(1)), buf.Bytes()))
	if err != nil {
		t.Fatalf("Launch.Plan(bundle): %v", err)
	}
	if !strings.HasPrefix(st.Plan.Recipe, "web-") || st.Plan.Build != "app" {
		t.Errorf("st.Plan = %+v", st.Plan)
	}
}

func TestLaunchPlanErrors(t *testing.T) {
	good, _ := os.ReadFile("testdata/stages/app.pkr.hcl")
	for _, c := range []struct {
		name, key string
		body      []byte
		only      string
		fault     fakeFault
		wantErr   string
		wantRoute string
	}{
		{name: "broken recipe", key: "bad.pkr.hcl", body: []byte("source \"amazon-ebs\" \"x\" {\n  nonsense = 1\n"), wantErr: "bad.pkr.hcl", wantRoute: "RecipeInvalid"},
		{name: "unknown argument", key: "bad.pkr.hcl", body: bytes.Replace(good, []byte("instance_type"), []byte("instance_typo"), 1), wantErr: "instance_typo", wantRoute: "RecipeInvalid"},
		{name: "folder key", key: "recipes/", body: []byte(""), wantErr: "is a folder", wantRoute: "RecipeInvalid"},
		{name: "not a template", key: "notes.txt", body: []byte("hello"), wantErr: "not a recipe", wantRoute: "RecipeInvalid"},
		{name: "bad bundle", key: "x.tar.gz", body: []byte("not gzip"), wantErr: "Invalid bundle", wantRoute: "RecipeInvalid"},
		{name: "no such build", key: "app.pkr.hcl", body: good, only: "db", wantErr: `has no build "db"`, wantRoute: "RecipeInvalid"},
		{name: "recipe missing", key: "gone.pkr.hcl", fault: fakeFault{Action: "GetObject", Code: "NoSuchKey"}, body: good, wantErr: "read recipe", wantRoute: "StageFailed"},
		{name: "store fails", key: "app.pkr.hcl", body: good, fault: fakeFault{Action: "PutObject", Code: "AccessDenied"}, wantErr: "store plan", wantRoute: "StageFailed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			st0 := e.recipeObject(c.key, c.body)
			st0.Recipe.Version = "" // no stored plan reuse
			st0.Only = c.only
			if c.fault.Action != "" {
				e.cloud.Fail(c.fault)
			}
			st, err := e.launch.Plan(context.Background(), st0)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Launch.Plan = %v, want error containing %q", err, c.wantErr)
			}
			if got := routedName(ForLambda("launch", err)); got != c.wantRoute {
				t.Errorf("ForLambda = %s, want %s", got, c.wantRoute)
			}
			if c.wantRoute == "RecipeInvalid" && c.only == "" {
				if _, ok := e.cloud.Object(testBucket, PlanKey(st.BuildID)); ok && st.BuildID != "" {
					t.Errorf("a broken recipe's plan was stored")
				}
			}
		})
	}
}
