package bake

// Integration tests of the session_manager transport: launch, provision and
// cleanup through the real aws-sdk-go-v2 clients (EC2, SSM, S3, CloudWatch
// Logs, IAM) against moto (pkg/emulator).
//
// moto records SendCommand but runs nothing, answers every invocation with
// Success and no output, and lacks DescribeInstanceInformation and
// CancelCommand (shared/FACTS.md). motoAgent, a small shim in front of
// moto's SSM, covers that gap as the agent on the instance would: it
// answers that the agent is online, lets moto record each command and then
// runs it with /bin/sh on this machine, sending its output to moto's
// CloudWatch Logs, and reports its real status and exit code. Everything
// else, the staged files fetched through presigned URLs from moto's S3
// among it, is moto's.

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	cwltypes "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/kiln-dev/kiln/pkg/emulator"
)

// motoAgent is the shim in front of moto's SSM (see the file comment).
type motoAgent struct {
	*ssm.Client
	t    *testing.T
	logs *cloudwatchlogs.Client

	mu        sync.Mutex
	sent      []*ssm.SendCommandInput
	results   map[string]int32 // exit status by command ID
	cancelled []string
	described int
}

// DescribeInstanceInformation stands in for the operation moto lacks (500):
// the agent of an instance the shim is asked about is online.
func (a *motoAgent) DescribeInstanceInformation(_ context.Context, in *ssm.DescribeInstanceInformationInput, _ ...func(*ssm.Options)) (*ssm.DescribeInstanceInformationOutput, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.described++
	var list []ssmtypes.InstanceInformation
	for _, f := range in.Filters {
		for _, id := range f.Values {
			list = append(list, ssmtypes.InstanceInformation{InstanceId: aws.String(id), PingStatus: ssmtypes.PingStatusOnline, AgentVersion: aws.String("moto-shim")})
		}
	}
	return &ssm.DescribeInstanceInformationOutput{InstanceInformationList: list}, nil
}

// SendCommand lets moto record the command, then runs it as the agent
// would (moto runs nothing).
func (a *motoAgent) SendCommand(ctx context.Context, in *ssm.SendCommandInput, optFns ...func(*ssm.Options)) (*ssm.SendCommandOutput, error) {
	out, err := a.Client.SendCommand(ctx, in, optFns...)
	if err != nil {
		return nil, err
	}
	id := aws.ToString(out.Command.CommandId)
	a.mu.Lock()
	a.sent = append(a.sent, in)
	a.mu.Unlock()
	cw := in.CloudWatchOutputConfig
	group := aws.ToString(cw.CloudWatchLogGroupName)
	streams := map[string]bool{}
	code := runOnHost(a.t, strings.Join(in.Parameters["commands"], "\n"), func(stream, line string) {
		if cw == nil || !cw.CloudWatchOutputEnabled {
			return
		}
		name := id + "/" + in.InstanceIds[0] + "/aws-runShellScript/" + stream
		if !streams[name] {
			streams[name] = true
			if _, err := a.logs.CreateLogStream(ctx, &cloudwatchlogs.CreateLogStreamInput{LogGroupName: aws.String(group), LogStreamName: aws.String(name)}, optLogs(optFns)); err != nil {
				a.t.Errorf("agent: create log stream %s in %s: %v", name, group, err)
			}
		}
		_, err := a.logs.PutLogEvents(ctx, &cloudwatchlogs.PutLogEventsInput{LogGroupName: aws.String(group), LogStreamName: aws.String(name),
			LogEvents: []cwltypes.InputLogEvent{{Message: aws.String(line), Timestamp: aws.Int64(time.Now().UnixMilli())}}}, optLogs(optFns))
		if err != nil {
			a.t.Errorf("agent: put log events: %v", err)
		}
	})
	a.mu.Lock()
	a.results[id] = int32(code)
	a.mu.Unlock()
	return out, nil
}

// optLogs carries the Region of an SSM call over to a CloudWatch Logs one.
func optLogs(optFns []func(*ssm.Options)) func(*cloudwatchlogs.Options) {
	var o ssm.Options
	for _, f := range optFns {
		f(&o)
	}
	return logsIn(o.Region)
}

// GetCommandInvocation reports the command's real end (moto's is always
// Success, exit 0, no output).
func (a *motoAgent) GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, optFns ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error) {
	out, err := a.Client.GetCommandInvocation(ctx, in, optFns...)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if code, ok := a.results[aws.ToString(in.CommandId)]; ok {
		out.ResponseCode = code
		if code != 0 {
			out.Status, out.StatusDetails = ssmtypes.CommandInvocationStatusFailed, aws.String("Failed")
		}
	}
	return out, nil
}

// CancelCommand stands in for the operation moto lacks.
func (a *motoAgent) CancelCommand(_ context.Context, in *ssm.CancelCommandInput, _ ...func(*ssm.Options)) (*ssm.CancelCommandOutput, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cancelled = append(a.cancelled, aws.ToString(in.CommandId))
	return &ssm.CancelCommandOutput{}, nil
}

// motoSSMWorld is one test's moto, clients, stages and shim.
type motoSSMWorld struct {
	*motoStagesWorld
	logs  *cloudwatchlogs.Client
	agent *motoAgent
	prov  *Provision
	dest  string
}

func motoSSMSetup(t *testing.T) *motoSSMWorld {
	t.Helper()
	needFetcher(t)
	w := &motoSSMWorld{motoStagesWorld: motoStagesSetup(t), dest: t.TempDir()}
	// The same moto (another ForTest would reset it).
	cfg, err := emulator.Config(w.ctx, aws.ToString(w.ssm.Options().BaseEndpoint), emulator.TestRegion)
	if err != nil {
		t.Fatal(err)
	}
	w.logs = cloudwatchlogs.NewFromConfig(cfg)
	// The stack's build instance profile: moto's RunInstances checks that
	// the profile exists.
	iamc := iam.NewFromConfig(cfg)
	if _, err := iamc.CreateRole(w.ctx, &iam.CreateRoleInput{RoleName: aws.String("kiln-moto-build"), AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[]}`)}); err != nil {
		t.Fatalf("CreateRole = %v", err)
	}
	if _, err := iamc.CreateInstanceProfile(w.ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String("kiln-moto-build")}); err != nil {
		t.Fatalf("CreateInstanceProfile = %v", err)
	}
	if _, err := iamc.AddRoleToInstanceProfile(w.ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String("kiln-moto-build"), RoleName: aws.String("kiln-moto-build")}); err != nil {
		t.Fatalf("AddRoleToInstanceProfile = %v", err)
	}
	conf := w.launch.Config
	conf.InstanceProfile = "kiln-moto-build"
	w.launch.Config, w.cleanup.Config = conf, conf
	w.agent = &motoAgent{Client: w.ssm, t: t, logs: w.logs, results: map[string]int32{}}
	w.cleanup.Commands, w.cleanup.Logs = w.agent, w.logs
	w.prov = &Provision{
		SSM: w.ssm, S3: w.s3, Config: conf,
		RunCommand: w.agent, Output: w.logs, EC2: w.ec2, Stage: w.s3, Presign: s3.NewPresignClient(w.s3),
	}
	return w
}

// plan uploads the session_manager recipe and plans it with vars.
func (w *motoSSMWorld) plan(vars map[string]string) State {
	w.t.Helper()
	body, err := os.ReadFile("testdata/stages/moto-ssm.pkr.hcl")
	if err != nil {
		w.t.Fatal(err)
	}
	out, err := w.s3.PutObject(w.ctx, &s3.PutObjectInput{Bucket: aws.String(motoStagesRecipes), Key: aws.String("recipes/moto-ssm.pkr.hcl"), Body: strings.NewReader(string(body))})
	if err != nil {
		w.t.Fatalf("PutObject(recipe) = %v", err)
	}
	in := State{Recipe: RecipeRef{Bucket: motoStagesRecipes, Key: "recipes/moto-ssm.pkr.hcl", Version: aws.ToString(out.VersionId)}, Vars: vars}
	return w.motoStagesAct("launch", w.launch.Actions(), "plan", in)
}

// provision runs the provision stage's "run" through its Lambda handler
// as the state machine's loop does, until done or failed.
func (w *motoSSMWorld) provision(st State, logs *logSink) (State, error) {
	w.t.Helper()
	h := Handler("provision", w.prov.Actions(), slog.New(logs))
	for range 30 {
		next, err := h(w.ctx, Event{Action: "run", State: st})
		if err != nil {
			return st, err
		}
		st = next
		if st.Provision.Done {
			return st, nil
		}
	}
	w.t.Fatalf("provisioning not done after 30 invocations; logs:\n%s", logs.text())
	return st, nil
}

// TestMotoSSMBake: a session_manager recipe launches with no key pair and
// no ingress rule, provisions through SSM Run Command with the expected
// calls, and cleanup leaves nothing of the build.
func TestMotoSSMBake(t *testing.T) {
	w := motoSSMSetup(t)
	st := w.plan(map[string]string{"dest": w.dest})
	if st.Plan.Transport != "session_manager" {
		t.Fatalf("st.Plan.Transport = %q, want session_manager", st.Plan.Transport)
	}
	st = w.motoStagesAct("launch", w.launch.Actions(), "run", st)
	st = w.motoStagesAct("launch", w.launch.Actions(), "check", st)
	ctx, in := w.ctx, ec2In(motoStagesRegion)

	// Launch: the stack's profile, no key pair, no stored key, no ingress.
	if st.Launch.KeyPairName != "" || st.Launch.KeyParameter != "" || st.Launch.HostKey != "" {
		t.Errorf("st.Launch = %+v, want no key pair, login key or host key", st.Launch)
	}
	kps, err := w.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: []ec2types.Filter{buildFilter(st.BuildID)}}, in)
	if err != nil || len(kps.KeyPairs) != 0 {
		t.Errorf("DescribeKeyPairs(tag %s) = %+v, %v; want none", st.BuildID, kps, err)
	}
	sgs, err := w.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{st.Launch.SecurityGroupID}}, in)
	if err != nil || len(sgs.SecurityGroups) != 1 || len(sgs.SecurityGroups[0].IpPermissions) != 0 {
		t.Errorf("DescribeSecurityGroups(%s) = %+v, %v; want one group without ingress", st.Launch.SecurityGroupID, sgs, err)
	}
	insts, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{st.Launch.InstanceID}}, in)
	if err != nil || insts.Reservations[0].Instances[0].IamInstanceProfile == nil ||
		!strings.HasSuffix(aws.ToString(insts.Reservations[0].Instances[0].IamInstanceProfile.Arn), "/kiln-moto-build") {
		t.Errorf("DescribeInstances(%s) = %+v, %v; want the stack's instance profile", st.Launch.InstanceID, insts, err)
	}

	logs := &logSink{}
	st, err = w.provision(st, logs)
	if err != nil {
		t.Fatalf("provision: %v\nlogs:\n%s", err, logs.text())
	}
	// It ran: the file is in place, the output in the build's log.
	if b, err := os.ReadFile(filepath.Join(w.dest, "app.env")); err != nil || string(b) != "token=s3cr3t-token-value\n" {
		t.Errorf("app.env = %q, %v", b, err)
	}
	text := logs.text()
	for _, want := range []string{"placed 25 bytes", "token is <sensitive>", "checking the service", "service did not answer"} {
		if !strings.Contains(text, want) {
			t.Errorf("logs lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "s3cr3t-token-value") {
		t.Errorf("logs hold the sensitive value")
	}

	// The calls, as moto recorded them.
	cmds, err := w.ssm.ListCommands(ctx, &ssm.ListCommandsInput{InstanceId: aws.String(st.Launch.InstanceID)}, ssmIn(motoStagesRegion))
	if err != nil || len(cmds.Commands) != 3 {
		t.Fatalf("ListCommands = %d commands, %v; want 3", len(cmds.Commands), err)
	}
	for i, c := range cmds.Commands {
		if aws.ToString(c.DocumentName) != "AWS-RunShellScript" || c.TimeoutSeconds != nil && aws.ToInt32(c.TimeoutSeconds) != 600 ||
			!strings.HasPrefix(aws.ToString(c.Comment), "kiln "+st.BuildID+" p") {
			t.Errorf("command %d = document %s, timeout %d, comment %q", i, aws.ToString(c.DocumentName), aws.ToInt32(c.TimeoutSeconds), aws.ToString(c.Comment))
		}
		params, _ := json.Marshal(c.Parameters)
		if strings.Contains(string(params), "s3cr3t") {
			t.Errorf("command %d's parameters hold the secret: %s", i, params)
		}
	}
	timeouts := map[string]string{}
	for _, c := range cmds.Commands {
		timeouts[strings.TrimPrefix(aws.ToString(c.Comment), "kiln "+st.BuildID+" ")] = strings.Join(c.Parameters["executionTimeout"], ",")
	}
	if timeouts["p1-a0-s0"] != "300" || timeouts["p2-a0-s0"] != "172800" {
		t.Errorf("executionTimeout by step = %v, want 300 (timeout 5m) and 172800", timeouts)
	}
	// moto drops CloudWatchOutputConfig: the shim saw it.
	group := CommandLogGroup(w.prov.Config, st.BuildID)
	for _, in := range w.agent.sent {
		if cw := in.CloudWatchOutputConfig; cw == nil || !cw.CloudWatchOutputEnabled || aws.ToString(cw.CloudWatchLogGroupName) != group {
			t.Errorf("CloudWatchOutputConfig = %+v, want enabled into %s", cw, group)
		}
	}
	// The build's log group, tagged, with a retention; staged objects
	// under the build's prefix.
	lg, err := w.logs.DescribeLogGroups(ctx, &cloudwatchlogs.DescribeLogGroupsInput{LogGroupNamePrefix: aws.String(group)}, logsIn(motoStagesRegion))
	if err != nil || len(lg.LogGroups) != 1 || aws.ToInt32(lg.LogGroups[0].RetentionInDays) != outputRetentionDays {
		t.Errorf("DescribeLogGroups(%s) = %+v, %v; want one with retention %d", group, lg, err, outputRetentionDays)
	}
	tags, err := w.logs.ListTagsLogGroup(ctx, &cloudwatchlogs.ListTagsLogGroupInput{LogGroupName: aws.String(group)}, logsIn(motoStagesRegion))
	if err != nil || tags.Tags[TagBuild] != st.BuildID {
		t.Errorf("ListTagsLogGroup(%s) = %+v, %v; want %s=%s", group, tags, err, TagBuild, st.BuildID)
	}
	staged, err := w.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(motoStagesBucket), Prefix: aws.String(StagedPrefix(st.BuildID))})
	if err != nil || aws.ToInt32(staged.KeyCount) < 4 {
		t.Errorf("staged objects = %+v, %v; want the steps' scripts and files", staged, err)
	}

	// Cleanup: nothing of the build is left, staged objects and log group
	// included.
	st = w.motoStagesAct("cleanup", w.cleanup.Actions(), "run", st)
	if left := w.motoStagesLive(st); len(left) > 0 {
		t.Errorf("left after cleanup: %v", left)
	}
	staged, err = w.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(motoStagesBucket), Prefix: aws.String(StagedPrefix(st.BuildID))})
	if err != nil || aws.ToInt32(staged.KeyCount) != 0 {
		t.Errorf("staged objects after cleanup = %d, %v", aws.ToInt32(staged.KeyCount), err)
	}
	lg, err = w.logs.DescribeLogGroups(ctx, &cloudwatchlogs.DescribeLogGroupsInput{LogGroupNamePrefix: aws.String(group)}, logsIn(motoStagesRegion))
	if err != nil || len(lg.LogGroups) != 0 {
		t.Errorf("log groups after cleanup = %+v, %v", lg, err)
	}
	if !slices.Contains(st.Cleanup.Deleted, motoStagesRegion+" log-group "+group) {
		t.Errorf("cleanup report %v lacks the log group", st.Cleanup.Deleted)
	}
}

// TestMotoSSMExitStatus: a provisioner exiting 3 fails with its label, the
// status and its last output lines (read back from moto's CloudWatch
// Logs); cleanup after the failure cancels nothing that has ended and
// leaves nothing.
func TestMotoSSMExitStatus(t *testing.T) {
	w := motoSSMSetup(t)
	st := w.plan(map[string]string{"dest": w.dest, "exit": "3"})
	st = w.motoStagesAct("launch", w.launch.Actions(), "run", st)
	st = w.motoStagesAct("launch", w.launch.Actions(), "check", st)
	logs := &logSink{}
	_, err := w.provision(st, logs)
	var pf *ProvisionFailed
	if !errors.As(err, &pf) {
		t.Fatalf("provision = %v, want ProvisionFailed", err)
	}
	for _, want := range []string{`shell "smoke test" (moto-ssm.pkr.hcl:`, "exited with status 3", "checking the service\nservice did not answer"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// The state machine's Catch hands cleanup the last good state with
	// the error.
	st.Error = &Failure{Error: "ProvisionFailed", Cause: err.Error()}
	st = w.motoStagesAct("cleanup", w.cleanup.Actions(), "run", st)
	if left := w.motoStagesLive(st); len(left) > 0 {
		t.Errorf("left after cleanup: %v", left)
	}
	lg, _ := w.logs.DescribeLogGroups(w.ctx, &cloudwatchlogs.DescribeLogGroupsInput{LogGroupNamePrefix: aws.String(CommandLogGroup(w.prov.Config, st.BuildID))}, logsIn(motoStagesRegion))
	if lg != nil && len(lg.LogGroups) != 0 {
		t.Errorf("log group left after cleanup: %+v", lg.LogGroups)
	}
}

// TestMotoSSMCleanupCancels: cleanup cancels the command the state
// records as running (through the shim: moto has no CancelCommand).
func TestMotoSSMCleanupCancels(t *testing.T) {
	w := motoSSMSetup(t)
	st := w.plan(map[string]string{"dest": w.dest})
	st = w.motoStagesAct("launch", w.launch.Actions(), "run", st)
	st = w.motoStagesAct("launch", w.launch.Actions(), "check", st)
	st.Provision = &Provisioned{AgentOnline: true, Running: &Command{ID: "11111111-2222-3333-4444-555555555555", StartedAt: time.Now()}}
	st.Error = &Failure{Error: "States.Timeout", Cause: "stopped"}
	w.motoStagesAct("cleanup", w.cleanup.Actions(), "run", st)
	if !slices.Contains(w.agent.cancelled, st.Provision.Running.ID) {
		t.Errorf("cancelled %v, want %s", w.agent.cancelled, st.Provision.Running.ID)
	}
}
