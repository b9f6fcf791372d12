package bake

// fakeCloud is the hand-written, stateful fake of every AWS call kiln's
// stages make, shared by all stage unit tests. Read this before using it.
//
// One fakeCloud is one AWS account's world: EC2 and SSM state per Region,
// S3 buckets (global) and the EventBridge events put. Clients are views on
// it: c.EC2(region), c.SSM(region), c.S3(), c.Events(region). They satisfy
// any stage's unexported interface (the method sets are the SDK's), and they
// honour a per-call Region override (optFns setting o.Region), so one view
// can serve a stage that works in several Regions.
//
// Semantics kiln depends on follow AWS, not moto:
//   - RunInstances and CopyImage are idempotent on ClientToken (≤64 chars).
//   - CreateImage and CopyImage answer InvalidAMIName.Duplicate for a name in
//     use in that Region; malformed names InvalidAMIName.Malformed.
//   - ModifyInstanceAttribute (EnaSupport, SriovNetSupport) needs a stopped
//     instance; CreateImage takes them from the instance.
//   - Describe* by ID answers <Resource>.NotFound (InvalidInstanceID.NotFound,
//     InvalidAMIID.NotFound, InvalidGroup.NotFound, InvalidVolume.NotFound,
//     ...) as a *smithy.GenericAPIError, so AWSCode/IsNotFound work on it. With
//     c.Delays.Invisible > 0 new instances and images stay NotFound for that
//     long (eventual consistency).
//   - DeleteSecurityGroup answers DependencyViolation while a non-terminated
//     instance uses the group; DeleteSnapshot answers InvalidSnapshot.InUse
//     while a registered image uses the snapshot; DeleteVolume answers
//     VolumeInUse while the volume is attached (in-use) and deletes an
//     available one at once; DeleteKeyPair succeeds for a missing key;
//     DeleteParameter answers ParameterNotFound.
//   - PutParameter with Tags and Overwrite together is a ValidationException.
//   - RunInstances rejects NetworkInterfaces together with SubnetId or
//     SecurityGroupIds (InvalidParameterCombination), user data that is not
//     base64 or over 16 KiB, security groups of another VPC, and unknown
//     images, subnets, groups and key names. HttpTokens defaults to
//     "required" only for images with imds_support v2.0, as on AWS.
//   - Filters: resource fields ("name", "state", "instance-state-name",
//     "vpc-id", ...), "tag:<key>" and "tag-key", with * and ? wildcards; an
//     unknown filter name is InvalidParameterValue (catches typos). Owners
//     on DescribeImages ("self", aliases, account IDs); deprecated images are
//     hidden unless owned, asked for by ID or IncludeDeprecated.
//   - Time is a fake clock (c.Now, c.Advance). Instances go pending→running
//     after Delays.Running, stopping→stopped after Delays.Stopping,
//     shutting-down→terminated after Delays.Terminating (then their
//     delete-on-termination volumes go, and the others become available,
//     detached); images and snapshots pending→available after Delays.Image
//     (CreateImage) or Delays.Copy (CopyImage).
//     Set a delay to 0 for instant transitions, as moto does.
//
// Test hooks:
//   - c.Fail(fakeFault{Action: "RunInstances", Code: "InsufficientInstanceCapacity"})
//     fails the next call of that action (Region "" = any, Times = n calls).
//     With After: true the call takes effect and THEN fails: a Lambda that
//     died after its create call, whose output was lost.
//   - c.Hook runs before every call (with the lock released); an error it
//     returns fails the call.
//   - c.Calls("RunInstances") counts calls; c.CallLog() lists them.
//   - Seeders: AddImage, AddVPC, AddSubnet, AddSecurityGroup, AddBucket,
//     PutObject, PutParam, KillInstance (terminate with a state reason).
//   - Inspectors: Instance, Instances, Image, Images, Snapshot, Snapshots,
//     Group, Groups, KeyPairs, Volume, Param, Params, Object, Objects,
//     EventsPut, and Leftovers(buildID): every live resource tagged
//     kiln:build=buildID in every Region (non-terminated instances,
//     volumes, groups, key pairs, images, snapshots, tagged parameters) and
//     S3 objects under builds/<buildID>/staged/. After cleanup it must be
//     empty.
//
// Each Region starts with a default VPC (172.31.0.0/16) holding a "default"
// security group and three default subnets (a, b, c).

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	"golang.org/x/crypto/ssh"
)

// fakeAccount is the fake world's own account ID.
const fakeAccount = "123456789012"

// fakeDelays are how long the fake's asynchronous work takes on its clock.
type fakeDelays struct {
	Running, Stopping, Terminating, Image, Copy time.Duration
	// Invisible keeps new instances and images NotFound for this long.
	Invisible time.Duration
}

// fakeFault fails calls of one action (see c.Fail).
type fakeFault struct {
	Region  string // "" matches every Region
	Action  string // "RunInstances", "GetObject", ...
	Code    string // AWS error code; "InternalError" if empty
	Message string
	// Err, if set, is returned instead of an API error built from Code.
	Err error
	// After makes the call take effect before failing.
	After bool
	// Times is how many calls fail; 0 means 1.
	Times int
}

func (f *fakeFault) err() error {
	if f.Err != nil {
		return f.Err
	}
	code := f.Code
	if code == "" {
		code = "InternalError"
	}
	msg := f.Message
	if msg == "" {
		msg = "injected failure"
	}
	fault := smithy.FaultClient
	if code == "InternalError" || code == "InternalFailure" || code == "ServiceUnavailable" {
		fault = smithy.FaultServer
	}
	return &smithy.GenericAPIError{Code: code, Message: msg, Fault: fault}
}

// fakeCall is one call the fake answered.
type fakeCall struct {
	Region, Action string
}

type fakeCloud struct {
	mu      sync.Mutex
	now     time.Time
	account string
	// Delays may be changed by a test at any time.
	Delays fakeDelays
	// Hook runs before each call, unlocked; its error fails the call.
	Hook func(region, action string) error

	regions map[string]*fakeRegion
	buckets map[string]*fakeBucket
	events  []ebtypes.PutEventsRequestEntry
	faults  []*fakeFault
	calls   []fakeCall
	seq     int
}

type fakeRegion struct {
	name      string
	vpcs      map[string]*ec2types.Vpc
	subnets   map[string]*ec2types.Subnet
	groups    map[string]*ec2types.SecurityGroup
	keys      map[string]*fakeKey // by name
	instances map[string]*fakeInstance
	volumes   map[string]*ec2types.Volume
	images    map[string]*fakeImage
	snapshots map[string]*fakeSnapshot
	params    map[string]*fakeParam
	// tokens maps "RunInstances/<token>" to a reservation ID and
	// "CopyImage/<token>" to an image ID.
	tokens       map[string]string
	reservations map[string][]string
}

type fakeKey struct {
	ec2types.KeyPairInfo
}

type fakeInstance struct {
	ec2types.Instance
	UserData         []byte
	ShutdownBehavior ec2types.ShutdownBehavior
	publicWanted     bool
	Reservation      string
	created, until   time.Time
}

type fakeImage struct {
	ec2types.Image
	created, until time.Time
	LaunchPerms    []ec2types.LaunchPermission
}

type fakeSnapshot struct {
	ec2types.Snapshot
	until       time.Time
	VolumePerms []ec2types.CreateVolumePermission
}

type fakeParam struct {
	ssmtypes.Parameter
	KeyID string
	Tags  map[string]string
}

type fakeBucket struct {
	current  map[string]*fakeObject
	versions map[string]*fakeObject // by version ID
}

type fakeObject struct {
	Key, Version string
	Body         []byte
	ContentType  string
	Modified     time.Time
}

// newFakeCloud returns an empty world whose clock starts at a fixed time,
// with AWS-like delays.
func newFakeCloud(t testing.TB) *fakeCloud {
	if t != nil {
		t.Helper()
	}
	return &fakeCloud{
		now:     time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
		account: fakeAccount,
		Delays: fakeDelays{
			Running: 30 * time.Second, Stopping: 45 * time.Second, Terminating: 20 * time.Second,
			Image: 120 * time.Second, Copy: 300 * time.Second,
		},
		regions: map[string]*fakeRegion{},
		buckets: map[string]*fakeBucket{},
	}
}

// Now is the fake clock; pass c.Now as a stage's clock.
func (c *fakeCloud) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the fake clock forward.
func (c *fakeCloud) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.settleLocked()
}

// Fail arms a fault for the next call(s) of an action.
func (c *fakeCloud) Fail(f fakeFault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.Times <= 0 {
		f.Times = 1
	}
	c.faults = append(c.faults, &f)
}

// Calls counts the calls of action in every Region.
func (c *fakeCloud) Calls(action string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, call := range c.calls {
		if call.Action == action {
			n++
		}
	}
	return n
}

// CallLog lists every call so far.
func (c *fakeCloud) CallLog() []fakeCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// EC2 returns an EC2 client for region.
func (c *fakeCloud) EC2(region string) *fakeEC2 { return &fakeEC2{c: c, region: region} }

// SSM returns an SSM client for region.
func (c *fakeCloud) SSM(region string) *fakeSSM { return &fakeSSM{c: c, region: region} }

// S3 returns an S3 client.
func (c *fakeCloud) S3() *fakeS3 { return &fakeS3{c: c} }

// Events returns an EventBridge client for region.
func (c *fakeCloud) Events(region string) *fakeEvents { return &fakeEvents{c: c, region: region} }

// fakeDo runs one call: counts it, applies hooks and faults, settles the
// world's clock-driven transitions and runs fn under the lock.
func fakeDo[T any](ctx context.Context, c *fakeCloud, region, action string, fn func(r *fakeRegion) (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if h := c.Hook; h != nil {
		if err := h(region, action); err != nil {
			c.mu.Lock()
			c.calls = append(c.calls, fakeCall{region, action})
			c.mu.Unlock()
			return zero, err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, fakeCall{region, action})
	var fault *fakeFault
	for i, f := range c.faults {
		if f.Action == action && (f.Region == "" || f.Region == region) {
			fault = f
			f.Times--
			if f.Times <= 0 {
				c.faults = slices.Delete(c.faults, i, i+1)
			}
			break
		}
	}
	if fault != nil && !fault.After {
		return zero, fault.err()
	}
	c.settleLocked()
	var r *fakeRegion
	if region != "" {
		r = c.regionLocked(region)
	}
	out, err := fn(r)
	if err == nil && fault != nil {
		return zero, fault.err()
	}
	return out, err
}

func fakeAPIErr(code, format string, args ...any) error {
	return &smithy.GenericAPIError{Code: code, Message: fmt.Sprintf(format, args...), Fault: smithy.FaultClient}
}

func (c *fakeCloud) nextID(prefix string) string {
	c.seq++
	return fmt.Sprintf("%s-%017x", prefix, c.seq)
}

// regionLocked returns a Region's state, creating it with a default VPC.
func (c *fakeCloud) regionLocked(name string) *fakeRegion {
	if r, ok := c.regions[name]; ok {
		return r
	}
	r := &fakeRegion{
		name:         name,
		vpcs:         map[string]*ec2types.Vpc{},
		subnets:      map[string]*ec2types.Subnet{},
		groups:       map[string]*ec2types.SecurityGroup{},
		keys:         map[string]*fakeKey{},
		instances:    map[string]*fakeInstance{},
		volumes:      map[string]*ec2types.Volume{},
		images:       map[string]*fakeImage{},
		snapshots:    map[string]*fakeSnapshot{},
		params:       map[string]*fakeParam{},
		tokens:       map[string]string{},
		reservations: map[string][]string{},
	}
	c.regions[name] = r
	vpc := c.addVPCLocked(r, "172.31.0.0/16", true)
	for i, az := range []string{"a", "b", "c"} {
		c.addSubnetLocked(r, vpc, name+az, fmt.Sprintf("172.31.%d.0/20", i*16), true, 4091)
	}
	return r
}

func (c *fakeCloud) addVPCLocked(r *fakeRegion, cidr string, isDefault bool) string {
	id := c.nextID("vpc")
	r.vpcs[id] = &ec2types.Vpc{
		VpcId: aws.String(id), CidrBlock: aws.String(cidr), IsDefault: aws.Bool(isDefault),
		State: ec2types.VpcStateAvailable, OwnerId: aws.String(c.account),
	}
	gid := c.nextID("sg")
	r.groups[gid] = &ec2types.SecurityGroup{
		GroupId: aws.String(gid), GroupName: aws.String("default"), VpcId: aws.String(id),
		Description: aws.String("default VPC security group"), OwnerId: aws.String(c.account),
	}
	return id
}

func (c *fakeCloud) addSubnetLocked(r *fakeRegion, vpc, az, cidr string, isDefault bool, free int32) string {
	id := c.nextID("subnet")
	r.subnets[id] = &ec2types.Subnet{
		SubnetId: aws.String(id), VpcId: aws.String(vpc), AvailabilityZone: aws.String(az),
		CidrBlock: aws.String(cidr), DefaultForAz: aws.Bool(isDefault), MapPublicIpOnLaunch: aws.Bool(isDefault),
		AvailableIpAddressCount: aws.Int32(free), State: ec2types.SubnetStateAvailable, OwnerId: aws.String(c.account),
	}
	return id
}

// AddVPC adds a non-default VPC (with its default group) and returns its ID.
func (c *fakeCloud) AddVPC(region, cidr string, tags map[string]string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.regionLocked(region)
	id := c.addVPCLocked(r, cidr, false)
	r.vpcs[id].Tags = fakeTags(tags)
	return id
}

// AddSubnet adds a subnet with free addresses and returns its ID.
func (c *fakeCloud) AddSubnet(region, vpc, az, cidr string, free int32, tags map[string]string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.regionLocked(region)
	id := c.addSubnetLocked(r, vpc, az, cidr, false, free)
	r.subnets[id].MapPublicIpOnLaunch = aws.Bool(false)
	r.subnets[id].Tags = fakeTags(tags)
	return id
}

// DefaultVPC returns a Region's default VPC and its subnets.
func (c *fakeCloud) DefaultVPC(region string) (vpc string, subnets []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.regionLocked(region)
	for id, v := range r.vpcs {
		if aws.ToBool(v.IsDefault) {
			vpc = id
		}
	}
	for id, s := range r.subnets {
		if aws.ToString(s.VpcId) == vpc {
			subnets = append(subnets, id)
		}
	}
	sort.Strings(subnets)
	return vpc, subnets
}

// AddSecurityGroup adds a group (the provisioning Lambda's, say).
func (c *fakeCloud) AddSecurityGroup(region, vpc, name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.regionLocked(region)
	id := c.nextID("sg")
	r.groups[id] = &ec2types.SecurityGroup{
		GroupId: aws.String(id), GroupName: aws.String(name), VpcId: aws.String(vpc),
		Description: aws.String(name), OwnerId: aws.String(c.account),
	}
	return id
}

// fakeImageSpec describes a seeded image.
type fakeImageSpec struct {
	Name, Owner, OwnerAlias string
	Created                 time.Time
	Public                  bool
	Deprecated              bool
	ImdsSupport             string
	Tags                    map[string]string
	// RootSize is the root snapshot's size in GiB (8 if 0).
	RootSize int32
}

// AddImage seeds an available image with one root snapshot, owned by
// spec.Owner (the fake's account if empty), and returns its ID.
func (c *fakeCloud) AddImage(region string, spec fakeImageSpec) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.regionLocked(region)
	owner := spec.Owner
	if owner == "" {
		owner = c.account
	}
	created := spec.Created
	if created.IsZero() {
		created = c.now.Add(-24 * time.Hour)
	}
	size := spec.RootSize
	if size == 0 {
		size = 8
	}
	snap := c.nextID("snap")
	r.snapshots[snap] = &fakeSnapshot{Snapshot: ec2types.Snapshot{
		SnapshotId: aws.String(snap), OwnerId: aws.String(owner), State: ec2types.SnapshotStateCompleted,
		VolumeSize: aws.Int32(size), StartTime: aws.Time(created), Encrypted: aws.Bool(false),
		VolumeId: aws.String("vol-ffffffff"), Progress: aws.String("100%"),
	}}
	id := c.nextID("ami")
	img := &fakeImage{created: created, Image: ec2types.Image{
		ImageId: aws.String(id), Name: aws.String(spec.Name), OwnerId: aws.String(owner),
		State: ec2types.ImageStateAvailable, CreationDate: aws.String(fakeTime(created)),
		Architecture: ec2types.ArchitectureValuesX8664, RootDeviceName: aws.String("/dev/xvda"),
		RootDeviceType: ec2types.DeviceTypeEbs, VirtualizationType: ec2types.VirtualizationTypeHvm,
		ImageType: ec2types.ImageTypeValuesMachine, Hypervisor: ec2types.HypervisorTypeXen,
		EnaSupport: aws.Bool(true), Public: aws.Bool(spec.Public), Tags: fakeTags(spec.Tags),
		ImdsSupport: ec2types.ImdsSupportValues(spec.ImdsSupport),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{
			DeviceName: aws.String("/dev/xvda"),
			Ebs: &ec2types.EbsBlockDevice{
				SnapshotId: aws.String(snap), VolumeSize: aws.Int32(size),
				VolumeType: ec2types.VolumeTypeGp3, DeleteOnTermination: aws.Bool(true), Encrypted: aws.Bool(false),
			},
		}},
	}}
	if spec.OwnerAlias != "" {
		img.ImageOwnerAlias = aws.String(spec.OwnerAlias)
	}
	if spec.Deprecated {
		img.DeprecationTime = aws.String(fakeTime(c.now.Add(-time.Hour)))
	}
	r.images[id] = img
	return id
}

// AddBucket creates a (versioned) bucket.
func (c *fakeCloud) AddBucket(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buckets[name] == nil {
		c.buckets[name] = &fakeBucket{current: map[string]*fakeObject{}, versions: map[string]*fakeObject{}}
	}
}

// PutObject stores an object (creating the bucket) and returns its version.
func (c *fakeCloud) PutObject(bucket, key string, body []byte) string {
	c.AddBucket(bucket)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.putObjectLocked(c.buckets[bucket], key, body, "")
}

func (c *fakeCloud) putObjectLocked(b *fakeBucket, key string, body []byte, contentType string) string {
	c.seq++
	o := &fakeObject{Key: key, Version: fmt.Sprintf("v%06d", c.seq), Body: bytes.Clone(body), ContentType: contentType, Modified: c.now}
	b.current[key] = o
	b.versions[o.Version] = o
	return o.Version
}

// PutParam stores a String parameter.
func (c *fakeCloud) PutParam(region, name, value string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.regionLocked(region)
	r.params[name] = &fakeParam{Parameter: ssmtypes.Parameter{
		Name: aws.String(name), Value: aws.String(value), Type: ssmtypes.ParameterTypeString,
		Version: 1, LastModifiedDate: aws.Time(c.now), DataType: aws.String("text"),
	}, Tags: map[string]string{}}
}

// KillInstance terminates an instance at once with a state reason, as AWS
// does when, say, capacity goes away or the instance shuts itself down.
func (c *fakeCloud) KillInstance(region, id, code, message string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.regionLocked(region)
	in := r.instances[id]
	if in == nil {
		panic("KillInstance: no instance " + id)
	}
	c.setInstanceState(r, in, ec2types.InstanceStateNameTerminated, 0)
	in.StateReason = &ec2types.StateReason{Code: aws.String(code), Message: aws.String(message)}
	in.StateTransitionReason = aws.String(message)
	c.settleLocked()
}

// Instance returns a copy of an instance and its user data.
func (c *fakeCloud) Instance(region, id string) (fakeInstance, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	in, ok := c.regionLocked(region).instances[id]
	if !ok {
		return fakeInstance{}, false
	}
	return *in, true
}

// Instances returns every instance of a Region (terminated included).
func (c *fakeCloud) Instances(region string) []fakeInstance {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fakeSorted(c.regionLocked(region).instances, func(i *fakeInstance) string { return aws.ToString(i.InstanceId) })
}

// Image returns a copy of an image.
func (c *fakeCloud) Image(region, id string) (fakeImage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	img, ok := c.regionLocked(region).images[id]
	if !ok {
		return fakeImage{}, false
	}
	return *img, true
}

// Images returns every image of a Region, seeded ones included.
func (c *fakeCloud) Images(region string) []fakeImage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fakeSorted(c.regionLocked(region).images, func(i *fakeImage) string { return aws.ToString(i.ImageId) })
}

// Snapshot returns a copy of a snapshot.
func (c *fakeCloud) Snapshot(region, id string) (fakeSnapshot, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.regionLocked(region).snapshots[id]
	if !ok {
		return fakeSnapshot{}, false
	}
	return *s, true
}

// Snapshots returns every snapshot of a Region.
func (c *fakeCloud) Snapshots(region string) []fakeSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fakeSorted(c.regionLocked(region).snapshots, func(s *fakeSnapshot) string { return aws.ToString(s.SnapshotId) })
}

// Volume returns a copy of a volume.
func (c *fakeCloud) Volume(region, id string) (ec2types.Volume, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.regionLocked(region).volumes[id]
	if !ok {
		return ec2types.Volume{}, false
	}
	return *v, true
}

// Group returns a copy of a security group.
func (c *fakeCloud) Group(region, id string) (ec2types.SecurityGroup, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.regionLocked(region).groups[id]
	if !ok {
		return ec2types.SecurityGroup{}, false
	}
	return *g, true
}

// Groups returns every security group of a Region.
func (c *fakeCloud) Groups(region string) []ec2types.SecurityGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fakeSorted(c.regionLocked(region).groups, func(g *ec2types.SecurityGroup) string { return aws.ToString(g.GroupId) })
}

// KeyPairs returns every key pair of a Region.
func (c *fakeCloud) KeyPairs(region string) []ec2types.KeyPairInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ec2types.KeyPairInfo
	for _, k := range fakeSorted(c.regionLocked(region).keys, func(k *fakeKey) string { return aws.ToString(k.KeyName) }) {
		out = append(out, k.KeyPairInfo)
	}
	return out
}

// Param returns a parameter with its plaintext value, key and tags.
func (c *fakeCloud) Param(region, name string) (fakeParam, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.regionLocked(region).params[name]
	if !ok {
		return fakeParam{}, false
	}
	cp := *p
	cp.Tags = maps.Clone(p.Tags)
	return cp, true
}

// Params returns the names of a Region's parameters, sorted.
func (c *fakeCloud) Params(region string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.regionLocked(region).params))
}

// Object returns an object's current version.
func (c *fakeCloud) Object(bucket, key string) (fakeObject, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.buckets[bucket]
	if b == nil || b.current[key] == nil {
		return fakeObject{}, false
	}
	return *b.current[key], true
}

// Objects returns the keys of a bucket's current objects, sorted.
func (c *fakeCloud) Objects(bucket string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.buckets[bucket]
	if b == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(b.current))
}

// EventsPut returns every EventBridge entry put so far.
func (c *fakeCloud) EventsPut() []ebtypes.PutEventsRequestEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// Leftovers lists every live resource of a build, in every Region, as
// "<region> <kind> <id>": what cleanup should have removed.
func (c *fakeCloud) Leftovers(buildID string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.settleLocked()
	var out []string
	add := func(region, kind, id string) { out = append(out, region+" "+kind+" "+id) }
	for _, rn := range slices.Sorted(maps.Keys(c.regions)) {
		r := c.regions[rn]
		for id, in := range r.instances {
			if fakeTagValue(in.Tags, TagBuild) == buildID && in.State.Name != ec2types.InstanceStateNameTerminated {
				add(rn, "instance", id)
			}
		}
		for id, v := range r.volumes {
			if fakeTagValue(v.Tags, TagBuild) == buildID {
				add(rn, "volume", id)
			}
		}
		for id, g := range r.groups {
			if fakeTagValue(g.Tags, TagBuild) == buildID {
				add(rn, "security-group", id)
			}
		}
		for name, k := range r.keys {
			if fakeTagValue(k.Tags, TagBuild) == buildID || strings.Contains(name, buildID) {
				add(rn, "key-pair", name)
			}
		}
		for id, img := range r.images {
			if fakeTagValue(img.Tags, TagBuild) == buildID {
				add(rn, "image", id)
			}
		}
		for id, s := range r.snapshots {
			if fakeTagValue(s.Tags, TagBuild) == buildID {
				add(rn, "snapshot", id)
			}
		}
		for name, p := range r.params {
			if p.Tags[TagBuild] == buildID || strings.Contains(name, "/"+buildID+"/") {
				add(rn, "parameter", name)
			}
		}
	}
	for bn, b := range c.buckets {
		for key := range b.current {
			if strings.HasPrefix(key, "builds/"+buildID+"/staged/") {
				add("s3", "object", bn+"/"+key)
			}
		}
	}
	sort.Strings(out)
	return out
}

// settleLocked applies the clock-driven state transitions.
func (c *fakeCloud) settleLocked() {
	for _, r := range c.regions {
		for _, in := range r.instances {
			if in.until.IsZero() || c.now.Before(in.until) {
				continue
			}
			switch in.State.Name {
			case ec2types.InstanceStateNamePending:
				c.setInstanceState(r, in, ec2types.InstanceStateNameRunning, 0)
			case ec2types.InstanceStateNameStopping:
				c.setInstanceState(r, in, ec2types.InstanceStateNameStopped, 0)
			case ec2types.InstanceStateNameShuttingDown:
				c.setInstanceState(r, in, ec2types.InstanceStateNameTerminated, 0)
			}
		}
		for id, in := range r.instances {
			if in.State.Name != ec2types.InstanceStateNameTerminated {
				continue
			}
			for _, m := range in.BlockDeviceMappings {
				if m.Ebs == nil {
					continue
				}
				vid := aws.ToString(m.Ebs.VolumeId)
				if aws.ToBool(m.Ebs.DeleteOnTermination) {
					delete(r.volumes, vid)
				} else if v := r.volumes[vid]; v != nil && fakeAttachedTo(v, id) {
					// It outlives the instance, detached: a leak unless
					// someone deletes it.
					v.State = ec2types.VolumeStateAvailable
					v.Attachments = nil
				}
			}
		}
		for _, img := range r.images {
			if img.State == ec2types.ImageStatePending && !c.now.Before(img.until) {
				img.State = ec2types.ImageStateAvailable
			}
		}
		for _, s := range r.snapshots {
			if s.State == ec2types.SnapshotStatePending && !c.now.Before(s.until) {
				s.State = ec2types.SnapshotStateCompleted
				s.Progress = aws.String("100%")
			}
		}
	}
}

var fakeStateCodes = map[ec2types.InstanceStateName]int32{
	ec2types.InstanceStateNamePending: 0, ec2types.InstanceStateNameRunning: 16,
	ec2types.InstanceStateNameShuttingDown: 32, ec2types.InstanceStateNameTerminated: 48,
	ec2types.InstanceStateNameStopping: 64, ec2types.InstanceStateNameStopped: 80,
}

// setInstanceState moves an instance to state; d > 0 sets when the
// transitional state ends.
func (c *fakeCloud) setInstanceState(r *fakeRegion, in *fakeInstance, s ec2types.InstanceStateName, d time.Duration) {
	in.State = &ec2types.InstanceState{Name: s, Code: aws.Int32(fakeStateCodes[s])}
	in.until = time.Time{}
	switch s {
	case ec2types.InstanceStateNamePending, ec2types.InstanceStateNameStopping, ec2types.InstanceStateNameShuttingDown:
		in.until = c.now.Add(d)
	case ec2types.InstanceStateNameRunning:
		if in.publicWanted && in.PublicIpAddress == nil {
			c.seq++
			in.PublicIpAddress = aws.String(fmt.Sprintf("203.0.113.%d", c.seq%250+1))
		}
	case ec2types.InstanceStateNameStopped, ec2types.InstanceStateNameTerminated:
		in.PublicIpAddress = nil
		if s == ec2types.InstanceStateNameTerminated {
			in.PrivateIpAddress = nil
		}
	}
}

func fakeTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func fakeTags(m map[string]string) []ec2types.Tag {
	var tags []ec2types.Tag
	for _, k := range slices.Sorted(maps.Keys(m)) {
		tags = append(tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return tags
}

func fakeTagValue(tags []ec2types.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// fakeMergeTags sets tags (replacing values of existing keys).
func fakeMergeTags(tags []ec2types.Tag, add []ec2types.Tag) []ec2types.Tag {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	for _, t := range add {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return fakeTags(m)
}

func fakeSorted[V any](m map[string]*V, key func(*V) string) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return key(&out[i]) < key(&out[j]) })
	return out
}

// fakeSpecTags returns the tags of the TagSpecifications for resource type rt,
// rejecting types the call does not take.
func fakeSpecTags(specs []ec2types.TagSpecification, rt ec2types.ResourceType, allowed ...ec2types.ResourceType) ([]ec2types.Tag, error) {
	var tags []ec2types.Tag
	for _, s := range specs {
		if !slices.Contains(allowed, s.ResourceType) {
			return nil, fakeAPIErr("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", s.ResourceType)
		}
		for _, t := range s.Tags {
			if strings.HasPrefix(aws.ToString(t.Key), "aws:") {
				return nil, fakeAPIErr("InvalidParameterValue", "tag keys starting with 'aws:' are reserved")
			}
		}
		if s.ResourceType == rt {
			tags = fakeMergeTags(tags, s.Tags)
		}
	}
	return tags, nil
}

// fakeMatch reports whether a resource with fields and tags passes all
// filters. Unknown filter names are an error, as on AWS.
func fakeMatch(filters []ec2types.Filter, fields map[string][]string, tags []ec2types.Tag) (bool, error) {
	for _, f := range filters {
		name := aws.ToString(f.Name)
		var have []string
		switch {
		case strings.HasPrefix(name, "tag:"):
			k := strings.TrimPrefix(name, "tag:")
			for _, t := range tags {
				if aws.ToString(t.Key) == k {
					have = append(have, aws.ToString(t.Value))
				}
			}
		case name == "tag-key":
			for _, t := range tags {
				have = append(have, aws.ToString(t.Key))
			}
		default:
			v, ok := fields[name]
			if !ok {
				return false, fakeAPIErr("InvalidParameterValue", "The filter '%s' is invalid", name)
			}
			have = v
		}
		if !fakeGlob(f.Values, have) {
			return false, nil
		}
	}
	return true, nil
}

func fakeGlob(patterns, values []string) bool {
	for _, p := range patterns {
		re := regexp.MustCompile("^" + strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(p)) + "$")
		for _, v := range values {
			if re.MatchString(v) {
				return true
			}
		}
	}
	return false
}

func fakeBool(b *bool) []string { return []string{strconv.FormatBool(aws.ToBool(b))} }

// ---------------------------------------------------------------- EC2

// fakeEC2 is an EC2 client on one Region of a fakeCloud.
type fakeEC2 struct {
	c      *fakeCloud
	region string
}

func (f *fakeEC2) regionOf(optFns []func(*ec2.Options)) string {
	o := ec2.Options{Region: f.region}
	for _, fn := range optFns {
		fn(&o)
	}
	return o.Region
}

func (r *fakeRegion) imageVisible(c *fakeCloud, img *fakeImage) bool {
	return c.now.Sub(img.created) >= c.Delays.Invisible || c.Delays.Invisible == 0
}

func (f *fakeEC2) DescribeImages(ctx context.Context, in *ec2.DescribeImagesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "DescribeImages", func(r *fakeRegion) (*ec2.DescribeImagesOutput, error) {
		for _, id := range in.ImageIds {
			if !strings.HasPrefix(id, "ami-") {
				return nil, fakeAPIErr("InvalidAMIID.Malformed", "Invalid id: %q", id)
			}
			img, ok := r.images[id]
			if !ok || !r.imageVisible(c, img) {
				return nil, fakeAPIErr("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
			}
		}
		owners := map[string]bool{}
		for _, o := range in.Owners {
			if o == "self" {
				o = c.account
			}
			owners[o] = true
		}
		out := &ec2.DescribeImagesOutput{}
		for _, id := range slices.Sorted(maps.Keys(r.images)) {
			img := r.images[id]
			if !r.imageVisible(c, img) {
				continue
			}
			if len(in.ImageIds) > 0 && !slices.Contains(in.ImageIds, id) {
				continue
			}
			own := aws.ToString(img.OwnerId) == c.account
			if len(owners) > 0 && !owners[aws.ToString(img.OwnerId)] && !owners[aws.ToString(img.ImageOwnerAlias)] {
				continue
			}
			if len(owners) == 0 && len(in.ImageIds) == 0 && !own && !aws.ToBool(img.Public) && !fakeLaunchAllowed(img, c.account) {
				continue
			}
			if img.DeprecationTime != nil && !own && len(in.ImageIds) == 0 && !aws.ToBool(in.IncludeDeprecated) {
				if t, err := time.Parse(time.RFC3339, *img.DeprecationTime); err == nil && !t.After(c.now) {
					continue
				}
			}
			fields := map[string][]string{
				"image-id": {id}, "name": {aws.ToString(img.Name)}, "state": {string(img.State)},
				"owner-id": {aws.ToString(img.OwnerId)}, "owner-alias": {aws.ToString(img.ImageOwnerAlias)},
				"is-public": fakeBool(img.Public), "architecture": {string(img.Architecture)},
				"root-device-type": {string(img.RootDeviceType)}, "root-device-name": {aws.ToString(img.RootDeviceName)},
				"virtualization-type": {string(img.VirtualizationType)}, "description": {aws.ToString(img.Description)},
				"image-type": {string(img.ImageType)}, "platform": {string(img.Platform)},
				"hypervisor": {string(img.Hypervisor)}, "ena-support": fakeBool(img.EnaSupport),
				"creation-date": {aws.ToString(img.CreationDate)}, "block-device-mapping.snapshot-id": nil,
				"source-image-id": {aws.ToString(img.SourceImageId)}, "source-instance-id": {aws.ToString(img.SourceInstanceId)},
			}
			for _, m := range img.BlockDeviceMappings {
				if m.Ebs != nil {
					fields["block-device-mapping.snapshot-id"] = append(fields["block-device-mapping.snapshot-id"], aws.ToString(m.Ebs.SnapshotId))
				}
			}
			ok, err := fakeMatch(in.Filters, fields, img.Tags)
			if err != nil {
				return nil, err
			}
			if ok {
				out.Images = append(out.Images, img.Image)
			}
		}
		return out, nil
	})
}

func fakeLaunchAllowed(img *fakeImage, account string) bool {
	for _, p := range img.LaunchPerms {
		if aws.ToString(p.UserId) == account || p.Group == ec2types.PermissionGroupAll {
			return true
		}
	}
	return false
}

func (f *fakeEC2) DescribeSubnets(ctx context.Context, in *ec2.DescribeSubnetsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "DescribeSubnets", func(r *fakeRegion) (*ec2.DescribeSubnetsOutput, error) {
		for _, id := range in.SubnetIds {
			if r.subnets[id] == nil {
				return nil, fakeAPIErr("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
			}
		}
		out := &ec2.DescribeSubnetsOutput{}
		for _, id := range slices.Sorted(maps.Keys(r.subnets)) {
			s := r.subnets[id]
			if len(in.SubnetIds) > 0 && !slices.Contains(in.SubnetIds, id) {
				continue
			}
			ok, err := fakeMatch(in.Filters, map[string][]string{
				"subnet-id": {id}, "vpc-id": {aws.ToString(s.VpcId)}, "availability-zone": {aws.ToString(s.AvailabilityZone)},
				"default-for-az": fakeBool(s.DefaultForAz), "state": {string(s.State)}, "cidr-block": {aws.ToString(s.CidrBlock)},
				"map-public-ip-on-launch":    fakeBool(s.MapPublicIpOnLaunch),
				"available-ip-address-count": {strconv.Itoa(int(aws.ToInt32(s.AvailableIpAddressCount)))},
				"owner-id":                   {aws.ToString(s.OwnerId)},
			}, s.Tags)
			if err != nil {
				return nil, err
			}
			if ok {
				out.Subnets = append(out.Subnets, *s)
			}
		}
		return out, nil
	})
}

func (f *fakeEC2) DescribeVpcs(ctx context.Context, in *ec2.DescribeVpcsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeVpcsOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "DescribeVpcs", func(r *fakeRegion) (*ec2.DescribeVpcsOutput, error) {
		for _, id := range in.VpcIds {
			if r.vpcs[id] == nil {
				return nil, fakeAPIErr("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", id)
			}
		}
		out := &ec2.DescribeVpcsOutput{}
		for _, id := range slices.Sorted(maps.Keys(r.vpcs)) {
			v := r.vpcs[id]
			if len(in.VpcIds) > 0 && !slices.Contains(in.VpcIds, id) {
				continue
			}
			ok, err := fakeMatch(in.Filters, map[string][]string{
				"vpc-id": {id}, "is-default": fakeBool(v.IsDefault), "cidr": {aws.ToString(v.CidrBlock)},
				"cidr-block-association.cidr-block": {aws.ToString(v.CidrBlock)}, "state": {string(v.State)},
				"owner-id": {aws.ToString(v.OwnerId)},
			}, v.Tags)
			if err != nil {
				return nil, err
			}
			if ok {
				out.Vpcs = append(out.Vpcs, *v)
			}
		}
		return out, nil
	})
}

func (f *fakeEC2) DescribeSecurityGroups(ctx context.Context, in *ec2.DescribeSecurityGroupsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "DescribeSecurityGroups", func(r *fakeRegion) (*ec2.DescribeSecurityGroupsOutput, error) {
		for _, id := range in.GroupIds {
			if r.groups[id] == nil {
				return nil, fakeAPIErr("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
			}
		}
		for _, name := range in.GroupNames {
			if r.groupByName(name, "") == nil {
				return nil, fakeAPIErr("InvalidGroup.NotFound", "The security group '%s' does not exist in default VPC", name)
			}
		}
		out := &ec2.DescribeSecurityGroupsOutput{}
		for _, id := range slices.Sorted(maps.Keys(r.groups)) {
			g := r.groups[id]
			if len(in.GroupIds) > 0 && !slices.Contains(in.GroupIds, id) {
				continue
			}
			if len(in.GroupNames) > 0 && !slices.Contains(in.GroupNames, aws.ToString(g.GroupName)) {
				continue
			}
			ok, err := fakeMatch(in.Filters, map[string][]string{
				"group-id": {id}, "group-name": {aws.ToString(g.GroupName)}, "vpc-id": {aws.ToString(g.VpcId)},
				"description": {aws.ToString(g.Description)}, "owner-id": {aws.ToString(g.OwnerId)},
			}, g.Tags)
			if err != nil {
				return nil, err
			}
			if ok {
				out.SecurityGroups = append(out.SecurityGroups, *g)
			}
		}
		return out, nil
	})
}

func (r *fakeRegion) defaultVPC() string {
	for id, v := range r.vpcs {
		if aws.ToBool(v.IsDefault) {
			return id
		}
	}
	return ""
}

// groupByName finds a group by name in vpc ("" = the default VPC).
func (r *fakeRegion) groupByName(name, vpc string) *ec2types.SecurityGroup {
	if vpc == "" {
		vpc = r.defaultVPC()
	}
	for _, g := range r.groups {
		if aws.ToString(g.GroupName) == name && aws.ToString(g.VpcId) == vpc {
			return g
		}
	}
	return nil
}

func (f *fakeEC2) CreateSecurityGroup(ctx context.Context, in *ec2.CreateSecurityGroupInput, optFns ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "CreateSecurityGroup", func(r *fakeRegion) (*ec2.CreateSecurityGroupOutput, error) {
		name, desc := aws.ToString(in.GroupName), aws.ToString(in.Description)
		if name == "" || desc == "" {
			return nil, fakeAPIErr("MissingParameter", "GroupName and Description are required")
		}
		if len(name) > 255 || strings.HasPrefix(name, "sg-") {
			return nil, fakeAPIErr("InvalidParameterValue", "invalid group name %q", name)
		}
		vpc := aws.ToString(in.VpcId)
		if vpc == "" {
			vpc = r.defaultVPC()
		}
		if r.vpcs[vpc] == nil {
			return nil, fakeAPIErr("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", vpc)
		}
		if r.groupByName(name, vpc) != nil {
			return nil, fakeAPIErr("InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, vpc)
		}
		tags, err := fakeSpecTags(in.TagSpecifications, ec2types.ResourceTypeSecurityGroup, ec2types.ResourceTypeSecurityGroup)
		if err != nil {
			return nil, err
		}
		id := c.nextID("sg")
		r.groups[id] = &ec2types.SecurityGroup{
			GroupId: aws.String(id), GroupName: aws.String(name), Description: aws.String(desc),
			VpcId: aws.String(vpc), OwnerId: aws.String(c.account), Tags: tags,
			IpPermissionsEgress: []ec2types.IpPermission{{IpProtocol: aws.String("-1"), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}},
		}
		return &ec2.CreateSecurityGroupOutput{GroupId: aws.String(id), Tags: tags}, nil
	})
}

func (f *fakeEC2) AuthorizeSecurityGroupIngress(ctx context.Context, in *ec2.AuthorizeSecurityGroupIngressInput, optFns ...func(*ec2.Options)) (*ec2.AuthorizeSecurityGroupIngressOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "AuthorizeSecurityGroupIngress", func(r *fakeRegion) (*ec2.AuthorizeSecurityGroupIngressOutput, error) {
		var g *ec2types.SecurityGroup
		switch {
		case in.GroupId != nil:
			g = r.groups[*in.GroupId]
		case in.GroupName != nil:
			g = r.groupByName(*in.GroupName, "")
		}
		if g == nil {
			return nil, fakeAPIErr("InvalidGroup.NotFound", "The security group '%s' does not exist", aws.ToString(in.GroupId)+aws.ToString(in.GroupName))
		}
		if len(in.IpPermissions) == 0 {
			return nil, fakeAPIErr("MissingParameter", "IpPermissions is required (the flat CidrIp form is not supported by this fake)")
		}
		for _, p := range in.IpPermissions {
			for _, pair := range p.UserIdGroupPairs {
				if r.groups[aws.ToString(pair.GroupId)] == nil {
					return nil, fakeAPIErr("InvalidGroup.NotFound", "The security group '%s' does not exist", aws.ToString(pair.GroupId))
				}
			}
			for _, have := range g.IpPermissions {
				if fakeSamePermission(have, p) {
					return nil, fakeAPIErr("InvalidPermission.Duplicate", "the specified rule already exists")
				}
			}
		}
		g.IpPermissions = append(g.IpPermissions, in.IpPermissions...)
		return &ec2.AuthorizeSecurityGroupIngressOutput{Return: aws.Bool(true)}, nil
	})
}

func fakeSamePermission(a, b ec2types.IpPermission) bool {
	if aws.ToString(a.IpProtocol) != aws.ToString(b.IpProtocol) || aws.ToInt32(a.FromPort) != aws.ToInt32(b.FromPort) || aws.ToInt32(a.ToPort) != aws.ToInt32(b.ToPort) {
		return false
	}
	for _, x := range b.UserIdGroupPairs {
		for _, y := range a.UserIdGroupPairs {
			if aws.ToString(x.GroupId) == aws.ToString(y.GroupId) {
				return true
			}
		}
	}
	for _, x := range b.IpRanges {
		for _, y := range a.IpRanges {
			if aws.ToString(x.CidrIp) == aws.ToString(y.CidrIp) {
				return true
			}
		}
	}
	return false
}

func (f *fakeEC2) DeleteSecurityGroup(ctx context.Context, in *ec2.DeleteSecurityGroupInput, optFns ...func(*ec2.Options)) (*ec2.DeleteSecurityGroupOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "DeleteSecurityGroup", func(r *fakeRegion) (*ec2.DeleteSecurityGroupOutput, error) {
		var g *ec2types.SecurityGroup
		switch {
		case in.GroupId != nil:
			g = r.groups[*in.GroupId]
		case in.GroupName != nil:
			g = r.groupByName(*in.GroupName, "")
		}
		if g == nil {
			return nil, fakeAPIErr("InvalidGroup.NotFound", "The security group '%s' does not exist", aws.ToString(in.GroupId)+aws.ToString(in.GroupName))
		}
		id := aws.ToString(g.GroupId)
		if aws.ToString(g.GroupName) == "default" {
			return nil, fakeAPIErr("CannotDelete", "the default security group cannot be deleted")
		}
		for _, inst := range r.instances {
			if inst.State.Name == ec2types.InstanceStateNameTerminated {
				continue
			}
			for _, sg := range inst.SecurityGroups {
				if aws.ToString(sg.GroupId) == id {
					return nil, fakeAPIErr("DependencyViolation", "resource %s has a dependent object", id)
				}
			}
		}
		for _, other := range r.groups {
			for _, p := range other.IpPermissions {
				for _, pair := range p.UserIdGroupPairs {
					if aws.ToString(pair.GroupId) == id && other != g {
						return nil, fakeAPIErr("DependencyViolation", "resource %s has a dependent object", id)
					}
				}
			}
		}
		delete(r.groups, id)
		return &ec2.DeleteSecurityGroupOutput{GroupId: aws.String(id), Return: aws.Bool(true)}, nil
	})
}

func (f *fakeEC2) ImportKeyPair(ctx context.Context, in *ec2.ImportKeyPairInput, optFns ...func(*ec2.Options)) (*ec2.ImportKeyPairOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "ImportKeyPair", func(r *fakeRegion) (*ec2.ImportKeyPairOutput, error) {
		name := aws.ToString(in.KeyName)
		if name == "" || len(name) > 255 {
			return nil, fakeAPIErr("InvalidParameterValue", "invalid key name %q", name)
		}
		if r.keys[name] != nil {
			return nil, fakeAPIErr("InvalidKeyPair.Duplicate", "The keypair '%s' already exists.", name)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey(in.PublicKeyMaterial)
		if err != nil {
			return nil, fakeAPIErr("InvalidKey.Format", "Key is not in valid OpenSSH public key format")
		}
		kt := ec2types.KeyTypeRsa
		if pub.Type() == ssh.KeyAlgoED25519 {
			kt = ec2types.KeyTypeEd25519
		}
		tags, err := fakeSpecTags(in.TagSpecifications, ec2types.ResourceTypeKeyPair, ec2types.ResourceTypeKeyPair)
		if err != nil {
			return nil, err
		}
		id := c.nextID("key")
		r.keys[name] = &fakeKey{KeyPairInfo: ec2types.KeyPairInfo{
			KeyName: aws.String(name), KeyPairId: aws.String(id), KeyType: kt, Tags: tags,
			KeyFingerprint: aws.String(ssh.FingerprintSHA256(pub)), PublicKey: aws.String(string(bytes.TrimSpace(in.PublicKeyMaterial))),
			CreateTime: aws.Time(c.now),
		}}
		return &ec2.ImportKeyPairOutput{KeyName: aws.String(name), KeyPairId: aws.String(id), KeyFingerprint: r.keys[name].KeyFingerprint, Tags: tags}, nil
	})
}

func (f *fakeEC2) DescribeKeyPairs(ctx context.Context, in *ec2.DescribeKeyPairsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeKeyPairsOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "DescribeKeyPairs", func(r *fakeRegion) (*ec2.DescribeKeyPairsOutput, error) {
		for _, n := range in.KeyNames {
			if r.keys[n] == nil {
				return nil, fakeAPIErr("InvalidKeyPair.NotFound", "The key pair '%s' does not exist", n)
			}
		}
		byID := map[string]*fakeKey{}
		for _, k := range r.keys {
			byID[aws.ToString(k.KeyPairId)] = k
		}
		for _, id := range in.KeyPairIds {
			if byID[id] == nil {
				return nil, fakeAPIErr("InvalidKeyPair.NotFound", "The key pair '%s' does not exist", id)
			}
		}
		out := &ec2.DescribeKeyPairsOutput{}
		for _, name := range slices.Sorted(maps.Keys(r.keys)) {
			k := r.keys[name]
			if len(in.KeyNames) > 0 && !slices.Contains(in.KeyNames, name) {
				continue
			}
			if len(in.KeyPairIds) > 0 && !slices.Contains(in.KeyPairIds, aws.ToString(k.KeyPairId)) {
				continue
			}
			ok, err := fakeMatch(in.Filters, map[string][]string{
				"key-name": {name}, "key-pair-id": {aws.ToString(k.KeyPairId)}, "fingerprint": {aws.ToString(k.KeyFingerprint)},
				"key-type": {string(k.KeyType)},
			}, k.Tags)
			if err != nil {
				return nil, err
			}
			if ok {
				info := k.KeyPairInfo
				if !aws.ToBool(in.IncludePublicKey) {
					info.PublicKey = nil
				}
				out.KeyPairs = append(out.KeyPairs, info)
			}
		}
		return out, nil
	})
}

// DeleteKeyPair succeeds for a missing key, as on AWS.
func (f *fakeEC2) DeleteKeyPair(ctx context.Context, in *ec2.DeleteKeyPairInput, optFns ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "DeleteKeyPair", func(r *fakeRegion) (*ec2.DeleteKeyPairOutput, error) {
		for name, k := range r.keys {
			if name == aws.ToString(in.KeyName) || (in.KeyPairId != nil && aws.ToString(k.KeyPairId) == *in.KeyPairId) {
				delete(r.keys, name)
				return &ec2.DeleteKeyPairOutput{KeyPairId: k.KeyPairId, Return: aws.Bool(true)}, nil
			}
		}
		return &ec2.DeleteKeyPairOutput{Return: aws.Bool(true)}, nil
	})
}

func (f *fakeEC2) RunInstances(ctx context.Context, in *ec2.RunInstancesInput, optFns ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "RunInstances", func(r *fakeRegion) (*ec2.RunInstancesOutput, error) {
		token := aws.ToString(in.ClientToken)
		if len(token) > 64 {
			return nil, fakeAPIErr("InvalidParameterValue", "client token longer than 64 characters")
		}
		// EC2 answers a token seen before with the first call's
		// reservation, but only when the parameters are the same.
		params := fmt.Sprintf("%s|%s|%s|%s|%v|%s", aws.ToString(in.ImageId), in.InstanceType, aws.ToString(in.SubnetId),
			aws.ToString(in.KeyName), in.SecurityGroupIds, aws.ToString(in.UserData))
		if token != "" {
			if res, ok := r.tokens["RunInstances/"+token]; ok {
				if r.tokens["RunInstances/"+token+"/params"] != params {
					return nil, fakeAPIErr("IdempotentParameterMismatch", "client token %s was used with different parameters", token)
				}
				return r.reservationOutput(c, res), nil
			}
		}
		if aws.ToInt32(in.MinCount) < 1 || aws.ToInt32(in.MaxCount) < aws.ToInt32(in.MinCount) {
			return nil, fakeAPIErr("InvalidParameterValue", "MinCount and MaxCount must be at least 1")
		}
		img := r.images[aws.ToString(in.ImageId)]
		if img == nil || !r.imageVisible(c, img) {
			return nil, fakeAPIErr("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", aws.ToString(in.ImageId))
		}
		if img.State != ec2types.ImageStateAvailable {
			return nil, fakeAPIErr("InvalidAMIID.Unavailable", "The image id '[%s]' is not available", aws.ToString(in.ImageId))
		}
		if in.InstanceType == "" {
			return nil, fakeAPIErr("MissingParameter", "InstanceType is required")
		}
		subnetID, groupIDs := aws.ToString(in.SubnetId), in.SecurityGroupIds
		publicIP := (*bool)(nil)
		if len(in.NetworkInterfaces) > 0 {
			if subnetID != "" || len(groupIDs) > 0 || len(in.SecurityGroups) > 0 {
				return nil, fakeAPIErr("InvalidParameterCombination", "Network interfaces and an instance-level subnet ID or security groups may not be specified on the same request")
			}
			ni := in.NetworkInterfaces[0]
			subnetID, groupIDs, publicIP = aws.ToString(ni.SubnetId), ni.Groups, ni.AssociatePublicIpAddress
		}
		if subnetID == "" {
			for _, id := range slices.Sorted(maps.Keys(r.subnets)) {
				if aws.ToBool(r.subnets[id].DefaultForAz) {
					subnetID = id
					break
				}
			}
		}
		subnet := r.subnets[subnetID]
		if subnet == nil {
			return nil, fakeAPIErr("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", subnetID)
		}
		vpc := aws.ToString(subnet.VpcId)
		for _, name := range in.SecurityGroups {
			g := r.groupByName(name, vpc)
			if g == nil {
				return nil, fakeAPIErr("InvalidGroup.NotFound", "The security group '%s' does not exist in VPC '%s'", name, vpc)
			}
			groupIDs = append(groupIDs, aws.ToString(g.GroupId))
		}
		if len(groupIDs) == 0 {
			groupIDs = []string{aws.ToString(r.groupByName("default", vpc).GroupId)}
		}
		var groups []ec2types.GroupIdentifier
		for _, id := range groupIDs {
			g := r.groups[id]
			if g == nil {
				return nil, fakeAPIErr("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
			}
			if aws.ToString(g.VpcId) != vpc {
				return nil, fakeAPIErr("InvalidParameter", "Security group %s and subnet %s belong to different networks.", id, subnetID)
			}
			groups = append(groups, ec2types.GroupIdentifier{GroupId: g.GroupId, GroupName: g.GroupName})
		}
		if in.KeyName != nil && r.keys[*in.KeyName] == nil {
			return nil, fakeAPIErr("InvalidKeyPair.NotFound", "The key pair '%s' does not exist", *in.KeyName)
		}
		var userData []byte
		if in.UserData != nil {
			b, err := base64.StdEncoding.DecodeString(*in.UserData)
			if err != nil {
				return nil, fakeAPIErr("InvalidParameterValue", "Invalid BASE64 encoding of user data.")
			}
			if len(b) > 16384 {
				return nil, fakeAPIErr("InvalidParameterValue", "User data is limited to 16384 bytes")
			}
			userData = b
		}
		instTags, err := fakeSpecTags(in.TagSpecifications, ec2types.ResourceTypeInstance,
			ec2types.ResourceTypeInstance, ec2types.ResourceTypeVolume, ec2types.ResourceTypeNetworkInterface, ec2types.ResourceTypeSpotInstancesRequest)
		if err != nil {
			return nil, err
		}
		volTags, _ := fakeSpecTags(in.TagSpecifications, ec2types.ResourceTypeVolume,
			ec2types.ResourceTypeInstance, ec2types.ResourceTypeVolume, ec2types.ResourceTypeNetworkInterface, ec2types.ResourceTypeSpotInstancesRequest)
		md := ec2types.InstanceMetadataOptionsResponse{
			HttpEndpoint: ec2types.InstanceMetadataEndpointStateEnabled, HttpTokens: ec2types.HttpTokensStateOptional,
			HttpPutResponseHopLimit: aws.Int32(1), InstanceMetadataTags: ec2types.InstanceMetadataTagsStateDisabled,
			State: ec2types.InstanceMetadataOptionsStateApplied,
		}
		if img.ImdsSupport == ec2types.ImdsSupportValuesV20 {
			md.HttpTokens, md.HttpPutResponseHopLimit = ec2types.HttpTokensStateRequired, aws.Int32(2)
		}
		if o := in.MetadataOptions; o != nil {
			if o.HttpEndpoint != "" {
				md.HttpEndpoint = o.HttpEndpoint
			}
			if o.HttpTokens != "" {
				md.HttpTokens = o.HttpTokens
			}
			if o.HttpPutResponseHopLimit != nil {
				if n := *o.HttpPutResponseHopLimit; n < 1 || n > 64 {
					return nil, fakeAPIErr("InvalidParameterValue", "HttpPutResponseHopLimit must be 1-64")
				}
				md.HttpPutResponseHopLimit = o.HttpPutResponseHopLimit
			}
			if o.InstanceMetadataTags != "" {
				md.InstanceMetadataTags = o.InstanceMetadataTags
			}
		}
		// Block devices: the image's, overridden and extended by the request's.
		type dev struct {
			name string
			ebs  ec2types.EbsBlockDevice
		}
		var devs []dev
		for _, m := range img.BlockDeviceMappings {
			if m.Ebs != nil {
				devs = append(devs, dev{aws.ToString(m.DeviceName), *m.Ebs})
			}
		}
		for _, m := range in.BlockDeviceMappings {
			name := aws.ToString(m.DeviceName)
			i := slices.IndexFunc(devs, func(d dev) bool { return d.name == name })
			if m.NoDevice != nil {
				if i >= 0 {
					devs = slices.Delete(devs, i, i+1)
				}
				continue
			}
			if m.Ebs == nil {
				continue // ephemeral
			}
			if i < 0 {
				devs = append(devs, dev{name: name, ebs: ec2types.EbsBlockDevice{VolumeSize: aws.Int32(8), VolumeType: ec2types.VolumeTypeGp2, DeleteOnTermination: aws.Bool(true)}})
				i = len(devs) - 1
			}
			e := &devs[i].ebs
			if m.Ebs.VolumeSize != nil {
				if e.SnapshotId != nil && aws.ToInt32(m.Ebs.VolumeSize) < aws.ToInt32(e.VolumeSize) {
					return nil, fakeAPIErr("InvalidBlockDeviceMapping", "Volume of size %dGB is smaller than snapshot '%s', expect size >= %dGB", *m.Ebs.VolumeSize, *e.SnapshotId, aws.ToInt32(e.VolumeSize))
				}
				e.VolumeSize = m.Ebs.VolumeSize
			}
			if m.Ebs.VolumeType != "" {
				e.VolumeType = m.Ebs.VolumeType
			}
			if m.Ebs.DeleteOnTermination != nil {
				e.DeleteOnTermination = m.Ebs.DeleteOnTermination
			}
			if m.Ebs.Encrypted != nil {
				e.Encrypted = m.Ebs.Encrypted
			}
			if m.Ebs.KmsKeyId != nil {
				e.KmsKeyId = m.Ebs.KmsKeyId
			}
			if m.Ebs.Iops != nil {
				e.Iops = m.Ebs.Iops
			}
			if m.Ebs.Throughput != nil {
				e.Throughput = m.Ebs.Throughput
			}
			if m.Ebs.SnapshotId != nil {
				e.SnapshotId = m.Ebs.SnapshotId
			}
		}
		resID := c.nextID("r")
		out := []string{}
		for n := int32(0); n < aws.ToInt32(in.MaxCount); n++ {
			id := c.nextID("i")
			c.seq++
			inst := &fakeInstance{
				UserData: userData, ShutdownBehavior: in.InstanceInitiatedShutdownBehavior, Reservation: resID, created: c.now,
				Instance: ec2types.Instance{
					InstanceId: aws.String(id), ImageId: in.ImageId, InstanceType: in.InstanceType,
					SubnetId: aws.String(subnetID), VpcId: aws.String(vpc), SecurityGroups: groups, KeyName: in.KeyName,
					ClientToken: in.ClientToken, LaunchTime: aws.Time(c.now), Tags: instTags, MetadataOptions: &md,
					Architecture: img.Architecture, RootDeviceName: img.RootDeviceName, RootDeviceType: ec2types.DeviceTypeEbs,
					Placement:        &ec2types.Placement{AvailabilityZone: subnet.AvailabilityZone},
					PrivateIpAddress: aws.String(fmt.Sprintf("10.%d.%d.%d", c.seq/65536%256, c.seq/256%256, c.seq%256)),
				},
			}
			inst.publicWanted = aws.ToBool(subnet.MapPublicIpOnLaunch)
			if publicIP != nil {
				inst.publicWanted = *publicIP
			}
			if p := in.IamInstanceProfile; p != nil {
				arn := aws.ToString(p.Arn)
				if arn == "" {
					arn = "arn:aws:iam::" + c.account + ":instance-profile/" + aws.ToString(p.Name)
				}
				inst.IamInstanceProfile = &ec2types.IamInstanceProfile{Arn: aws.String(arn), Id: aws.String(c.nextID("AIPA"))}
			}
			for _, d := range devs {
				vid := c.nextID("vol")
				e := d.ebs
				r.volumes[vid] = &ec2types.Volume{
					VolumeId: aws.String(vid), Size: e.VolumeSize, VolumeType: e.VolumeType, SnapshotId: e.SnapshotId,
					Encrypted: aws.Bool(aws.ToBool(e.Encrypted)), KmsKeyId: e.KmsKeyId, Iops: e.Iops, Throughput: e.Throughput,
					AvailabilityZone: subnet.AvailabilityZone, State: ec2types.VolumeStateInUse, Tags: volTags, CreateTime: aws.Time(c.now),
					Attachments: []ec2types.VolumeAttachment{{InstanceId: aws.String(id), VolumeId: aws.String(vid), Device: aws.String(d.name),
						DeleteOnTermination: e.DeleteOnTermination, State: ec2types.VolumeAttachmentStateAttached, AttachTime: aws.Time(c.now)}},
				}
				inst.BlockDeviceMappings = append(inst.BlockDeviceMappings, ec2types.InstanceBlockDeviceMapping{
					DeviceName: aws.String(d.name),
					Ebs:        &ec2types.EbsInstanceBlockDevice{VolumeId: aws.String(vid), DeleteOnTermination: aws.Bool(aws.ToBool(e.DeleteOnTermination)), Status: ec2types.AttachmentStatusAttached},
				})
			}
			c.setInstanceState(r, inst, ec2types.InstanceStateNamePending, c.Delays.Running)
			r.instances[id] = inst
			if free := aws.ToInt32(subnet.AvailableIpAddressCount); free > 0 {
				subnet.AvailableIpAddressCount = aws.Int32(free - 1)
			}
			out = append(out, id)
		}
		r.reservations[resID] = out
		if token != "" {
			r.tokens["RunInstances/"+token] = resID
			r.tokens["RunInstances/"+token+"/params"] = params
		}
		c.settleLocked() // a zero delay means running at once
		return r.reservationOutput(c, resID), nil
	})
}

func (r *fakeRegion) reservationOutput(c *fakeCloud, resID string) *ec2.RunInstancesOutput {
	out := &ec2.RunInstancesOutput{ReservationId: aws.String(resID), OwnerId: aws.String(c.account)}
	for _, id := range r.reservations[resID] {
		out.Instances = append(out.Instances, r.instances[id].Instance)
	}
	return out
}

func (f *fakeEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "DescribeInstances", func(r *fakeRegion) (*ec2.DescribeInstancesOutput, error) {
		visible := func(i *fakeInstance) bool {
			return c.Delays.Invisible == 0 || c.now.Sub(i.created) >= c.Delays.Invisible
		}
		for _, id := range in.InstanceIds {
			if i := r.instances[id]; i == nil || !visible(i) {
				return nil, fakeAPIErr("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
			}
		}
		out := &ec2.DescribeInstancesOutput{}
		for _, id := range slices.Sorted(maps.Keys(r.instances)) {
			i := r.instances[id]
			if !visible(i) || (len(in.InstanceIds) > 0 && !slices.Contains(in.InstanceIds, id)) {
				continue
			}
			fields := map[string][]string{
				"instance-id": {id}, "instance-state-name": {string(i.State.Name)},
				"instance-state-code": {strconv.Itoa(int(aws.ToInt32(i.State.Code)))}, "image-id": {aws.ToString(i.ImageId)},
				"subnet-id": {aws.ToString(i.SubnetId)}, "vpc-id": {aws.ToString(i.VpcId)}, "instance-type": {string(i.InstanceType)},
				"key-name": {aws.ToString(i.KeyName)}, "client-token": {aws.ToString(i.ClientToken)},
				"private-ip-address": {aws.ToString(i.PrivateIpAddress)}, "ip-address": {aws.ToString(i.PublicIpAddress)},
				"instance.group-id": nil, "reservation-id": {i.Reservation},
			}
			for _, g := range i.SecurityGroups {
				fields["instance.group-id"] = append(fields["instance.group-id"], aws.ToString(g.GroupId))
			}
			ok, err := fakeMatch(in.Filters, fields, i.Tags)
			if err != nil {
				return nil, err
			}
			if ok {
				out.Reservations = append(out.Reservations, ec2types.Reservation{
					ReservationId: aws.String(i.Reservation), OwnerId: aws.String(c.account), Instances: []ec2types.Instance{i.Instance},
				})
			}
		}
		return out, nil
	})
}

func (r *fakeRegion) instancesByID(ids []string) ([]*fakeInstance, error) {
	if len(ids) == 0 {
		return nil, fakeAPIErr("MissingParameter", "InstanceIds is required")
	}
	var out []*fakeInstance
	for _, id := range ids {
		i := r.instances[id]
		if i == nil {
			return nil, fakeAPIErr("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		}
		out = append(out, i)
	}
	return out, nil
}

func fakeStateChange(i *fakeInstance, prev *ec2types.InstanceState) ec2types.InstanceStateChange {
	cur := *i.State
	return ec2types.InstanceStateChange{InstanceId: i.InstanceId, PreviousState: prev, CurrentState: &cur}
}

func (f *fakeEC2) StopInstances(ctx context.Context, in *ec2.StopInstancesInput, optFns ...func(*ec2.Options)) (*ec2.StopInstancesOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "StopInstances", func(r *fakeRegion) (*ec2.StopInstancesOutput, error) {
		insts, err := r.instancesByID(in.InstanceIds)
		if err != nil {
			return nil, err
		}
		for _, i := range insts {
			switch i.State.Name {
			case ec2types.InstanceStateNamePending, ec2types.InstanceStateNameShuttingDown, ec2types.InstanceStateNameTerminated:
				return nil, fakeAPIErr("IncorrectInstanceState", "The instance '%s' is not in a state from which it can be stopped.", aws.ToString(i.InstanceId))
			}
		}
		out := &ec2.StopInstancesOutput{}
		for _, i := range insts {
			prev := *i.State
			if i.State.Name == ec2types.InstanceStateNameRunning {
				c.setInstanceState(r, i, ec2types.InstanceStateNameStopping, c.Delays.Stopping)
				i.StateTransitionReason = aws.String("User initiated (" + c.now.Format("2006-01-02 15:04:05 MST") + ")")
				i.StateReason = &ec2types.StateReason{Code: aws.String("Client.UserInitiatedShutdown"), Message: aws.String("Client.UserInitiatedShutdown: User initiated shutdown")}
			}
			out.StoppingInstances = append(out.StoppingInstances, fakeStateChange(i, &prev))
		}
		c.settleLocked()
		return out, nil
	})
}

func (f *fakeEC2) TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, optFns ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "TerminateInstances", func(r *fakeRegion) (*ec2.TerminateInstancesOutput, error) {
		insts, err := r.instancesByID(in.InstanceIds)
		if err != nil {
			return nil, err
		}
		out := &ec2.TerminateInstancesOutput{}
		for _, i := range insts {
			prev := *i.State
			switch i.State.Name {
			case ec2types.InstanceStateNameShuttingDown, ec2types.InstanceStateNameTerminated:
			default:
				c.setInstanceState(r, i, ec2types.InstanceStateNameShuttingDown, c.Delays.Terminating)
				i.StateReason = &ec2types.StateReason{Code: aws.String("Client.UserInitiatedShutdown"), Message: aws.String("Client.UserInitiatedShutdown: User initiated shutdown")}
			}
			out.TerminatingInstances = append(out.TerminatingInstances, fakeStateChange(i, &prev))
		}
		c.settleLocked()
		return out, nil
	})
}

// ModifyInstanceAttribute supports EnaSupport and SriovNetSupport, which
// (as on AWS) need a stopped instance.
func (f *fakeEC2) ModifyInstanceAttribute(ctx context.Context, in *ec2.ModifyInstanceAttributeInput, optFns ...func(*ec2.Options)) (*ec2.ModifyInstanceAttributeOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "ModifyInstanceAttribute", func(r *fakeRegion) (*ec2.ModifyInstanceAttributeOutput, error) {
		i := r.instances[aws.ToString(in.InstanceId)]
		if i == nil {
			return nil, fakeAPIErr("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", aws.ToString(in.InstanceId))
		}
		if (in.EnaSupport != nil || in.SriovNetSupport != nil) && i.State.Name != ec2types.InstanceStateNameStopped {
			return nil, fakeAPIErr("IncorrectInstanceState", "The instance '%s' is not in the 'stopped' state.", aws.ToString(in.InstanceId))
		}
		if in.EnaSupport != nil {
			i.EnaSupport = in.EnaSupport.Value
		}
		if in.SriovNetSupport != nil {
			i.SriovNetSupport = in.SriovNetSupport.Value
		}
		return &ec2.ModifyInstanceAttributeOutput{}, nil
	})
}

var fakeAMIName = regexp.MustCompile(`^[a-zA-Z0-9()\[\] ./\-'@_]{3,128}$`)

func (r *fakeRegion) imageByName(name string) *fakeImage {
	for _, img := range r.images {
		if aws.ToString(img.Name) == name && aws.ToString(img.OwnerId) == fakeAccount {
			return img
		}
	}
	return nil
}

func (f *fakeEC2) CreateImage(ctx context.Context, in *ec2.CreateImageInput, optFns ...func(*ec2.Options)) (*ec2.CreateImageOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "CreateImage", func(r *fakeRegion) (*ec2.CreateImageOutput, error) {
		inst := r.instances[aws.ToString(in.InstanceId)]
		if inst == nil {
			return nil, fakeAPIErr("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", aws.ToString(in.InstanceId))
		}
		switch inst.State.Name {
		case ec2types.InstanceStateNameRunning, ec2types.InstanceStateNameStopped:
		default:
			return nil, fakeAPIErr("IncorrectInstanceState", "Instance '%s' is not in a state from which it can be imaged (%s)", aws.ToString(inst.InstanceId), inst.State.Name)
		}
		name := aws.ToString(in.Name)
		if !fakeAMIName.MatchString(name) {
			return nil, fakeAPIErr("InvalidAMIName.Malformed", "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, '(', ')', '.', '-', '/', '_', spaces, '[', ']', '@' and '''")
		}
		if r.imageByName(name) != nil {
			return nil, fakeAPIErr("InvalidAMIName.Duplicate", "AMI name %s is already in use by AMI %s", name, aws.ToString(r.imageByName(name).ImageId))
		}
		imgTags, err := fakeSpecTags(in.TagSpecifications, ec2types.ResourceTypeImage, ec2types.ResourceTypeImage, ec2types.ResourceTypeSnapshot)
		if err != nil {
			return nil, err
		}
		snapTags, _ := fakeSpecTags(in.TagSpecifications, ec2types.ResourceTypeSnapshot, ec2types.ResourceTypeImage, ec2types.ResourceTypeSnapshot)
		src := r.images[aws.ToString(inst.ImageId)]
		id := c.nextID("ami")
		img := &fakeImage{created: c.now, until: c.now.Add(c.Delays.Image), Image: ec2types.Image{
			ImageId: aws.String(id), Name: aws.String(name), Description: in.Description, OwnerId: aws.String(c.account),
			State: ec2types.ImageStatePending, CreationDate: aws.String(fakeTime(c.now)), Tags: imgTags,
			Architecture: inst.Architecture, RootDeviceName: inst.RootDeviceName, RootDeviceType: ec2types.DeviceTypeEbs,
			VirtualizationType: ec2types.VirtualizationTypeHvm, ImageType: ec2types.ImageTypeValuesMachine,
			Hypervisor: ec2types.HypervisorTypeXen, Public: aws.Bool(false), SourceInstanceId: inst.InstanceId,
			ImageLocation: aws.String(c.account + "/" + name),
		}}
		if src != nil {
			img.EnaSupport, img.SriovNetSupport = src.EnaSupport, src.SriovNetSupport
		}
		if inst.EnaSupport != nil {
			img.EnaSupport = inst.EnaSupport
		}
		if inst.SriovNetSupport != nil {
			img.SriovNetSupport = inst.SriovNetSupport
		}
		for _, m := range inst.BlockDeviceMappings {
			vol := r.volumes[aws.ToString(m.Ebs.VolumeId)]
			if vol == nil {
				continue
			}
			sid := c.nextID("snap")
			r.snapshots[sid] = &fakeSnapshot{until: img.until, Snapshot: ec2types.Snapshot{
				SnapshotId: aws.String(sid), VolumeId: vol.VolumeId, VolumeSize: vol.Size, OwnerId: aws.String(c.account),
				State: ec2types.SnapshotStatePending, StartTime: aws.Time(c.now), Encrypted: vol.Encrypted, KmsKeyId: vol.KmsKeyId,
				Description: aws.String(fmt.Sprintf("Created by CreateImage(%s) for %s", aws.ToString(inst.InstanceId), id)),
				Tags:        snapTags, Progress: aws.String("0%"),
			}}
			img.BlockDeviceMappings = append(img.BlockDeviceMappings, ec2types.BlockDeviceMapping{
				DeviceName: m.DeviceName,
				Ebs: &ec2types.EbsBlockDevice{
					SnapshotId: aws.String(sid), VolumeSize: vol.Size, VolumeType: vol.VolumeType,
					DeleteOnTermination: m.Ebs.DeleteOnTermination, Encrypted: vol.Encrypted, Iops: vol.Iops, Throughput: vol.Throughput,
				},
			})
		}
		for _, m := range in.BlockDeviceMappings {
			i := slices.IndexFunc(img.BlockDeviceMappings, func(b ec2types.BlockDeviceMapping) bool {
				return aws.ToString(b.DeviceName) == aws.ToString(m.DeviceName)
			})
			switch {
			case m.NoDevice != nil && i >= 0:
				img.BlockDeviceMappings = slices.Delete(img.BlockDeviceMappings, i, i+1)
			case m.NoDevice != nil:
			case i >= 0 && m.Ebs != nil:
				e := img.BlockDeviceMappings[i].Ebs
				if m.Ebs.VolumeSize != nil {
					e.VolumeSize = m.Ebs.VolumeSize
				}
				if m.Ebs.VolumeType != "" {
					e.VolumeType = m.Ebs.VolumeType
				}
				if m.Ebs.DeleteOnTermination != nil {
					e.DeleteOnTermination = m.Ebs.DeleteOnTermination
				}
			default:
				img.BlockDeviceMappings = append(img.BlockDeviceMappings, m)
			}
		}
		r.images[id] = img
		c.settleLocked()
		return &ec2.CreateImageOutput{ImageId: aws.String(id)}, nil
	})
}

func (f *fakeEC2) CopyImage(ctx context.Context, in *ec2.CopyImageInput, optFns ...func(*ec2.Options)) (*ec2.CopyImageOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "CopyImage", func(r *fakeRegion) (*ec2.CopyImageOutput, error) {
		token := aws.ToString(in.ClientToken)
		if len(token) > 64 {
			return nil, fakeAPIErr("InvalidParameterValue", "client token longer than 64 characters")
		}
		if id, ok := r.tokens["CopyImage/"+token]; ok && token != "" {
			return &ec2.CopyImageOutput{ImageId: aws.String(id)}, nil
		}
		srcRegion := aws.ToString(in.SourceRegion)
		if srcRegion == "" {
			return nil, fakeAPIErr("MissingParameter", "SourceRegion is required")
		}
		sr := c.regionLocked(srcRegion)
		src := sr.images[aws.ToString(in.SourceImageId)]
		if src == nil {
			return nil, fakeAPIErr("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", aws.ToString(in.SourceImageId))
		}
		if src.State != ec2types.ImageStateAvailable {
			return nil, fakeAPIErr("IncorrectState", "Image %s is not in a valid state (%s)", aws.ToString(src.ImageId), src.State)
		}
		name := aws.ToString(in.Name)
		if !fakeAMIName.MatchString(name) {
			return nil, fakeAPIErr("InvalidAMIName.Malformed", "invalid AMI name %q", name)
		}
		if r.imageByName(name) != nil {
			return nil, fakeAPIErr("InvalidAMIName.Duplicate", "AMI name %s is already in use by AMI %s", name, aws.ToString(r.imageByName(name).ImageId))
		}
		imgTags, err := fakeSpecTags(in.TagSpecifications, ec2types.ResourceTypeImage, ec2types.ResourceTypeImage, ec2types.ResourceTypeSnapshot)
		if err != nil {
			return nil, err
		}
		snapTags, _ := fakeSpecTags(in.TagSpecifications, ec2types.ResourceTypeSnapshot, ec2types.ResourceTypeImage, ec2types.ResourceTypeSnapshot)
		if aws.ToBool(in.CopyImageTags) {
			var user []ec2types.Tag
			for _, t := range src.Tags {
				if !strings.HasPrefix(aws.ToString(t.Key), "aws:") {
					user = append(user, t)
				}
			}
			imgTags = fakeMergeTags(user, imgTags)
		}
		id := c.nextID("ami")
		desc := in.Description
		if desc == nil {
			desc = src.Description
		}
		img := &fakeImage{created: c.now, until: c.now.Add(c.Delays.Copy), Image: src.Image}
		img.ImageId, img.Name, img.Description, img.OwnerId = aws.String(id), aws.String(name), desc, aws.String(c.account)
		img.State, img.CreationDate, img.Tags, img.Public = ec2types.ImageStatePending, aws.String(fakeTime(c.now)), imgTags, aws.Bool(false)
		img.SourceImageId, img.SourceImageRegion, img.DeprecationTime = src.ImageId, aws.String(srcRegion), nil
		img.ImageOwnerAlias, img.SourceInstanceId = nil, nil
		img.BlockDeviceMappings = nil
		encrypted := aws.ToBool(in.Encrypted)
		for _, m := range src.Image.BlockDeviceMappings {
			m2 := m
			if m.Ebs != nil && m.Ebs.SnapshotId != nil {
				ss := sr.snapshots[*m.Ebs.SnapshotId]
				sid := c.nextID("snap")
				enc := encrypted || (ss != nil && aws.ToBool(ss.Encrypted))
				key := in.KmsKeyId
				if enc && key == nil {
					key = aws.String("arn:aws:kms:" + r.name + ":" + c.account + ":alias/aws/ebs")
				}
				r.snapshots[sid] = &fakeSnapshot{until: img.until, Snapshot: ec2types.Snapshot{
					SnapshotId: aws.String(sid), VolumeSize: m.Ebs.VolumeSize, OwnerId: aws.String(c.account),
					State: ec2types.SnapshotStatePending, StartTime: aws.Time(c.now), Encrypted: aws.Bool(enc), KmsKeyId: key,
					Description: aws.String(fmt.Sprintf("Copied for DestinationAmi %s from SourceAmi %s", id, aws.ToString(src.ImageId))),
					Tags:        snapTags, Progress: aws.String("0%"), VolumeId: aws.String("vol-ffffffff"),
				}}
				e := *m.Ebs
				e.SnapshotId, e.Encrypted, e.KmsKeyId = aws.String(sid), aws.Bool(enc), key
				m2.Ebs = &e
			}
			img.BlockDeviceMappings = append(img.BlockDeviceMappings, m2)
		}
		r.images[id] = img
		if token != "" {
			r.tokens["CopyImage/"+token] = id
		}
		c.settleLocked()
		return &ec2.CopyImageOutput{ImageId: aws.String(id)}, nil
	})
}

func (f *fakeEC2) DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, optFns ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "DeregisterImage", func(r *fakeRegion) (*ec2.DeregisterImageOutput, error) {
		id := aws.ToString(in.ImageId)
		img := r.images[id]
		if img == nil {
			return nil, fakeAPIErr("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
		}
		if aws.ToString(img.OwnerId) != c.account {
			return nil, fakeAPIErr("AuthFailure", "Not authorized for image:%s", id)
		}
		delete(r.images, id)
		out := &ec2.DeregisterImageOutput{Return: aws.Bool(true)}
		if aws.ToBool(in.DeleteAssociatedSnapshots) {
			for _, m := range img.BlockDeviceMappings {
				if m.Ebs == nil || m.Ebs.SnapshotId == nil {
					continue
				}
				sid := *m.Ebs.SnapshotId
				code := ec2types.SnapshotReturnCodesSuccess
				if r.snapshotInUse(sid) {
					code = ec2types.SnapshotReturnCodesWarnSkipped
				} else {
					delete(r.snapshots, sid)
				}
				out.DeleteSnapshotResults = append(out.DeleteSnapshotResults, ec2types.DeleteSnapshotReturnCode{SnapshotId: aws.String(sid), ReturnCode: code})
			}
		}
		return out, nil
	})
}

func (r *fakeRegion) snapshotInUse(sid string) bool {
	for _, img := range r.images {
		for _, m := range img.BlockDeviceMappings {
			if m.Ebs != nil && aws.ToString(m.Ebs.SnapshotId) == sid {
				return true
			}
		}
	}
	return false
}

func (f *fakeEC2) DescribeSnapshots(ctx context.Context, in *ec2.DescribeSnapshotsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "DescribeSnapshots", func(r *fakeRegion) (*ec2.DescribeSnapshotsOutput, error) {
		for _, id := range in.SnapshotIds {
			if r.snapshots[id] == nil {
				return nil, fakeAPIErr("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
			}
		}
		owners := map[string]bool{}
		for _, o := range in.OwnerIds {
			if o == "self" {
				o = c.account
			}
			owners[o] = true
		}
		out := &ec2.DescribeSnapshotsOutput{}
		for _, id := range slices.Sorted(maps.Keys(r.snapshots)) {
			s := r.snapshots[id]
			if len(in.SnapshotIds) > 0 && !slices.Contains(in.SnapshotIds, id) {
				continue
			}
			if len(owners) > 0 && !owners[aws.ToString(s.OwnerId)] {
				continue
			}
			ok, err := fakeMatch(in.Filters, map[string][]string{
				"snapshot-id": {id}, "volume-id": {aws.ToString(s.VolumeId)}, "status": {string(s.State)},
				"owner-id": {aws.ToString(s.OwnerId)}, "description": {aws.ToString(s.Description)},
				"encrypted": fakeBool(s.Encrypted), "volume-size": {strconv.Itoa(int(aws.ToInt32(s.VolumeSize)))},
			}, s.Tags)
			if err != nil {
				return nil, err
			}
			if ok {
				out.Snapshots = append(out.Snapshots, s.Snapshot)
			}
		}
		return out, nil
	})
}

// fakeAttachedTo reports whether volume v is attached to instance id.
func fakeAttachedTo(v *ec2types.Volume, id string) bool {
	return slices.ContainsFunc(v.Attachments, func(a ec2types.VolumeAttachment) bool { return aws.ToString(a.InstanceId) == id })
}

func (f *fakeEC2) DescribeVolumes(ctx context.Context, in *ec2.DescribeVolumesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "DescribeVolumes", func(r *fakeRegion) (*ec2.DescribeVolumesOutput, error) {
		for _, id := range in.VolumeIds {
			if !strings.HasPrefix(id, "vol-") {
				return nil, fakeAPIErr("InvalidVolumeID.Malformed", "Invalid id: %q", id)
			}
			if r.volumes[id] == nil {
				return nil, fakeAPIErr("InvalidVolume.NotFound", "The volume '%s' does not exist.", id)
			}
		}
		out := &ec2.DescribeVolumesOutput{}
		for _, id := range slices.Sorted(maps.Keys(r.volumes)) {
			v := r.volumes[id]
			if len(in.VolumeIds) > 0 && !slices.Contains(in.VolumeIds, id) {
				continue
			}
			fields := map[string][]string{
				"volume-id": {id}, "status": {string(v.State)}, "availability-zone": {aws.ToString(v.AvailabilityZone)},
				"volume-type": {string(v.VolumeType)}, "size": {strconv.Itoa(int(aws.ToInt32(v.Size)))},
				"snapshot-id": {aws.ToString(v.SnapshotId)}, "encrypted": fakeBool(v.Encrypted),
				"attachment.instance-id": nil, "attachment.device": nil, "attachment.status": nil, "attachment.delete-on-termination": nil,
			}
			for _, a := range v.Attachments {
				fields["attachment.instance-id"] = append(fields["attachment.instance-id"], aws.ToString(a.InstanceId))
				fields["attachment.device"] = append(fields["attachment.device"], aws.ToString(a.Device))
				fields["attachment.status"] = append(fields["attachment.status"], string(a.State))
				fields["attachment.delete-on-termination"] = append(fields["attachment.delete-on-termination"], fakeBool(a.DeleteOnTermination)...)
			}
			ok, err := fakeMatch(in.Filters, fields, v.Tags)
			if err != nil {
				return nil, err
			}
			if ok {
				cp := *v
				cp.Attachments = slices.Clone(v.Attachments)
				out.Volumes = append(out.Volumes, cp)
			}
		}
		return out, nil
	})
}

func (f *fakeEC2) DeleteVolume(ctx context.Context, in *ec2.DeleteVolumeInput, optFns ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "DeleteVolume", func(r *fakeRegion) (*ec2.DeleteVolumeOutput, error) {
		id := aws.ToString(in.VolumeId)
		v := r.volumes[id]
		if v == nil {
			return nil, fakeAPIErr("InvalidVolume.NotFound", "The volume '%s' does not exist.", id)
		}
		switch v.State {
		case ec2types.VolumeStateInUse:
			var to []string
			for _, a := range v.Attachments {
				to = append(to, aws.ToString(a.InstanceId))
			}
			return nil, fakeAPIErr("VolumeInUse", "Volume %s is currently attached to %s", id, strings.Join(to, ", "))
		case ec2types.VolumeStateAvailable, ec2types.VolumeStateError:
		default:
			return nil, fakeAPIErr("IncorrectState", "The volume '%s' is '%s'", id, v.State)
		}
		delete(r.volumes, id)
		return &ec2.DeleteVolumeOutput{}, nil
	})
}

func (f *fakeEC2) DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, optFns ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "DeleteSnapshot", func(r *fakeRegion) (*ec2.DeleteSnapshotOutput, error) {
		id := aws.ToString(in.SnapshotId)
		s := r.snapshots[id]
		if s == nil {
			return nil, fakeAPIErr("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
		}
		if aws.ToString(s.OwnerId) != c.account {
			return nil, fakeAPIErr("AuthFailure", "Not authorized for snapshot:%s", id)
		}
		if r.snapshotInUse(id) {
			return nil, fakeAPIErr("InvalidSnapshot.InUse", "The snapshot %s is currently in use by an AMI", id)
		}
		delete(r.snapshots, id)
		return &ec2.DeleteSnapshotOutput{}, nil
	})
}

func (f *fakeEC2) CreateTags(ctx context.Context, in *ec2.CreateTagsInput, optFns ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "CreateTags", func(r *fakeRegion) (*ec2.CreateTagsOutput, error) {
		if len(in.Resources) == 0 || len(in.Tags) == 0 {
			return nil, fakeAPIErr("MissingParameter", "Resources and Tags are required")
		}
		var sets []*[]ec2types.Tag
		for _, id := range in.Resources {
			var tags *[]ec2types.Tag
			notFound := ""
			switch prefix, _, _ := strings.Cut(id, "-"); prefix {
			case "i":
				if x := r.instances[id]; x != nil {
					tags = &x.Tags
				}
				notFound = "InvalidInstanceID.NotFound"
			case "ami":
				if x := r.images[id]; x != nil {
					tags = &x.Tags
				}
				notFound = "InvalidAMIID.NotFound"
			case "snap":
				if x := r.snapshots[id]; x != nil {
					tags = &x.Tags
				}
				notFound = "InvalidSnapshot.NotFound"
			case "vol":
				if x := r.volumes[id]; x != nil {
					tags = &x.Tags
				}
				notFound = "InvalidVolume.NotFound"
			case "sg":
				if x := r.groups[id]; x != nil {
					tags = &x.Tags
				}
				notFound = "InvalidGroup.NotFound"
			case "subnet":
				if x := r.subnets[id]; x != nil {
					tags = &x.Tags
				}
				notFound = "InvalidSubnetID.NotFound"
			case "vpc":
				if x := r.vpcs[id]; x != nil {
					tags = &x.Tags
				}
				notFound = "InvalidVpcID.NotFound"
			case "key":
				for _, k := range r.keys {
					if aws.ToString(k.KeyPairId) == id {
						tags = &k.Tags
					}
				}
				notFound = "InvalidKeyPair.NotFound"
			default:
				return nil, fakeAPIErr("InvalidID", "The ID '%s' is not valid", id)
			}
			if tags == nil {
				return nil, fakeAPIErr(notFound, "The ID '%s' does not exist", id)
			}
			sets = append(sets, tags)
		}
		for _, t := range sets {
			*t = fakeMergeTags(*t, in.Tags)
		}
		return &ec2.CreateTagsOutput{}, nil
	})
}

func (r *fakeRegion) ownImage(c *fakeCloud, id string) (*fakeImage, error) {
	img := r.images[id]
	if img == nil {
		return nil, fakeAPIErr("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
	}
	if aws.ToString(img.OwnerId) != c.account {
		return nil, fakeAPIErr("AuthFailure", "Not authorized for image:%s", id)
	}
	return img, nil
}

func (f *fakeEC2) ModifyImageAttribute(ctx context.Context, in *ec2.ModifyImageAttributeInput, optFns ...func(*ec2.Options)) (*ec2.ModifyImageAttributeOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "ModifyImageAttribute", func(r *fakeRegion) (*ec2.ModifyImageAttributeOutput, error) {
		img, err := r.ownImage(c, aws.ToString(in.ImageId))
		if err != nil {
			return nil, err
		}
		if in.Description != nil {
			img.Description = in.Description.Value
		}
		if in.ImdsSupport != nil {
			if aws.ToString(in.ImdsSupport.Value) != "v2.0" {
				return nil, fakeAPIErr("InvalidParameterValue", "imdsSupport can only be set to v2.0")
			}
			img.ImdsSupport = ec2types.ImdsSupportValuesV20
		}
		var add, remove []ec2types.LaunchPermission
		if lp := in.LaunchPermission; lp != nil {
			add, remove = lp.Add, lp.Remove
		}
		if in.OperationType != "" {
			var perms []ec2types.LaunchPermission
			for _, u := range in.UserIds {
				perms = append(perms, ec2types.LaunchPermission{UserId: aws.String(u)})
			}
			for _, g := range in.UserGroups {
				perms = append(perms, ec2types.LaunchPermission{Group: ec2types.PermissionGroup(g)})
			}
			for _, a := range in.OrganizationArns {
				perms = append(perms, ec2types.LaunchPermission{OrganizationArn: aws.String(a)})
			}
			for _, a := range in.OrganizationalUnitArns {
				perms = append(perms, ec2types.LaunchPermission{OrganizationalUnitArn: aws.String(a)})
			}
			if in.OperationType == ec2types.OperationTypeAdd {
				add = append(add, perms...)
			} else {
				remove = append(remove, perms...)
			}
		}
		for _, p := range add {
			if p.UserId != nil && !regexp.MustCompile(`^\d{12}$`).MatchString(*p.UserId) {
				return nil, fakeAPIErr("InvalidAMIAttributeItemValue", "Invalid attribute item value \"%s\" for userId item type.", *p.UserId)
			}
			if p.Group != "" && p.Group != ec2types.PermissionGroupAll {
				return nil, fakeAPIErr("InvalidAMIAttributeItemValue", "Invalid attribute item value \"%s\" for group item type.", p.Group)
			}
			if !slices.ContainsFunc(img.LaunchPerms, func(h ec2types.LaunchPermission) bool { return fakeSameLaunchPerm(h, p) }) {
				img.LaunchPerms = append(img.LaunchPerms, p)
			}
		}
		for _, p := range remove {
			img.LaunchPerms = slices.DeleteFunc(img.LaunchPerms, func(h ec2types.LaunchPermission) bool { return fakeSameLaunchPerm(h, p) })
		}
		img.Public = aws.Bool(slices.ContainsFunc(img.LaunchPerms, func(p ec2types.LaunchPermission) bool { return p.Group == ec2types.PermissionGroupAll }))
		return &ec2.ModifyImageAttributeOutput{}, nil
	})
}

func fakeSameLaunchPerm(a, b ec2types.LaunchPermission) bool {
	return aws.ToString(a.UserId) == aws.ToString(b.UserId) && a.Group == b.Group &&
		aws.ToString(a.OrganizationArn) == aws.ToString(b.OrganizationArn) &&
		aws.ToString(a.OrganizationalUnitArn) == aws.ToString(b.OrganizationalUnitArn)
}

func (f *fakeEC2) DescribeImageAttribute(ctx context.Context, in *ec2.DescribeImageAttributeInput, optFns ...func(*ec2.Options)) (*ec2.DescribeImageAttributeOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "DescribeImageAttribute", func(r *fakeRegion) (*ec2.DescribeImageAttributeOutput, error) {
		img, err := r.ownImage(c, aws.ToString(in.ImageId))
		if err != nil {
			return nil, err
		}
		out := &ec2.DescribeImageAttributeOutput{ImageId: img.ImageId}
		switch in.Attribute {
		case ec2types.ImageAttributeNameLaunchPermission:
			out.LaunchPermissions = slices.Clone(img.LaunchPerms)
		case ec2types.ImageAttributeNameDescription:
			out.Description = &ec2types.AttributeValue{Value: img.Description}
		case ec2types.ImageAttributeNameImdsSupport:
			out.ImdsSupport = &ec2types.AttributeValue{Value: aws.String(string(img.ImdsSupport))}
		case ec2types.ImageAttributeNameBlockDeviceMapping:
			out.BlockDeviceMappings = slices.Clone(img.BlockDeviceMappings)
		case ec2types.ImageAttributeNameSriovNetSupport:
			out.SriovNetSupport = &ec2types.AttributeValue{Value: img.SriovNetSupport}
		default:
			return nil, fakeAPIErr("InvalidParameterValue", "unsupported attribute %q", in.Attribute)
		}
		return out, nil
	})
}

func (f *fakeEC2) ModifySnapshotAttribute(ctx context.Context, in *ec2.ModifySnapshotAttributeInput, optFns ...func(*ec2.Options)) (*ec2.ModifySnapshotAttributeOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "ModifySnapshotAttribute", func(r *fakeRegion) (*ec2.ModifySnapshotAttributeOutput, error) {
		id := aws.ToString(in.SnapshotId)
		s := r.snapshots[id]
		if s == nil {
			return nil, fakeAPIErr("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
		}
		if aws.ToString(s.OwnerId) != c.account {
			return nil, fakeAPIErr("AuthFailure", "Not authorized for snapshot:%s", id)
		}
		var add, remove []ec2types.CreateVolumePermission
		if p := in.CreateVolumePermission; p != nil {
			add, remove = p.Add, p.Remove
		}
		if in.OperationType != "" {
			var perms []ec2types.CreateVolumePermission
			for _, u := range in.UserIds {
				perms = append(perms, ec2types.CreateVolumePermission{UserId: aws.String(u)})
			}
			for _, g := range in.GroupNames {
				perms = append(perms, ec2types.CreateVolumePermission{Group: ec2types.PermissionGroup(g)})
			}
			if in.OperationType == ec2types.OperationTypeAdd {
				add = append(add, perms...)
			} else {
				remove = append(remove, perms...)
			}
		}
		same := func(a, b ec2types.CreateVolumePermission) bool {
			return aws.ToString(a.UserId) == aws.ToString(b.UserId) && a.Group == b.Group
		}
		for _, p := range add {
			if aws.ToBool(s.Encrypted) && p.Group == ec2types.PermissionGroupAll {
				return nil, fakeAPIErr("InvalidParameter", "Encrypted snapshots cannot be made public")
			}
			if !slices.ContainsFunc(s.VolumePerms, func(h ec2types.CreateVolumePermission) bool { return same(h, p) }) {
				s.VolumePerms = append(s.VolumePerms, p)
			}
		}
		for _, p := range remove {
			s.VolumePerms = slices.DeleteFunc(s.VolumePerms, func(h ec2types.CreateVolumePermission) bool { return same(h, p) })
		}
		return &ec2.ModifySnapshotAttributeOutput{}, nil
	})
}

func (f *fakeEC2) EnableImageDeprecation(ctx context.Context, in *ec2.EnableImageDeprecationInput, optFns ...func(*ec2.Options)) (*ec2.EnableImageDeprecationOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "EnableImageDeprecation", func(r *fakeRegion) (*ec2.EnableImageDeprecationOutput, error) {
		img, err := r.ownImage(c, aws.ToString(in.ImageId))
		if err != nil {
			return nil, err
		}
		if in.DeprecateAt == nil {
			return nil, fakeAPIErr("MissingParameter", "DeprecateAt is required")
		}
		img.DeprecationTime = aws.String(fakeTime(in.DeprecateAt.Truncate(time.Minute)))
		return &ec2.EnableImageDeprecationOutput{Return: aws.Bool(true)}, nil
	})
}

// ---------------------------------------------------------------- SSM

// fakeSSM is an SSM client on one Region of a fakeCloud.
type fakeSSM struct {
	c      *fakeCloud
	region string
}

func (f *fakeSSM) regionOf(optFns []func(*ssm.Options)) string {
	o := ssm.Options{Region: f.region}
	for _, fn := range optFns {
		fn(&o)
	}
	return o.Region
}

var fakeParamName = regexp.MustCompile(`^[a-zA-Z0-9_.\-/]+$`)

func (f *fakeSSM) PutParameter(ctx context.Context, in *ssm.PutParameterInput, optFns ...func(*ssm.Options)) (*ssm.PutParameterOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.regionOf(optFns), "PutParameter", func(r *fakeRegion) (*ssm.PutParameterOutput, error) {
		name := aws.ToString(in.Name)
		if !fakeParamName.MatchString(name) || len(name) > 2048 || (strings.Contains(name, "/") && !strings.HasPrefix(name, "/")) {
			return nil, fakeAPIErr("ValidationException", "Parameter name %q: must be fully qualified", name)
		}
		if in.Value == nil {
			return nil, fakeAPIErr("ValidationException", "Value is required")
		}
		overwrite := aws.ToBool(in.Overwrite)
		if overwrite && len(in.Tags) > 0 {
			return nil, fakeAPIErr("ValidationException", "Invalid request: tags and overwrite can't be used together. To create a parameter with tags, please remove overwrite flag. To update tags for an existing parameter, please use AddTagsToResource or RemoveTagsFromResource.")
		}
		old := r.params[name]
		if old != nil && !overwrite {
			return nil, fakeAPIErr("ParameterAlreadyExists", "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.")
		}
		typ := in.Type
		if typ == "" {
			if old == nil {
				return nil, fakeAPIErr("ValidationException", "Type is required for a new parameter")
			}
			typ = old.Type
		}
		if len(*in.Value) > 4096 && in.Tier != ssmtypes.ParameterTierAdvanced {
			return nil, fakeAPIErr("ValidationException", "Standard parameter values are limited to 4096 characters")
		}
		p := &fakeParam{Parameter: ssmtypes.Parameter{
			Name: aws.String(name), Value: in.Value, Type: typ, Version: 1, LastModifiedDate: aws.Time(c.now),
			DataType: aws.String("text"), ARN: aws.String("arn:aws:ssm:" + r.name + ":" + c.account + ":parameter/" + strings.TrimPrefix(name, "/")),
		}, Tags: map[string]string{}}
		if typ == ssmtypes.ParameterTypeSecureString {
			p.KeyID = aws.ToString(in.KeyId)
			if p.KeyID == "" {
				p.KeyID = "alias/aws/ssm"
			}
		}
		if old != nil {
			p.Version = old.Version + 1
			p.Tags = old.Tags
		}
		for _, t := range in.Tags {
			p.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
		r.params[name] = p
		return &ssm.PutParameterOutput{Version: p.Version, Tier: ssmtypes.ParameterTierStandard}, nil
	})
}

func (p *fakeParam) view(decrypt bool) ssmtypes.Parameter {
	out := p.Parameter
	if p.Type == ssmtypes.ParameterTypeSecureString && !decrypt {
		out.Value = aws.String("AQICAHkiln" + base64.StdEncoding.EncodeToString([]byte(aws.ToString(p.Value)))[:8])
	}
	return out
}

func (f *fakeSSM) GetParameter(ctx context.Context, in *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "GetParameter", func(r *fakeRegion) (*ssm.GetParameterOutput, error) {
		p := r.params[aws.ToString(in.Name)]
		if p == nil {
			return nil, fakeAPIErr("ParameterNotFound", "parameter %s not found", aws.ToString(in.Name))
		}
		v := p.view(aws.ToBool(in.WithDecryption))
		return &ssm.GetParameterOutput{Parameter: &v}, nil
	})
}

func (f *fakeSSM) DeleteParameter(ctx context.Context, in *ssm.DeleteParameterInput, optFns ...func(*ssm.Options)) (*ssm.DeleteParameterOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "DeleteParameter", func(r *fakeRegion) (*ssm.DeleteParameterOutput, error) {
		name := aws.ToString(in.Name)
		if r.params[name] == nil {
			return nil, fakeAPIErr("ParameterNotFound", "parameter %s not found", name)
		}
		delete(r.params, name)
		return &ssm.DeleteParameterOutput{}, nil
	})
}

func (f *fakeSSM) GetParametersByPath(ctx context.Context, in *ssm.GetParametersByPathInput, optFns ...func(*ssm.Options)) (*ssm.GetParametersByPathOutput, error) {
	return fakeDo(ctx, f.c, f.regionOf(optFns), "GetParametersByPath", func(r *fakeRegion) (*ssm.GetParametersByPathOutput, error) {
		path := aws.ToString(in.Path)
		if !strings.HasPrefix(path, "/") {
			return nil, fakeAPIErr("ValidationException", "path must start with /")
		}
		prefix := strings.TrimSuffix(path, "/") + "/"
		var names []string
		for _, name := range slices.Sorted(maps.Keys(r.params)) {
			rest, ok := strings.CutPrefix(name, prefix)
			if !ok || (!aws.ToBool(in.Recursive) && strings.Contains(rest, "/")) {
				continue
			}
			names = append(names, name)
		}
		start := 0
		if in.NextToken != nil {
			n, err := strconv.Atoi(*in.NextToken)
			if err != nil {
				return nil, fakeAPIErr("ValidationException", "invalid next token")
			}
			start = n
		}
		limit := int(aws.ToInt32(in.MaxResults))
		if limit <= 0 || limit > 10 {
			limit = 10
		}
		out := &ssm.GetParametersByPathOutput{}
		end := min(start+limit, len(names))
		for _, name := range names[min(start, end):end] {
			out.Parameters = append(out.Parameters, r.params[name].view(aws.ToBool(in.WithDecryption)))
		}
		if end < len(names) {
			out.NextToken = aws.String(strconv.Itoa(end))
		}
		return out, nil
	})
}

// ---------------------------------------------------------------- S3

// fakeS3 is an S3 client on the fakeCloud's buckets.
type fakeS3 struct{ c *fakeCloud }

func (c *fakeCloud) bucketLocked(name string) (*fakeBucket, error) {
	b := c.buckets[name]
	if b == nil {
		return nil, fakeAPIErr("NoSuchBucket", "The specified bucket does not exist: %s", name)
	}
	return b, nil
}

func (f *fakeS3) GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	c := f.c
	return fakeDo(ctx, c, "", "GetObject", func(*fakeRegion) (*s3.GetObjectOutput, error) {
		b, err := c.bucketLocked(aws.ToString(in.Bucket))
		if err != nil {
			return nil, err
		}
		var o *fakeObject
		if in.VersionId != nil {
			o = b.versions[*in.VersionId]
			if o == nil || o.Key != aws.ToString(in.Key) {
				return nil, fakeAPIErr("NoSuchVersion", "The specified version does not exist.")
			}
		} else if o = b.current[aws.ToString(in.Key)]; o == nil {
			return nil, fakeAPIErr("NoSuchKey", "The specified key does not exist.")
		}
		return &s3.GetObjectOutput{
			Body: io.NopCloser(bytes.NewReader(o.Body)), ContentLength: aws.Int64(int64(len(o.Body))),
			VersionId: aws.String(o.Version), ETag: aws.String(`"` + o.Version + `"`), LastModified: aws.Time(o.Modified),
			ContentType: aws.String(o.ContentType),
		}, nil
	})
}

func (f *fakeS3) PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	c := f.c
	var body []byte
	if in.Body != nil {
		var err error
		if body, err = io.ReadAll(in.Body); err != nil {
			return nil, fmt.Errorf("fake s3: read body: %w", err)
		}
	}
	return fakeDo(ctx, c, "", "PutObject", func(*fakeRegion) (*s3.PutObjectOutput, error) {
		b, err := c.bucketLocked(aws.ToString(in.Bucket))
		if err != nil {
			return nil, err
		}
		// A conditional write (If-None-Match: *) fails if the key exists.
		if aws.ToString(in.IfNoneMatch) == "*" && b.current[aws.ToString(in.Key)] != nil {
			return nil, fakeAPIErr("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
		}
		v := c.putObjectLocked(b, aws.ToString(in.Key), body, aws.ToString(in.ContentType))
		return &s3.PutObjectOutput{VersionId: aws.String(v), ETag: aws.String(`"` + v + `"`)}, nil
	})
}

// DeleteObject succeeds for a missing key, as on S3.
func (f *fakeS3) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	c := f.c
	return fakeDo(ctx, c, "", "DeleteObject", func(*fakeRegion) (*s3.DeleteObjectOutput, error) {
		b, err := c.bucketLocked(aws.ToString(in.Bucket))
		if err != nil {
			return nil, err
		}
		delete(b.current, aws.ToString(in.Key))
		return &s3.DeleteObjectOutput{}, nil
	})
}

func (f *fakeS3) DeleteObjects(ctx context.Context, in *s3.DeleteObjectsInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectsOutput, error) {
	c := f.c
	return fakeDo(ctx, c, "", "DeleteObjects", func(*fakeRegion) (*s3.DeleteObjectsOutput, error) {
		b, err := c.bucketLocked(aws.ToString(in.Bucket))
		if err != nil {
			return nil, err
		}
		if in.Delete == nil || len(in.Delete.Objects) == 0 || len(in.Delete.Objects) > 1000 {
			return nil, fakeAPIErr("MalformedXML", "between 1 and 1000 objects per DeleteObjects")
		}
		out := &s3.DeleteObjectsOutput{}
		for _, o := range in.Delete.Objects {
			delete(b.current, aws.ToString(o.Key))
			if !aws.ToBool(in.Delete.Quiet) {
				out.Deleted = append(out.Deleted, s3types.DeletedObject{Key: o.Key})
			}
		}
		return out, nil
	})
}

func (f *fakeS3) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	c := f.c
	return fakeDo(ctx, c, "", "ListObjectsV2", func(*fakeRegion) (*s3.ListObjectsV2Output, error) {
		b, err := c.bucketLocked(aws.ToString(in.Bucket))
		if err != nil {
			return nil, err
		}
		after := aws.ToString(in.StartAfter)
		if in.ContinuationToken != nil {
			after = *in.ContinuationToken
		}
		limit := int(aws.ToInt32(in.MaxKeys))
		if limit <= 0 || limit > 1000 {
			limit = 1000
		}
		out := &s3.ListObjectsV2Output{Name: in.Bucket, Prefix: in.Prefix}
		prefixes := map[string]bool{}
		for _, key := range slices.Sorted(maps.Keys(b.current)) {
			if !strings.HasPrefix(key, aws.ToString(in.Prefix)) || key <= after {
				continue
			}
			if len(out.Contents)+len(prefixes) == limit {
				out.IsTruncated = aws.Bool(true)
				out.NextContinuationToken = aws.String(after)
				break
			}
			if d := aws.ToString(in.Delimiter); d != "" {
				rest := strings.TrimPrefix(key, aws.ToString(in.Prefix))
				if i := strings.Index(rest, d); i >= 0 {
					p := aws.ToString(in.Prefix) + rest[:i+len(d)]
					if !prefixes[p] {
						prefixes[p] = true
						out.CommonPrefixes = append(out.CommonPrefixes, s3types.CommonPrefix{Prefix: aws.String(p)})
					}
					after = key
					continue
				}
			}
			o := b.current[key]
			out.Contents = append(out.Contents, s3types.Object{
				Key: aws.String(key), Size: aws.Int64(int64(len(o.Body))), ETag: aws.String(`"` + o.Version + `"`), LastModified: aws.Time(o.Modified),
			})
			after = key
		}
		out.KeyCount = aws.Int32(int32(len(out.Contents) + len(out.CommonPrefixes)))
		if out.IsTruncated == nil {
			out.IsTruncated = aws.Bool(false)
		}
		return out, nil
	})
}

// ---------------------------------------------------------------- EventBridge

// fakeEvents is an EventBridge client of a fakeCloud.
type fakeEvents struct {
	c      *fakeCloud
	region string
}

func (f *fakeEvents) PutEvents(ctx context.Context, in *eventbridge.PutEventsInput, optFns ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error) {
	c := f.c
	return fakeDo(ctx, c, f.region, "PutEvents", func(*fakeRegion) (*eventbridge.PutEventsOutput, error) {
		if len(in.Entries) == 0 || len(in.Entries) > 10 {
			return nil, fakeAPIErr("ValidationException", "between 1 and 10 entries per PutEvents")
		}
		out := &eventbridge.PutEventsOutput{}
		for _, e := range in.Entries {
			if aws.ToString(e.Source) == "" || aws.ToString(e.DetailType) == "" || !json.Valid([]byte(aws.ToString(e.Detail))) {
				out.FailedEntryCount++
				out.Entries = append(out.Entries, ebtypes.PutEventsResultEntry{ErrorCode: aws.String("MalformedDetail"), ErrorMessage: aws.String("Detail, Source and DetailType are required; Detail must be JSON")})
				continue
			}
			c.events = append(c.events, e)
			out.Entries = append(out.Entries, ebtypes.PutEventsResultEntry{EventId: aws.String(c.nextID("event"))})
		}
		return out, nil
	})
}

// TestFakeCloudSemantics pins the AWS behaviours of the fake that the
// stages' tests rely on.
func TestFakeCloudSemantics(t *testing.T) {
	ctx := context.Background()
	c := newFakeCloud(t)
	const region = "eu-west-1"
	e := c.EC2("us-east-1")
	in := func(o *ec2.Options) { o.Region = region } // per-call Region
	base := c.AddImage(region, fakeImageSpec{Name: "base", Owner: "137112412989", OwnerAlias: "amazon", Public: true})
	_, subnets := c.DefaultVPC(region)

	tags := []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: fakeTags(map[string]string{TagBuild: "b1"})}}
	run := func(token string) string {
		t.Helper()
		out, err := e.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(base), InstanceType: "t3.micro", MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			ClientToken: aws.String(token), SubnetId: aws.String(subnets[0]), TagSpecifications: tags}, in)
		if err != nil {
			t.Fatalf("RunInstances: %v", err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	id := run("tok")
	if again := run("tok"); again != id {
		t.Errorf("RunInstances with the same ClientToken: %s then %s", id, again)
	}
	if other := run("tok2"); other == id {
		t.Errorf("RunInstances with another token returned the same instance")
	}
	if n := len(c.Instances("us-east-1")); n != 0 {
		t.Errorf("the per-call Region was ignored: %d instances in us-east-1", n)
	}

	// Tag filters, unknown filters, NotFound codes.
	out, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String("tag:" + TagBuild), Values: []string{"b*"}}}}, in)
	if err != nil || len(out.Reservations) != 2 {
		t.Errorf("DescribeInstances(tag:kiln:build=b*) = %d reservations, %v; want 2", len(out.Reservations), err)
	}
	if _, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String("tags:x"), Values: []string{"y"}}}}, in); AWSCode(err) != "InvalidParameterValue" {
		t.Errorf("DescribeInstances(unknown filter) = %v, want InvalidParameterValue", err)
	}
	if _, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-404"}}, in); !IsNotFound(err) || AWSCode(err) != "InvalidInstanceID.NotFound" {
		t.Errorf("DescribeInstances(i-404) = %v, want InvalidInstanceID.NotFound", err)
	}

	// Clock-driven states, duplicate names, DependencyViolation.
	if i, _ := c.Instance(region, id); i.State.Name != ec2types.InstanceStateNamePending {
		t.Errorf("new instance is %s, want pending", i.State.Name)
	}
	if _, err := e.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("img")}, in); AWSCode(err) != "IncorrectInstanceState" {
		t.Errorf("CreateImage(pending) = %v, want IncorrectInstanceState", err)
	}
	c.Advance(30 * time.Second)
	if i, _ := c.Instance(region, id); i.State.Name != ec2types.InstanceStateNameRunning {
		t.Errorf("instance after 30 s is %s, want running", i.State.Name)
	}
	img, err := e.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("img")}, in)
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	if _, err := e.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("img")}, in); AWSCode(err) != "InvalidAMIName.Duplicate" {
		t.Errorf("CreateImage(same name) = %v, want InvalidAMIName.Duplicate", err)
	}
	copyIn := &ec2.CopyImageInput{SourceImageId: img.ImageId, SourceRegion: aws.String(region), Name: aws.String("img"), ClientToken: aws.String("c1")}
	if _, err := c.EC2("us-east-1").CopyImage(ctx, copyIn); AWSCode(err) != "IncorrectState" {
		t.Errorf("CopyImage(pending source) = %v, want IncorrectState", err)
	}
	c.Advance(2 * time.Minute)
	cp1, err := c.EC2("us-east-1").CopyImage(ctx, copyIn)
	if err != nil {
		t.Fatalf("CopyImage: %v", err)
	}
	cp2, _ := c.EC2("us-east-1").CopyImage(ctx, copyIn)
	if aws.ToString(cp1.ImageId) != aws.ToString(cp2.ImageId) || len(c.Images("us-east-1")) != 1 {
		t.Errorf("CopyImage with the same ClientToken made two copies")
	}
	sg, _ := e.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("g"), Description: aws.String("g")}, in)
	id3, err := e.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(base), InstanceType: "t3.micro", MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SecurityGroupIds: []string{aws.ToString(sg.GroupId)}}, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: sg.GroupId}, in); AWSCode(err) != "DependencyViolation" {
		t.Errorf("DeleteSecurityGroup(in use) = %v, want DependencyViolation", err)
	}
	e.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{aws.ToString(id3.Instances[0].InstanceId)}}, in)
	c.Advance(time.Minute)
	if _, err := e.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: sg.GroupId}, in); err != nil {
		t.Errorf("DeleteSecurityGroup(after termination) = %v", err)
	}

	// A volume kept on termination: in use, then available and deletable.
	volTags := []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: fakeTags(map[string]string{TagBuild: "b2"})}}
	id4, err := e.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(base), InstanceType: "t3.micro", MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		TagSpecifications: volTags, BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvdb"),
			Ebs: &ec2types.EbsBlockDevice{VolumeSize: aws.Int32(10), DeleteOnTermination: aws.Bool(false)}}}}, in)
	if err != nil {
		t.Fatal(err)
	}
	i4 := aws.ToString(id4.Instances[0].InstanceId)
	kept := func(status string) []ec2types.Volume {
		t.Helper()
		out, err := e.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{
			{Name: aws.String("tag:" + TagBuild), Values: []string{"b2"}}, {Name: aws.String("attachment.delete-on-termination"), Values: []string{"false"}},
			{Name: aws.String("status"), Values: []string{status}}}}, in)
		if err != nil {
			t.Fatalf("DescribeVolumes: %v", err)
		}
		return out.Volumes
	}
	vols := kept("in-use")
	if len(vols) != 1 || aws.ToString(vols[0].Attachments[0].InstanceId) != i4 {
		t.Fatalf("DescribeVolumes(kept, in-use) = %+v, want the volume of %s", vols, i4)
	}
	vol := vols[0].VolumeId
	if _, err := e.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: vol}, in); AWSCode(err) != "VolumeInUse" {
		t.Errorf("DeleteVolume(in use) = %v, want VolumeInUse", err)
	}
	e.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{i4}}, in)
	c.Advance(time.Minute)
	out4, err := e.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{aws.ToString(vol)}}, in)
	if err != nil || len(out4.Volumes) != 1 || out4.Volumes[0].State != ec2types.VolumeStateAvailable || len(out4.Volumes[0].Attachments) != 0 {
		t.Fatalf("DescribeVolumes(%s) after termination = %+v, %v; want it available, detached", aws.ToString(vol), out4, err)
	}
	if _, err := e.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: vol}, in); err != nil {
		t.Errorf("DeleteVolume(available) = %v", err)
	}
	if _, err := e.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{aws.ToString(vol)}}, in); AWSCode(err) != "InvalidVolume.NotFound" || !IsNotFound(err) {
		t.Errorf("DescribeVolumes(deleted) = %v, want InvalidVolume.NotFound", err)
	}
	if _, err := e.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: vol}, in); AWSCode(err) != "InvalidVolume.NotFound" {
		t.Errorf("DeleteVolume(deleted) = %v, want InvalidVolume.NotFound", err)
	}

	// Owners and SSM tag/overwrite rule.
	own, _ := e.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}}, in)
	amazon, _ := e.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}}, in)
	if len(own.Images) != 1 || len(amazon.Images) != 1 || aws.ToString(amazon.Images[0].ImageId) != base {
		t.Errorf("DescribeImages owners: self %d, amazon %d; want 1 and 1", len(own.Images), len(amazon.Images))
	}
	s := c.SSM(region)
	_, err = s.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/a"), Value: aws.String("x"), Type: ssmtypes.ParameterTypeString,
		Overwrite: aws.Bool(true), Tags: []ssmtypes.Tag{{Key: aws.String("k"), Value: aws.String("v")}}})
	if AWSCode(err) != "ValidationException" {
		t.Errorf("PutParameter(tags and overwrite) = %v, want ValidationException", err)
	}

	// Failure injection, before and after the call.
	c.Fail(fakeFault{Action: "CreateSecurityGroup", Code: "RequestLimitExceeded"})
	if _, err := e.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("h"), Description: aws.String("h")}, in); !IsThrottle(err) {
		t.Errorf("injected fault: %v", err)
	}
	c.Fail(fakeFault{Action: "CreateSecurityGroup", After: true})
	if _, err := e.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("h"), Description: aws.String("h")}, in); AWSCode(err) != "InternalError" {
		t.Errorf("injected fault after the call: %v", err)
	}
	if _, err := e.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("h"), Description: aws.String("h")}, in); AWSCode(err) != "InvalidGroup.Duplicate" {
		t.Errorf("CreateSecurityGroup after a lost response = %v, want InvalidGroup.Duplicate (it took effect)", err)
	}
}
