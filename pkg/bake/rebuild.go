package bake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/hashicorp/hcl/v2"
)

// TagRebuild is a recipe tag (in the source's `tags`, so a plain AMI tag
// to Packer) setting the recipe's rebuild cadence:
//
//   - "never": the schedule never rebakes it (an upload still does);
//   - "on-change": only when its base image or its content changed;
//   - a maximum age such as "7d", "2w" or "36h": also when its newest
//     image is that old.
//
// Without it, the stack's maximum age applies (KILN_REBUILD_MAX_AGE_DAYS).
const TagRebuild = "kiln:rebuild"

// DefaultRebuildMaxAgeDays is the stack's default maximum age of a recipe's
// newest image before the schedule rebakes it.
const DefaultRebuildMaxAgeDays = 30

// RecipePrefix is where recipes live in the kiln bucket: an upload there
// starts a bake, and the rebuild schedule looks there.
const RecipePrefix = "recipes/"

// rebuildObjectAPI lists and reads recipes.
type rebuildObjectAPI interface {
	s3.ListObjectsV2APIClient
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, optFns ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	objectGetter
}

// BakeLister tells whether bakes are running. Step Functions answers in AWS
// (StepFunctions); local mode answers from its runner.
type BakeLister interface {
	// RunningBakes returns the IDs of the bakes running now for the recipe
	// object recipe.Bucket/recipe.Key, whatever its version.
	RunningBakes(ctx context.Context, recipe RecipeRef) ([]string, error)
}

// BakeStarter starts bakes: Step Functions' StartExecution in AWS, the
// local runner in local mode.
type BakeStarter interface {
	// StartBake starts a bake named name (the build ID) with input st and
	// returns its ID. It returns an error matching ErrBakeExists if a bake
	// of that name was started before.
	StartBake(ctx context.Context, name string, st State) (string, error)
}

// Bakes both lists running bakes and starts new ones.
type Bakes interface {
	BakeLister
	BakeStarter
}

// ErrBakeExists is matched (errors.Is) by StartBake's error for a bake
// that was started before under the same name: the decision was made
// before, and the build is not baked twice.
var ErrBakeExists = errors.New("a bake of this build was started before")

// RebuildAction is whether the schedule bakes a recipe.
type RebuildAction string

// Rebuild actions.
const (
	// RebuildBake starts a bake.
	RebuildBake RebuildAction = "bake"
	// RebuildSkip starts none.
	RebuildSkip RebuildAction = "skip"
)

// RebuildImage is the newest kiln image of a recipe, which a rebuild
// decision compares with the recipe and its base image now.
type RebuildImage struct {
	BuildID   string    `json:"build_id"`
	ImageID   string    `json:"image_id"`
	Hash      string    `json:"hash,omitempty"`
	SourceAMI string    `json:"source_ami,omitempty"`
	BuiltAt   time.Time `json:"built_at"`
}

// RebuildDecision is whether to bake one recipe (or one build of a recipe
// with several), and why.
type RebuildDecision struct {
	// Recipe is the recipe's name; Ref the object version decided on.
	Recipe string    `json:"recipe"`
	Ref    RecipeRef `json:"ref"`
	// Build is the build baked (State.Only) for a recipe with several
	// builds; empty otherwise.
	Build  string        `json:"build,omitempty"`
	Region string        `json:"region,omitempty"`
	Action RebuildAction `json:"action"`
	Reason string        `json:"reason"`
	// Hash is the recipe's content hash now; BaseAMI what its base image
	// resolves to now; Newest the newest image it has.
	Hash    string        `json:"hash,omitempty"`
	BaseAMI string        `json:"base_ami,omitempty"`
	Newest  *RebuildImage `json:"newest,omitempty"`
	// Trigger and BuildID are the bake's (bake decisions): the trigger is
	// derived from the recipe hash and base image, so the same decision
	// made again names the same build, which is not baked twice.
	Trigger string `json:"trigger,omitempty"`
	BuildID string `json:"build_id,omitempty"`
	// Status is what Start did: "started", "already started" or "failed"
	// (with Error); Execution is the started bake's ID.
	Status    string `json:"status,omitempty"`
	Execution string `json:"execution,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Rebuild is the rebuild job. On schedule, for each recipe in the kiln
// bucket (under recipes/, the object's current version), it decides
// whether to bake, as EC2 Image Builder's "only build when dependencies
// update" does: bake when the base image now resolves to another AMI than
// the newest kiln image of the recipe was baked from (kiln:source-ami),
// when the recipe or its files changed (the plan's content hash against
// kiln:recipe-hash), or when the newest image is older than the maximum age
// (per recipe: the kiln:rebuild tag). It never starts a bake for a recipe
// that has one running, nor for a recipe hash and base image that an image
// already has; and the build ID it starts is derived from the hash and base
// image (the trigger), so a decision made twice starts the same build,
// which the plan step's claim bakes once.
//
// Recipes are read and base images resolved by the launch stage's own code
// (Launch.evaluate, Launch.sourceImage), so a rebuild decides on what a
// bake would do.
type Rebuild struct {
	// S3 lists and reads recipes in Config.Bucket.
	S3 rebuildObjectAPI
	// EC2 and SSM serve every Region (calls name their Region).
	EC2 ec2.DescribeImagesAPIClient
	SSM parameterGetter
	// Bakes tells which bakes are running; Starter starts them (Start).
	Bakes   BakeLister
	Starter BakeStarter
	// Events receives each run's report (Handle); nil sends none.
	Events eventPutter
	// Config is the deployment's settings.
	Config Config
	// MaxAge is how old a recipe's newest image may get before it is
	// rebaked, unless the recipe sets kiln:rebuild; zero means no limit.
	MaxAge time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// NewRebuild wires the rebuild job to real clients and bakes (a
// StepFunctions in AWS).
func NewRebuild(a *AWS, conf Config, bakes Bakes, maxAge time.Duration) *Rebuild {
	return &Rebuild{
		S3: a.S3(), EC2: a.EC2(""), SSM: a.SSM(""),
		Bakes: bakes, Starter: bakes, Events: a.Events(),
		Config: conf, MaxAge: maxAge,
	}
}

func (r *Rebuild) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC()
	}
	return time.Now().UTC()
}

// Decide decides, for each recipe under recipes/ in the kiln bucket (only
// those named in recipes, by name or key, when it is not empty), whether to
// bake it. A recipe it cannot decide on (one that does not load, a base
// image that does not resolve) is skipped with the reason; only failing to
// list the recipes is an error. Decide starts nothing.
func (r *Rebuild) Decide(ctx context.Context, recipes []string) ([]RebuildDecision, error) {
	if r.Bakes == nil {
		return nil, errors.New("rebuild: no way to tell running bakes (Rebuild.Bakes)")
	}
	keys, err := r.listRecipes(ctx, recipes)
	if err != nil {
		return nil, err
	}
	var out []RebuildDecision
	for _, key := range keys {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		out = append(out, r.decideRecipe(ctx, key)...)
	}
	return out, nil
}

// listRecipes lists the recipe objects under recipes/, keeping those
// named in only (by name or key) when it is not empty.
func (r *Rebuild) listRecipes(ctx context.Context, only []string) ([]string, error) {
	bucket := r.Config.Bucket
	if bucket == "" {
		return nil, errors.New("rebuild: no kiln bucket configured (KILN_BUCKET)")
	}
	var keys []string
	p := s3.NewListObjectsV2Paginator(r.S3, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(RecipePrefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list recipes in s3://%s/%s: %w", bucket, RecipePrefix, err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if isRecipeKey(key) {
				keys = append(keys, key)
			}
		}
	}
	sort.Strings(keys)
	if len(only) == 0 {
		return keys, nil
	}
	var out []string
	var missing []string
	for _, want := range only {
		found := false
		for _, key := range keys {
			if key == want || RecipeName(key) == want || strings.TrimPrefix(key, RecipePrefix) == want {
				if !slices.Contains(out, key) {
					out = append(out, key)
				}
				found = true
			}
		}
		if !found {
			missing = append(missing, want)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("no recipe %s under s3://%s/%s", strings.Join(missing, ", "), bucket, RecipePrefix)
	}
	return out, nil
}

// isRecipeKey reports whether key names a recipe: a template file or a
// bundle (not a folder marker or a README).
func isRecipeKey(key string) bool {
	if strings.HasSuffix(key, "/") {
		return false
	}
	base := path.Base(key)
	return IsBundleName(base) || strings.HasSuffix(base, ".pkr.hcl") || strings.HasSuffix(base, ".pkr.json") || strings.HasSuffix(base, ".json")
}

// launchLookups lends the rebuild job's clients to the launch stage, whose
// recipe evaluation and base-image resolution the job reuses. Those paths
// call only S3 GetObject, EC2 DescribeImages and SSM GetParameter; the
// launch interfaces embedded here are nil, so any other call would panic,
// which the rebuild tests would show.
func (r *Rebuild) launchLookups() *Launch {
	return &Launch{
		EC2:    lookupEC2{images: r.EC2},
		SSM:    lookupSSM{params: r.SSM},
		S3:     lookupS3{objects: r.S3},
		Config: r.Config,
		Now:    r.Now,
	}
}

type lookupEC2 struct {
	launchAPI
	images ec2.DescribeImagesAPIClient
}

func (l lookupEC2) DescribeImages(ctx context.Context, in *ec2.DescribeImagesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	return l.images.DescribeImages(ctx, in, optFns...)
}

type lookupSSM struct {
	launchParamAPI
	params parameterGetter
}

func (l lookupSSM) GetParameter(ctx context.Context, in *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error) {
	return l.params.GetParameter(ctx, in, optFns...)
}

type lookupS3 struct {
	launchObjectAPI
	objects objectGetter
}

func (l lookupS3) GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	return l.objects.GetObject(ctx, in, optFns...)
}

// decideRecipe decides for the current version of one recipe object: one
// decision per build.
func (r *Rebuild) decideRecipe(ctx context.Context, key string) []RebuildDecision {
	ref := RecipeRef{Bucket: r.Config.Bucket, Key: key}
	d := RebuildDecision{Recipe: RecipeName(key), Ref: ref, Action: RebuildSkip}
	head, err := r.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(key)})
	if err != nil {
		d.Reason = fmt.Sprintf("cannot read s3://%s/%s: %v", ref.Bucket, key, err)
		return []RebuildDecision{d}
	}
	ref.Version = aws.ToString(head.VersionId)
	d.Ref = ref

	l := r.launchLookups()
	plan, err := l.evaluate(ctx, State{Recipe: ref, BuildID: "rebuild-" + d.Recipe, StartedAt: r.now()})
	if err != nil {
		d.Reason = "recipe does not load: " + oneLineError(err)
		return []RebuildDecision{d}
	}
	d.Hash = plan.Hash

	running, runErr := r.Bakes.RunningBakes(ctx, ref)
	several := len(plan.Builds) > 1
	var out []RebuildDecision
	for _, b := range plan.Builds {
		bd := d
		if several {
			bd.Build = b.Name
		}
		bd.Region = b.Source.Region
		r.decideBuild(ctx, l, plan, &b, &bd, running, runErr)
		out = append(out, bd)
	}
	return out
}

// decideBuild fills d for one build of plan.
func (r *Rebuild) decideBuild(ctx context.Context, l *Launch, plan *Plan, b *Build, d *RebuildDecision, running []string, runErr error) {
	maxAge, never, err := rebuildCadence(b.Source.Tags[TagRebuild], r.MaxAge)
	switch {
	case err != nil:
		d.Reason = err.Error()
		return
	case never:
		d.Reason = fmt.Sprintf("opted out (%s = %q)", TagRebuild, b.Source.Tags[TagRebuild])
		return
	case runErr != nil:
		d.Reason = "cannot tell whether a bake is running: " + runErr.Error()
		return
	case len(running) > 0:
		d.Reason = "a bake is running: " + strings.Join(running, ", ")
		return
	case d.Region == "":
		d.Reason = fmt.Sprintf("build %s sets no region", b.FullName())
		return
	}
	base, err := l.sourceImage(ctx, plan, b.Source, d.Region)
	if err != nil {
		d.Reason = "base image does not resolve: " + err.Error()
		return
	}
	d.BaseAMI = base

	imgs, err := describeKilnImages(ctx, r.EC2, d.Region, d.Recipe, ec2In(d.Region))
	if err != nil {
		d.Reason = "cannot list the recipe's images: " + err.Error()
		return
	}
	imgs = slices.DeleteFunc(imgs, func(k kilnImage) bool {
		return k.State != ec2types.ImageStateAvailable || k.buildName != d.Build
	})
	sort.Slice(imgs, func(i, j int) bool {
		if c := imgs[i].builtAt.Compare(imgs[j].builtAt); c != 0 {
			return c > 0
		}
		return aws.ToString(imgs[i].ImageId) > aws.ToString(imgs[j].ImageId)
	})

	bake := func(reason, trigger string) {
		d.Action, d.Reason, d.Trigger = RebuildBake, reason, trigger
		d.BuildID = NewBuildID(d.Ref, nil, d.Build, trigger)
	}
	trigger := "rebuild hash=" + d.Hash + " base=" + base
	if len(imgs) == 0 {
		bake(fmt.Sprintf("no image of this recipe in %s yet", d.Region), trigger)
		return
	}
	newest := imgs[0]
	d.Newest = &RebuildImage{
		BuildID: newest.buildID, ImageID: aws.ToString(newest.ImageId),
		Hash: newest.tags[TagRecipeHash], SourceAMI: newest.tags[TagSourceAMI], BuiltAt: newest.builtAt,
	}
	var changes []string
	if d.Newest.Hash != d.Hash {
		changes = append(changes, fmt.Sprintf("recipe changed (%s → %s)", shortHash(d.Newest.Hash), shortHash(d.Hash)))
	}
	if d.Newest.SourceAMI != base {
		changes = append(changes, fmt.Sprintf("base image changed (%s → %s)", orNone(d.Newest.SourceAMI), base))
	}
	if len(changes) > 0 {
		for _, img := range imgs[1:] {
			if img.tags[TagRecipeHash] == d.Hash && img.tags[TagSourceAMI] == base {
				d.Reason = fmt.Sprintf("build %s (%s) already has this recipe and base image", img.buildID, aws.ToString(img.ImageId))
				return
			}
		}
		bake(strings.Join(changes, "; "), trigger)
		return
	}
	age := r.now().Sub(newest.builtAt)
	switch {
	case maxAge > 0 && age >= maxAge:
		// A refresh of the newest build: the same until that build is
		// replaced, so repeating the decision starts the same build.
		bake(fmt.Sprintf("newest image is %s old (max %s)", FormatAge(age), FormatAge(maxAge)), trigger+" refresh="+newest.buildID)
	case maxAge > 0:
		d.Reason = fmt.Sprintf("up to date: build %s is %s old (max %s)", newest.buildID, FormatAge(age), FormatAge(maxAge))
	default:
		d.Reason = fmt.Sprintf("up to date: build %s has this recipe and base image", newest.buildID)
	}
}

// rebuildCadence reads a recipe's kiln:rebuild tag: its maximum age (0: only
// on change) or never. Empty means def.
func rebuildCadence(v string, def time.Duration) (maxAge time.Duration, never bool, err error) {
	v = strings.TrimSpace(strings.ToLower(v))
	switch v {
	case "":
		return def, false, nil
	case "never", "off":
		return 0, true, nil
	case "on-change":
		return 0, false, nil
	}
	bad := fmt.Errorf("tag %s=%q: want never, on-change, or an age such as 7d, 2w or 36h", TagRebuild, v)
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(v, suffix); ok {
			if k, err := strconv.Atoi(n); err == nil && k > 0 {
				return time.Duration(k) * unit, false, nil
			}
			return 0, false, bad
		}
	}
	d, perr := time.ParseDuration(v)
	if perr != nil || d <= 0 {
		return 0, false, bad
	}
	return d, false, nil
}

func shortHash(h string) string {
	if h == "" {
		return "none"
	}
	if rest, ok := strings.CutPrefix(h, "sha256:"); ok && len(rest) > 12 {
		return rest[:12]
	}
	return h
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// oneLineError is err's message on one line: a recipe error's first
// problem with its place.
func oneLineError(err error) string {
	if re, ok := errors.AsType[*RecipeError](err); ok {
		var first string
		n := 0
		for _, d := range re.Diags {
			if d.Severity != hcl.DiagError {
				continue
			}
			if n++; n > 1 {
				continue
			}
			first = d.Summary
			if d.Detail != "" {
				first += ": " + d.Detail
			}
			if d.Subject != nil && d.Subject.Filename != "" {
				at := d.Subject.Filename
				if d.Subject.Start.Line > 0 {
					at = fmt.Sprintf("%s:%d", at, d.Subject.Start.Line)
				}
				first = at + ": " + first
			}
		}
		switch {
		case n == 2:
			first += " (and 1 more problem: kiln validate shows all)"
		case n > 2:
			first += fmt.Sprintf(" (and %d more problems: kiln validate shows all)", n-1)
		}
		if n > 0 {
			return strings.Join(strings.Fields(first), " ")
		}
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}

// Start starts a bake for every bake decision (name: its build ID; input:
// the recipe version, the build and the trigger) and returns the decisions
// with Status, Execution and Error filled in. A bake started before (the
// same decision made again) is "already started", not an error. It
// returns every failure joined.
func (r *Rebuild) Start(ctx context.Context, decisions []RebuildDecision) ([]RebuildDecision, error) {
	out := slices.Clone(decisions)
	var errs []error
	for i := range out {
		d := &out[i]
		if d.Action != RebuildBake {
			continue
		}
		if r.Starter == nil {
			return out, errors.New("rebuild: no way to start bakes (Rebuild.Starter)")
		}
		id, err := r.Starter.StartBake(ctx, d.BuildID, State{Recipe: d.Ref, Only: d.Build, Trigger: d.Trigger})
		switch {
		case errors.Is(err, ErrBakeExists):
			d.Status = "already started"
		case err != nil:
			d.Status, d.Error = "failed", err.Error()
			errs = append(errs, fmt.Errorf("start bake %s of %s: %w", d.BuildID, d.Recipe, err))
		default:
			d.Status, d.Execution = "started", id
			Logger(ctx).Info("started bake", "recipe", d.Recipe, "build", d.BuildID, "execution", id, "reason", d.Reason)
		}
	}
	return out, errors.Join(errs...)
}

// RebuildEvent is the rebuild Lambda's input (the schedule's payload).
type RebuildEvent struct {
	// Recipes limits the run to these recipes (names or keys); empty
	// means all.
	Recipes []string `json:"recipes,omitempty"`
	// DryRun decides and reports without starting anything.
	DryRun bool `json:"dry_run,omitempty"`
}

// RebuildResult is the rebuild Lambda's output.
type RebuildResult struct {
	At        time.Time         `json:"at"`
	DryRun    bool              `json:"dry_run,omitempty"`
	Decisions []RebuildDecision `json:"decisions"`
	Event     string            `json:"event,omitempty"`
}

// RebuildDecisionsDetail is the detail of the kiln.rebuild.decisions event.
type RebuildDecisionsDetail struct {
	At        time.Time         `json:"at"`
	DryRun    bool              `json:"dry_run"`
	Decisions []RebuildDecision `json:"decisions"`
	// Omitted counts skip decisions left out to fit EventBridge's limit.
	Omitted int `json:"omitted,omitempty"`
}

// Handle is the rebuild Lambda's handler (and `kiln serve --local`'s
// schedule): it decides, starts the bakes unless ev.DryRun, logs every
// decision and puts one kiln.rebuild.decisions event.
func (r *Rebuild) Handle(ctx context.Context, ev RebuildEvent) (RebuildResult, error) {
	res := RebuildResult{At: r.now(), DryRun: ev.DryRun}
	ds, err := r.Decide(ctx, ev.Recipes)
	if err != nil {
		return res, err
	}
	var startErr error
	if !ev.DryRun {
		ds, startErr = r.Start(ctx, ds)
	}
	log := Logger(ctx)
	for _, d := range ds {
		attrs := []any{"recipe", d.Recipe, "key", d.Ref.Key, "version", d.Ref.Version, "action", string(d.Action), "reason", d.Reason}
		if d.Build != "" {
			attrs = append(attrs, "build_name", d.Build)
		}
		if d.BuildID != "" {
			attrs = append(attrs, "build", d.BuildID, "status", d.Status)
		}
		log.Info("rebuild decision", attrs...)
	}
	res.Decisions = ds
	detail := RebuildDecisionsDetail{At: res.At, DryRun: ev.DryRun}
	detail.Decisions, detail.Omitted = fitDecisions(ds, func(d RebuildDecision) bool { return d.Action == RebuildSkip }, func(ds []RebuildDecision) any {
		c := detail
		c.Decisions = ds
		return c
	})
	res.Event, err = putJobEvent(ctx, r.Events, r.Config.withDefaults().EventBus, EventRebuildDecisions, detail)
	return res, errors.Join(startErr, err)
}

// WriteRebuildTable prints decisions as a table a person can check at a
// glance: recipe, Region, base image now, newest image and its age, the
// decision and why.
func WriteRebuildTable(w io.Writer, ds []RebuildDecision, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RECIPE\tREGION\tBASE\tNEWEST\tAGE\tDECISION\tREASON")
	bakes := 0
	for _, d := range ds {
		recipe := d.Recipe
		if d.Build != "" {
			recipe += "/" + d.Build
		}
		newest, age := "-", "-"
		if d.Newest != nil {
			newest, age = d.Newest.ImageID, FormatAge(now.Sub(d.Newest.BuiltAt))
		}
		decision := string(d.Action)
		if d.Status != "" {
			decision += " (" + d.Status + ")"
		}
		if d.Action == RebuildBake {
			bakes++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", recipe, dash(d.Region), dash(d.BaseAMI), newest, age, decision, d.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d recipes: %d to bake, %d skipped.\n", len(ds), bakes, len(ds)-bakes)
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// RebuildMaxAgeFromEnv reads the stack's maximum image age before a
// rebuild from KILN_REBUILD_MAX_AGE_DAYS (default
// DefaultRebuildMaxAgeDays; 0 turns age-based rebuilds off).
func RebuildMaxAgeFromEnv() (time.Duration, error) {
	v := strings.TrimSpace(envOr("KILN_REBUILD_MAX_AGE_DAYS", strconv.Itoa(DefaultRebuildMaxAgeDays)))
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("KILN_REBUILD_MAX_AGE_DAYS=%q: want a whole number of days", v)
	}
	return time.Duration(n) * 24 * time.Hour, nil
}

// stepFunctionsAPI is the part of Step Functions the rebuild job uses.
type stepFunctionsAPI interface {
	sfn.ListExecutionsAPIClient
	DescribeExecution(ctx context.Context, in *sfn.DescribeExecutionInput, optFns ...func(*sfn.Options)) (*sfn.DescribeExecutionOutput, error)
	StartExecution(ctx context.Context, in *sfn.StartExecutionInput, optFns ...func(*sfn.Options)) (*sfn.StartExecutionOutput, error)
}

// StepFunctions is Bakes on the stack's state machine: a bake is an
// execution. Executions started by an upload have generated names, so
// RunningBakes reads each running execution's input (DescribeExecution,
// remembered per execution) to find its recipe.
type StepFunctions struct {
	// Client is a Step Functions client of the state machine's Region.
	Client stepFunctionsAPI
	// StateMachineARN is the bake state machine (KILN_STATE_MACHINE_ARN).
	StateMachineARN string

	inputs sync.Map // execution ARN → RecipeRef
}

// NewStepFunctions returns the Bakes of the state machine arn.
func NewStepFunctions(client stepFunctionsAPI, arn string) *StepFunctions {
	return &StepFunctions{Client: client, StateMachineARN: arn}
}

// RunningBakes lists the running executions whose input names the recipe
// object recipe.Bucket/recipe.Key (any version).
func (s *StepFunctions) RunningBakes(ctx context.Context, recipe RecipeRef) ([]string, error) {
	if s.StateMachineARN == "" {
		return nil, errors.New("no state machine configured (KILN_STATE_MACHINE_ARN)")
	}
	var out []string
	p := sfn.NewListExecutionsPaginator(s.Client, &sfn.ListExecutionsInput{
		StateMachineArn: aws.String(s.StateMachineARN),
		StatusFilter:    sfntypes.ExecutionStatusRunning,
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list running executions of %s: %w", s.StateMachineARN, err)
		}
		for _, e := range page.Executions {
			arn := aws.ToString(e.ExecutionArn)
			ref, err := s.recipeOf(ctx, arn)
			if err != nil {
				return nil, err
			}
			if ref.Bucket == recipe.Bucket && ref.Key == recipe.Key {
				out = append(out, arn)
			}
		}
	}
	return out, nil
}

// recipeOf returns the recipe an execution bakes, from its input.
func (s *StepFunctions) recipeOf(ctx context.Context, arn string) (RecipeRef, error) {
	if ref, ok := s.inputs.Load(arn); ok {
		return ref.(RecipeRef), nil
	}
	out, err := s.Client.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: aws.String(arn)})
	if IsNotFound(err) {
		return RecipeRef{}, nil
	}
	if err != nil {
		return RecipeRef{}, fmt.Errorf("describe execution %s: %w", arn, err)
	}
	var st State
	// An input that is not a bake's names no recipe.
	_ = json.Unmarshal([]byte(aws.ToString(out.Input)), &st)
	s.inputs.Store(arn, st.Recipe)
	return st.Recipe, nil
}

// StartBake starts an execution named name with st as its input. A name
// used before (within Step Functions' 90 days) is ErrBakeExists.
func (s *StepFunctions) StartBake(ctx context.Context, name string, st State) (string, error) {
	if s.StateMachineARN == "" {
		return "", errors.New("no state machine configured (KILN_STATE_MACHINE_ARN)")
	}
	in, err := json.Marshal(st)
	if err != nil {
		return "", fmt.Errorf("encode bake input: %w", err)
	}
	out, err := s.Client.StartExecution(ctx, &sfn.StartExecutionInput{
		StateMachineArn: aws.String(s.StateMachineARN),
		Name:            aws.String(name),
		Input:           aws.String(string(in)),
	})
	if AWSCode(err) == "ExecutionAlreadyExists" {
		return "", fmt.Errorf("start execution %s: %w", name, ErrBakeExists)
	}
	if err != nil {
		return "", fmt.Errorf("start execution %s of %s: %w", name, s.StateMachineARN, err)
	}
	return aws.ToString(out.ExecutionArn), nil
}
