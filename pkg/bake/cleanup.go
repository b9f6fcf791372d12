package bake

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// cleanupAPI is the part of EC2 cleanup uses, in every Region of the build
// (named per call).
type cleanupAPI interface {
	ec2.DescribeInstancesAPIClient
	ec2.DescribeSecurityGroupsAPIClient
	ec2.DescribeKeyPairsAPIClient
	ec2.DescribeImagesAPIClient
	ec2.DescribeSnapshotsAPIClient
	ec2.DescribeVolumesAPIClient
	TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, optFns ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	DeleteSecurityGroup(ctx context.Context, in *ec2.DeleteSecurityGroupInput, optFns ...func(*ec2.Options)) (*ec2.DeleteSecurityGroupOutput, error)
	DeleteKeyPair(ctx context.Context, in *ec2.DeleteKeyPairInput, optFns ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error)
	DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, optFns ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, optFns ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
	DeleteVolume(ctx context.Context, in *ec2.DeleteVolumeInput, optFns ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error)
	CreateTags(ctx context.Context, in *ec2.CreateTagsInput, optFns ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

// cleanupParamAPI is the part of Parameter Store cleanup uses: the stored
// login key.
type cleanupParamAPI interface {
	ssm.GetParametersByPathAPIClient
	ssm.GetParameterHistoryAPIClient
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
	PutParameter(ctx context.Context, in *ssm.PutParameterInput, optFns ...func(*ssm.Options)) (*ssm.PutParameterOutput, error)
	DeleteParameter(ctx context.Context, in *ssm.DeleteParameterInput, optFns ...func(*ssm.Options)) (*ssm.DeleteParameterOutput, error)
}

// cleanupObjectAPI is the part of S3 cleanup uses: the stored plan (to
// learn the Regions when the state lacks them) and the staged files.
type cleanupObjectAPI interface {
	objectGetter
	s3.ListObjectsV2APIClient
	DeleteObjects(ctx context.Context, in *s3.DeleteObjectsInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectsOutput, error)
}

// cleanupCommandAPI is the part of SSM Run Command cleanup uses: it
// cancels the build's commands that still run (session_manager).
type cleanupCommandAPI interface {
	ssm.ListCommandsAPIClient
	CancelCommand(ctx context.Context, in *ssm.CancelCommandInput, optFns ...func(*ssm.Options)) (*ssm.CancelCommandOutput, error)
}

// cleanupLogAPI deletes the build's command log group (session_manager),
// which holds the commands' raw, unredacted output.
type cleanupLogAPI interface {
	DeleteLogGroup(ctx context.Context, in *cloudwatchlogs.DeleteLogGroupInput, optFns ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.DeleteLogGroupOutput, error)
}

// DefaultCleanupTimeout bounds how long cleanup waits for the instance to
// terminate before it reports the security group and the volumes it kept
// as not deleted.
const DefaultCleanupTimeout = 15 * time.Minute

// StagedPrefix is where a build's staged files live in the kiln bucket;
// cleanup deletes everything under it.
func StagedPrefix(buildID string) string { return "builds/" + buildID + "/staged/" }

// Cleanup is the cleanup stage, which every bake ends with, successful or
// not. Its one action, "run", removes the build's temporaries (instance,
// the volumes it kept on termination, security group, key pair, stored
// key, staged files, and for session_manager builds the command log group,
// after cancelling the commands that still run) always, and the
// images and snapshots the build made in every Region when it failed
// (st.Error set). It finds resources from the state and by the kiln:build
// tag, so it works from a nearly empty state; it never touches a resource
// that does not carry the build's tag; NotFound counts as done; and it can
// run any number of times.
type Cleanup struct {
	// EC2 is an EC2 client; calls name their Region per call.
	EC2 cleanupAPI
	// SSM is a Parameter Store client; calls name their Region per call.
	SSM cleanupParamAPI
	// S3 reads the stored plan and deletes staged files.
	S3 cleanupObjectAPI
	// Commands cancels the build's SSM commands that still run, in the
	// instance's Region; nil skips that.
	Commands cleanupCommandAPI
	// Logs deletes the build's command log group, in the instance's
	// Region; nil skips that.
	Logs cleanupLogAPI
	// Config is the deployment's settings.
	Config Config
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Timeout bounds the wait for the instance to terminate (the security
	// group and the volumes it kept cannot go before it); zero means
	// DefaultCleanupTimeout.
	Timeout time.Duration
}

// Actions returns the cleanup stage's actions for Handler.
func (c *Cleanup) Actions() map[string]Action {
	return map[string]Action{
		"run": func(ctx context.Context, ev Event) (State, error) { return c.Run(ctx, ev.State) },
	}
}

func (c *Cleanup) now() time.Time {
	if c.Now != nil {
		return c.Now().UTC()
	}
	return time.Now().UTC()
}

// cleanupRound is one run of cleanup: what it deleted, what it could not,
// and what it is still waiting for.
type cleanupRound struct {
	c       *Cleanup
	log     *slog.Logger
	buildID string
	deleted []string
	errs    []error
	// waiting names what must go away before the round can finish (an
	// instance still shutting down, holding a group or volume).
	waiting []string
	// late is set once the wait has exceeded its bound.
	late bool
}

func (r *cleanupRound) done(region, kind, id string) {
	r.deleted = append(r.deleted, region+" "+kind+" "+id)
}

func (r *cleanupRound) fail(region, kind, id string, err error) {
	r.errs = append(r.errs, fmt.Errorf("%s %s %s: %w", region, kind, id, err))
}

// Run removes what the build made; see Cleanup. It fills st.Cleanup with
// what it deleted (over all runs) and could not delete. While the instance
// is still shutting down and the security group and the volumes it keeps
// (delete_on_termination = false) therefore cannot go yet, it returns a
// not-ready st.Wait, so the state machine waits and runs it again; when
// done, st.Wait is ready. Anything it could not delete is reported as one
// *CleanupError.
func (c *Cleanup) Run(ctx context.Context, st State) (State, error) {
	buildID := st.BuildID
	if buildID == "" && st.Recipe.Key != "" {
		// The plan step failed before it returned: its identity is
		// derived from the input alone.
		buildID = NewBuildID(st.Recipe, st.Vars, st.Only, st.Trigger)
	}
	report := CleanupReport{}
	if st.Cleanup != nil {
		report = *st.Cleanup
	}
	if report.StartedAt.IsZero() {
		report.StartedAt = c.now()
	}
	polls := 0
	if st.Wait != nil && !st.Wait.Ready && strings.HasPrefix(st.Wait.For, "cleanup") {
		polls = st.Wait.Polls
	}
	if buildID == "" {
		st.Cleanup = &report
		st.Wait = ready("cleanup", polls)
		return st, nil
	}
	elapsed := c.now().Sub(report.StartedAt)
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCleanupTimeout
	}
	log := Logger(ctx)
	r := &cleanupRound{c: c, log: log, buildID: buildID, late: elapsed >= timeout}

	regions, err := c.regions(ctx, st, buildID)
	if err != nil {
		r.errs = append(r.errs, err)
	}
	if len(regions) > 0 {
		home := regions[0]
		// A command still running goes first: terminating the instance
		// would end it too, but SSM would record it as failed, not
		// cancelled, and keep trying to deliver one not yet picked up.
		r.commands(ctx, st, home)
		alive := r.instances(ctx, st, home)
		r.keyPairs(ctx, st, home)
		r.parameters(ctx, st)
		switch {
		case st.Error != nil:
			for _, region := range regions {
				imgs, snaps := stateImages(st, region, region == home)
				removed := r.images(ctx, st, region, imgs, snaps, true)
				r.unpublish(ctx, st, buildID, region, removed)
			}
		case st.Image != nil && st.Image.Intermediate != "" && st.Image.Intermediate != st.Image.ID:
			// A successful encrypted build keeps only the encrypted copy;
			// the unencrypted image it was copied from goes if the
			// snapshot stage did not remove it already.
			r.images(ctx, st, home, []string{st.Image.Intermediate}, nil, false)
		}
		r.volumes(ctx, home, alive)
		r.securityGroups(ctx, st, home, alive)
		r.logGroup(ctx, st, home)
	}
	r.staged(ctx)

	report.Deleted = appendNew(report.Deleted, r.deleted...)
	report.Failed = nil
	for _, err := range r.errs {
		report.Failed = append(report.Failed, err.Error())
	}
	st.Cleanup = &report
	for _, d := range r.deleted {
		log.Info("deleted", "resource", d)
	}
	if len(r.errs) > 0 {
		return st, &CleanupError{Errs: r.errs, After: st.Error}
	}
	if len(r.waiting) > 0 {
		// Termination takes about as long as a stop. Cleanup need not
		// notice it within seconds, so it polls at most every 10 s.
		st.Wait = notReady("cleanup: "+strings.Join(r.waiting, ", "), polls, elapsed, c.Config.Expect.Stopped)
		st.Wait.Seconds = max(st.Wait.Seconds, 10)
		return st, nil
	}
	st.Wait = ready("cleanup", polls)
	return st, nil
}

func appendNew(list []string, items ...string) []string {
	for _, it := range items {
		if !slices.Contains(list, it) {
			list = append(list, it)
		}
	}
	return list
}

// regions lists the build's Regions, the instance's first: from the state's
// plan reference, else the launch, else the stored plan (a failure in
// "plan" after it stored the plan), plus the Regions of copies. None means
// nothing was launched.
func (c *Cleanup) regions(ctx context.Context, st State, buildID string) ([]string, error) {
	var out []string
	switch {
	case st.Plan != nil && st.Plan.Region != "":
		out = append(out, st.Plan.Region)
		out = append(out, st.Plan.Regions...)
	case st.Launch != nil && st.Launch.Region != "":
		out = append(out, st.Launch.Region)
	case c.Config.Bucket != "":
		p, err := c.storedPlan(ctx, buildID)
		if err != nil {
			return nil, err
		}
		if p != nil {
			if b, err := p.Select(st.Only); err == nil && b.Source.Region != "" {
				out = append(out, b.Source.Region)
				out = append(out, b.Source.AMIRegions...)
			}
		}
	}
	for _, cp := range st.Copies {
		out = append(out, cp.Region)
	}
	var uniq []string
	for _, r := range out {
		if r != "" && !slices.Contains(uniq, r) {
			uniq = append(uniq, r)
		}
	}
	return uniq, nil
}

func (c *Cleanup) storedPlan(ctx context.Context, buildID string) (*Plan, error) {
	key := PlanKey(buildID)
	out, err := c.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(c.Config.Bucket), Key: aws.String(key)})
	if IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read plan s3://%s/%s: %w", c.Config.Bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read plan s3://%s/%s: %w", c.Config.Bucket, key, err)
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode plan s3://%s/%s: %w", c.Config.Bucket, key, err)
	}
	return &p, nil
}

// instances terminates the build's instances in region and reports
// whether any is not terminated yet.
func (r *cleanupRound) instances(ctx context.Context, st State, region string) (alive []string) {
	api := r.c.EC2
	found := map[string]ec2types.Instance{}
	if st.Launch != nil && st.Launch.InstanceID != "" {
		id := st.Launch.InstanceID
		out, err := api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, ec2In(region))
		switch {
		case IsNotFound(err):
		case err != nil:
			r.fail(region, "instance", id, fmt.Errorf("describe: %w", err))
		default:
			for _, res := range out.Reservations {
				for _, in := range res.Instances {
					found[aws.ToString(in.InstanceId)] = in
				}
			}
		}
	}
	p := ec2.NewDescribeInstancesPaginator(api, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{buildFilter(r.buildID)}})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx, ec2In(region))
		if err != nil {
			r.fail(region, "instances", "tagged "+r.buildID, fmt.Errorf("describe: %w", err))
			break
		}
		for _, res := range out.Reservations {
			for _, in := range res.Instances {
				found[aws.ToString(in.InstanceId)] = in
			}
		}
	}
	var terminate []string
	for _, id := range slices.Sorted(maps.Keys(found)) {
		in := found[id]
		if !r.owned(region, "instance", id, in.Tags) {
			continue
		}
		state := ec2types.InstanceStateName("")
		if in.State != nil {
			state = in.State.Name
		}
		switch state {
		case ec2types.InstanceStateNameTerminated:
		case ec2types.InstanceStateNameShuttingDown:
			alive = append(alive, id)
		default:
			terminate = append(terminate, id)
		}
	}
	if len(terminate) == 0 {
		return alive
	}
	out, err := api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: terminate}, ec2In(region))
	if err != nil && !IsNotFound(err) {
		r.fail(region, "instance", strings.Join(terminate, ","), fmt.Errorf("terminate: %w", err))
		return append(alive, terminate...)
	}
	for _, id := range terminate {
		r.done(region, "instance", id)
	}
	if out == nil {
		return alive
	}
	for _, ch := range out.TerminatingInstances {
		if ch.CurrentState == nil || ch.CurrentState.Name != ec2types.InstanceStateNameTerminated {
			alive = append(alive, aws.ToString(ch.InstanceId))
		}
	}
	return alive
}

// ssmBuild reports whether the build may have used the session_manager
// transport (a state without its plan reference might have).
func ssmBuild(st State) bool {
	return st.Plan == nil || st.Plan.Transport == "" || st.Plan.Transport == "session_manager"
}

// commands cancels the build's SSM commands that have not finished: the
// one the state records, and any other the build sent to its instance
// (found by the Comment provisioning gives them), such as one sent by an
// invocation whose state was lost with its error. A command cleanup cannot
// cancel is no failure: terminating the instance ends it.
func (r *cleanupRound) commands(ctx context.Context, st State, region string) {
	if r.c.Commands == nil || !ssmBuild(st) || st.Launch == nil || st.Launch.InstanceID == "" {
		return
	}
	inst := st.Launch.InstanceID
	var ids []string
	if st.Provision != nil && st.Provision.Running != nil && st.Provision.Running.ID != "" {
		ids = append(ids, st.Provision.Running.ID)
	}
	prefix := stepComment(r.buildID, "")
	p := ssm.NewListCommandsPaginator(r.c.Commands, &ssm.ListCommandsInput{InstanceId: aws.String(inst)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx, ssmIn(region))
		if err != nil {
			r.log.Warn(fmt.Sprintf("list the commands of %s: %v", inst, err))
			break
		}
		for _, c := range out.Commands {
			switch c.Status {
			case ssmtypes.CommandStatusPending, ssmtypes.CommandStatusInProgress:
				if strings.HasPrefix(aws.ToString(c.Comment), prefix) {
					ids = appendNew(ids, aws.ToString(c.CommandId))
				}
			}
		}
	}
	for _, id := range ids {
		_, err := r.c.Commands.CancelCommand(ctx, &ssm.CancelCommandInput{CommandId: aws.String(id), InstanceIds: []string{inst}}, ssmIn(region))
		if err != nil {
			r.log.Warn(fmt.Sprintf("cancel command %s on %s: %v", id, inst, err))
			continue
		}
		r.log.Info("cancelled", "command", id, "instance", inst)
	}
}

// logGroup deletes the build's command log group: the raw output of its
// SSM commands, unredacted (kiln logged it redacted as it ran).
func (r *cleanupRound) logGroup(ctx context.Context, st State, region string) {
	if r.c.Logs == nil || !ssmBuild(st) {
		return
	}
	group := CommandLogGroup(r.c.Config, r.buildID)
	_, err := r.c.Logs.DeleteLogGroup(ctx, &cloudwatchlogs.DeleteLogGroupInput{LogGroupName: aws.String(group)}, logsIn(region))
	switch {
	case err == nil:
		r.done(region, "log-group", group)
	case IsNotFound(err):
	default:
		r.fail(region, "log-group", group, fmt.Errorf("delete: %w", err))
	}
}

// owned reports whether a resource carries the build's tag; one found
// through the state that does not is left alone, with a warning.
func (r *cleanupRound) owned(region, kind, id string, tags []ec2types.Tag) bool {
	if v := tagOf(tags, TagBuild); v != r.buildID {
		r.log.Warn("not deleting a resource without the build's tag", "region", region, "kind", kind, "id", id, "tag", v, "build", r.buildID)
		return false
	}
	return true
}

// securityGroups deletes the build's temporary security group. While an
// instance that uses it is still shutting down, EC2 answers
// DependencyViolation: then the round waits (until the bound).
func (r *cleanupRound) securityGroups(ctx context.Context, st State, region string, alive []string) {
	api := r.c.EC2
	found := map[string]ec2types.SecurityGroup{}
	if st.Launch != nil && st.Launch.SecurityGroupID != "" {
		id := st.Launch.SecurityGroupID
		out, err := api.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}}, ec2In(region))
		switch {
		case IsNotFound(err):
		case err != nil:
			r.fail(region, "security-group", id, fmt.Errorf("describe: %w", err))
		default:
			for _, g := range out.SecurityGroups {
				found[aws.ToString(g.GroupId)] = g
			}
		}
	}
	p := ec2.NewDescribeSecurityGroupsPaginator(api, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{buildFilter(r.buildID)}})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx, ec2In(region))
		if err != nil {
			r.fail(region, "security-groups", "tagged "+r.buildID, fmt.Errorf("describe: %w", err))
			break
		}
		for _, g := range out.SecurityGroups {
			found[aws.ToString(g.GroupId)] = g
		}
	}
	for _, id := range slices.Sorted(maps.Keys(found)) {
		if !r.owned(region, "security-group", id, found[id].Tags) {
			continue
		}
		_, err := api.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)}, ec2In(region))
		switch {
		case err == nil:
			r.done(region, "security-group", id)
		case IsNotFound(err):
		case AWSCode(err) == "DependencyViolation" && !r.late:
			what := "security group " + id
			if len(alive) > 0 {
				what = "instance " + strings.Join(alive, ", ") + " terminated, then " + what
			}
			r.waiting = append(r.waiting, what)
		default:
			r.fail(region, "security-group", id, fmt.Errorf("delete: %w", err))
		}
	}
}

// volumes deletes the build's volumes that outlive its instance: those of
// launch_block_device_mappings with delete_on_termination = false, which
// the AMI's mapping inherits, but which TerminateInstances leaves behind.
// They carry the build's tag from RunInstances. A volume is deleted once
// it is available; while it is still attached (its instance shutting
// down) the round waits, until the bound. A volume EC2 deletes with an
// instance alive lists (delete-on-termination) is left to EC2, so a build
// without such volumes waits for nothing.
func (r *cleanupRound) volumes(ctx context.Context, region string, alive []string) {
	api := r.c.EC2
	found := map[string]ec2types.Volume{}
	p := ec2.NewDescribeVolumesPaginator(api, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{buildFilter(r.buildID)}})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx, ec2In(region))
		if err != nil {
			r.fail(region, "volumes", "tagged "+r.buildID, fmt.Errorf("describe: %w", err))
			break
		}
		for _, v := range out.Volumes {
			found[aws.ToString(v.VolumeId)] = v
		}
	}
	for _, id := range slices.Sorted(maps.Keys(found)) {
		v := found[id]
		if !r.owned(region, "volume", id, v.Tags) {
			continue
		}
		var attached []string
		goesWithInstance := len(v.Attachments) > 0
		for _, a := range v.Attachments {
			inst := aws.ToString(a.InstanceId)
			attached = append(attached, inst)
			if !aws.ToBool(a.DeleteOnTermination) || !slices.Contains(alive, inst) {
				goesWithInstance = false
			}
		}
		switch v.State {
		case ec2types.VolumeStateDeleted:
			continue
		case ec2types.VolumeStateAvailable, ec2types.VolumeStateError:
		default: // in-use, creating, deleting
			if goesWithInstance {
				continue
			}
			r.waitVolume(region, id, attached, fmt.Errorf("still %s", v.State))
			continue
		}
		_, err := api.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)}, ec2In(region))
		switch {
		case err == nil:
			r.done(region, "volume", id)
		case IsNotFound(err):
		case AWSCode(err) == "VolumeInUse" || AWSCode(err) == "IncorrectState":
			// Attached again, or changing, since it was described.
			r.waitVolume(region, id, attached, fmt.Errorf("delete: %w", err))
		default:
			r.fail(region, "volume", id, fmt.Errorf("delete: %w", err))
		}
	}
}

// waitVolume makes the round wait for a volume that cannot go yet, or,
// once the wait is over its bound, reports it with why.
func (r *cleanupRound) waitVolume(region, id string, attached []string, why error) {
	if r.late {
		if len(attached) > 0 {
			why = fmt.Errorf("attached to %s: %w", strings.Join(attached, ", "), why)
		}
		r.fail(region, "volume", id, why)
		return
	}
	what := "volume " + id
	if len(attached) > 0 {
		what = "instance " + strings.Join(attached, ", ") + " terminated, then " + what
	}
	r.waiting = append(r.waiting, what)
}

// keyPairs deletes the build's login key pair. A key pair counts as the
// build's when it carries the tag, or when it carries no kiln:build tag at
// all and has the build-scoped name kiln gives it.
func (r *cleanupRound) keyPairs(ctx context.Context, st State, region string) {
	api := r.c.EC2
	names := []string{keyPairName(r.buildID)}
	if st.Launch != nil && st.Launch.KeyPairName != "" {
		names = appendNew(names, st.Launch.KeyPairName)
	}
	found := map[string]ec2types.KeyPairInfo{}
	for _, name := range names {
		out, err := api.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{name}}, ec2In(region))
		switch {
		case IsNotFound(err):
		case err != nil:
			r.fail(region, "key-pair", name, fmt.Errorf("describe: %w", err))
		default:
			for _, k := range out.KeyPairs {
				found[aws.ToString(k.KeyName)] = k
			}
		}
	}
	out, err := api.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: []ec2types.Filter{buildFilter(r.buildID)}}, ec2In(region))
	if err != nil {
		r.fail(region, "key-pairs", "tagged "+r.buildID, fmt.Errorf("describe: %w", err))
	} else {
		for _, k := range out.KeyPairs {
			found[aws.ToString(k.KeyName)] = k
		}
	}
	for _, name := range slices.Sorted(maps.Keys(found)) {
		k := found[name]
		tag := tagOf(k.Tags, TagBuild)
		if tag != r.buildID && (tag != "" || name != keyPairName(r.buildID)) {
			r.owned(region, "key-pair", name, k.Tags) // logs why
			continue
		}
		_, err := api.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(name)}, ec2In(region))
		switch {
		case err == nil:
			r.done(region, "key-pair", name)
		case IsNotFound(err):
		default:
			r.fail(region, "key-pair", name, fmt.Errorf("delete: %w", err))
		}
	}
}

// parameters deletes the stored login and host keys and anything else
// stored under the build's key path, in the deployment's Region (the SSM
// client's).
func (r *cleanupRound) parameters(ctx context.Context, st State) {
	const region = "ssm"
	if r.c.SSM == nil {
		return
	}
	cfg := r.c.Config.withDefaults()
	dir := cfg.KeyPrefix + "/" + r.buildID
	// Named as well as listed: a parameter just written may not be listed yet.
	names := []string{keyParameterName(cfg, r.buildID), hostKeyParameterName(cfg, r.buildID)}
	if st.Launch != nil {
		for _, name := range []string{st.Launch.KeyParameter, st.Launch.HostKeyParameter} {
			if strings.HasPrefix(name, dir+"/") {
				names = appendNew(names, name)
			}
		}
	}
	p := ssm.NewGetParametersByPathPaginator(r.c.SSM, &ssm.GetParametersByPathInput{Path: aws.String(dir), Recursive: aws.Bool(true)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			r.fail(region, "parameters", dir, fmt.Errorf("list: %w", err))
			break
		}
		for _, prm := range out.Parameters {
			names = appendNew(names, aws.ToString(prm.Name))
		}
	}
	for _, name := range names {
		_, err := r.c.SSM.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)})
		switch {
		case err == nil:
			r.done(region, "parameter", name)
		case IsNotFound(err):
		default:
			r.fail(region, "parameter", name, fmt.Errorf("delete: %w", err))
		}
	}
}

// staged deletes the build's staged files from the kiln bucket.
func (r *cleanupRound) staged(ctx context.Context) {
	bucket := r.c.Config.Bucket
	if bucket == "" || r.c.S3 == nil {
		return
	}
	prefix := StagedPrefix(r.buildID)
	p := s3.NewListObjectsV2Paginator(r.c.S3, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if IsNotFound(err) {
			return
		}
		if err != nil {
			r.fail("s3", "objects", "s3://"+bucket+"/"+prefix, fmt.Errorf("list: %w", err))
			return
		}
		var ids []s3types.ObjectIdentifier
		for _, o := range page.Contents {
			ids = append(ids, s3types.ObjectIdentifier{Key: o.Key})
		}
		if len(ids) == 0 {
			continue
		}
		out, err := r.c.S3.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: aws.String(bucket),
			Delete: &s3types.Delete{Objects: ids, Quiet: aws.Bool(true)},
		})
		if err != nil {
			r.fail("s3", "objects", "s3://"+bucket+"/"+prefix, fmt.Errorf("delete: %w", err))
			return
		}
		failed := map[string]bool{}
		for _, e := range out.Errors {
			failed[aws.ToString(e.Key)] = true
			r.fail("s3", "object", aws.ToString(e.Key), fmt.Errorf("delete: %s: %s", aws.ToString(e.Code), aws.ToString(e.Message)))
		}
		for _, id := range ids {
			if !failed[aws.ToString(id.Key)] {
				r.done("s3", "object", "s3://"+bucket+"/"+aws.ToString(id.Key))
			}
		}
	}
}

// stateImages lists the images and snapshots the state records in region.
func stateImages(st State, region string, home bool) (images, snapshots []string) {
	if st.Image != nil && home {
		images = append(images, st.Image.ID, st.Image.Intermediate)
		snapshots = append(snapshots, st.Image.Snapshots...)
	}
	for _, cp := range st.Copies {
		if cp.Region == region {
			images = append(images, cp.ImageID)
			snapshots = append(snapshots, cp.Snapshots...)
		}
	}
	return images, snapshots
}

// images deregisters images of the build in region and deletes their
// snapshots: the images named (stateImages) and, with byTag, every image
// and snapshot tagged with the build; the snapshots in the images' block
// device mappings; and the snapshots named (stateSnaps) that carry the tag.
func (r *cleanupRound) images(ctx context.Context, st State, region string, stateImages, stateSnaps []string, byTag bool) (owned []string) {
	api := r.c.EC2
	images := map[string]ec2types.Image{}
	for _, id := range stateImages {
		if id == "" || images[id].ImageId != nil {
			continue
		}
		out, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}}, ec2In(region))
		switch {
		case IsNotFound(err):
		case err != nil:
			r.fail(region, "image", id, fmt.Errorf("describe: %w", err))
		default:
			for _, img := range out.Images {
				images[aws.ToString(img.ImageId)] = img
			}
		}
	}
	p := ec2.NewDescribeImagesPaginator(api, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []ec2types.Filter{buildFilter(r.buildID)}})
	for byTag && p.HasMorePages() {
		out, err := p.NextPage(ctx, ec2In(region))
		if err != nil {
			r.fail(region, "images", "tagged "+r.buildID, fmt.Errorf("describe: %w", err))
			break
		}
		for _, img := range out.Images {
			images[aws.ToString(img.ImageId)] = img
		}
	}

	// Snapshots of the build's images are the build's even before the
	// snapshot stage tagged them: tag them first, so that if deleting one
	// fails after its image is gone, the next round still finds it.
	var snaps []string
	for _, id := range slices.Sorted(maps.Keys(images)) {
		img := images[id]
		if !r.owned(region, "image", id, img.Tags) {
			continue
		}
		owned = append(owned, id)
		var own []string
		for _, m := range img.BlockDeviceMappings {
			if m.Ebs != nil && aws.ToString(m.Ebs.SnapshotId) != "" {
				snaps = appendNew(snaps, *m.Ebs.SnapshotId)
				own = append(own, *m.Ebs.SnapshotId)
			}
		}
		if len(own) > 0 {
			_, err := api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: own, Tags: ec2Tags(State{BuildID: r.buildID, Plan: st.Plan}, nil)}, ec2In(region))
			if err != nil && !IsNotFound(err) {
				r.fail(region, "snapshot", strings.Join(own, ","), fmt.Errorf("tag before deleting: %w", err))
				continue
			}
		}
		_, err := api.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)}, ec2In(region))
		switch {
		case err == nil:
			r.done(region, "image", id)
		case IsNotFound(err):
		default:
			r.fail(region, "image", id, fmt.Errorf("deregister: %w", err))
		}
	}

	// Snapshots named in the state but in no image found: delete if tagged.
	var check []string
	for _, id := range stateSnaps {
		if id != "" && !slices.Contains(snaps, id) {
			check = appendNew(check, id)
		}
	}
	tagged := map[string]bool{}
	for _, id := range check {
		out, err := api.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}}, ec2In(region))
		switch {
		case IsNotFound(err):
		case err != nil:
			r.fail(region, "snapshot", id, fmt.Errorf("describe: %w", err))
		default:
			for _, s := range out.Snapshots {
				if r.owned(region, "snapshot", id, s.Tags) {
					tagged[id] = true
				}
			}
		}
	}
	sp := ec2.NewDescribeSnapshotsPaginator(api, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []ec2types.Filter{buildFilter(r.buildID)}})
	for byTag && sp.HasMorePages() {
		out, err := sp.NextPage(ctx, ec2In(region))
		if err != nil {
			r.fail(region, "snapshots", "tagged "+r.buildID, fmt.Errorf("describe: %w", err))
			break
		}
		for _, s := range out.Snapshots {
			if tagOf(s.Tags, TagBuild) == r.buildID {
				tagged[aws.ToString(s.SnapshotId)] = true
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(tagged)) {
		snaps = appendNew(snaps, id)
	}
	for _, id := range snaps {
		_, err := api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}, ec2In(region))
		switch {
		case err == nil:
			r.done(region, "snapshot", id)
		case IsNotFound(err):
		default:
			r.fail(region, "snapshot", id, fmt.Errorf("delete: %w", err))
		}
	}
	return owned
}

// unpublish undoes the publish step of a failed build in region: if the
// recipe's AMI parameter names an image this build made (which cleanup has
// just removed), it gets back the newest earlier value that still names a
// live image of another build, or is deleted when there is none. Without
// this, a build failing after publish would leave the parameter pointing at
// a deregistered AMI.
func (r *cleanupRound) unpublish(ctx context.Context, st State, buildID, region string, removed []string) {
	if st.Plan == nil || r.c.SSM == nil {
		return
	}
	several := false
	if plan, err := r.c.storedPlan(ctx, buildID); err == nil && plan != nil {
		several = len(plan.Builds) > 1
	}
	name := amiParameterName(r.c.Config.withDefaults().ParameterPrefix, st.Plan.Recipe, st.Plan.Build, several)
	in := func(o *ssm.Options) { o.Region = region }
	cur, err := r.c.SSM.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)}, in)
	switch {
	case IsNotFound(err):
		return
	case err != nil:
		r.fail(region, "parameter", name, fmt.Errorf("read: %w", err))
		return
	}
	value := aws.ToString(cur.Parameter.Value)
	if !slices.Contains(removed, value) && !r.imageOfBuild(ctx, region, value) {
		return // it names someone else's image: not ours to touch
	}
	var history []string // oldest first
	hp := ssm.NewGetParameterHistoryPaginator(r.c.SSM, &ssm.GetParameterHistoryInput{Name: aws.String(name)})
	for hp.HasMorePages() {
		page, err := hp.NextPage(ctx, in)
		if err != nil {
			r.fail(region, "parameter", name, fmt.Errorf("read history: %w", err))
			return
		}
		for _, h := range page.Parameters {
			history = append(history, aws.ToString(h.Value))
		}
	}
	for i := len(history) - 1; i >= 0; i-- {
		prev := history[i]
		if prev == value || slices.Contains(removed, prev) || !r.liveForeignImage(ctx, region, prev) {
			continue
		}
		_, err := r.c.SSM.PutParameter(ctx, &ssm.PutParameterInput{
			Name: aws.String(name), Value: aws.String(prev), Type: ssmtypes.ParameterTypeString,
			DataType: aws.String("aws:ec2:image"), Overwrite: aws.Bool(true),
		}, in)
		if err != nil {
			r.fail(region, "parameter", name, fmt.Errorf("restore to %s: %w", prev, err))
			return
		}
		r.done(region, "parameter", name+" (restored to "+prev+")")
		return
	}
	if _, err := r.c.SSM.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)}, in); err != nil && !IsNotFound(err) {
		r.fail(region, "parameter", name, fmt.Errorf("delete: %w", err))
		return
	}
	r.done(region, "parameter", name)
}

// imageOfBuild reports whether id is an image of this build, or one that no
// longer exists (a previous round deregistered it).
func (r *cleanupRound) imageOfBuild(ctx context.Context, region, id string) bool {
	out, err := r.c.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}}, ec2In(region))
	switch {
	case IsNotFound(err):
		return true
	case err != nil:
		return false
	case len(out.Images) == 0:
		return true
	}
	return tagOf(out.Images[0].Tags, TagBuild) == r.buildID
}

// liveForeignImage reports whether id is an available image of another
// build, fit to be published again.
func (r *cleanupRound) liveForeignImage(ctx context.Context, region, id string) bool {
	out, err := r.c.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}}, ec2In(region))
	if err != nil || len(out.Images) == 0 {
		return false
	}
	img := out.Images[0]
	return img.State == ec2types.ImageStateAvailable && tagOf(img.Tags, TagBuild) != r.buildID
}
