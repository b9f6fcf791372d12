package bake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// distributeEC2API is the part of EC2 the distribute stage uses, in any
// Region.
type distributeEC2API interface {
	CopyImage(ctx context.Context, in *ec2.CopyImageInput, optFns ...func(*ec2.Options)) (*ec2.CopyImageOutput, error)
	ec2.DescribeImagesAPIClient
	CreateTags(ctx context.Context, in *ec2.CreateTagsInput, optFns ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	ModifyImageAttribute(ctx context.Context, in *ec2.ModifyImageAttributeInput, optFns ...func(*ec2.Options)) (*ec2.ModifyImageAttributeOutput, error)
	ModifySnapshotAttribute(ctx context.Context, in *ec2.ModifySnapshotAttributeInput, optFns ...func(*ec2.Options)) (*ec2.ModifySnapshotAttributeOutput, error)
	EnableImageDeprecation(ctx context.Context, in *ec2.EnableImageDeprecationInput, optFns ...func(*ec2.Options)) (*ec2.EnableImageDeprecationOutput, error)
	DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, optFns ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, optFns ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// parameterPutter publishes AMI IDs to Parameter Store.
type parameterPutter interface {
	PutParameter(ctx context.Context, in *ssm.PutParameterInput, optFns ...func(*ssm.Options)) (*ssm.PutParameterOutput, error)
}

// manifestStore reads the stored plan and reads and writes manifests.
type manifestStore interface {
	objectGetter
	objectPutter
}

// eventPutter announces baked images on EventBridge.
type eventPutter interface {
	PutEvents(ctx context.Context, in *eventbridge.PutEventsInput, optFns ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error)
}

// Event source and detail type of the event that announces a bake.
const (
	// EventSource is the source of kiln's EventBridge events.
	EventSource = "kiln"
	// EventImageBaked is the detail type of the event that announces the
	// AMIs of a finished bake.
	EventImageBaked = "kiln.image.baked"
)

// ImageBakedDetail is the detail of a kiln.image.baked event.
type ImageBakedDetail struct {
	BuildID   string `json:"build_id"`
	Recipe    string `json:"recipe"`
	Build     string `json:"build"`
	Hash      string `json:"hash"`
	SourceAMI string `json:"source_ami"`
	// Region is the build Region; Images maps every Region to its AMI ID.
	Region string            `json:"region"`
	Images map[string]string `json:"images"`
	// Parameters maps each Region to the SSM parameter holding its AMI ID.
	Parameters map[string]string `json:"parameters,omitempty"`
	// Manifest is the manifest's S3 URL.
	Manifest string `json:"manifest,omitempty"`
}

// Distribute is the distribute stage: it copies the image to the recipe's
// other Regions, waits for the copies, then shares and publishes all of
// them, as Packer's amazon-ebs builder does after creating the AMI.
//
// Its actions:
//
//   - "copy" starts the copy to one Region (one iteration of the state
//     machine's Map, Event.Region set);
//   - "check" says whether every copy is available, and tags each copy's
//     snapshots once it is;
//   - "publish" shares the images and their snapshots, sets imds_support
//     and deprecate_at on the copies, writes the SSM parameters and the
//     manifest, and puts the event.
type Distribute struct {
	// EC2 returns the EC2 client of a Region.
	EC2 func(region string) distributeEC2API
	// SSM returns the Parameter Store client of a Region.
	SSM func(region string) parameterPutter
	// S3 reads the stored plan and writes the manifest to Config.Bucket.
	S3 manifestStore
	// Events puts the kiln.image.baked event on Config.EventBus.
	Events eventPutter
	// Config is the deployment's settings.
	Config Config
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// CopyTimeout bounds the wait for the copies; zero means
	// DefaultCopyTimeout.
	CopyTimeout time.Duration
	// ManifestDir, in local mode, is the directory that the recipe's
	// manifest post-processor output paths are relative to: publish also
	// writes (appends to) the manifest there, as Packer does. Empty in
	// Lambda.
	ManifestDir string
	// Emulator says EC2 is an emulator, not AWS; see Snapshot.Emulator.
	Emulator bool
}

// Actions returns the distribute stage's actions for Handler.
func (d *Distribute) Actions() map[string]Action {
	return map[string]Action{
		"copy":    d.Copy,
		"check":   func(ctx context.Context, ev Event) (State, error) { return d.Check(ctx, ev.State) },
		"publish": func(ctx context.Context, ev Event) (State, error) { return d.Publish(ctx, ev.State) },
	}
}

func (d *Distribute) now() time.Time {
	if d.Now != nil {
		return d.Now().UTC()
	}
	return time.Now().UTC()
}

// Copy copies the build's image (st.Image.ID) from the build Region into
// ev.Region, under ami_name and ami_description, encrypted with that
// Region's region_kms_key_ids key when encrypt_boot is set. A copy this
// build already made there (found by name and kiln:build tag: moto ignores
// client tokens) is reused; the client token, derived from the build ID and
// the Region, does the same on AWS for a copy not yet visible. An image of
// that name that is not this build's is handled as in Snapshot.Create
// (force_deregister). The copy and its snapshots are tagged at creation.
//
// Copy returns st with Copies holding just this Region's copy: the state
// machine's Map collects one per Region.
func (d *Distribute) Copy(ctx context.Context, ev Event) (State, error) {
	st := ev.State
	region := ev.Region
	if region == "" {
		return st, errors.New("copy image: event has no region")
	}
	if st.Image == nil || st.Image.ID == "" {
		return st, errors.New("copy image: state has no image")
	}
	if st.BuildID == "" {
		return st, errors.New("copy image: state has no build ID")
	}
	_, b, err := fetchPlan(ctx, d.S3, st.Plan)
	if err != nil {
		return st, err
	}
	from := buildRegion(st, b)
	if region == from {
		return st, fmt.Errorf("copy image %s: %s is the build Region", st.Image.ID, region)
	}
	src := b.Source
	name := src.AMIName
	api := d.EC2(region)

	ours, others, err := findNamedImages(ctx, api, st.BuildID, name)
	if err != nil {
		return st, fmt.Errorf("copy image to %s: %w", region, err)
	}
	c := Copy{Region: region, State: string(ec2types.ImageStatePending), StartedAt: d.now()}
	if existing, ok := ours[name]; ok {
		c.ImageID = aws.ToString(existing.ImageId)
		c.State = string(existing.State)
		if t, err := time.Parse(time.RFC3339, aws.ToString(existing.CreationDate)); err == nil {
			c.StartedAt = t.UTC()
		}
		Logger(ctx).Info("reusing copy this build already made", "image", c.ImageID, "region", region)
		st.Copies = []Copy{c}
		return st, nil
	}
	if err := clearNameConflicts(ctx, api, others, src, region); err != nil {
		return st, err
	}
	in := &ec2.CopyImageInput{
		Name:              aws.String(name),
		SourceImageId:     aws.String(st.Image.ID),
		SourceRegion:      aws.String(from),
		ClientToken:       aws.String(clientToken(st.BuildID, "copy", region)),
		TagSpecifications: copyTagSpecs(st, b),
	}
	if src.AMIDescription != "" {
		in.Description = aws.String(src.AMIDescription)
	}
	if encryptsBoot(st, b) {
		// As Packer: encrypt with the Region's key, or the account's
		// default EBS key when region_kms_key_ids names none.
		in.Encrypted = aws.Bool(true)
		if k := src.RegionKMSKeyIDs[region]; k != "" {
			in.KmsKeyId = aws.String(k)
		}
	}
	out, err := api.CopyImage(ctx, in)
	if err != nil {
		return st, fmt.Errorf("copy image %s from %s to %s: %w", st.Image.ID, from, region, err)
	}
	c.ImageID = aws.ToString(out.ImageId)
	if err := tagNewCopy(ctx, api, c.ImageID, bakedImageTags(st, b)); err != nil {
		return st, fmt.Errorf("copy to %s: %w", region, err)
	}
	Logger(ctx).Info("copying image", "image", c.ImageID, "from", st.Image.ID, "region", region)
	st.Copies = []Copy{c}
	return st, nil
}

// Check says whether every copy in st.Copies (the Map's results) is
// available. Each copy that has become available gets its snapshots tagged
// (identity tags and snapshot_tags: moto tags none at creation) and
// recorded. A failed copy is an error naming its Region; copies pending
// after CopyTimeout are a WaitTimeoutError. A copy unknown to DescribeImages
// shortly after it started is EC2's eventual consistency.
func (d *Distribute) Check(ctx context.Context, st State) (State, error) {
	polls := pollsSoFar(st)
	if len(st.Copies) == 0 {
		st.Wait = ready("no copies", polls)
		return st, nil
	}
	_, b, err := fetchPlan(ctx, d.S3, st.Plan)
	if err != nil {
		return st, err
	}
	copies := slices.Clone(st.Copies)
	st.Copies = copies
	now := d.now()
	var pending []string
	var earliest time.Time
	for i := range copies {
		c := &copies[i]
		if c.ImageID == "" {
			return st, fmt.Errorf("check copy in %s: the copy has no image ID", c.Region)
		}
		if earliest.IsZero() || c.StartedAt.Before(earliest) {
			earliest = c.StartedAt
		}
		if c.State == string(ec2types.ImageStateAvailable) && len(c.Snapshots) > 0 {
			continue
		}
		api := d.EC2(c.Region)
		image, found, err := describeOneImage(ctx, api, c.ImageID)
		if err != nil {
			return st, fmt.Errorf("check copy in %s: %w", c.Region, err)
		}
		if !found {
			if age := now.Sub(c.StartedAt); age >= imageNotFoundGrace {
				return st, fmt.Errorf("copy %s in %s: not found %s after it was started", c.ImageID, c.Region, age.Round(time.Second))
			}
			pending = append(pending, c.Region)
			continue
		}
		c.State = string(image.State)
		switch image.State {
		case ec2types.ImageStatePending:
			pending = append(pending, c.Region)
		case ec2types.ImageStateAvailable:
			if err := tagImageSnapshots(ctx, api, image, ec2Tags(st, b.Source.SnapshotTags)); err != nil {
				return st, fmt.Errorf("copy in %s: %w", c.Region, err)
			}
			c.Snapshots = imageSnapshotIDs(image)
		default:
			return st, fmt.Errorf("copy to %s failed: %w", c.Region, imageStateError(c.Region, image))
		}
	}
	if len(pending) == 0 {
		if len(copies) > 0 {
			st = tookFor(st, func(t *Timings) { t.Copy = now.Sub(earliest) })
		}
		st.Wait = ready(fmt.Sprintf("%d copies available", len(copies)), polls)
		return st, nil
	}
	what := "copies available in " + strings.Join(pending, ", ")
	w, err := notReadyWithin(what, polls, now.Sub(earliest), expectFor(st, d.Config).Copy, orDefault(d.CopyTimeout, DefaultCopyTimeout))
	if err != nil {
		return st, err
	}
	st.Wait = w
	return st, nil
}

// Publish shares and announces the build's images: the build Region's
// image and every copy. For each it adds launch permissions (ami_users,
// ami_groups, ami_org_arns, ami_ou_arns) and createVolumePermission on its
// snapshots (snapshot_users, snapshot_groups); on copies it sets
// imds_support and deprecate_at (the build Region's image got them in
// snapshot's check). It then writes the manifest (Packer's format) to S3 at
// ManifestKey, and in local mode to the recipe's output path; puts each
// Region's AMI ID in an SSM parameter of that Region; and puts one
// kiln.image.baked event on Config.EventBus. It fills st.Published.
//
// Every step is idempotent, so Publish can be rerun after a failure: adding
// a permission twice is a no-op, parameters are overwritten with the same
// value, and the manifest entry of this build is replaced, not repeated.
// The event is sent at least once: a rerun that got as far as a previous
// run's PutEvents sends it again (consumers dedupe on build_id); a rerun
// whose input already records the event does not.
func (d *Distribute) Publish(ctx context.Context, st State) (State, error) {
	if st.Image == nil || st.Image.ID == "" {
		return st, errors.New("publish: state has no image")
	}
	plan, b, err := fetchPlan(ctx, d.S3, st.Plan)
	if err != nil {
		return st, err
	}
	cfg := d.Config.withDefaults()
	src := b.Source
	home := buildRegion(st, b)

	images := map[string]string{home: st.Image.ID}
	snapshots := map[string][]string{home: st.Image.Snapshots}
	for _, c := range st.Copies {
		if c.ImageID == "" {
			return st, fmt.Errorf("publish: the copy to %s has no image ID", c.Region)
		}
		images[c.Region] = c.ImageID
		snapshots[c.Region] = c.Snapshots
	}
	regions := slices.Sorted(maps.Keys(images))

	for _, region := range regions {
		api := d.EC2(region)
		id := images[region]
		snaps := snapshots[region]
		if len(snaps) == 0 {
			img, found, err := describeOneImage(ctx, api, id)
			if err != nil {
				return st, fmt.Errorf("publish: %w", err)
			}
			if !found {
				return st, fmt.Errorf("publish: image %s in %s not found", id, region)
			}
			snaps = imageSnapshotIDs(img)
		}
		if err := shareImage(ctx, api, id, region, src); err != nil {
			return st, err
		}
		if err := shareSnapshots(ctx, api, snaps, region, src); err != nil {
			return st, err
		}
		if region != home {
			if err := finishImage(ctx, api, id, src, d.Emulator); err != nil {
				return st, fmt.Errorf("publish in %s: %w", region, err)
			}
		}
	}

	pub := &Published{Images: images, Parameters: map[string]string{}}
	if st.Published != nil {
		pub.Event = st.Published.Event
	}

	// The manifest.
	entryPP := (*Manifest)(nil)
	pps := manifestPostProcessors(b)
	if len(pps) > 0 {
		entryPP = pps[0]
	}
	now := d.now()
	entry := NewManifestEntry(b, st.BuildID, images, now, entryPP)
	key := ManifestKey(st.BuildID)
	if err := d.putManifest(ctx, cfg.Bucket, key, entry); err != nil {
		return st, err
	}
	pub.Manifest = key
	if d.ManifestDir != "" {
		for _, pp := range pps {
			path, err := writeLocalManifest(d.ManifestDir, pp.Output, NewManifestEntry(b, st.BuildID, images, now, pp))
			if err != nil {
				return st, err
			}
			if pub.ManifestPath == "" {
				pub.ManifestPath = path
			}
		}
	}

	// The SSM parameters, one per Region.
	recipe := plan.Name
	if st.Plan != nil && st.Plan.Recipe != "" {
		recipe = st.Plan.Recipe
	}
	for _, region := range regions {
		name := amiParameterName(cfg.ParameterPrefix, recipe, b.Name, len(plan.Builds) > 1)
		_, err := d.SSM(region).PutParameter(ctx, &ssm.PutParameterInput{
			Name:        aws.String(name),
			Value:       aws.String(images[region]),
			Type:        ssmtypes.ParameterTypeString,
			Overwrite:   aws.Bool(true),
			DataType:    aws.String("aws:ec2:image"),
			Description: aws.String("AMI of kiln build " + st.BuildID),
		})
		if err != nil {
			return st, fmt.Errorf("put parameter %s in %s: %w", name, region, err)
		}
		pub.Parameters[region] = name
	}

	// The event, last: it announces images that are ready to use.
	if pub.Event == "" {
		detail := ImageBakedDetail{
			BuildID:    st.BuildID,
			Recipe:     recipe,
			Build:      b.Name,
			Region:     home,
			Images:     images,
			Parameters: pub.Parameters,
			Manifest:   "s3://" + cfg.Bucket + "/" + key,
		}
		if st.Plan != nil {
			detail.Hash = st.Plan.Hash
		}
		if detail.Hash == "" {
			detail.Hash = plan.Hash
		}
		if st.Launch != nil {
			detail.SourceAMI = st.Launch.SourceAMI
		}
		eventID, err := d.putEvent(ctx, cfg.EventBus, detail)
		if err != nil {
			return st, err
		}
		pub.Event = eventID
	}
	st.Published = pub
	Logger(ctx).Info("published", "images", ArtifactID(images), "manifest", key, "event", pub.Event)
	storeLearned(ctx, d.S3, cfg.Bucket, st, d.now())
	return st, nil
}

// launchPermissionKinds are the share targets of an image, one
// ModifyImageAttribute call per kind as Packer makes them.
func launchPermissionKinds(src AmazonEBS) [][]ec2types.LaunchPermission {
	var kinds [][]ec2types.LaunchPermission
	add := func(values []string, perm func(string) ec2types.LaunchPermission) {
		if len(values) == 0 {
			return
		}
		perms := make([]ec2types.LaunchPermission, len(values))
		for i, v := range values {
			perms[i] = perm(v)
		}
		kinds = append(kinds, perms)
	}
	add(src.AMIUsers, func(v string) ec2types.LaunchPermission { return ec2types.LaunchPermission{UserId: aws.String(v)} })
	add(src.AMIGroups, func(v string) ec2types.LaunchPermission {
		return ec2types.LaunchPermission{Group: ec2types.PermissionGroup(v)}
	})
	add(src.AMIOrgARNs, func(v string) ec2types.LaunchPermission {
		return ec2types.LaunchPermission{OrganizationArn: aws.String(v)}
	})
	add(src.AMIOUARNs, func(v string) ec2types.LaunchPermission {
		return ec2types.LaunchPermission{OrganizationalUnitArn: aws.String(v)}
	})
	return kinds
}

// shareImage adds the recipe's launch permissions to an image.
func shareImage(ctx context.Context, api distributeEC2API, id, region string, src AmazonEBS) error {
	for _, perms := range launchPermissionKinds(src) {
		_, err := api.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{
			ImageId:          aws.String(id),
			LaunchPermission: &ec2types.LaunchPermissionModifications{Add: perms},
		})
		if err != nil {
			return fmt.Errorf("share image %s in %s (%s): %w", id, region, describePermissions(perms), err)
		}
	}
	return nil
}

func describePermissions(perms []ec2types.LaunchPermission) string {
	var s []string
	for _, p := range perms {
		switch {
		case p.UserId != nil:
			s = append(s, "user "+*p.UserId)
		case p.Group != "":
			s = append(s, "group "+string(p.Group))
		case p.OrganizationArn != nil:
			s = append(s, "organization "+*p.OrganizationArn)
		case p.OrganizationalUnitArn != nil:
			s = append(s, "OU "+*p.OrganizationalUnitArn)
		}
	}
	return strings.Join(s, ", ")
}

// shareSnapshots adds createVolumePermission for snapshot_users and
// snapshot_groups to each snapshot, in the request form of the EC2 API
// reference's example (Attribute, OperationType "add", UserIds or
// GroupNames), which moto also understands.
func shareSnapshots(ctx context.Context, api distributeEC2API, snaps []string, region string, src AmazonEBS) error {
	if len(src.SnapshotUsers) == 0 && len(src.SnapshotGroups) == 0 {
		return nil
	}
	for _, snap := range snaps {
		if len(src.SnapshotUsers) > 0 {
			_, err := api.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{
				SnapshotId:    aws.String(snap),
				Attribute:     ec2types.SnapshotAttributeNameCreateVolumePermission,
				OperationType: ec2types.OperationTypeAdd,
				UserIds:       src.SnapshotUsers,
			})
			if err != nil {
				return fmt.Errorf("share snapshot %s in %s with users %s: %w", snap, region, strings.Join(src.SnapshotUsers, ", "), err)
			}
		}
		if len(src.SnapshotGroups) > 0 {
			_, err := api.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{
				SnapshotId:    aws.String(snap),
				Attribute:     ec2types.SnapshotAttributeNameCreateVolumePermission,
				OperationType: ec2types.OperationTypeAdd,
				GroupNames:    src.SnapshotGroups,
			})
			if err != nil {
				return fmt.Errorf("share snapshot %s in %s with groups %s: %w", snap, region, strings.Join(src.SnapshotGroups, ", "), err)
			}
		}
	}
	return nil
}

// putManifest adds entry to the manifest at s3://bucket/key (creating it),
// as Packer's post-processor adds to an existing manifest file.
func (d *Distribute) putManifest(ctx context.Context, bucket, key string, entry ManifestEntry) error {
	if bucket == "" {
		return errors.New("write manifest: no bucket configured")
	}
	var existing []byte
	out, err := d.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	switch {
	case IsNotFound(err):
	case err != nil:
		return fmt.Errorf("read manifest s3://%s/%s: %w", bucket, key, err)
	default:
		existing, err = io.ReadAll(io.LimitReader(out.Body, 16<<20))
		out.Body.Close()
		if err != nil {
			return fmt.Errorf("read manifest s3://%s/%s: %w", bucket, key, err)
		}
	}
	doc, err := ParseManifest(existing)
	if err != nil {
		return fmt.Errorf("read manifest s3://%s/%s: %w", bucket, key, err)
	}
	doc.Add(entry)
	body, err := doc.Encode()
	if err != nil {
		return err
	}
	_, err = d.S3.PutObject(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(bucket),
		Key:         aws.String(key),
		Body:        bytes.NewReader(body),
		ContentType: aws.String("application/json"),
	})
	if err != nil {
		return fmt.Errorf("write manifest s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}

// writeLocalManifest adds entry to the manifest file out (a manifest
// post-processor's output, relative to dir) and returns its path.
func writeLocalManifest(dir, out string, entry ManifestEntry) (string, error) {
	if out == "" {
		out = DefaultManifestOutput
	}
	path := out
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, out)
	}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read manifest %s: %w", path, err)
	}
	doc, err := ParseManifest(data)
	if err != nil {
		return "", fmt.Errorf("read manifest %s: %w", path, err)
	}
	doc.Add(entry)
	body, err := doc.Encode()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("write manifest %s: %w", path, err)
	}
	if err := os.WriteFile(path, body, 0o664); err != nil {
		return "", fmt.Errorf("write manifest %s: %w", path, err)
	}
	return path, nil
}

// putEvent puts the kiln.image.baked event and returns its ID.
func (d *Distribute) putEvent(ctx context.Context, bus string, detail ImageBakedDetail) (string, error) {
	body, err := json.Marshal(detail)
	if err != nil {
		return "", fmt.Errorf("encode event: %w", err)
	}
	out, err := d.Events.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{{
		Source:       aws.String(EventSource),
		DetailType:   aws.String(EventImageBaked),
		Detail:       aws.String(string(body)),
		EventBusName: aws.String(bus),
	}}})
	if err != nil {
		return "", fmt.Errorf("put event %s on %s: %w", EventImageBaked, bus, err)
	}
	if out.FailedEntryCount > 0 || len(out.Entries) == 0 {
		code, msg := "", "no entry in the answer"
		if len(out.Entries) > 0 {
			code, msg = aws.ToString(out.Entries[0].ErrorCode), aws.ToString(out.Entries[0].ErrorMessage)
		}
		return "", fmt.Errorf("put event %s on %s: %s %s", EventImageBaked, bus, code, msg)
	}
	return aws.ToString(out.Entries[0].EventId), nil
}

// ssmNameUnsafe matches characters Parameter Store does not allow in a
// parameter name.
var ssmNameUnsafe = regexp.MustCompile(`[^a-zA-Z0-9_.\-/]+`)

// amiParameterName is the SSM parameter that publishes a build's AMI ID:
// <prefix>/<recipe>/latest, or <prefix>/<recipe>/<build>/latest when the
// recipe has several builds.
func amiParameterName(prefix, recipe, build string, several bool) string {
	parts := []string{strings.TrimRight(prefix, "/"), ssmNameUnsafe.ReplaceAllString(recipe, "-")}
	if several {
		parts = append(parts, ssmNameUnsafe.ReplaceAllString(build, "-"))
	}
	return strings.Join(append(parts, "latest"), "/")
}
