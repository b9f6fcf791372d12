package bake

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/uuid"
	"github.com/hashicorp/hcl/v2"
	"golang.org/x/crypto/ssh"
)

// launchAPI is the part of EC2 the launch stage uses. Calls go to the
// build's Region through a per-call Region option, so one client serves
// recipes for any Region.
type launchAPI interface {
	ec2.DescribeImagesAPIClient
	ec2.DescribeSubnetsAPIClient
	ec2.DescribeVpcsAPIClient
	ec2.DescribeSecurityGroupsAPIClient
	ec2.DescribeKeyPairsAPIClient
	ec2.DescribeInstancesAPIClient
	CreateSecurityGroup(ctx context.Context, in *ec2.CreateSecurityGroupInput, optFns ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error)
	AuthorizeSecurityGroupIngress(ctx context.Context, in *ec2.AuthorizeSecurityGroupIngressInput, optFns ...func(*ec2.Options)) (*ec2.AuthorizeSecurityGroupIngressOutput, error)
	ImportKeyPair(ctx context.Context, in *ec2.ImportKeyPairInput, optFns ...func(*ec2.Options)) (*ec2.ImportKeyPairOutput, error)
	DeleteKeyPair(ctx context.Context, in *ec2.DeleteKeyPairInput, optFns ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error)
	RunInstances(ctx context.Context, in *ec2.RunInstancesInput, optFns ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
}

// launchParamAPI is the part of SSM Parameter Store the launch stage uses:
// the login key's SecureString and amazon-parameterstore data sources.
type launchParamAPI interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
	PutParameter(ctx context.Context, in *ssm.PutParameterInput, optFns ...func(*ssm.Options)) (*ssm.PutParameterOutput, error)
}

// launchObjectAPI reads recipes and stored plans and stores plans.
type launchObjectAPI interface {
	objectGetter
	objectPutter
}

// tagHostKey carries, on the build instance, the public half of the SSH
// host key kiln installed through user data, so that a launch rerun after a
// lost response learns it from the instance it finds (the key is public).
const tagHostKey = "kiln:host-key"

// DefaultRunningTimeout bounds the wait for the build instance to run.
const DefaultRunningTimeout = 10 * time.Minute

// instanceNotFoundGrace is how long after RunInstances an unknown instance
// ID is taken for EC2's eventual consistency rather than absence
// (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html).
const instanceNotFoundGrace = 5 * time.Minute

// Launch is the launch stage: it evaluates the recipe into a stored plan
// and starts the build instance, as Packer's amazon-ebs builder does before
// provisioning.
//
// Its actions, in the order the state machine runs them:
//
//   - "plan" reads the recipe, evaluates it and stores the plan;
//   - "run" resolves the base image and network, creates the temporary
//     security group and login key and runs the instance;
//   - "check" says whether the instance is running.
//
// Every resource is tagged at creation with the build's identity, and "run"
// looks each one up by tag or build-scoped name before creating it, so it
// can run again after a lost response without making a second of anything.
type Launch struct {
	// EC2 is an EC2 client; calls name the build's Region per call.
	EC2 launchAPI
	// SSM is a Parameter Store client; calls name their Region per call.
	SSM launchParamAPI
	// S3 reads recipes and stored plans and stores plans.
	S3 launchObjectAPI
	// Config is the deployment's settings.
	Config Config
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// NewKey generates a private key of type "ed25519" or "rsa" for the
	// login key and the host key; crypto/rand keys if nil.
	NewKey func(keyType string) (crypto.Signer, error)
	// RunningTimeout bounds the wait for the instance to run; zero means
	// DefaultRunningTimeout.
	RunningTimeout time.Duration
}

// Actions returns the launch stage's actions for Handler.
func (l *Launch) Actions() map[string]Action {
	return map[string]Action{
		"plan": func(ctx context.Context, ev Event) (State, error) {
			st, err := l.Plan(ctx, ev.State)
			if err != nil {
				return st, err
			}
			return l.Claim(ctx, st, ev.Execution)
		},
		"run":   func(ctx context.Context, ev Event) (State, error) { return l.Run(ctx, ev.State) },
		"check": func(ctx context.Context, ev Event) (State, error) { return l.Check(ctx, ev.State) },
	}
}

func (l *Launch) now() time.Time {
	if l.Now != nil {
		return l.Now().UTC()
	}
	return time.Now().UTC()
}

func (l *Launch) newKey(keyType string) (crypto.Signer, error) {
	if l.NewKey != nil {
		return l.NewKey(keyType)
	}
	return generateKey(keyType)
}

// generateKey makes a private key with crypto/rand: ed25519 (kiln's
// default; newer OpenSSH rejects ssh-rsa signatures) or 3072-bit RSA.
func generateKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case "", "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case "rsa":
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("unsupported key type %q", keyType)
}

// ec2In sends an EC2 call to region.
func ec2In(region string) func(*ec2.Options) {
	return func(o *ec2.Options) {
		if region != "" {
			o.Region = region
		}
	}
}

// ssmIn sends an SSM call to region.
func ssmIn(region string) func(*ssm.Options) {
	return func(o *ssm.Options) {
		if region != "" {
			o.Region = region
		}
	}
}

// ---------------------------------------------------------------- plan

// ClaimKey is the object that records which execution owns a build.
func ClaimKey(buildID string) string { return "builds/" + buildID + "/claim" }

// Claim makes execution the owner of the build, or finds that another
// execution already is. EventBridge delivers S3 events at least once, and
// every delivery starts an execution of the same recipe version, so the
// same build: the first to write the claim (a conditional put, If-None-Match)
// bakes, and the others set DuplicateOf, which the state machine ends on
// (AlreadyBaking) before anything is created. A retry of this execution's
// own plan finds its own claim and goes on. An empty execution (a direct
// call, not from the state machine) claims nothing.
func (l *Launch) Claim(ctx context.Context, st State, execution string) (State, error) {
	if execution == "" || st.BuildID == "" {
		return st, nil
	}
	key := ClaimKey(st.BuildID)
	_, err := l.S3.PutObject(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(l.Config.Bucket),
		Key:         aws.String(key),
		Body:        strings.NewReader(execution),
		IfNoneMatch: aws.String("*"),
		ContentType: aws.String("text/plain"),
	})
	switch code := AWSCode(err); {
	case err == nil:
		return st, nil
	case code != "PreconditionFailed" && code != "ConditionalRequestConflict":
		return st, fmt.Errorf("claim build %s: %w", st.BuildID, err)
	}
	out, err := l.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(l.Config.Bucket), Key: aws.String(key)})
	if err != nil {
		return st, fmt.Errorf("read claim of build %s: %w", st.BuildID, err)
	}
	defer out.Body.Close()
	owner, err := io.ReadAll(io.LimitReader(out.Body, 4096))
	if err != nil {
		return st, fmt.Errorf("read claim of build %s: %w", st.BuildID, err)
	}
	if string(owner) != execution {
		st.DuplicateOf = string(owner)
		Logger(ctx).Info("build already claimed: ending", "owner", string(owner))
	}
	return st, nil
}

// Plan evaluates the recipe at st.Recipe (that object version) with st.Vars
// into a plan, stores it at PlanKey(BuildID) in the kiln bucket and fills
// st.BuildID (unless already set), st.StartedAt (unless already set) and
// st.Plan. The recipe sees no environment: env() is "" for every name, so a
// recipe cannot read the Lambda's credentials. A recipe that does not load,
// or has no build st.Only, fails with a *RecipeError before anything is
// created. When a plan for this build and a versioned recipe is stored
// already (a rerun after a lost response), Plan reuses it, so timestamp()
// and uuidv4() keep their first values.
func (l *Launch) Plan(ctx context.Context, st State) (State, error) {
	ref := st.Recipe
	if ref.Bucket == "" || ref.Key == "" {
		return st, recipeProblem(ref.Key, "Missing recipe location", "the execution's input names no recipe bucket and key")
	}
	if strings.HasSuffix(ref.Key, "/") {
		return st, recipeProblem(ref.Key, "Not a recipe", fmt.Sprintf("s3://%s/%s is a folder: upload a template file or a bundle (.tar.gz, .zip)", ref.Bucket, ref.Key))
	}
	if l.Config.Bucket == "" {
		return st, errors.New("plan: no kiln bucket configured (KILN_BUCKET)")
	}
	if st.BuildID == "" {
		st.BuildID = NewBuildID(ref, st.Vars, st.Only, st.Trigger)
	}
	if st.StartedAt.IsZero() {
		st.StartedAt = l.now()
	}
	planKey := PlanKey(st.BuildID)

	var plan *Plan
	if ref.Version != "" {
		p, err := l.storedPlan(ctx, planKey)
		if err != nil {
			return st, err
		}
		plan = p
	}
	if plan == nil {
		p, err := l.evaluate(ctx, st)
		if err != nil {
			return st, err
		}
		if err := storePlan(ctx, l.S3, l.Config.Bucket, planKey, p); err != nil {
			return st, err
		}
		plan = p
	}
	b, err := plan.Select(st.Only)
	if err != nil {
		return st, recipeProblem(ref.Key, "No such build", err.Error())
	}
	src := b.Source
	if src.Region == "" {
		return st, recipeProblem(ref.Key, "Missing region", fmt.Sprintf("build %s sets no region", b.FullName()))
	}
	extra := []string{} // never null: the state machine's Map reads $.plan.regions
	for _, r := range src.AMIRegions {
		if r != "" && r != src.Region && !slices.Contains(extra, r) {
			extra = append(extra, r)
		}
	}
	sort.Strings(extra)
	transport := transportOf(src, l.Config)
	switch {
	case transport == "ssh" && src.SSHUsername == "":
		return st, recipeProblem(ref.Key, "Missing ssh_username", fmt.Sprintf(
			"build %s provisions over SSH (ssh_interface %q, the stack's default transport is %q), which needs ssh_username",
			b.FullName(), src.SSHInterface, l.Config.withDefaults().DefaultTransport))
	case transport == "session_manager" && src.IAMInstanceProfile == "" && l.Config.InstanceProfile == "":
		return st, recipeProblem(ref.Key, "Missing instance profile", fmt.Sprintf(
			"build %s provisions through SSM Run Command (session_manager), whose agent needs an instance profile: set iam_instance_profile, or configure the stack's build instance profile (KILN_INSTANCE_PROFILE)",
			b.FullName()))
	}
	st.Plan = &PlanRef{
		Bucket:    l.Config.Bucket,
		Key:       planKey,
		Recipe:    plan.Name,
		Build:     b.Name,
		Hash:      plan.Hash,
		Region:    src.Region,
		Regions:   extra,
		Transport: transport,
		Encrypt:   src.EncryptBoot != nil && *src.EncryptBoot,
		Several:   len(plan.Builds) > 1,
	}
	if learned := readLearned(ctx, l.S3, l.Config.Bucket, plan.Name, b.Name); learned != nil {
		e := learned.Expect
		st.Expect = &e
	}
	Logger(ctx).Info("planned", "recipe", plan.Name, "build", b.FullName(), "region", src.Region, "regions", extra, "plan", "s3://"+l.Config.Bucket+"/"+planKey)
	return st, nil
}

// transportOf is how provisioning reaches the build's instance
// (ResolveTransport).
func transportOf(src AmazonEBS, cfg Config) string { return ResolveTransport(src, cfg) }

// storedPlan reads a plan stored earlier for this build, or nil if none.
func (l *Launch) storedPlan(ctx context.Context, key string) (*Plan, error) {
	out, err := l.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(l.Config.Bucket), Key: aws.String(key)})
	if IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stored plan s3://%s/%s: %w", l.Config.Bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read stored plan s3://%s/%s: %w", l.Config.Bucket, key, err)
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		// A plan kiln cannot read is re-evaluated and overwritten.
		Logger(ctx).Warn("ignoring unreadable stored plan", "key", key, "error", err.Error())
		return nil, nil
	}
	return &p, nil
}

// evaluate reads the recipe object and loads it.
func (l *Launch) evaluate(ctx context.Context, st State) (*Plan, error) {
	ref := st.Recipe
	in := &s3.GetObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(ref.Key)}
	if ref.Version != "" {
		in.VersionId = aws.String(ref.Version)
	}
	out, err := l.S3.GetObject(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("read recipe s3://%s/%s (version %q): %w", ref.Bucket, ref.Key, ref.Version, err)
	}
	defer out.Body.Close()
	limit := DefaultBundleLimits().MaxCompressedSize
	body, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read recipe s3://%s/%s: %w", ref.Bucket, ref.Key, err)
	}
	if int64(len(body)) > limit {
		return nil, recipeProblem(ref.Key, "Recipe too large", fmt.Sprintf("s3://%s/%s is larger than %d bytes", ref.Bucket, ref.Key, limit))
	}
	name := RecipeName(ref.Key)
	var (
		fsys  fs.FS
		entry = "."
	)
	if IsBundleName(ref.Key) {
		rfs, err := OpenRecipeBundle(bytes.NewReader(body), int64(len(body)), path.Base(ref.Key), DefaultBundleLimits())
		if err != nil {
			return nil, recipeProblem(ref.Key, "Invalid bundle", err.Error())
		}
		fsys = rfs
	} else {
		entry = path.Base(ref.Key)
		rfs, err := NewMemRecipeFS(entry, map[string][]byte{entry: body})
		if err != nil {
			return nil, recipeProblem(ref.Key, "Invalid recipe", err.Error())
		}
		fsys = rfs
	}
	started := st.StartedAt
	uuids := 0
	plan, err := LoadFS(fsys, entry, name, LoadOptions{
		Vars: st.Vars,
		// Env is empty on purpose: the Lambda's environment holds its AWS
		// credentials, and a recipe must not read them through env().
		Env: map[string]string{},
		Now: func() time.Time { return started },
		// uuidv4() is derived from the build, so that a plan evaluated
		// again for the same build names things the same way.
		NewUUID: func() string {
			uuids++
			return deterministicUUID(st.BuildID, uuids)
		},
	})
	if err != nil {
		if _, ok := errors.AsType[*RecipeError](err); ok {
			return nil, err
		}
		return nil, recipeProblem(ref.Key, "Invalid recipe", err.Error())
	}
	return plan, nil
}

// deterministicUUID is a version-4-shaped UUID derived from the build and
// a counter.
func deterministicUUID(buildID string, n int) string {
	h := sha256.New()
	h.Write([]byte(buildID))
	_ = binary.Write(h, binary.BigEndian, int64(n))
	var u uuid.UUID
	copy(u[:], h.Sum(nil))
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	return u.String()
}

// recipeProblem is a *RecipeError with one diagnostic, for problems found
// outside the loader (a missing build, a bad bundle), so that the state
// machine routes them as RecipeInvalid.
func recipeProblem(file, summary, detail string) *RecipeError {
	return &RecipeError{Diags: hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   detail,
		Subject:  &hcl.Range{Filename: file},
	}}}
}

// ---------------------------------------------------------------- run

// Run starts the build instance of the plan st.Plan refers to: it resolves
// the base image (source_ami, source_ami_filter, or a data source), the
// subnet and VPC, takes the stack's security group for the transport
// (Config.InstanceSecurityGroup, IsolatedSecurityGroup) or else creates a
// temporary one (SSH only from Config.ProvisionerSecurityGroup; no ingress
// for session_manager and none), the login key pair with its private half
// as a SecureString at <KeyPrefix>/<BuildID>/ssh-key (SSH only), a fresh
// SSH host key delivered by cloud-init (kept at
// <KeyPrefix>/<BuildID>/host-key until cleanup), and runs the instance. It
// fills st.Launch (IDs, the host public key, LaunchedAt) and a not-ready
// st.Wait. Each resource is found
// by tag or build-scoped name before it is created, and RunInstances
// carries a client token, so a rerun makes nothing twice.
func (l *Launch) Run(ctx context.Context, st State) (State, error) {
	plan, b, err := fetchPlan(ctx, l.S3, st.Plan)
	if err != nil {
		return st, err
	}
	if st.BuildID == "" {
		return st, errors.New("run: state has no build ID")
	}
	src := b.Source
	region := st.Plan.Region
	if region == "" {
		region = src.Region
	}
	transport := st.Plan.Transport
	if transport == "" {
		transport = transportOf(src, l.Config)
	}
	log := Logger(ctx)

	existing, err := l.findInstance(ctx, st.BuildID, region)
	if err != nil {
		return st, err
	}

	ln := Launched{Region: region}
	if existing != nil {
		// A rerun after RunInstances succeeded: adopt the instance and
		// everything it was launched with.
		ln.SourceAMI = aws.ToString(existing.ImageId)
		ln.SubnetID = aws.ToString(existing.SubnetId)
		ln.VPCID = aws.ToString(existing.VpcId)
	} else {
		if ln.SourceAMI, err = l.sourceImage(ctx, plan, src, region); err != nil {
			return st, err
		}
		if ln.VPCID, ln.SubnetID, err = l.network(ctx, st.BuildID, src, region); err != nil {
			return st, err
		}
	}

	groups := src.SecurityGroupIDs
	if len(groups) == 0 {
		if ln.SharedSecurityGroup, err = l.sharedSecurityGroup(ctx, region, ln.VPCID, transport); err != nil {
			return st, err
		}
		if ln.SharedSecurityGroup != "" {
			groups = []string{ln.SharedSecurityGroup}
		} else {
			if ln.SecurityGroupID, err = l.ensureSecurityGroup(ctx, st, src, region, ln.VPCID, transport); err != nil {
				return st, err
			}
			groups = []string{ln.SecurityGroupID}
		}
	}

	var loginPub string
	if transport == "ssh" {
		ln.KeyPairName, ln.KeyParameter, loginPub, err = l.ensureLoginKey(ctx, st, src, region)
		if err != nil {
			return st, err
		}
	}

	if existing == nil {
		existing, err = l.runInstance(ctx, st, src, ln, groups, transport, loginPub)
		if err != nil {
			return st, err
		}
		log.Info("launched instance", "instance", aws.ToString(existing.InstanceId), "region", region, "image", ln.SourceAMI)
	} else {
		log.Info("found instance launched earlier", "instance", aws.ToString(existing.InstanceId), "region", region)
	}
	ln.InstanceID = aws.ToString(existing.InstanceId)
	ln.HostKey = tagOf(existing.Tags, tagHostKey)
	if transport == "ssh" {
		ln.HostKeyParameter = hostKeyParameterName(l.Config, st.BuildID)
	}
	if transport == "ssh" && ln.HostKey == "" {
		return st, fmt.Errorf("instance %s has no %s tag: its SSH host key is unknown", ln.InstanceID, tagHostKey)
	}
	ln.LaunchedAt = l.now()
	if t := existing.LaunchTime; t != nil && !t.IsZero() && t.Before(ln.LaunchedAt) {
		ln.LaunchedAt = t.UTC()
	}
	st.Launch = &ln
	st.Wait = notReady("instance "+ln.InstanceID+" running", 0, l.now().Sub(ln.LaunchedAt), expectFor(st, l.Config).Running)
	return st, nil
}

// liveInstanceStates are the states of an instance a rerun adopts.
var liveInstanceStates = []string{"pending", "running", "stopping", "stopped"}

// findInstance returns the build's live instance in region, if any. If
// several exist (an emulator that ignores client tokens), it takes the
// earliest; cleanup removes all of them by tag.
func (l *Launch) findInstance(ctx context.Context, buildID, region string) (*ec2types.Instance, error) {
	var found []ec2types.Instance
	p := ec2.NewDescribeInstancesPaginator(l.EC2, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		buildFilter(buildID),
		{Name: aws.String("instance-state-name"), Values: liveInstanceStates},
	}})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx, ec2In(region))
		if err != nil {
			return nil, fmt.Errorf("find instance of build %s in %s: %w", buildID, region, err)
		}
		for _, r := range out.Reservations {
			for _, in := range r.Instances {
				if tagOf(in.Tags, TagBuild) == buildID {
					found = append(found, in)
				}
			}
		}
	}
	if len(found) == 0 {
		return nil, nil
	}
	sort.Slice(found, func(i, j int) bool {
		ti, tj := aws.ToTime(found[i].LaunchTime), aws.ToTime(found[j].LaunchTime)
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return aws.ToString(found[i].InstanceId) < aws.ToString(found[j].InstanceId)
	})
	return &found[0], nil
}

// sourceImage resolves the base image: source_ami, source_ami_filter or
// the data source source_ami_data names.
func (l *Launch) sourceImage(ctx context.Context, plan *Plan, src AmazonEBS, region string) (string, error) {
	switch {
	case src.SourceAMI != "":
		if _, err := l.describeImage(ctx, src.SourceAMI, region); err != nil {
			return "", fmt.Errorf("source_ami: %w", err)
		}
		return src.SourceAMI, nil
	case src.SourceAMIFilter != nil:
		id, err := l.filterImage(ctx, src.SourceAMIFilter, region)
		if err != nil {
			return "", fmt.Errorf("source_ami_filter: %w", err)
		}
		return id, nil
	case src.SourceAMIData != "":
		ds, ok := plan.Data[src.SourceAMIData]
		if !ok {
			return "", fmt.Errorf("source_ami: data source %q is not declared", src.SourceAMIData)
		}
		dsRegion := ds.Region
		if dsRegion == "" {
			dsRegion = region
		}
		switch ds.Type {
		case "amazon-ami":
			if ds.Filter == nil {
				return "", fmt.Errorf("data %q: no filter", src.SourceAMIData)
			}
			id, err := l.filterImage(ctx, ds.Filter, dsRegion)
			if err != nil {
				return "", fmt.Errorf("data %q: %w", src.SourceAMIData, err)
			}
			return id, nil
		case "amazon-parameterstore":
			out, err := l.SSM.GetParameter(ctx, &ssm.GetParameterInput{
				Name: aws.String(ds.Parameter), WithDecryption: aws.Bool(ds.WithDecryption),
			}, ssmIn(dsRegion))
			if err != nil {
				return "", fmt.Errorf("data %q: get parameter %s in %s: %w", src.SourceAMIData, ds.Parameter, dsRegion, err)
			}
			id := strings.TrimSpace(aws.ToString(out.Parameter.Value))
			if !strings.HasPrefix(id, "ami-") {
				return "", fmt.Errorf("data %q: parameter %s holds %q, not an image ID", src.SourceAMIData, ds.Parameter, id)
			}
			if _, err := l.describeImage(ctx, id, region); err != nil {
				return "", fmt.Errorf("data %q: %w", src.SourceAMIData, err)
			}
			return id, nil
		}
		return "", fmt.Errorf("data %q: unsupported data source type %q", src.SourceAMIData, ds.Type)
	}
	return "", errors.New("no source_ami, source_ami_filter or data source for the base image")
}

func (l *Launch) describeImage(ctx context.Context, id, region string) (ec2types.Image, error) {
	out, err := l.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}}, ec2In(region))
	if err != nil {
		return ec2types.Image{}, fmt.Errorf("describe image %s in %s: %w", id, region, err)
	}
	if len(out.Images) == 0 {
		return ec2types.Image{}, fmt.Errorf("image %s not found in %s", id, region)
	}
	img := out.Images[0]
	if img.State != ec2types.ImageStateAvailable {
		return ec2types.Image{}, fmt.Errorf("image %s in %s is %s, not available", id, region, img.State)
	}
	return img, nil
}

// filterImage finds the one image f selects in region: the newest with
// most_recent, an error when none or (without most_recent) several match,
// as in Packer.
func (l *Launch) filterImage(ctx context.Context, f *AMIFilter, region string) (string, error) {
	in := &ec2.DescribeImagesInput{Owners: f.Owners, Filters: ec2Filters(f.Filters)}
	if f.IncludeDeprecated {
		in.IncludeDeprecated = aws.Bool(true)
	}
	if _, ok := f.Filters["state"]; !ok {
		in.Filters = append(in.Filters, ec2types.Filter{Name: aws.String("state"), Values: []string{"available"}})
	}
	var images []ec2types.Image
	p := ec2.NewDescribeImagesPaginator(l.EC2, in)
	for p.HasMorePages() {
		out, err := p.NextPage(ctx, ec2In(region))
		if err != nil {
			return "", fmt.Errorf("describe images in %s: %w", region, err)
		}
		images = append(images, out.Images...)
	}
	desc := describeAMIFilter(f)
	switch {
	case len(images) == 0:
		return "", fmt.Errorf("no image in %s matches %s", region, desc)
	case len(images) > 1 && !f.MostRecent:
		ids := make([]string, 0, len(images))
		for _, img := range images {
			ids = append(ids, aws.ToString(img.ImageId))
		}
		sort.Strings(ids)
		if len(ids) > 5 {
			ids = append(ids[:5], "...")
		}
		return "", fmt.Errorf("%d images in %s match %s (%s): set most_recent = true or narrow the filter", len(images), region, desc, strings.Join(ids, ", "))
	}
	sort.Slice(images, func(i, j int) bool {
		ci, cj := aws.ToString(images[i].CreationDate), aws.ToString(images[j].CreationDate)
		if ci != cj {
			return ci > cj // RFC 3339 in UTC sorts as text
		}
		return aws.ToString(images[i].ImageId) > aws.ToString(images[j].ImageId)
	})
	return aws.ToString(images[0].ImageId), nil
}

func describeAMIFilter(f *AMIFilter) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(f.Filters)) {
		parts = append(parts, k+"="+f.Filters[k])
	}
	return fmt.Sprintf("filters {%s} owners %v", strings.Join(parts, ", "), f.Owners)
}

// ec2Filters turns a recipe's filter map into EC2 filters, sorted by name.
// A value is one value, as in Packer.
func ec2Filters(m map[string]string) []ec2types.Filter {
	var out []ec2types.Filter
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, ec2types.Filter{Name: aws.String(k), Values: []string{m[k]}})
	}
	return out
}

// network resolves the build's subnet and VPC: subnet_id, subnet_filter
// (most_free, random), or else within vpc_id / vpc_filter, else
// Config.SubnetID, else the most free default subnet of the default VPC.
func (l *Launch) network(ctx context.Context, buildID string, src AmazonEBS, region string) (vpc, subnet string, err error) {
	if src.SubnetID == "" && src.SubnetFilter == nil {
		switch {
		case src.VPCID != "":
			vpc = src.VPCID
		case src.VPCFilter != nil:
			if vpc, err = l.filterVPC(ctx, src.VPCFilter, region); err != nil {
				return "", "", err
			}
		}
	}
	var subnets []ec2types.Subnet
	switch {
	case src.SubnetID != "":
		if subnets, err = l.describeSubnets(ctx, region, &ec2.DescribeSubnetsInput{SubnetIds: []string{src.SubnetID}}); err != nil {
			return "", "", fmt.Errorf("subnet_id: %w", err)
		}
	case src.SubnetFilter != nil:
		in := &ec2.DescribeSubnetsInput{Filters: ec2Filters(src.SubnetFilter.Filters)}
		if subnets, err = l.describeSubnets(ctx, region, in); err != nil {
			return "", "", fmt.Errorf("subnet_filter: %w", err)
		}
		switch {
		case len(subnets) == 0:
			return "", "", fmt.Errorf("subnet_filter: no subnet in %s matches", region)
		case len(subnets) > 1 && !src.SubnetFilter.MostFree && !src.SubnetFilter.Random:
			return "", "", fmt.Errorf("subnet_filter: %d subnets in %s match: set most_free or random, or narrow the filter", len(subnets), region)
		}
	case vpc != "":
		if l.Config.SubnetID != "" {
			s, err := l.describeSubnets(ctx, region, &ec2.DescribeSubnetsInput{SubnetIds: []string{l.Config.SubnetID}})
			if err == nil && len(s) == 1 && aws.ToString(s[0].VpcId) == vpc {
				subnets = s
				break
			}
		}
		in := &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpc}}}}
		if subnets, err = l.describeSubnets(ctx, region, in); err != nil {
			return "", "", err
		}
		if len(subnets) == 0 {
			return "", "", fmt.Errorf("vpc %s in %s has no subnet", vpc, region)
		}
	case l.Config.SubnetID != "":
		if subnets, err = l.describeSubnets(ctx, region, &ec2.DescribeSubnetsInput{SubnetIds: []string{l.Config.SubnetID}}); err != nil {
			return "", "", fmt.Errorf("configured subnet (KILN_SUBNET_ID): %w", err)
		}
	default:
		in := &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{{Name: aws.String("default-for-az"), Values: []string{"true"}}}}
		if subnets, err = l.describeSubnets(ctx, region, in); err != nil {
			return "", "", err
		}
		if len(subnets) == 0 {
			return "", "", fmt.Errorf("no subnet: the recipe names none, none is configured (KILN_SUBNET_ID), and %s has no default VPC", region)
		}
	}
	if len(subnets) == 0 {
		return "", "", fmt.Errorf("subnet not found in %s", region)
	}
	// Most free addresses first; ties by ID, for a deterministic choice.
	sort.SliceStable(subnets, func(i, j int) bool {
		fi, fj := aws.ToInt32(subnets[i].AvailableIpAddressCount), aws.ToInt32(subnets[j].AvailableIpAddressCount)
		if fi != fj {
			return fi > fj
		}
		return aws.ToString(subnets[i].SubnetId) < aws.ToString(subnets[j].SubnetId)
	})
	s := subnets[0]
	if src.SubnetFilter != nil && src.SubnetFilter.Random {
		// Random, but the same for the build, so a rerun picks the same.
		s = pickStable(subnets, buildID)
	}
	return aws.ToString(s.VpcId), aws.ToString(s.SubnetId), nil
}

// pickStable picks one subnet at random, but the same one for a build.
func pickStable(subnets []ec2types.Subnet, buildID string) ec2types.Subnet {
	ids := make([]ec2types.Subnet, len(subnets))
	copy(ids, subnets)
	sort.Slice(ids, func(i, j int) bool { return aws.ToString(ids[i].SubnetId) < aws.ToString(ids[j].SubnetId) })
	sum := sha256.Sum256([]byte(buildID))
	return ids[binary.BigEndian.Uint64(sum[:8])%uint64(len(ids))]
}

func (l *Launch) describeSubnets(ctx context.Context, region string, in *ec2.DescribeSubnetsInput) ([]ec2types.Subnet, error) {
	var subnets []ec2types.Subnet
	p := ec2.NewDescribeSubnetsPaginator(l.EC2, in)
	for p.HasMorePages() {
		out, err := p.NextPage(ctx, ec2In(region))
		if err != nil {
			return nil, fmt.Errorf("describe subnets in %s: %w", region, err)
		}
		subnets = append(subnets, out.Subnets...)
	}
	return subnets, nil
}

func (l *Launch) filterVPC(ctx context.Context, f *VPCFilter, region string) (string, error) {
	out, err := l.EC2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: ec2Filters(f.Filters)}, ec2In(region))
	if err != nil {
		return "", fmt.Errorf("vpc_filter: describe vpcs in %s: %w", region, err)
	}
	switch len(out.Vpcs) {
	case 0:
		return "", fmt.Errorf("vpc_filter: no VPC in %s matches", region)
	case 1:
		return aws.ToString(out.Vpcs[0].VpcId), nil
	}
	return "", fmt.Errorf("vpc_filter: %d VPCs in %s match: narrow the filter", len(out.Vpcs), region)
}

// securityGroupName is the temporary security group's name.
func securityGroupName(buildID string) string { return "kiln-" + buildID }

// keyPairName is the login key pair's name.
func keyPairName(buildID string) string { return "kiln-" + buildID }

// keyParameterName is where the login private key is stored.
func keyParameterName(cfg Config, buildID string) string {
	return cfg.withDefaults().KeyPrefix + "/" + buildID + "/ssh-key"
}

// hostKeyParameterName is where the instance's SSH host private key is kept
// until cleanup, so that a rerun of launch hands RunInstances the same user
// data. Provisioning never reads it: it pins the public half.
func hostKeyParameterName(cfg Config, buildID string) string {
	return cfg.withDefaults().KeyPrefix + "/" + buildID + "/host-key"
}

// sharedSecurityGroup returns the stack's security group for transport if
// the build can use it: configured, in the build's Region and VPC, and
// admitting exactly what a temporary group would (SSH from the provisioner
// for "ssh", nothing otherwise). Else "", and the build gets a temporary
// group; a shared group that admits more is not used, and said so.
func (l *Launch) sharedSecurityGroup(ctx context.Context, region, vpc, transport string) (string, error) {
	id := l.Config.IsolatedSecurityGroup
	if transport == "ssh" {
		id = l.Config.InstanceSecurityGroup
		if l.Config.ProvisionerSecurityGroup == "" {
			return "", nil
		}
	}
	if id == "" {
		return "", nil
	}
	out, err := l.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}}, ec2In(region))
	switch {
	case IsNotFound(err):
		// The stack's group lives in its own Region.
		return "", nil
	case err != nil:
		return "", fmt.Errorf("describe the stack's security group %s in %s: %w", id, region, err)
	case len(out.SecurityGroups) != 1 || aws.ToString(out.SecurityGroups[0].VpcId) != vpc:
		return "", nil
	}
	if why := admitsMore(out.SecurityGroups[0].IpPermissions, transport, l.Config.ProvisionerSecurityGroup); why != "" {
		Logger(ctx).Warn("not using the stack's security group: it "+why+"; the build gets a temporary group", "group", id, "transport", transport)
		return "", nil
	}
	return id, nil
}

// admitsMore says what of perms goes beyond SSH from source (transport
// "ssh") or nothing at all (any other), or "" if nothing does.
func admitsMore(perms []ec2types.IpPermission, transport, source string) string {
	if transport != "ssh" {
		if len(perms) > 0 {
			return "admits inbound traffic"
		}
		return ""
	}
	ssh := 0
	for _, p := range perms {
		if aws.ToString(p.IpProtocol) != "tcp" || aws.ToInt32(p.FromPort) != 22 || aws.ToInt32(p.ToPort) != 22 ||
			len(p.IpRanges) > 0 || len(p.Ipv6Ranges) > 0 || len(p.PrefixListIds) > 0 {
			return "admits more than SSH from the provisioner"
		}
		for _, pair := range p.UserIdGroupPairs {
			if aws.ToString(pair.GroupId) != source {
				return "admits SSH from another group than the provisioner's"
			}
			ssh++
		}
	}
	if ssh == 0 {
		return "does not admit SSH from the provisioner"
	}
	return ""
}

// ensureSecurityGroup finds or creates the build's temporary security
// group in vpc and makes sure its only ingress is SSH from the provisioning
// Lambda's group (none at all unless the transport is SSH).
func (l *Launch) ensureSecurityGroup(ctx context.Context, st State, src AmazonEBS, region, vpc, transport string) (string, error) {
	if transport == "ssh" && l.Config.ProvisionerSecurityGroup == "" {
		return "", errors.New("no provisioner security group configured (KILN_PROVISIONER_SECURITY_GROUP): the build instance would admit no SSH")
	}
	name := securityGroupName(st.BuildID)
	g, err := l.findSecurityGroup(ctx, region, []ec2types.Filter{
		buildFilter(st.BuildID), {Name: aws.String("vpc-id"), Values: []string{vpc}},
	}, st.BuildID)
	if err != nil {
		return "", err
	}
	if g == nil {
		desc := "kiln build " + st.BuildID + ": SSH from the provisioner only"
		if transport != "ssh" {
			// session_manager: the agent calls out; nothing comes in.
			desc = "kiln build " + st.BuildID + ": no inbound traffic"
		}
		out, err := l.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
			GroupName:         aws.String(name),
			Description:       aws.String(desc),
			VpcId:             aws.String(vpc),
			TagSpecifications: []ec2types.TagSpecification{tagSpec(ec2types.ResourceTypeSecurityGroup, st, withName(src.RunTags, name))},
		}, ec2In(region))
		switch {
		case AWSCode(err) == "InvalidGroup.Duplicate":
			// Created by a run whose response was lost, not yet listed by
			// tag: take it if it is ours.
			g, err = l.findSecurityGroup(ctx, region, []ec2types.Filter{
				{Name: aws.String("group-name"), Values: []string{name}}, {Name: aws.String("vpc-id"), Values: []string{vpc}},
			}, st.BuildID)
			if err != nil {
				return "", err
			}
			if g == nil {
				return "", fmt.Errorf("security group %s exists in %s but is not tagged %s=%s", name, vpc, TagBuild, st.BuildID)
			}
		case err != nil:
			return "", fmt.Errorf("create security group %q in %s: %w", name, vpc, err)
		default:
			g = &ec2types.SecurityGroup{GroupId: out.GroupId, GroupName: aws.String(name), VpcId: aws.String(vpc)}
			Logger(ctx).Info("created security group", "group", aws.ToString(out.GroupId), "vpc", vpc)
		}
	}
	id := aws.ToString(g.GroupId)
	if transport != "ssh" {
		return id, nil
	}
	source := l.Config.ProvisionerSecurityGroup
	for _, p := range g.IpPermissions {
		for _, pair := range p.UserIdGroupPairs {
			if aws.ToString(p.IpProtocol) == "tcp" && aws.ToInt32(p.FromPort) == 22 && aws.ToInt32(p.ToPort) == 22 && aws.ToString(pair.GroupId) == source {
				return id, nil
			}
		}
	}
	_, err = l.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: aws.String(id),
		IpPermissions: []ec2types.IpPermission{{
			IpProtocol: aws.String("tcp"),
			FromPort:   aws.Int32(22),
			ToPort:     aws.Int32(22),
			UserIdGroupPairs: []ec2types.UserIdGroupPair{{
				GroupId:     aws.String(source),
				Description: aws.String("SSH from the kiln provisioner"),
			}},
		}},
	}, ec2In(region))
	if err != nil && AWSCode(err) != "InvalidPermission.Duplicate" {
		return "", fmt.Errorf("allow ssh into security group %s from %s: %w", id, source, err)
	}
	return id, nil
}

// findSecurityGroup returns the one group the filters select that carries
// the build's tag, or nil.
func (l *Launch) findSecurityGroup(ctx context.Context, region string, filters []ec2types.Filter, buildID string) (*ec2types.SecurityGroup, error) {
	p := ec2.NewDescribeSecurityGroupsPaginator(l.EC2, &ec2.DescribeSecurityGroupsInput{Filters: filters})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx, ec2In(region))
		if err != nil {
			return nil, fmt.Errorf("find security group of build %s in %s: %w", buildID, region, err)
		}
		for _, g := range out.SecurityGroups {
			if tagOf(g.Tags, TagBuild) == buildID {
				return &g, nil
			}
		}
	}
	return nil, nil
}

// ensureLoginKey finds or creates the login key: its private half in
// Parameter Store first (so the key pair never exists without it), then the
// EC2 key pair holding the public half, in the build's Region. The private
// half is kiln's own data and lives in the deployment's Region (the SSM
// client's), where provisioning reads and cleanup deletes it. It returns the key pair's name, the
// parameter's name and the public key's authorized_keys line.
func (l *Launch) ensureLoginKey(ctx context.Context, st State, src AmazonEBS, region string) (name, param, pub string, err error) {
	name, param = keyPairName(st.BuildID), keyParameterName(l.Config, st.BuildID)
	signer, _, err := l.storedKey(ctx, st, param, src.TemporaryKeyPairType, "login key", "kiln "+st.BuildID)
	if err != nil {
		return "", "", "", err
	}
	pub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))

	out, err := l.EC2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{name}, IncludePublicKey: aws.Bool(true)}, ec2In(region))
	switch {
	case IsNotFound(err):
	case err != nil:
		return "", "", "", fmt.Errorf("describe key pair %s: %w", name, err)
	case len(out.KeyPairs) > 0:
		have := strings.TrimSpace(aws.ToString(out.KeyPairs[0].PublicKey))
		if have == "" || sameKey(have, pub) {
			return name, param, pub, nil
		}
		// A key pair left by an attempt whose stored key was lost: the
		// name is the build's, so replace it.
		if _, err := l.EC2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(name)}, ec2In(region)); err != nil {
			return "", "", "", fmt.Errorf("replace key pair %s: %w", name, err)
		}
	}
	_, err = l.EC2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{
		KeyName:           aws.String(name),
		PublicKeyMaterial: []byte(pub),
		TagSpecifications: []ec2types.TagSpecification{tagSpec(ec2types.ResourceTypeKeyPair, st, withName(src.RunTags, name))},
	}, ec2In(region))
	if err != nil && AWSCode(err) != "InvalidKeyPair.Duplicate" {
		return "", "", "", fmt.Errorf("import key pair %s: %w", name, err)
	}
	if err == nil {
		Logger(ctx).Info("imported key pair", "key_pair", name)
	}
	return name, param, pub, nil
}

// sameKey compares two authorized_keys lines by key, ignoring comments.
func sameKey(a, b string) bool {
	ka, _, _, _, errA := ssh.ParseAuthorizedKey([]byte(a))
	kb, _, _, _, errB := ssh.ParseAuthorizedKey([]byte(b))
	return errA == nil && errB == nil && bytes.Equal(ka.Marshal(), kb.Marshal())
}

// storedKey returns the private key stored as a SecureString at param,
// generating and storing one of keyType first if there is none. Keys are
// stored before they are used anywhere, so a rerun of a stage that died
// after using one (an instance launched with it, a key pair imported) finds
// the same key: RunInstances retried with its client token then carries the
// same user data and returns the first call's instance instead of failing
// with IdempotentParameterMismatch. It returns the key and its PEM.
func (l *Launch) storedKey(ctx context.Context, st State, param, keyType, what, comment string) (ssh.Signer, []byte, error) {
	if signer, pemBytes, err := l.readKey(ctx, param, what); err != nil || signer != nil {
		return signer, pemBytes, err
	}
	key, err := l.newKey(keyType)
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s: %w", what, err)
	}
	block, err := ssh.MarshalPrivateKey(key, comment)
	if err != nil {
		return nil, nil, fmt.Errorf("encode %s: %w", what, err)
	}
	pemBytes := pem.EncodeToMemory(block)
	var tags []ssmtypes.Tag
	for _, t := range ec2Tags(st, nil) {
		tags = append(tags, ssmtypes.Tag{Key: t.Key, Value: t.Value})
	}
	_, err = l.SSM.PutParameter(ctx, &ssm.PutParameterInput{
		Name:        aws.String(param),
		Description: aws.String("kiln build " + st.BuildID + ": " + what + " (deleted by cleanup)"),
		Type:        ssmtypes.ParameterTypeSecureString,
		Value:       aws.String(string(pemBytes)),
		Tags:        tags,
	})
	switch {
	case AWSCode(err) == "ParameterAlreadyExists":
		// Another attempt stored one first: use that one.
		signer, pemBytes, err := l.readKey(ctx, param, what)
		if err == nil && signer == nil {
			err = fmt.Errorf("%s %s exists but cannot be read", what, param)
		}
		return signer, pemBytes, err
	case err != nil:
		return nil, nil, fmt.Errorf("store %s %s: %w", what, param, err)
	}
	signer, err := ssh.NewSignerFromSigner(key)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	Logger(ctx).Info("stored "+what, "parameter", param)
	return signer, pemBytes, nil
}

// readKey reads the private key stored at param, or nil if there is none.
func (l *Launch) readKey(ctx context.Context, param, what string) (ssh.Signer, []byte, error) {
	out, err := l.SSM.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(param), WithDecryption: aws.Bool(true)})
	if IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read %s %s: %w", what, param, err)
	}
	pemBytes := []byte(aws.ToString(out.Parameter.Value))
	signer, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		// Never include the value: it is a private key.
		return nil, nil, fmt.Errorf("%s %s does not hold a private key", what, param)
	}
	return signer, pemBytes, nil
}

// runInstance generates the host key, builds the user data and runs the
// instance.
func (l *Launch) runInstance(ctx context.Context, st State, src AmazonEBS, ln Launched, groups []string, transport, loginPub string) (*ec2types.Instance, error) {
	instanceTags := withName(src.RunTags, "kiln-"+st.BuildID)
	userData := []byte(src.UserData)
	if transport == "session_manager" && src.SSHUsername != "" {
		// Provisioners run as ssh_username, as over SSH (and in Packer's
		// session_manager): cloud-init makes sure the user exists with
		// sudo, as it does for SSH, but with no key and no host key.
		var err error
		if userData, err = buildUserData(kilnUserDataInput{User: src.SSHUsername, Recipe: []byte(src.UserData)}); err != nil {
			return nil, err
		}
	}
	if transport == "ssh" {
		hostKey, hostPEM, err := l.storedKey(ctx, st, hostKeyParameterName(l.Config, st.BuildID), "ed25519", "host key", "kiln host key "+st.BuildID)
		if err != nil {
			return nil, err
		}
		sshPub := hostKey.PublicKey()
		hostPub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
		userData, err = buildUserData(kilnUserDataInput{
			HostKeyPEM: hostPEM, HostPublicKey: hostPub,
			User: src.SSHUsername, AuthorizedKey: loginPub, Recipe: []byte(src.UserData),
		})
		if err != nil {
			return nil, err
		}
		instanceTags = maps.Clone(instanceTags)
		instanceTags[tagHostKey] = hostPub
	}
	in := &ec2.RunInstancesInput{
		ImageId:      aws.String(ln.SourceAMI),
		InstanceType: ec2types.InstanceType(src.InstanceType),
		MinCount:     aws.Int32(1),
		MaxCount:     aws.Int32(1),
		ClientToken:  aws.String(runToken(st)),
		TagSpecifications: []ec2types.TagSpecification{
			tagSpec(ec2types.ResourceTypeInstance, st, instanceTags),
			tagSpec(ec2types.ResourceTypeVolume, st, src.RunVolumeTags),
		},
		MetadataOptions:     metadataOptions(src.MetadataOptions),
		BlockDeviceMappings: launchBlockDevices(src.LaunchBlockDeviceMappings),
	}
	if len(userData) > 0 {
		if len(userData) > maxUserData {
			return nil, fmt.Errorf("user_data is %d bytes; EC2 allows %d", len(userData), maxUserData)
		}
		in.UserData = aws.String(base64.StdEncoding.EncodeToString(userData))
	}
	if src.ShutdownBehavior != "" {
		in.InstanceInitiatedShutdownBehavior = ec2types.ShutdownBehavior(src.ShutdownBehavior)
	}
	if ln.KeyPairName != "" {
		in.KeyName = aws.String(ln.KeyPairName)
	}
	profile := src.IAMInstanceProfile
	if profile == "" && transport == "session_manager" {
		profile = l.Config.InstanceProfile
	}
	if profile != "" {
		if strings.HasPrefix(profile, "arn:") {
			in.IamInstanceProfile = &ec2types.IamInstanceProfileSpecification{Arn: aws.String(profile)}
		} else {
			in.IamInstanceProfile = &ec2types.IamInstanceProfileSpecification{Name: aws.String(profile)}
		}
	}
	if src.AssociatePublicIPAddress != nil {
		// A public address can only be asked for on a network interface,
		// which then carries the subnet and groups.
		in.NetworkInterfaces = []ec2types.InstanceNetworkInterfaceSpecification{{
			DeviceIndex:              aws.Int32(0),
			SubnetId:                 aws.String(ln.SubnetID),
			Groups:                   groups,
			AssociatePublicIpAddress: src.AssociatePublicIPAddress,
			DeleteOnTermination:      aws.Bool(true),
		}}
	} else {
		in.SubnetId = aws.String(ln.SubnetID)
		in.SecurityGroupIds = groups
	}
	out, err := l.EC2.RunInstances(ctx, in, ec2In(ln.Region))
	if AWSCode(err) == "IdempotentParameterMismatch" {
		// An earlier attempt launched the build's instance with this
		// token, which no describe shows yet (EC2 is eventually
		// consistent), and this attempt chose differently (a subnet's free
		// addresses changed). The retry adopts it once it is visible.
		return nil, fmt.Errorf("instance of build %s (client token %s) was launched by an earlier attempt and is %w: %v",
			st.BuildID, aws.ToString(in.ClientToken), ErrNotYetVisible, err)
	}
	if err != nil {
		return nil, fmt.Errorf("run instance of %s in %s: %w", ln.SourceAMI, ln.SubnetID, err)
	}
	if len(out.Instances) == 0 {
		return nil, fmt.Errorf("run instance of %s: no instance returned", ln.SourceAMI)
	}
	inst := out.Instances[0]
	if tagOf(inst.Tags, tagHostKey) == "" && instanceTags[tagHostKey] != "" {
		// Some responses omit tags; the ones asked for are the ones it has.
		inst.Tags = ec2Tags(st, instanceTags)
	}
	return &inst, nil
}

// runToken is RunInstances' client token: derived from the build and its
// start, so a retried call returns the first call's instance, while a
// later execution of the same build (after the 24 hours a token lives past
// termination, or a deliberate re-bake) is not handed a dead instance.
func runToken(st State) string {
	sum := sha256.Sum256([]byte(st.BuildID + "\x00" + st.StartedAt.UTC().Format(time.RFC3339Nano) + "\x00run-instances"))
	return "kiln-" + hex.EncodeToString(sum[:20])
}

// withName returns tags with a Name unless the recipe set one.
func withName(tags map[string]string, name string) map[string]string {
	out := maps.Clone(tags)
	if out == nil {
		out = map[string]string{}
	}
	if _, ok := out["Name"]; !ok {
		out["Name"] = name
	}
	return out
}

// metadataOptions turns the recipe's metadata_options into RunInstances'
// options, requiring IMDSv2 tokens unless the recipe says otherwise.
func metadataOptions(m MetadataOptions) *ec2types.InstanceMetadataOptionsRequest {
	out := &ec2types.InstanceMetadataOptionsRequest{HttpTokens: ec2types.HttpTokensStateRequired}
	if m.HTTPTokens != "" {
		out.HttpTokens = ec2types.HttpTokensState(m.HTTPTokens)
	}
	if m.HTTPEndpoint != "" {
		out.HttpEndpoint = ec2types.InstanceMetadataEndpointState(m.HTTPEndpoint)
	}
	if m.HTTPPutResponseHopLimit > 0 {
		out.HttpPutResponseHopLimit = aws.Int32(int32(m.HTTPPutResponseHopLimit))
	}
	if m.InstanceMetadataTags != "" {
		out.InstanceMetadataTags = ec2types.InstanceMetadataTagsState(m.InstanceMetadataTags)
	}
	return out
}

// launchBlockDevices turns launch_block_device_mappings into RunInstances'
// block device mappings.
func launchBlockDevices(devs []BlockDevice) []ec2types.BlockDeviceMapping {
	var out []ec2types.BlockDeviceMapping
	for _, d := range devs {
		m := ec2types.BlockDeviceMapping{DeviceName: aws.String(d.DeviceName)}
		switch {
		case d.NoDevice:
			m.NoDevice = aws.String("")
		case d.VirtualName != "":
			m.VirtualName = aws.String(d.VirtualName)
		default:
			e := &ec2types.EbsBlockDevice{DeleteOnTermination: aws.Bool(true)}
			if d.DeleteOnTermination != nil {
				e.DeleteOnTermination = d.DeleteOnTermination
			}
			if d.VolumeType != "" {
				e.VolumeType = ec2types.VolumeType(d.VolumeType)
			}
			if d.VolumeSize > 0 {
				e.VolumeSize = aws.Int32(int32(d.VolumeSize))
			}
			if d.IOPS > 0 {
				e.Iops = aws.Int32(int32(d.IOPS))
			}
			if d.Throughput > 0 {
				e.Throughput = aws.Int32(int32(d.Throughput))
			}
			if d.Encrypted != nil {
				e.Encrypted = d.Encrypted
			}
			if d.KMSKeyID != "" {
				e.KmsKeyId = aws.String(d.KMSKeyID)
			}
			if d.SnapshotID != "" {
				e.SnapshotId = aws.String(d.SnapshotID)
			}
			m.Ebs = e
		}
		out = append(out, m)
	}
	return out
}

// tagOf returns the value of tag key, or "".
func tagOf(tags []ec2types.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// ---------------------------------------------------------------- check

// Check says whether the build instance runs. Running: st.Launch gets its
// addresses and st.Wait is ready. Pending (or not yet known to
// DescribeInstances, EC2 being eventually consistent): st.Wait says when to
// look again. An instance that stopped or terminated on its own is an
// error naming EC2's state reason; one still pending after RunningTimeout
// is a *WaitTimeoutError.
func (l *Launch) Check(ctx context.Context, st State) (State, error) {
	if st.Launch == nil || st.Launch.InstanceID == "" {
		return st, errors.New("check: state has no launched instance")
	}
	ln := *st.Launch
	id := ln.InstanceID
	what := "instance " + id + " running"
	polls := 0
	if st.Wait != nil {
		polls = st.Wait.Polls
	}
	elapsed := l.now().Sub(ln.LaunchedAt)
	if ln.LaunchedAt.IsZero() {
		elapsed = 0
	}
	bound := l.RunningTimeout
	if bound <= 0 {
		bound = DefaultRunningTimeout
	}
	notYet := func() (State, error) {
		if elapsed >= bound {
			return st, &WaitTimeoutError{For: what, After: elapsed}
		}
		st.Wait = notReady(what, polls, elapsed, expectFor(st, l.Config).Running)
		return st, nil
	}

	out, err := l.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, ec2In(ln.Region))
	if err != nil {
		if AWSCode(err) == "InvalidInstanceID.NotFound" && elapsed < instanceNotFoundGrace {
			return notYet()
		}
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
	if inst == nil {
		if elapsed < instanceNotFoundGrace {
			return notYet()
		}
		return st, fmt.Errorf("instance %s not found in %s", id, ln.Region)
	}
	state := ec2types.InstanceStateNamePending
	if inst.State != nil {
		state = inst.State.Name
	}
	switch state {
	case ec2types.InstanceStateNamePending:
		return notYet()
	case ec2types.InstanceStateNameRunning:
	default:
		return st, fmt.Errorf("instance %s is %s%s", id, state, instanceStateReason(inst))
	}
	ln.PrivateIP = aws.ToString(inst.PrivateIpAddress)
	ln.PublicIP = aws.ToString(inst.PublicIpAddress)
	ln.PrivateDNS = aws.ToString(inst.PrivateDnsName)
	ln.PublicDNS = aws.ToString(inst.PublicDnsName)
	st.Launch = &ln
	if st.Plan != nil && st.Plan.Transport == "ssh" {
		if err := l.checkAddress(ctx, st, ln); err != nil {
			return st, err
		}
	}
	st = tookFor(st, func(t *Timings) { t.Running = elapsed })
	st.Wait = ready(what, polls)
	return st, nil
}

// checkAddress fails early when the instance lacks the address its
// ssh_interface needs, instead of letting provisioning time out.
func (l *Launch) checkAddress(ctx context.Context, st State, ln Launched) error {
	_, b, err := fetchPlan(ctx, l.S3, st.Plan)
	if err != nil {
		return err
	}
	var have string
	switch b.Source.SSHInterface {
	case "public_ip":
		have = ln.PublicIP
	case "public_dns":
		have = ln.PublicDNS
	case "private_dns":
		have = ln.PrivateDNS
	default:
		have = ln.PrivateIP
	}
	if have == "" {
		return fmt.Errorf("instance %s has no address for ssh_interface %q (associate_public_ip_address, or the subnet's settings)", ln.InstanceID, b.Source.SSHInterface)
	}
	return nil
}

// instanceStateReason renders EC2's reason for an instance's state.
func instanceStateReason(inst *ec2types.Instance) string {
	if r := inst.StateReason; r != nil && (aws.ToString(r.Message) != "" || aws.ToString(r.Code) != "") {
		msg := aws.ToString(r.Message)
		if msg == "" {
			msg = aws.ToString(r.Code)
		}
		return ": " + msg
	}
	if s := aws.ToString(inst.StateTransitionReason); s != "" {
		return ": " + s
	}
	return ""
}
