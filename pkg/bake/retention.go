package bake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// Tags the scheduled jobs read. The recipe sets the kiln:keep-newest,
// kiln:max-age-days, kiln:deprecate-days and kiln:rebuild tags in its
// source's `tags`, which every image of the recipe (and every copy) carries:
// plain AMI tags, so a recipe that uses them stays a valid Packer template.
const (
	// TagBuiltAt carries, on images, snapshots and copies, when the build
	// that made them started (RFC 3339, UTC). A build's images in every
	// Region share it, so a copy made hours later is as old as its build.
	// Without it kiln falls back to the image's CreationDate.
	TagBuiltAt = "kiln:built-at"
	// TagBuildName carries the build's name ("app" for source "amazon-ebs"
	// "app") on the images of a recipe that defines several builds; each
	// build is then its own line of images, published in
	// <prefix>/<recipe>/<build>/latest. Images of single-build recipes do
	// not carry it.
	TagBuildName = "kiln:build-name"
	// TagKeepNewest is a recipe tag: how many of the recipe's newest builds
	// retention always keeps (at least 1).
	TagKeepNewest = "kiln:keep-newest"
	// TagMaxAgeDays is a recipe tag: the age in days past which retention
	// deletes the recipe's images that are neither among the newest nor
	// in use.
	TagMaxAgeDays = "kiln:max-age-days"
	// TagDeprecateDays is a recipe tag: how many days before deleting an
	// image retention deprecates it (0: no deprecation step).
	TagDeprecateDays = "kiln:deprecate-days"
)

// Defaults of the retention policy: the stack's (infra's) defaults.
const (
	// DefaultRetentionKeep is how many of each recipe's newest builds are
	// always kept.
	DefaultRetentionKeep = 3
	// DefaultRetentionDays is the age past which older images are deleted.
	DefaultRetentionDays = 90
)

// Event detail types of the scheduled jobs' reports.
const (
	// EventRetentionDecisions is the detail type of the one event a
	// retention run puts: every decision it made.
	EventRetentionDecisions = "kiln.retention.decisions"
	// EventRebuildDecisions is the detail type of the one event a rebuild
	// run puts: every decision it made.
	EventRebuildDecisions = "kiln.rebuild.decisions"
)

// orphanSnapshotGrace is how old a kiln snapshot without an image must be
// before retention deletes it. A snapshot's image can be missing for a
// while just after CopyImage or CreateImage (EC2 is eventually consistent:
// https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html);
// the snapshots retention itself left behind are at least a day old.
const orphanSnapshotGrace = time.Hour

// MaxRetentionPlanAge is how old a plan Apply still acts on: what uses an
// image changes, so a plan is made and applied in one go.
const MaxRetentionPlanAge = time.Hour

// retentionEC2API is the part of EC2 the retention job uses, in one Region.
type retentionEC2API interface {
	ec2.DescribeImagesAPIClient
	ec2.DescribeSnapshotsAPIClient
	ec2.DescribeInstancesAPIClient
	ec2.DescribeLaunchTemplateVersionsAPIClient
	EnableImageDeprecation(ctx context.Context, in *ec2.EnableImageDeprecationInput, optFns ...func(*ec2.Options)) (*ec2.EnableImageDeprecationOutput, error)
	DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, optFns ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, optFns ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// parameterGetter reads SSM parameters: the published AMI IDs, and the
// parameters launch templates name instead of an image.
type parameterGetter interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

// RetentionPolicy is how many images of a recipe retention keeps and for
// how long. The stack sets the defaults (RetentionPolicyFromEnv); a recipe
// overrides them with its tags kiln:keep-newest, kiln:max-age-days and
// kiln:deprecate-days, read from its newest image. Zero fields take the
// defaults.
type RetentionPolicy struct {
	// Keep is how many of the recipe's newest builds are kept whatever
	// their age: a build's images in every Region count as one. At least 1.
	Keep int `json:"keep"`
	// MaxAgeDays is the age past which the recipe's other images are
	// deleted. At least 1.
	MaxAgeDays int `json:"max_age_days"`
	// DeprecateDays, when positive, deprecates an image that many days
	// before it is deleted (EnableImageDeprecation), so that people still
	// launching it are warned first.
	DeprecateDays int `json:"deprecate_days,omitempty"`
}

func (p RetentionPolicy) withDefaults() RetentionPolicy {
	if p.Keep == 0 {
		p.Keep = DefaultRetentionKeep
	}
	if p.MaxAgeDays == 0 {
		p.MaxAgeDays = DefaultRetentionDays
	}
	return p
}

// Validate reports a policy kiln refuses: one that would keep no image.
func (p RetentionPolicy) Validate() error {
	var errs []error
	if p.Keep < 1 {
		errs = append(errs, fmt.Errorf("keep %d: kiln always keeps at least a recipe's newest build", p.Keep))
	}
	if p.MaxAgeDays < 1 {
		errs = append(errs, fmt.Errorf("max age %d days: want at least 1", p.MaxAgeDays))
	}
	if p.DeprecateDays < 0 {
		errs = append(errs, fmt.Errorf("deprecate %d days: want 0 or more", p.DeprecateDays))
	}
	return errors.Join(errs...)
}

// forRecipe applies a recipe's tags to the policy. A tag with a value kiln
// cannot use is ignored with a warning: retention keeps running for every
// other recipe.
func (p RetentionPolicy) forRecipe(recipe string, tags map[string]string) (RetentionPolicy, []string) {
	var warnings []string
	set := func(key string, field *int, minimum int) {
		v, ok := tags[key]
		if !ok {
			return
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < minimum {
			warnings = append(warnings, fmt.Sprintf("recipe %s: tag %s=%q is not a whole number >= %d; using %d", recipe, key, v, minimum, *field))
			return
		}
		*field = n
	}
	set(TagKeepNewest, &p.Keep, 1)
	set(TagMaxAgeDays, &p.MaxAgeDays, 1)
	set(TagDeprecateDays, &p.DeprecateDays, 0)
	return p, warnings
}

// RetentionAction is what retention does with an image or snapshot.
type RetentionAction string

// Retention actions.
const (
	// RetainKeep leaves the image alone.
	RetainKeep RetentionAction = "keep"
	// RetainDeprecate deprecates the image (it is deleted later).
	RetainDeprecate RetentionAction = "deprecate"
	// RetainDelete deregisters the image and deletes its snapshots, or
	// deletes an orphaned snapshot.
	RetainDelete RetentionAction = "delete"
)

// RetentionDecision is what retention does with one image in one Region,
// or with one snapshot whose images are gone (ImageID empty), and why.
type RetentionDecision struct {
	Recipe string `json:"recipe"`
	// BuildName is the kiln:build-name tag (recipes with several builds).
	BuildName string `json:"build_name,omitempty"`
	BuildID   string `json:"build_id"`
	Region    string `json:"region"`
	ImageID   string `json:"image_id,omitempty"`
	ImageName string `json:"image_name,omitempty"`
	// BuiltAt is when the build started (kiln:built-at, else the earliest
	// CreationDate of its images); an orphan snapshot's start time.
	BuiltAt time.Time `json:"built_at"`
	// Generation ranks the build among the recipe's builds, 1 the newest;
	// 0 for orphaned snapshots and images that are not available.
	Generation int `json:"generation,omitempty"`
	// Snapshots are deleted with the image (its block device mappings,
	// and snapshots tagged with its build that no other image uses), or
	// are the orphaned snapshot.
	Snapshots []string        `json:"snapshots,omitempty"`
	Action    RetentionAction `json:"action"`
	Reason    string          `json:"reason"`
}

// Age is how old the decision's build (or snapshot) is at t.
func (d RetentionDecision) Age(t time.Time) time.Duration {
	if d.BuiltAt.IsZero() {
		return 0
	}
	return t.Sub(d.BuiltAt)
}

// RetentionPlan is every decision of one retention run, made without
// changing anything (Retention.Plan); Retention.Apply carries it out.
type RetentionPlan struct {
	// At is when the plan was made: ages are relative to it.
	At time.Time `json:"at"`
	// Policy is the stack's policy; Recipes the policy in effect per
	// recipe ("web", or "web/app" for one build of a recipe with several).
	Policy  RetentionPolicy            `json:"policy"`
	Recipes map[string]RetentionPolicy `json:"recipes,omitempty"`
	Regions []string                   `json:"regions"`
	// Decisions are sorted by recipe, newest build first, then Region;
	// orphaned snapshots come after their recipe's images.
	Decisions []RetentionDecision `json:"decisions"`
	// Warnings are problems that did not stop the run (a recipe tag with
	// a bad value, a launch template whose image kiln cannot know).
	Warnings []string `json:"warnings,omitempty"`
}

// Count returns how many decisions have action a.
func (p RetentionPlan) Count(a RetentionAction) int {
	n := 0
	for _, d := range p.Decisions {
		if d.Action == a {
			n++
		}
	}
	return n
}

// RetentionReport says what Apply did.
type RetentionReport struct {
	// Deprecated and Deleted list "region:id" of images and snapshots.
	Deprecated []string `json:"deprecated,omitempty"`
	Deleted    []string `json:"deleted,omitempty"`
	// Failed lists what could not be done; a later run finishes it.
	Failed []string `json:"failed,omitempty"`
	// Warnings are things not done on purpose (an emulator without
	// EnableImageDeprecation).
	Warnings []string `json:"warnings,omitempty"`
}

// Retention is the retention job: per recipe, across the Regions its images
// were copied to, it keeps the newest builds and those in use and deletes
// (optionally first deprecates) the old ones, as EC2 Image Builder's
// lifecycle policies do and Packer does not.
//
// It only ever considers images this account owns that carry both
// kiln:build and kiln:recipe, and their snapshots. An image is never
// deleted while it is tagged kiln:keep, published in the recipe's SSM
// parameter in its Region, used by an instance that is not terminated, or
// named by the default or latest version of a launch template there.
//
// Plan decides without changing anything (kiln prune --dry-run); Apply
// carries a plan out. Deleting an image deregisters it and then deletes its
// snapshots; both treat "not found" as done, and Plan finds snapshots kiln
// left without an image (an interrupted run) and deletes them, so a second
// run finishes what an interrupted one began.
type Retention struct {
	// EC2 and SSM return the clients of a Region.
	EC2 func(region string) retentionEC2API
	SSM func(region string) parameterGetter
	// Events receives the run's report (Handle); nil sends none.
	Events eventPutter
	// Config is the deployment's settings (ParameterPrefix, EventBus).
	Config Config
	// Policy and Regions are what Handle runs with: the stack's defaults
	// and the Regions builds use and copy to.
	Policy  RetentionPolicy
	Regions []string
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Emulator says EC2 is an emulator; see Snapshot.Emulator. It only
	// turns an emulator's "not implemented" answer to
	// EnableImageDeprecation into a warning.
	Emulator bool
}

// NewRetention wires the retention job to real clients.
func NewRetention(a *AWS, conf Config, policy RetentionPolicy, regions []string) *Retention {
	return &Retention{
		EC2:     func(region string) retentionEC2API { return a.EC2(region) },
		SSM:     func(region string) parameterGetter { return a.SSM(region) },
		Events:  a.Events(),
		Config:  conf,
		Policy:  policy,
		Regions: regions,
	}
}

func (r *Retention) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC()
	}
	return time.Now().UTC()
}

// kilnImage is an image kiln made, with what retention and rebuild read
// from its tags.
type kilnImage struct {
	ec2types.Image
	region    string
	recipe    string
	buildID   string
	buildName string
	// builtAt is kiln:built-at, else CreationDate.
	builtAt time.Time
	tags    map[string]string
}

// asKilnImage returns img as kiln's, or false when it lacks kiln:build or
// kiln:recipe: such an image is never touched.
func asKilnImage(img ec2types.Image, region string) (kilnImage, bool) {
	tags := map[string]string{}
	for _, t := range img.Tags {
		tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	k := kilnImage{Image: img, region: region, recipe: tags[TagRecipe], buildID: tags[TagBuild], buildName: tags[TagBuildName], tags: tags}
	if k.recipe == "" || k.buildID == "" {
		return kilnImage{}, false
	}
	if t, err := time.Parse(time.RFC3339, tags[TagBuiltAt]); err == nil {
		k.builtAt = t.UTC()
	} else if t, err := time.Parse(time.RFC3339, aws.ToString(img.CreationDate)); err == nil {
		k.builtAt = t.UTC()
	}
	return k, true
}

// line names the recipe's line of images: the recipe, or recipe/build for
// one build of a recipe with several.
func (k kilnImage) line() string {
	if k.buildName == "" {
		return k.recipe
	}
	return k.recipe + "/" + k.buildName
}

// describeKilnImages lists the account's images in region that carry
// kiln:build and kiln:recipe (and, with recipe set, that recipe's),
// deprecated ones included. Filtering by tag matters: an emulator lists a
// thousand preloaded snapshots and images as the caller's own.
func describeKilnImages(ctx context.Context, api ec2.DescribeImagesAPIClient, region, recipe string, optFns ...func(*ec2.Options)) ([]kilnImage, error) {
	filters := []ec2types.Filter{{Name: aws.String("tag-key"), Values: []string{TagBuild}}}
	if recipe != "" {
		filters = append(filters, ec2types.Filter{Name: aws.String("tag:" + TagRecipe), Values: []string{recipe}})
	}
	in := &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: filters, IncludeDeprecated: aws.Bool(true)}
	var out []kilnImage
	p := ec2.NewDescribeImagesPaginator(api, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx, optFns...)
		if err != nil {
			return nil, fmt.Errorf("describe kiln images in %s: %w", region, err)
		}
		for _, img := range page.Images {
			if k, ok := asKilnImage(img, region); ok && (recipe == "" || k.recipe == recipe) {
				out = append(out, k)
			}
		}
	}
	return out, nil
}

// regionInventory is what retention learns about one Region.
type regionInventory struct {
	region    string
	images    []kilnImage
	snapshots []ec2types.Snapshot
	// usedBy maps an image ID to what uses it: instances and launch
	// template versions, for people ("instance i-…").
	usedBy map[string][]string
	// published maps an image ID to the parameters that publish it.
	published map[string][]string
}

// Plan decides, for every kiln image in regions, whether to keep, deprecate
// or delete it, and finds snapshots that kiln left without an image. It
// changes nothing. policy holds the defaults (zero fields take
// DefaultRetentionKeep and DefaultRetentionDays); each recipe's tags
// override them.
func (r *Retention) Plan(ctx context.Context, policy RetentionPolicy, regions []string) (RetentionPlan, error) {
	policy = policy.withDefaults()
	if err := policy.Validate(); err != nil {
		return RetentionPlan{}, fmt.Errorf("retention policy: %w", err)
	}
	regions = slices.Compact(slices.Sorted(slices.Values(slices.DeleteFunc(slices.Clone(regions), func(s string) bool { return s == "" }))))
	if len(regions) == 0 {
		return RetentionPlan{}, errors.New("retention: no Regions to look in")
	}
	plan := RetentionPlan{At: r.now(), Policy: policy, Regions: regions, Recipes: map[string]RetentionPolicy{}}
	invs := map[string]*regionInventory{}
	lines := map[string][]*kilnImage{}
	for _, region := range regions {
		inv, warnings, err := r.take(ctx, region)
		if err != nil {
			return RetentionPlan{}, err
		}
		plan.Warnings = append(plan.Warnings, warnings...)
		invs[region] = inv
		for i := range inv.images {
			img := &inv.images[i]
			lines[img.line()] = append(lines[img.line()], img)
		}
	}

	for _, line := range slices.Sorted(maps.Keys(lines)) {
		imgs := lines[line]
		newest := slices.MaxFunc(imgs, func(a, b *kilnImage) int {
			if c := a.builtAt.Compare(b.builtAt); c != 0 {
				return c
			}
			return strings.Compare(aws.ToString(a.ImageId), aws.ToString(b.ImageId))
		})
		pol, warnings := policy.forRecipe(line, newest.tags)
		plan.Warnings = append(plan.Warnings, warnings...)
		plan.Recipes[line] = pol
		plan.Decisions = append(plan.Decisions, decideLine(plan.At, pol, imgs, invs)...)
	}
	for _, region := range regions {
		plan.Decisions = append(plan.Decisions, orphanSnapshots(plan.At, invs[region])...)
	}
	r.planSnapshots(&plan, invs)
	sortRetentionDecisions(plan.Decisions)
	return plan, nil
}

// take lists a Region's kiln images and snapshots and what uses the images.
func (r *Retention) take(ctx context.Context, region string) (*regionInventory, []string, error) {
	api := r.EC2(region)
	inv := &regionInventory{region: region, usedBy: map[string][]string{}, published: map[string][]string{}}
	var err error
	if inv.images, err = describeKilnImages(ctx, api, region, ""); err != nil {
		return nil, nil, err
	}
	if inv.snapshots, err = describeKilnSnapshots(ctx, api, region); err != nil {
		return nil, nil, err
	}
	if len(inv.images) == 0 {
		return inv, nil, nil
	}
	if err := r.instancesUsing(ctx, api, inv); err != nil {
		return nil, nil, err
	}
	warnings, err := r.templatesUsing(ctx, api, inv)
	if err != nil {
		return nil, nil, err
	}
	if err := r.publishedImages(ctx, inv); err != nil {
		return nil, nil, err
	}
	return inv, warnings, nil
}

// describeKilnSnapshots lists the account's snapshots in region that carry
// kiln:build and kiln:recipe.
func describeKilnSnapshots(ctx context.Context, api ec2.DescribeSnapshotsAPIClient, region string) ([]ec2types.Snapshot, error) {
	var out []ec2types.Snapshot
	p := ec2.NewDescribeSnapshotsPaginator(api, &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"},
		Filters:  []ec2types.Filter{{Name: aws.String("tag-key"), Values: []string{TagBuild}}},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe kiln snapshots in %s: %w", region, err)
		}
		for _, s := range page.Snapshots {
			if tagOf(s.Tags, TagBuild) != "" && tagOf(s.Tags, TagRecipe) != "" {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// liveInstanceStatesAll are the instance states in which an instance uses
// its image: every state but terminated.
var liveInstanceStatesAll = []string{"pending", "running", "shutting-down", "stopping", "stopped"}

// instancesUsing records the instances (in any state but terminated) that
// run one of the Region's kiln images.
func (r *Retention) instancesUsing(ctx context.Context, api retentionEC2API, inv *regionInventory) error {
	ids := make([]string, 0, len(inv.images))
	for _, img := range inv.images {
		ids = append(ids, aws.ToString(img.ImageId))
	}
	// A filter takes at most 200 values.
	for chunk := range slices.Chunk(ids, 200) {
		p := ec2.NewDescribeInstancesPaginator(api, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
			{Name: aws.String("image-id"), Values: chunk},
			{Name: aws.String("instance-state-name"), Values: liveInstanceStatesAll},
		}})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return fmt.Errorf("describe instances using kiln images in %s: %w", inv.region, err)
			}
			for _, res := range page.Reservations {
				for _, in := range res.Instances {
					if in.State != nil && in.State.Name == ec2types.InstanceStateNameTerminated {
						continue
					}
					img := aws.ToString(in.ImageId)
					inv.usedBy[img] = append(inv.usedBy[img], "instance "+aws.ToString(in.InstanceId))
				}
			}
		}
	}
	return nil
}

// templatesUsing records the launch templates whose default or latest
// version names one of the Region's kiln images. One call lists those two
// versions of every template (Versions $Default and $Latest without a
// template ID); ResolveAlias asks EC2 to resolve an image given as
// resolve:ssm:<parameter>, and kiln reads the parameter itself when EC2 did
// not (an emulator).
func (r *Retention) templatesUsing(ctx context.Context, api retentionEC2API, inv *regionInventory) ([]string, error) {
	var warnings []string
	seen := map[string]bool{}
	p := ec2.NewDescribeLaunchTemplateVersionsPaginator(api, &ec2.DescribeLaunchTemplateVersionsInput{
		Versions:     []string{"$Default", "$Latest"},
		ResolveAlias: aws.Bool(true),
		MaxResults:   aws.Int32(200),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe launch template versions in %s: %w", inv.region, err)
		}
		for _, v := range page.LaunchTemplateVersions {
			if v.LaunchTemplateData == nil {
				continue
			}
			image := aws.ToString(v.LaunchTemplateData.ImageId)
			if param, ok := strings.CutPrefix(image, "resolve:ssm:"); ok {
				out, err := r.SSM(inv.region).GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(param)})
				if err != nil {
					warnings = append(warnings, fmt.Sprintf("launch template %s (%s) in %s names its image by parameter %s, which retention cannot read (%v): an image only it uses is not protected",
						aws.ToString(v.LaunchTemplateId), aws.ToString(v.LaunchTemplateName), inv.region, param, err))
					continue
				}
				image = aws.ToString(out.Parameter.Value)
			}
			if image == "" {
				continue
			}
			which := "$Latest"
			if aws.ToBool(v.DefaultVersion) {
				which = "$Default"
			}
			label := fmt.Sprintf("launch template %s (%s) %s version %d", aws.ToString(v.LaunchTemplateId), aws.ToString(v.LaunchTemplateName), which, aws.ToInt64(v.VersionNumber))
			if seen[image+label] {
				continue
			}
			seen[image+label] = true
			inv.usedBy[image] = append(inv.usedBy[image], label)
		}
	}
	return warnings, nil
}

// publishedImages records which kiln images the recipes' SSM parameters in
// the Region publish: <prefix>/<recipe>/latest, and
// <prefix>/<recipe>/<build>/latest for images tagged kiln:build-name. A
// parameter that cannot be read fails the plan: retention must know.
func (r *Retention) publishedImages(ctx context.Context, inv *regionInventory) error {
	prefix := r.Config.withDefaults().ParameterPrefix
	names := map[string]bool{}
	for _, img := range inv.images {
		names[amiParameterName(prefix, img.recipe, "", false)] = true
		if img.buildName != "" {
			names[amiParameterName(prefix, img.recipe, img.buildName, true)] = true
		}
	}
	api := r.SSM(inv.region)
	for _, name := range slices.Sorted(maps.Keys(names)) {
		out, err := api.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
		if IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read published image %s in %s: %w", name, inv.region, err)
		}
		id := strings.TrimSpace(aws.ToString(out.Parameter.Value))
		inv.published[id] = append(inv.published[id], name)
	}
	return nil
}

// decideLine makes the decisions for one recipe's (or build's) images in
// every Region.
func decideLine(now time.Time, pol RetentionPolicy, imgs []*kilnImage, invs map[string]*regionInventory) []RetentionDecision {
	// A build's age is that of its earliest image, so that copies made
	// later do not live longer.
	builtAt := map[string]time.Time{}
	for _, img := range imgs {
		if t, ok := builtAt[img.buildID]; !ok || (!img.builtAt.IsZero() && (t.IsZero() || img.builtAt.Before(t))) {
			builtAt[img.buildID] = img.builtAt
		}
	}
	// Generations: builds with an available image, newest first.
	var gens []string
	for _, img := range imgs {
		if img.State == ec2types.ImageStateAvailable && !slices.Contains(gens, img.buildID) {
			gens = append(gens, img.buildID)
		}
	}
	sort.Slice(gens, func(i, j int) bool {
		if c := builtAt[gens[i]].Compare(builtAt[gens[j]]); c != 0 {
			return c > 0
		}
		return gens[i] > gens[j]
	})
	rank := map[string]int{}
	for i, g := range gens {
		rank[g] = i + 1
	}

	maxAge := time.Duration(pol.MaxAgeDays) * 24 * time.Hour
	deprecateFrom := maxAge - time.Duration(pol.DeprecateDays)*24*time.Hour
	var out []RetentionDecision
	for _, img := range imgs {
		inv := invs[img.region]
		id := aws.ToString(img.ImageId)
		d := RetentionDecision{
			Recipe: img.recipe, BuildName: img.buildName, BuildID: img.buildID, Region: img.region,
			ImageID: id, ImageName: aws.ToString(img.Name), BuiltAt: builtAt[img.buildID], Generation: rank[img.buildID],
			Action: RetainKeep,
		}
		age := now.Sub(d.BuiltAt)
		var protect []string
		if v, ok := img.tags[TagKeep]; ok && !strings.EqualFold(strings.TrimSpace(v), "false") {
			protect = append(protect, "tagged "+TagKeep)
		}
		for _, p := range inv.published[id] {
			protect = append(protect, "published in "+p)
		}
		protect = append(protect, summarizeUses(inv.usedBy[id])...)
		switch {
		case img.State != ec2types.ImageStateAvailable:
			d.Reason = fmt.Sprintf("image is %s: retention only retires available images", img.State)
		case len(protect) > 0:
			d.Reason = strings.Join(protect, "; ")
		case d.Generation <= pol.Keep:
			d.Reason = fmt.Sprintf("newest %d kept", pol.Keep)
		case d.BuiltAt.IsZero():
			d.Reason = "age unknown: no " + TagBuiltAt + " tag or creation date"
		case age < maxAge && pol.DeprecateDays > 0 && age >= deprecateFrom:
			deleteAt := d.BuiltAt.Add(maxAge)
			if t, err := time.Parse(time.RFC3339, aws.ToString(img.DeprecationTime)); err == nil && !t.After(deleteAt) {
				d.Reason = fmt.Sprintf("deprecated; deleted when %d days old", pol.MaxAgeDays)
				break
			}
			d.Action = RetainDeprecate
			d.Reason = fmt.Sprintf("older than %d days: deprecated %d days before deletion at %d days", pol.MaxAgeDays-pol.DeprecateDays, pol.DeprecateDays, pol.MaxAgeDays)
		case age < maxAge:
			d.Reason = fmt.Sprintf("younger than %d days", pol.MaxAgeDays)
		default:
			d.Action = RetainDelete
			d.Reason = fmt.Sprintf("older than %d days and not among the newest %d", pol.MaxAgeDays, pol.Keep)
		}
		out = append(out, d)
	}
	return out
}

// summarizeUses renders what uses an image, a few at a time.
func summarizeUses(uses []string) []string {
	if len(uses) == 0 {
		return nil
	}
	uses = slices.Sorted(slices.Values(uses))
	var instances, other []string
	for _, u := range uses {
		if id, ok := strings.CutPrefix(u, "instance "); ok {
			instances = append(instances, id)
		} else {
			other = append(other, "in use by "+u)
		}
	}
	var out []string
	switch n := len(instances); {
	case n == 1:
		out = append(out, "in use by instance "+instances[0])
	case n > 1 && n <= 3:
		out = append(out, "in use by instances "+strings.Join(instances, ", "))
	case n > 3:
		out = append(out, fmt.Sprintf("in use by instances %s and %d more", strings.Join(instances[:3], ", "), n-3))
	}
	return append(out, other...)
}

// planSnapshots lists, for each image to delete, the snapshots that go with
// it: its block device mappings' and those tagged with its build, unless an
// image that stays uses them.
func (r *Retention) planSnapshots(plan *RetentionPlan, invs map[string]*regionInventory) {
	deleting := map[string]bool{}
	for _, d := range plan.Decisions {
		if d.Action == RetainDelete && d.ImageID != "" {
			deleting[d.Region+"/"+d.ImageID] = true
		}
	}
	for region, inv := range invs {
		staying := map[string]bool{}
		mapped := map[string][]string{}
		for _, img := range inv.images {
			id := aws.ToString(img.ImageId)
			snaps := imageSnapshotIDs(img.Image)
			mapped[id] = snaps
			if !deleting[region+"/"+id] {
				for _, s := range snaps {
					staying[s] = true
				}
			}
		}
		claimed := map[string]bool{}
		for i := range plan.Decisions {
			d := &plan.Decisions[i]
			if d.Region != region || d.ImageID == "" || d.Action != RetainDelete {
				continue
			}
			var snaps []string
			for _, s := range mapped[d.ImageID] {
				if !staying[s] && !claimed[s] {
					snaps = append(snaps, s)
					claimed[s] = true
				}
			}
			for _, s := range inv.snapshots {
				id := aws.ToString(s.SnapshotId)
				if tagOf(s.Tags, TagBuild) == d.BuildID && !staying[id] && !claimed[id] {
					snaps = append(snaps, id)
					claimed[id] = true
				}
			}
			d.Snapshots = snaps
		}
	}
}

// orphanSnapshots finds the Region's kiln snapshots whose build has no
// image left there and that no image uses: what an interrupted deletion
// (or cleanup) left. Only completed snapshots older than
// orphanSnapshotGrace count.
func orphanSnapshots(now time.Time, inv *regionInventory) []RetentionDecision {
	builds := map[string]bool{}
	used := map[string]bool{}
	for _, img := range inv.images {
		builds[img.buildID] = true
		for _, s := range imageSnapshotIDs(img.Image) {
			used[s] = true
		}
	}
	var out []RetentionDecision
	for _, s := range inv.snapshots {
		id := aws.ToString(s.SnapshotId)
		build := tagOf(s.Tags, TagBuild)
		if builds[build] || used[id] || s.State != ec2types.SnapshotStateCompleted {
			continue
		}
		started := aws.ToTime(s.StartTime)
		if now.Sub(started) < orphanSnapshotGrace {
			continue
		}
		out = append(out, RetentionDecision{
			Recipe: tagOf(s.Tags, TagRecipe), BuildName: tagOf(s.Tags, TagBuildName), BuildID: build, Region: inv.region,
			BuiltAt: started.UTC(), Snapshots: []string{id}, Action: RetainDelete,
			Reason: fmt.Sprintf("snapshot of build %s, whose images in %s are gone", build, inv.region),
		})
	}
	return out
}

func sortRetentionDecisions(ds []RetentionDecision) {
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		if a.Recipe != b.Recipe {
			return a.Recipe < b.Recipe
		}
		if a.BuildName != b.BuildName {
			return a.BuildName < b.BuildName
		}
		if (a.ImageID == "") != (b.ImageID == "") {
			return a.ImageID != ""
		}
		if !a.BuiltAt.Equal(b.BuiltAt) {
			return a.BuiltAt.After(b.BuiltAt)
		}
		if a.BuildID != b.BuildID {
			return a.BuildID > b.BuildID
		}
		if a.Region != b.Region {
			return a.Region < b.Region
		}
		if a.ImageID != b.ImageID {
			return a.ImageID < b.ImageID
		}
		return strings.Join(a.Snapshots, ",") < strings.Join(b.Snapshots, ",")
	})
}

// Apply carries out a plan made by Plan less than MaxRetentionPlanAge ago:
// it deprecates the images to deprecate and deregisters the images to
// delete and then deletes their snapshots, and deletes orphaned snapshots.
// "Not found" counts as done, so Apply (or a later run's plan) can repeat
// any part. It goes on past a failure and returns every failure joined; a
// later run finishes the work (a snapshot whose image is gone is found as
// an orphan).
func (r *Retention) Apply(ctx context.Context, plan RetentionPlan) (RetentionReport, error) {
	var rep RetentionReport
	now := r.now()
	if age := now.Sub(plan.At); age > MaxRetentionPlanAge || age < -MaxRetentionPlanAge {
		return rep, fmt.Errorf("apply retention plan made at %s: it is %s old; plan again (what uses an image changes)", plan.At.Format(time.RFC3339), age.Round(time.Second))
	}
	log := Logger(ctx)
	var errs []error
	fail := func(err error) {
		errs = append(errs, err)
		rep.Failed = append(rep.Failed, err.Error())
	}
	for _, d := range plan.Decisions {
		if err := ctx.Err(); err != nil {
			fail(fmt.Errorf("retention stopped: %w", err))
			break
		}
		api := r.EC2(d.Region)
		switch {
		case d.Action == RetainDeprecate && d.ImageID != "":
			// DeprecateAt may not be in the past, and EC2 rounds it to the
			// minute.
			at := now.Add(2 * time.Minute).Truncate(time.Minute)
			_, err := api.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: aws.String(d.ImageID), DeprecateAt: aws.Time(at)}, noRetryOnEmulator(r.Emulator)...)
			switch {
			case err != nil && r.Emulator && emulatorLacks(err):
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("the emulator does not implement EnableImageDeprecation: image %s in %s not deprecated", d.ImageID, d.Region))
			case IsNotFound(err):
			case err != nil:
				fail(fmt.Errorf("deprecate image %s in %s: %w", d.ImageID, d.Region, err))
			default:
				rep.Deprecated = append(rep.Deprecated, d.Region+":"+d.ImageID)
				log.Info("deprecated image", "image", d.ImageID, "region", d.Region, "recipe", d.Recipe, "reason", d.Reason)
			}
		case d.Action == RetainDelete:
			if d.ImageID != "" {
				_, err := api.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(d.ImageID)})
				if err != nil && !IsNotFound(err) {
					fail(fmt.Errorf("deregister image %s in %s: %w", d.ImageID, d.Region, err))
					continue
				}
				rep.Deleted = append(rep.Deleted, d.Region+":"+d.ImageID)
				log.Info("deregistered image", "image", d.ImageID, "region", d.Region, "recipe", d.Recipe, "reason", d.Reason)
			}
			for _, s := range d.Snapshots {
				_, err := api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(s)})
				if err != nil && !IsNotFound(err) {
					fail(fmt.Errorf("delete snapshot %s (build %s) in %s: %w", s, d.BuildID, d.Region, err))
					continue
				}
				rep.Deleted = append(rep.Deleted, d.Region+":"+s)
				log.Info("deleted snapshot", "snapshot", s, "region", d.Region, "build", d.BuildID)
			}
		}
	}
	if len(errs) > 0 {
		return rep, fmt.Errorf("retention incomplete (a later run finishes it): %w", errors.Join(errs...))
	}
	return rep, nil
}

// RetentionEvent is the retention Lambda's input (the schedule's payload).
type RetentionEvent struct {
	// DryRun plans and reports without changing anything.
	DryRun bool `json:"dry_run,omitempty"`
}

// RetentionResult is the retention Lambda's output: a summary (every
// decision is in the log and the event).
type RetentionResult struct {
	At         time.Time `json:"at"`
	DryRun     bool      `json:"dry_run,omitempty"`
	Kept       int       `json:"kept"`
	Deprecated int       `json:"deprecated"`
	Deleted    int       `json:"deleted"`
	Failed     []string  `json:"failed,omitempty"`
	Event      string    `json:"event,omitempty"`
}

// RetentionDecisionsDetail is the detail of the kiln.retention.decisions
// event.
type RetentionDecisionsDetail struct {
	At        time.Time           `json:"at"`
	DryRun    bool                `json:"dry_run"`
	Policy    RetentionPolicy     `json:"policy"`
	Regions   []string            `json:"regions"`
	Decisions []RetentionDecision `json:"decisions"`
	// Omitted counts "keep" decisions left out to fit EventBridge's 256
	// KiB limit (the log has them all).
	Omitted  int              `json:"omitted,omitempty"`
	Report   *RetentionReport `json:"report,omitempty"`
	Warnings []string         `json:"warnings,omitempty"`
}

// Handle is the retention Lambda's handler (and `kiln serve --local`'s
// schedule): it plans with r.Policy in r.Regions, applies the plan unless
// ev.DryRun, logs every decision and puts one kiln.retention.decisions
// event.
func (r *Retention) Handle(ctx context.Context, ev RetentionEvent) (RetentionResult, error) {
	log := Logger(ctx)
	plan, err := r.Plan(ctx, r.Policy, r.Regions)
	if err != nil {
		return RetentionResult{}, err
	}
	for _, w := range plan.Warnings {
		log.Warn(w)
	}
	for _, d := range plan.Decisions {
		log.Info("retention decision", retentionLogAttrs(d)...)
	}
	res := RetentionResult{At: plan.At, DryRun: ev.DryRun, Kept: plan.Count(RetainKeep), Deprecated: plan.Count(RetainDeprecate), Deleted: plan.Count(RetainDelete)}
	var report *RetentionReport
	var applyErr error
	if !ev.DryRun {
		rep, err := r.Apply(ctx, plan)
		report, applyErr = &rep, err
		res.Failed = rep.Failed
		for _, w := range rep.Warnings {
			log.Warn(w)
		}
	}
	detail := RetentionDecisionsDetail{At: plan.At, DryRun: ev.DryRun, Policy: plan.Policy, Regions: plan.Regions, Decisions: plan.Decisions, Report: report, Warnings: plan.Warnings}
	detail.Decisions, detail.Omitted = fitDecisions(detail.Decisions, func(d RetentionDecision) bool { return d.Action == RetainKeep }, func(ds []RetentionDecision) any {
		c := detail
		c.Decisions = ds
		return c
	})
	res.Event, err = putJobEvent(ctx, r.Events, r.Config.withDefaults().EventBus, EventRetentionDecisions, detail)
	return res, errors.Join(applyErr, err)
}

func retentionLogAttrs(d RetentionDecision) []any {
	attrs := []any{"recipe", d.Recipe, "region", d.Region, "build", d.BuildID, "action", string(d.Action), "reason", d.Reason}
	if d.BuildName != "" {
		attrs = append(attrs, "build_name", d.BuildName)
	}
	if d.ImageID != "" {
		attrs = append(attrs, "image", d.ImageID)
	}
	if len(d.Snapshots) > 0 {
		attrs = append(attrs, "snapshots", strings.Join(d.Snapshots, ","))
	}
	return attrs
}

// maxEventDetail bounds an event's detail below EventBridge's 256 KiB
// limit for a PutEvents entry.
const maxEventDetail = 240 << 10

// fitDecisions drops the decisions droppable says can go (keep and skip
// decisions, the least interesting), last first, and then others if need
// be, until wrap(kept) marshals within maxEventDetail; it returns what is
// left and how many went.
func fitDecisions[D any](ds []D, droppable func(D) bool, wrap func([]D) any) ([]D, int) {
	size := func(v any) int {
		b, _ := json.Marshal(v)
		return len(b)
	}
	total := size(wrap(ds))
	if total <= maxEventDetail {
		return ds, 0
	}
	drop := make([]bool, len(ds))
	omitted := 0
	for _, all := range []bool{false, true} {
		for i := len(ds) - 1; i >= 0 && total > maxEventDetail; i-- {
			if drop[i] || (!all && !droppable(ds[i])) {
				continue
			}
			drop[i] = true
			omitted++
			total -= size(ds[i]) + 1 // and its comma
		}
	}
	var kept []D
	for i, d := range ds {
		if !drop[i] {
			kept = append(kept, d)
		}
	}
	return kept, omitted
}

// putJobEvent puts one "kiln" event of detailType on bus and returns its
// ID; with no client it does nothing.
func putJobEvent(ctx context.Context, api eventPutter, bus, detailType string, detail any) (string, error) {
	if api == nil {
		return "", nil
	}
	body, err := json.Marshal(detail)
	if err != nil {
		return "", fmt.Errorf("encode %s event: %w", detailType, err)
	}
	out, err := api.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{{
		Source:       aws.String(EventSource),
		DetailType:   aws.String(detailType),
		Detail:       aws.String(string(body)),
		EventBusName: aws.String(bus),
	}}})
	if err != nil {
		return "", fmt.Errorf("put event %s on %s: %w", detailType, bus, err)
	}
	if out.FailedEntryCount > 0 || len(out.Entries) == 0 {
		code, msg := "", "no entry in the answer"
		if len(out.Entries) > 0 {
			code, msg = aws.ToString(out.Entries[0].ErrorCode), aws.ToString(out.Entries[0].ErrorMessage)
		}
		return "", fmt.Errorf("put event %s on %s: %s %s", detailType, bus, code, msg)
	}
	return aws.ToString(out.Entries[0].EventId), nil
}

// WriteTable prints the plan as a table a person can check at a glance:
// one line per image (and orphaned snapshot) with its recipe, Region, age,
// decision and reason, survivors included, then a summary.
func (p RetentionPlan) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RECIPE\tREGION\tIMAGE\tBUILD\tAGE\tDECISION\tREASON")
	for _, d := range p.Decisions {
		recipe := d.Recipe
		if d.BuildName != "" {
			recipe += "/" + d.BuildName
		}
		what := d.ImageID
		if what == "" {
			what = strings.Join(d.Snapshots, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", recipe, d.Region, what, d.BuildID, FormatAge(d.Age(p.At)), d.Action, d.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	snaps := 0
	for _, d := range p.Decisions {
		if d.Action == RetainDelete {
			snaps += len(d.Snapshots)
		}
	}
	images := 0
	for _, d := range p.Decisions {
		if d.ImageID != "" {
			images++
		}
	}
	fmt.Fprintf(w, "\n%d images in %s: %d kept, %d to deprecate, %d to delete; %d snapshots to delete.\n",
		images, strings.Join(p.Regions, ", "), p.Count(RetainKeep), p.Count(RetainDeprecate), countImages(p.Decisions, RetainDelete), snaps)
	for _, warning := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warning)
	}
	return nil
}

func countImages(ds []RetentionDecision, a RetentionAction) int {
	n := 0
	for _, d := range ds {
		if d.ImageID != "" && d.Action == a {
			n++
		}
	}
	return n
}

// FormatAge renders an age for people: "45m", "5h", "12d".
func FormatAge(d time.Duration) string {
	switch {
	case d <= 0:
		return "0m"
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// RetentionPolicyFromEnv reads the stack's retention policy from the
// environment: KILN_RETENTION_KEEP (or KILN_KEEP), KILN_RETENTION_DAYS (or
// KILN_MAX_AGE_DAYS) and KILN_RETENTION_DEPRECATE_DAYS; unset ones take the
// defaults.
func RetentionPolicyFromEnv() (RetentionPolicy, error) {
	var p RetentionPolicy
	var errs []error
	for _, s := range []struct {
		field *int
		names []string
	}{
		{&p.Keep, []string{"KILN_RETENTION_KEEP", "KILN_KEEP"}},
		{&p.MaxAgeDays, []string{"KILN_RETENTION_DAYS", "KILN_MAX_AGE_DAYS"}},
		{&p.DeprecateDays, []string{"KILN_RETENTION_DEPRECATE_DAYS"}},
	} {
		n, err := envInt(s.names...)
		if err != nil {
			errs = append(errs, err)
		}
		*s.field = n
	}
	p = p.withDefaults()
	if err := errors.Join(append(errs, p.Validate())...); err != nil {
		return p, fmt.Errorf("retention settings: %w", err)
	}
	return p, nil
}

// RegionsFromEnv reads the Regions the scheduled jobs look in from
// KILN_REGIONS (comma-separated), else the function's own Region
// (AWS_REGION).
func RegionsFromEnv() []string {
	var out []string
	for r := range strings.SplitSeq(os.Getenv("KILN_REGIONS"), ",") {
		if r = strings.TrimSpace(r); r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if len(out) == 0 && os.Getenv("AWS_REGION") != "" {
		out = []string{os.Getenv("AWS_REGION")}
	}
	return out
}

// envInt reads the first of names that is set as a whole number; 0 if none
// is.
func envInt(names ...string) (int, error) {
	for _, name := range names {
		v := strings.TrimSpace(os.Getenv(name))
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("%s=%q: not a whole number", name, v)
		}
		return n, nil
	}
	return 0, nil
}

// JobHandler returns a scheduled job's Lambda handler: it gives run a
// logger naming the job and converts a failure into a named error
// (ForLambda), as Handler does for the stages.
func JobHandler[E, R any](job string, run func(context.Context, E) (R, error), log *slog.Logger) func(context.Context, E) (R, error) {
	if log == nil {
		log = slog.Default()
	}
	return func(ctx context.Context, ev E) (R, error) {
		l := log.With("job", job)
		ctx = WithLogger(ctx, l)
		l.Info("start")
		res, err := run(ctx, ev)
		if err != nil {
			l.Error("failed", "error", err.Error())
			return res, ForLambda(job, err)
		}
		l.Info("done")
		return res, nil
	}
}
