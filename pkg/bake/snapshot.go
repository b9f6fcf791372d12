package bake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// snapshotAPI is the part of EC2 the snapshot stage uses, in the build
// Region.
type snapshotAPI interface {
	StopInstances(ctx context.Context, in *ec2.StopInstancesInput, optFns ...func(*ec2.Options)) (*ec2.StopInstancesOutput, error)
	ec2.DescribeInstancesAPIClient
	ModifyInstanceAttribute(ctx context.Context, in *ec2.ModifyInstanceAttributeInput, optFns ...func(*ec2.Options)) (*ec2.ModifyInstanceAttributeOutput, error)
	CreateImage(ctx context.Context, in *ec2.CreateImageInput, optFns ...func(*ec2.Options)) (*ec2.CreateImageOutput, error)
	ec2.DescribeImagesAPIClient
	CopyImage(ctx context.Context, in *ec2.CopyImageInput, optFns ...func(*ec2.Options)) (*ec2.CopyImageOutput, error)
	CreateTags(ctx context.Context, in *ec2.CreateTagsInput, optFns ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	ModifyImageAttribute(ctx context.Context, in *ec2.ModifyImageAttributeInput, optFns ...func(*ec2.Options)) (*ec2.ModifyImageAttributeOutput, error)
	EnableImageDeprecation(ctx context.Context, in *ec2.EnableImageDeprecationInput, optFns ...func(*ec2.Options)) (*ec2.EnableImageDeprecationOutput, error)
	DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, optFns ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, optFns ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// Default bounds of the snapshot and distribute stages' readiness waits.
// The state machine does the waiting, so a bound costs only state
// transitions; they are generous because large images take long (Packer's
// 30-minute AMI wait is a common complaint).
const (
	// DefaultStopTimeout bounds the wait for the instance to stop.
	DefaultStopTimeout = 20 * time.Minute
	// DefaultImageTimeout bounds the wait for an image (and the encrypted
	// copy of it) to become available.
	DefaultImageTimeout = 2 * time.Hour
	// DefaultCopyTimeout bounds the wait for the copies to other Regions.
	DefaultCopyTimeout = 6 * time.Hour
)

// imageNotFoundGrace is how long a new image may be missing from
// DescribeImages before kiln believes it is gone: EC2's API is eventually
// consistent, and an image (or copy) just created can be unknown for a
// while (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html).
const imageNotFoundGrace = 10 * time.Minute

// Snapshot is the snapshot stage: it stops the build instance and makes the
// AMI from it, as Packer's amazon-ebs builder does after provisioning.
//
// Its actions, in the order the state machine runs them:
//
//   - "stop" stops the instance;
//   - "check-stopped" says whether it has stopped;
//   - "create" creates the image (create-if-absent under its deterministic
//     name);
//   - "check" says whether the image is available, and once it is, tags its
//     snapshots, sets imds_support and deprecate_at, and with encrypt_boot
//     makes the encrypted copy and waits for it too.
type Snapshot struct {
	// EC2 is the EC2 client of the build Region.
	EC2 snapshotAPI
	// S3 reads the stored plan.
	S3 objectGetter
	// Config is the deployment's settings; Config.Expect sets the polling.
	Config Config
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// StopTimeout and ImageTimeout bound the readiness waits; zero means
	// DefaultStopTimeout and DefaultImageTimeout.
	StopTimeout, ImageTimeout time.Duration
	// Emulator says that EC2 is an emulator (local mode, tests), not AWS.
	// It only relaxes one thing: an emulator that answers EnableImageDeprecation
	// with "not implemented" (moto does) gets a logged warning instead of a
	// failed bake. Against AWS it must be false, so that every failure counts.
	Emulator bool
}

// Actions returns the snapshot stage's actions for Handler.
func (s *Snapshot) Actions() map[string]Action {
	return map[string]Action{
		"stop":          func(ctx context.Context, ev Event) (State, error) { return s.Stop(ctx, ev.State) },
		"check-stopped": func(ctx context.Context, ev Event) (State, error) { return s.CheckStopped(ctx, ev.State) },
		"create":        func(ctx context.Context, ev Event) (State, error) { return s.Create(ctx, ev.State) },
		"check":         func(ctx context.Context, ev Event) (State, error) { return s.Check(ctx, ev.State) },
	}
}

func (s *Snapshot) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Stop stops the build instance (st.Launch.InstanceID). An instance that is
// already stopping or stopped is fine, so Stop can run any number of times.
// It records when stopping began (st.Image.StopAt, kept on a rerun) and
// returns a not-ready Wait.
func (s *Snapshot) Stop(ctx context.Context, st State) (State, error) {
	id, err := launchedInstance(st)
	if err != nil {
		return st, err
	}
	if _, err := s.EC2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		return st, fmt.Errorf("stop instance %s: %w", id, err)
	}
	img := Image{}
	if st.Image != nil {
		img = *st.Image
	}
	if img.StopAt.IsZero() {
		img.StopAt = s.now()
	}
	st.Image = &img
	elapsed := s.now().Sub(img.StopAt)
	st.Wait = notReady("instance "+id+" stopped", 0, elapsed, expectFor(st, s.Config).Stopped)
	Logger(ctx).Info("stopping instance", "instance", id)
	return st, nil
}

// CheckStopped says whether the build instance has stopped: st.Wait is
// ready once it has, and otherwise says when to check again. It fails when
// the instance is gone or terminating, and with a WaitTimeoutError when it
// has not stopped within StopTimeout of Stop.
func (s *Snapshot) CheckStopped(ctx context.Context, st State) (State, error) {
	id, err := launchedInstance(st)
	if err != nil {
		return st, err
	}
	what := "instance " + id + " stopped"
	out, err := s.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return st, fmt.Errorf("describe instance %s: %w", id, err)
	}
	var inst *ec2types.Instance
	for _, r := range out.Reservations {
		for i := range r.Instances {
			if aws.ToString(r.Instances[i].InstanceId) == id {
				inst = &r.Instances[i]
			}
		}
	}
	if inst == nil || inst.State == nil {
		return st, fmt.Errorf("describe instance %s: not found", id)
	}
	polls := pollsSoFar(st)
	var stopAt time.Time
	if st.Image != nil {
		stopAt = st.Image.StopAt
	}
	elapsed := time.Duration(0)
	if !stopAt.IsZero() {
		elapsed = s.now().Sub(stopAt)
	}
	switch inst.State.Name {
	case ec2types.InstanceStateNameStopped:
		st = tookFor(st, func(t *Timings) { t.Stopped = elapsed })
		st.Wait = ready(what, polls)
		return st, nil
	case ec2types.InstanceStateNameStopping, ec2types.InstanceStateNamePending, ec2types.InstanceStateNameRunning:
		// pending and running: a stop that EC2 has not started acting on yet.
		w, err := notReadyWithin(what, polls, elapsed, expectFor(st, s.Config).Stopped, orDefault(s.StopTimeout, DefaultStopTimeout))
		if err != nil {
			return st, err
		}
		st.Wait = w
		return st, nil
	}
	return st, fmt.Errorf("instance %s is %s%s: it cannot become an image", id, inst.State.Name, stateReasonSuffix(inst.StateReason))
}

// Create makes the AMI from the stopped instance, create-if-absent: the
// image's name is the plan's ami_name (rendered once per build), and an
// image of that name that carries this build's kiln:build tag is reused, so
// a retried Create never makes a second AMI (CreateImage takes no client
// token; moto even accepts duplicate names). An image of that name that is
// not this build's is deregistered with force_deregister (its snapshots too
// with force_delete_snapshot) and is an error otherwise.
//
// With encrypt_boot, Create makes an unencrypted intermediate image named
// after the build (st.Image.Intermediate); Check then makes the encrypted
// copy under ami_name. Create sets ena_support and sriov_support on the
// stopped instance before imaging it (they are instance attributes that
// CreateImage captures, as in Packer), tags the image at creation, and sets
// st.Image (Name, ID or Intermediate, CreatedAt) and a not-ready Wait.
func (s *Snapshot) Create(ctx context.Context, st State) (State, error) {
	id, err := launchedInstance(st)
	if err != nil {
		return st, err
	}
	if st.BuildID == "" {
		return st, errors.New("create image: state has no build ID")
	}
	_, b, err := fetchPlan(ctx, s.S3, st.Plan)
	if err != nil {
		return st, err
	}
	src := b.Source
	name := src.AMIName
	if name == "" {
		return st, errors.New("create image: the recipe has no ami_name")
	}
	encrypt := encryptsBoot(st, b)
	createName := name
	if encrypt {
		createName = intermediateImageName(st.BuildID)
	}

	ours, others, err := findNamedImages(ctx, s.EC2, st.BuildID, name, createName)
	if err != nil {
		return st, err
	}
	if err := clearNameConflicts(ctx, s.EC2, others, src, buildRegion(st, b)); err != nil {
		return st, err
	}

	img := Image{}
	if st.Image != nil {
		img = *st.Image
	}
	img.Name = name

	var imageID string
	if existing, ok := ours[createName]; ok {
		imageID = aws.ToString(existing.ImageId)
		Logger(ctx).Info("reusing image this build already made", "image", imageID, "name", createName)
		if t, err := time.Parse(time.RFC3339, aws.ToString(existing.CreationDate)); err == nil && img.CreatedAt.IsZero() {
			img.CreatedAt = t.UTC()
		}
	} else {
		if err := s.setNetworking(ctx, id, src); err != nil {
			return st, err
		}
		in := &ec2.CreateImageInput{
			InstanceId:          aws.String(id),
			Name:                aws.String(createName),
			BlockDeviceMappings: amiBlockDevices(src.AMIBlockDeviceMappings),
			// Tag the image at creation so that a failure right after
			// CreateImage cannot lose it (cleanup finds it by tag). Its
			// snapshots are tagged by Check, from the image's block device
			// mappings: moto answers 500 to a snapshot TagSpecification.
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: bakedImageTags(st, b)}},
		}
		if src.AMIDescription != "" {
			in.Description = aws.String(src.AMIDescription)
		}
		out, err := s.EC2.CreateImage(ctx, in)
		if AWSCode(err) == "InvalidAMIName.Duplicate" {
			// Someone made an image of that name since we looked, or ours
			// is not yet visible to DescribeImages. Look once more.
			ours, _, ferr := findNamedImages(ctx, s.EC2, st.BuildID, createName)
			if ferr == nil {
				if existing, ok := ours[createName]; ok {
					out, err = &ec2.CreateImageOutput{ImageId: existing.ImageId}, nil
				}
			}
		}
		if err != nil {
			return st, fmt.Errorf("create image %q from %s: %w", createName, id, err)
		}
		imageID = aws.ToString(out.ImageId)
		img.CreatedAt = s.now()
		Logger(ctx).Info("creating image", "image", imageID, "name", createName, "instance", id)
	}
	if img.CreatedAt.IsZero() {
		img.CreatedAt = s.now()
	}
	if encrypt {
		img.Intermediate = imageID
	} else {
		img.ID = imageID
	}
	img.State = string(ec2types.ImageStatePending)
	st.Image = &img
	st.Wait = notReady("image "+imageID+" available", 0, s.now().Sub(img.CreatedAt), expectFor(st, s.Config).Image)
	return st, nil
}

// setNetworking sets the enhanced-networking attributes the recipe asks for
// on the stopped instance: CreateImage copies them into the AMI
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyImageAttribute.html:
// "enable SriovNetSupport on an instance and create an AMI from the
// instance"). ena_support unset leaves the instance's value alone.
func (s *Snapshot) setNetworking(ctx context.Context, id string, src AmazonEBS) error {
	if src.SRIOVSupport {
		_, err := s.EC2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{
			InstanceId:      aws.String(id),
			SriovNetSupport: &ec2types.AttributeValue{Value: aws.String("simple")},
		})
		if err != nil {
			return fmt.Errorf("enable sriov_support on %s: %w", id, err)
		}
	}
	if src.ENASupport != nil {
		_, err := s.EC2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{
			InstanceId: aws.String(id),
			EnaSupport: &ec2types.AttributeBooleanValue{Value: aws.Bool(*src.ENASupport)},
		})
		if err != nil {
			return fmt.Errorf("set ena_support=%t on %s: %w", *src.ENASupport, id, err)
		}
	}
	return nil
}

// Check says whether the image is available. While it is pending, st.Wait
// says when to look again; an image that is not found shortly after its
// creation is taken as EC2's eventual consistency, not absence.
//
// Once available, Check tags the image's snapshots (identity tags and
// snapshot_tags), sets imds_support and deprecate_at, and records the
// snapshots in st.Image. With encrypt_boot, the available image is the
// intermediate: Check then starts the encrypted copy under ami_name (client
// token from the build ID; found by tag first), waits for it in the same
// loop, and once it is available deregisters the intermediate and deletes
// its snapshots.
//
// A failed image is an error carrying EC2's state reason; an image still
// pending after ImageTimeout is a WaitTimeoutError.
func (s *Snapshot) Check(ctx context.Context, st State) (State, error) {
	if st.Image == nil || (st.Image.ID == "" && st.Image.Intermediate == "") {
		return st, errors.New("check image: state has no image")
	}
	_, b, err := fetchPlan(ctx, s.S3, st.Plan)
	if err != nil {
		return st, err
	}
	img := *st.Image
	st.Image = &img
	polls := pollsSoFar(st)
	region := buildRegion(st, b)
	bound := orDefault(s.ImageTimeout, DefaultImageTimeout)
	elapsed := s.now().Sub(img.CreatedAt)

	if img.ID == "" {
		// encrypt_boot: waiting for the unencrypted intermediate.
		what := "image " + img.Intermediate + " available"
		image, found, err := describeOneImage(ctx, s.EC2, img.Intermediate)
		if err != nil {
			return st, err
		}
		if !found {
			return s.imageMissing(st, img.Intermediate, what, polls, elapsed, bound)
		}
		switch image.State {
		case ec2types.ImageStateAvailable:
			if err := tagImageSnapshots(ctx, s.EC2, image, ec2Tags(st, nil)); err != nil {
				return st, err
			}
			// The image proper; its encrypted copy is a copy's work.
			st = tookFor(st, func(t *Timings) { t.Image = elapsed })
			copyID, err := encryptedCopy(ctx, s.EC2, st, b, region)
			if err != nil {
				return st, err
			}
			img.ID = copyID
			img.State = string(ec2types.ImageStatePending)
			img.CreatedAt = s.now()
			st.Wait = notReady("encrypted image "+copyID+" available", polls, 0, expectFor(st, s.Config).Image)
			return st, nil
		case ec2types.ImageStatePending:
			w, err := notReadyWithin(what, polls, elapsed, expectFor(st, s.Config).Image, bound)
			if err != nil {
				return st, err
			}
			st.Wait = w
			return st, nil
		}
		return st, imageStateError(region, image)
	}

	what := "image " + img.ID + " available"
	image, found, err := describeOneImage(ctx, s.EC2, img.ID)
	if err != nil {
		return st, err
	}
	if !found {
		return s.imageMissing(st, img.ID, what, polls, elapsed, bound)
	}
	img.State = string(image.State)
	switch image.State {
	case ec2types.ImageStatePending:
		w, err := notReadyWithin(what, polls, elapsed, expectFor(st, s.Config).Image, bound)
		if err != nil {
			return st, err
		}
		st.Wait = w
		return st, nil
	case ec2types.ImageStateAvailable:
	default:
		return st, imageStateError(region, image)
	}

	if err := tagImageSnapshots(ctx, s.EC2, image, ec2Tags(st, b.Source.SnapshotTags)); err != nil {
		return st, err
	}
	if err := finishImage(ctx, s.EC2, img.ID, b.Source, s.Emulator); err != nil {
		return st, err
	}
	if img.Intermediate != "" {
		if err := removeImage(ctx, s.EC2, img.Intermediate, true); err != nil {
			return st, fmt.Errorf("remove unencrypted intermediate image: %w", err)
		}
		Logger(ctx).Info("removed unencrypted intermediate image", "image", img.Intermediate)
		img.Intermediate = ""
	}
	img.Snapshots = imageSnapshotIDs(image)
	if st.Took == nil || st.Took.Image == 0 {
		st = tookFor(st, func(t *Timings) { t.Image = elapsed })
	}
	st.Wait = ready(what, polls)
	Logger(ctx).Info("image available", "image", img.ID, "snapshots", strings.Join(img.Snapshots, ","))
	return st, nil
}

// imageMissing answers a check whose image DescribeImages does not know:
// not ready during imageNotFoundGrace after its creation (eventual
// consistency), an error after that.
func (s *Snapshot) imageMissing(st State, id, what string, polls int, elapsed, bound time.Duration) (State, error) {
	if elapsed >= min(imageNotFoundGrace, bound) {
		return st, fmt.Errorf("image %s: not found %s after it was created", id, elapsed.Round(time.Second))
	}
	st.Wait = notReady(what, polls, elapsed, expectFor(st, s.Config).Image)
	return st, nil
}

// encryptedCopy starts (or finds) the encrypted copy of the intermediate
// image, in the build Region, under ami_name, as Packer's encrypt_boot
// does. The client token makes a retried call return the same copy on AWS;
// the lookup by name and tag does the same where tokens are ignored (moto).
func encryptedCopy(ctx context.Context, api imageCopier, st State, b *Build, region string) (string, error) {
	src := b.Source
	name := src.AMIName
	ours, _, err := findNamedImages(ctx, api, st.BuildID, name)
	if err != nil {
		return "", err
	}
	if existing, ok := ours[name]; ok {
		return aws.ToString(existing.ImageId), nil
	}
	kms := src.KMSKeyID
	if kms == "" {
		kms = src.RegionKMSKeyIDs[region]
	}
	in := &ec2.CopyImageInput{
		Name:              aws.String(name),
		SourceImageId:     aws.String(st.Image.Intermediate),
		SourceRegion:      aws.String(region),
		Encrypted:         aws.Bool(true),
		ClientToken:       aws.String(clientToken(st.BuildID, "encrypt", region)),
		TagSpecifications: copyTagSpecs(st, b),
	}
	if kms != "" {
		in.KmsKeyId = aws.String(kms)
	}
	if src.AMIDescription != "" {
		in.Description = aws.String(src.AMIDescription)
	}
	out, err := api.CopyImage(ctx, in)
	if err != nil {
		return "", fmt.Errorf("copy image %s to an encrypted image %q: %w", st.Image.Intermediate, name, err)
	}
	id := aws.ToString(out.ImageId)
	if err := tagNewCopy(ctx, api, id, bakedImageTags(st, b)); err != nil {
		return "", err
	}
	Logger(ctx).Info("encrypting image", "image", id, "from", st.Image.Intermediate, "kms_key_id", kms)
	return id, nil
}

// imageCopier is what encryptedCopy and distribute's copy need.
type imageCopier interface {
	ec2.DescribeImagesAPIClient
	CopyImage(ctx context.Context, in *ec2.CopyImageInput, optFns ...func(*ec2.Options)) (*ec2.CopyImageOutput, error)
	CreateTags(ctx context.Context, in *ec2.CreateTagsInput, optFns ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

// tagNewCopy tags a copy right after CopyImage. On AWS the copy was tagged
// at creation (TagSpecifications) and this is a no-op, or fails with
// NotFound while the new image is not yet visible, which is fine for the
// same reason. moto ignores CopyImage's TagSpecifications, and there this
// call is what makes the copy findable by tag.
func tagNewCopy(ctx context.Context, api imageCopier, id string, tags []ec2types.Tag) error {
	_, err := api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: tags})
	if err != nil && !IsNotFound(err) {
		return fmt.Errorf("tag image %s: %w", id, err)
	}
	return nil
}

// copyTagSpecs tags a copy and its snapshots at creation: tags do not travel
// with CopyImage.
func copyTagSpecs(st State, b *Build) []ec2types.TagSpecification {
	return []ec2types.TagSpecification{
		{ResourceType: ec2types.ResourceTypeImage, Tags: bakedImageTags(st, b)},
		{ResourceType: ec2types.ResourceTypeSnapshot, Tags: ec2Tags(st, b.Source.SnapshotTags)},
	}
}

// imageFinisher sets an available image's attributes.
type imageFinisher interface {
	ModifyImageAttribute(ctx context.Context, in *ec2.ModifyImageAttributeInput, optFns ...func(*ec2.Options)) (*ec2.ModifyImageAttributeOutput, error)
	EnableImageDeprecation(ctx context.Context, in *ec2.EnableImageDeprecationInput, optFns ...func(*ec2.Options)) (*ec2.EnableImageDeprecationOutput, error)
}

// finishImage sets imds_support and deprecate_at on an available image.
// CreateImage and CopyImage take neither: Packer, too, sets imds_support
// with ModifyImageAttribute (ImdsSupport=v2.0, which cannot be undone, so
// setting it again is a no-op) and deprecation with EnableImageDeprecation,
// on every AMI in every Region. Both calls are idempotent.
func finishImage(ctx context.Context, api imageFinisher, id string, src AmazonEBS, emulator bool) error {
	if src.IMDSSupport != "" {
		_, err := api.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{
			ImageId:     aws.String(id),
			ImdsSupport: &ec2types.AttributeValue{Value: aws.String(src.IMDSSupport)},
		})
		if err != nil {
			return fmt.Errorf("set imds_support=%s on image %s: %w", src.IMDSSupport, id, err)
		}
	}
	if src.DeprecateAt != "" {
		at, err := time.Parse(time.RFC3339, src.DeprecateAt)
		if err != nil {
			return fmt.Errorf("deprecate image %s: deprecate_at %q: %w", id, src.DeprecateAt, err)
		}
		_, err = api.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: aws.String(id), DeprecateAt: aws.Time(at)}, noRetryOnEmulator(emulator)...)
		if err != nil {
			if emulator && emulatorLacks(err) {
				Logger(ctx).Warn("the emulator does not implement EnableImageDeprecation: deprecate_at not applied", "image", id, "deprecate_at", src.DeprecateAt, "error", err.Error())
				return nil
			}
			return fmt.Errorf("deprecate image %s at %s: %w", id, src.DeprecateAt, err)
		}
	}
	return nil
}

// emulatorLacks reports whether err is how an emulator answers an
// operation it does not implement: moto raises NotImplementedError, which
// its server turns into a bare HTML "500 Internal Server Error" (no AWS
// error code). It is only consulted when the stage has been told it talks
// to an emulator; on AWS a 5xx is a failure like any other (Transient, so
// the state machine retries it).
func emulatorLacks(err error) bool {
	if AWSCode(err) == "NotImplemented" {
		return true
	}
	resp, ok := errors.AsType[interface {
		error
		HTTPStatusCode() int
	}](err)
	return ok && resp.HTTPStatusCode() >= 500
}

// noRetryOnEmulator makes an emulator's known "not implemented" answer
// fail at once instead of after the SDK's retries.
func noRetryOnEmulator(emulator bool) []func(*ec2.Options) {
	if !emulator {
		return nil
	}
	return []func(*ec2.Options){func(o *ec2.Options) { o.RetryMaxAttempts = 1 }}
}

// imageDescriber finds images.
type imageDescriber interface {
	ec2.DescribeImagesAPIClient
}

// describeOneImage returns the image id, or found=false when EC2 does not
// know it (NotFound, or an empty answer as for a deregistered image).
func describeOneImage(ctx context.Context, api imageDescriber, id string) (ec2types.Image, bool, error) {
	out, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
	if IsNotFound(err) {
		return ec2types.Image{}, false, nil
	}
	if err != nil {
		return ec2types.Image{}, false, fmt.Errorf("describe image %s: %w", id, err)
	}
	for _, img := range out.Images {
		if aws.ToString(img.ImageId) == id {
			return img, true, nil
		}
	}
	return ec2types.Image{}, false, nil
}

// findNamedImages looks up the account's images with the given names and
// splits them into this build's (by kiln:build tag, keyed by name) and
// others. Deregistered images are left out.
func findNamedImages(ctx context.Context, api imageDescriber, buildID string, names ...string) (ours map[string]ec2types.Image, others []ec2types.Image, err error) {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	out, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners:  []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("name"), Values: names}},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("describe images named %s: %w", strings.Join(names, ", "), err)
	}
	ours = map[string]ec2types.Image{}
	for _, img := range out.Images {
		if img.State == ec2types.ImageStateDeregistered || !slices.Contains(names, aws.ToString(img.Name)) {
			continue
		}
		if imageTag(img, TagBuild) == buildID {
			name := aws.ToString(img.Name)
			// Prefer a usable image if (on an emulator) there are several.
			if prev, dup := ours[name]; !dup || prev.State == ec2types.ImageStateFailed {
				ours[name] = img
			}
			continue
		}
		others = append(others, img)
	}
	return ours, others, nil
}

// imageRemover deregisters images and deletes snapshots.
type imageRemover interface {
	ec2.DescribeImagesAPIClient
	DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, optFns ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, optFns ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// clearNameConflicts handles images (not this build's) that hold the name
// the build's AMI needs, in one Region: force_deregister deregisters them
// (and force_delete_snapshot deletes their snapshots), as Packer does;
// without it they are an error, as EC2 would answer InvalidAMIName.Duplicate
// anyway.
func clearNameConflicts(ctx context.Context, api imageRemover, conflicts []ec2types.Image, src AmazonEBS, region string) error {
	if len(conflicts) == 0 {
		return nil
	}
	if !src.ForceDeregister {
		var ids []string
		for _, img := range conflicts {
			ids = append(ids, aws.ToString(img.ImageId))
		}
		return fmt.Errorf("image %q already exists in %s (%s): set force_deregister to replace it", aws.ToString(conflicts[0].Name), region, strings.Join(ids, ", "))
	}
	for _, img := range conflicts {
		id := aws.ToString(img.ImageId)
		if _, err := api.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil && !IsNotFound(err) {
			return fmt.Errorf("force_deregister image %s (%q) in %s: %w", id, aws.ToString(img.Name), region, err)
		}
		Logger(ctx).Info("deregistered existing image (force_deregister)", "image", id, "name", aws.ToString(img.Name), "region", region)
		if !src.ForceDeleteSnapshot {
			continue
		}
		for _, snap := range imageSnapshotIDs(img) {
			if _, err := api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); err != nil && !IsNotFound(err) {
				return fmt.Errorf("force_delete_snapshot %s of image %s in %s: %w", snap, id, region, err)
			}
			Logger(ctx).Info("deleted snapshot of deregistered image (force_delete_snapshot)", "snapshot", snap, "image", id)
		}
	}
	return nil
}

// removeImage deregisters image id and, with snapshots, deletes the
// snapshots its block device mappings name. NotFound counts as done.
func removeImage(ctx context.Context, api imageRemover, id string, snapshots bool) error {
	img, found, err := describeOneImage(ctx, api, id)
	if err != nil {
		return err
	}
	if !found {
		return nil
	}
	if _, err := api.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil && !IsNotFound(err) {
		return fmt.Errorf("deregister image %s: %w", id, err)
	}
	if !snapshots {
		return nil
	}
	for _, snap := range imageSnapshotIDs(img) {
		if _, err := api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); err != nil && !IsNotFound(err) {
			return fmt.Errorf("delete snapshot %s of image %s: %w", snap, id, err)
		}
	}
	return nil
}

// snapshotTagger tags resources.
type snapshotTagger interface {
	CreateTags(ctx context.Context, in *ec2.CreateTagsInput, optFns ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

// tagImageSnapshots tags the snapshots an image's block device mappings
// name. Tags are how cleanup and people find them (moto alone lists a
// thousand snapshots per Region as the caller's own).
func tagImageSnapshots(ctx context.Context, api snapshotTagger, img ec2types.Image, tags []ec2types.Tag) error {
	snaps := imageSnapshotIDs(img)
	if len(snaps) == 0 {
		return nil
	}
	if _, err := api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: snaps, Tags: tags}); err != nil {
		return fmt.Errorf("tag snapshots %s of image %s: %w", strings.Join(snaps, ", "), aws.ToString(img.ImageId), err)
	}
	return nil
}

// imageSnapshotIDs lists the EBS snapshots of an image's block device
// mappings, in mapping order.
func imageSnapshotIDs(img ec2types.Image) []string {
	var ids []string
	for _, m := range img.BlockDeviceMappings {
		if m.Ebs != nil && aws.ToString(m.Ebs.SnapshotId) != "" {
			ids = append(ids, aws.ToString(m.Ebs.SnapshotId))
		}
	}
	return ids
}

// imageTag returns the value of an image's tag key, or "".
func imageTag(img ec2types.Image, key string) string {
	for _, t := range img.Tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// imageStateError describes an image that failed.
func imageStateError(region string, img ec2types.Image) error {
	return fmt.Errorf("image %s in %s is %s%s", aws.ToString(img.ImageId), region, img.State, stateReasonSuffix(img.StateReason))
}

func stateReasonSuffix(r *ec2types.StateReason) string {
	if r == nil || (aws.ToString(r.Code) == "" && aws.ToString(r.Message) == "") {
		return ""
	}
	if aws.ToString(r.Code) == "" {
		return ": " + aws.ToString(r.Message)
	}
	return fmt.Sprintf(": %s (%s)", aws.ToString(r.Message), aws.ToString(r.Code))
}

// bakedImageTags are the tags of every AMI a build makes (the image in the
// build Region, the encrypted copy, the copies): the recipe's tags, the
// recipe hash and the base image, and the build's identity, which wins.
func bakedImageTags(st State, b *Build) []ec2types.Tag {
	t := maps.Clone(b.Source.Tags)
	if t == nil {
		t = map[string]string{}
	}
	if st.Plan != nil && st.Plan.Hash != "" {
		t[TagRecipeHash] = st.Plan.Hash
	}
	if st.Launch != nil && st.Launch.SourceAMI != "" {
		t[TagSourceAMI] = st.Launch.SourceAMI
	}
	// Retention ages a build by when it started, the same in every Region
	// however late a copy lands.
	if !st.StartedAt.IsZero() {
		t[TagBuiltAt] = st.StartedAt.UTC().Format(time.RFC3339)
	}
	if st.Plan != nil && st.Plan.Several {
		t[TagBuildName] = st.Plan.Build
	}
	return ec2Tags(st, t)
}

// amiBlockDevices renders ami_block_device_mappings for CreateImage, as
// Packer does. Like Packer, kiln passes only these: CreateImage itself
// captures the instance's volumes (which launch_block_device_mappings made),
// and these mappings add to or override them device by device.
func amiBlockDevices(devs []BlockDevice) []ec2types.BlockDeviceMapping {
	if len(devs) == 0 {
		return nil
	}
	out := make([]ec2types.BlockDeviceMapping, 0, len(devs))
	for _, d := range devs {
		m := ec2types.BlockDeviceMapping{DeviceName: aws.String(d.DeviceName)}
		switch {
		case d.NoDevice:
			m.NoDevice = aws.String("")
		case d.VirtualName != "":
			m.VirtualName = aws.String(d.VirtualName)
		default:
			// Unset delete_on_termination is false, as in Packer.
			ebs := &ec2types.EbsBlockDevice{DeleteOnTermination: aws.Bool(d.DeleteOnTermination != nil && *d.DeleteOnTermination)}
			if d.VolumeType != "" {
				ebs.VolumeType = ec2types.VolumeType(d.VolumeType)
			}
			if d.VolumeSize > 0 {
				ebs.VolumeSize = aws.Int32(int32(d.VolumeSize))
			}
			switch d.VolumeType {
			case "io1", "io2", "gp3":
				if d.IOPS > 0 {
					ebs.Iops = aws.Int32(int32(d.IOPS))
				}
			}
			if d.VolumeType == "gp3" && d.Throughput > 0 {
				ebs.Throughput = aws.Int32(int32(d.Throughput))
			}
			if d.SnapshotID != "" {
				ebs.SnapshotId = aws.String(d.SnapshotID)
			}
			ebs.Encrypted = d.Encrypted
			if d.KMSKeyID != "" {
				ebs.KmsKeyId = aws.String(d.KMSKeyID)
			}
			m.Ebs = ebs
		}
		out = append(out, m)
	}
	return out
}

// intermediateImageName names the unencrypted image that encrypt_boot
// copies from: deterministic per build, so Create can find it again.
func intermediateImageName(buildID string) string {
	return "kiln-" + buildID + "-unencrypted"
}

// encryptsBoot reports whether the build makes an encrypted copy of its
// image (encrypt_boot).
func encryptsBoot(st State, b *Build) bool {
	if st.Plan != nil && st.Plan.Encrypt {
		return true
	}
	return b.Source.EncryptBoot != nil && *b.Source.EncryptBoot
}

// buildRegion is the Region the instance ran in and the image was made in.
func buildRegion(st State, b *Build) string {
	switch {
	case st.Plan != nil && st.Plan.Region != "":
		return st.Plan.Region
	case st.Launch != nil && st.Launch.Region != "":
		return st.Launch.Region
	case b != nil:
		return b.Source.Region
	}
	return ""
}

// clientToken derives an EC2 client token (at most 64 ASCII characters)
// from the build's identity and what the call makes, so that a retried
// call returns the first call's result.
func clientToken(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:])
}

func launchedInstance(st State) (string, error) {
	if st.Launch == nil || st.Launch.InstanceID == "" {
		return "", errors.New("state has no launched instance")
	}
	return st.Launch.InstanceID, nil
}

func pollsSoFar(st State) int {
	if st.Wait == nil {
		return 0
	}
	return st.Wait.Polls
}

// notReadyWithin is notReady, or a WaitTimeoutError once elapsed has
// reached bound.
func notReadyWithin(what string, polls int, elapsed, expected, bound time.Duration) (*Wait, error) {
	if elapsed >= bound {
		return nil, &WaitTimeoutError{For: what, After: elapsed}
	}
	return notReady(what, polls, elapsed, expected), nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
