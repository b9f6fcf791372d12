package local

// End-to-end local bakes over the session_manager transport: the real
// state machine definition and stages, moto, and the instance's sandbox,
// where the Agent (ssmagent.go) runs the SSM commands because moto runs
// none and lacks DescribeInstanceInformation and CancelCommand.

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/bake"
)

// switchedRecipe copies the SSH test recipe (testdata/app) to a folder of
// the test's, with the one line that switches it to SSM Run Command.
func switchedRecipe(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "app")
	err := filepath.WalkDir("testdata/app", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("testdata/app", p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		if rel == "app.pkr.hcl" {
			before := string(b)
			b = []byte(strings.Replace(before, `ssh_username  = "ubuntu"`, "ssh_username  = \"ubuntu\"\n  ssh_interface = \"session_manager\"", 1))
			if string(b) == before {
				t.Fatalf("testdata/app/app.pkr.hcl no longer sets ssh_username as this test expects")
			}
		}
		return os.WriteFile(target, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// launchSnoop looks at what launch made, right after it made it: after
// cleanup, a key pair or an ingress rule would be gone and unprovable.
type launchSnoop struct {
	mu       sync.Mutex
	keyPairs []string
	ingress  []ec2types.IpPermission
	groups   int
	profile  string
	checked  bool
}

func (s *launchSnoop) wrap(c *Cloud) func(string, asl.Handler) asl.Handler {
	return func(f string, h asl.Handler) asl.Handler {
		if f != "launch" {
			return h
		}
		return func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			out, err := h(ctx, in)
			var st bake.State
			if err != nil || json.Unmarshal(out, &st) != nil || st.Launch == nil || st.Launch.InstanceID == "" {
				return out, err
			}
			e := c.EC2(st.Launch.Region)
			kps, kerr := e.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: []ec2types.Filter{{Name: aws.String("tag:" + bake.TagBuild), Values: []string{st.BuildID}}}})
			sgs, gerr := e.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("tag:" + bake.TagBuild), Values: []string{st.BuildID}}}})
			insts, ierr := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{st.Launch.InstanceID}})
			s.mu.Lock()
			defer s.mu.Unlock()
			if kerr != nil || gerr != nil || ierr != nil {
				return out, err
			}
			s.checked = true
			for _, k := range kps.KeyPairs {
				s.keyPairs = append(s.keyPairs, aws.ToString(k.KeyName))
			}
			s.groups = len(sgs.SecurityGroups)
			for _, g := range sgs.SecurityGroups {
				s.ingress = append(s.ingress, g.IpPermissions...)
			}
			if p := insts.Reservations[0].Instances[0].IamInstanceProfile; p != nil {
				s.profile = aws.ToString(p.Arn)
			}
			return out, err
		}
	}
}

// TestBakeSessionManager: the SSH end-to-end recipe switched to
// ssh_interface = "session_manager" bakes locally with the same result
// (three AMIs, their parameters, the manifest), through SSM Run Command,
// with no key pair and no ingress rule for the build, and leaves nothing.
func TestBakeSessionManager(t *testing.T) {
	c := newCloud(t)
	snoop := &launchSnoop{}
	rec := asl.NewRecorder()
	logs := &logLines{}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := c.Bake(ctx, switchedRecipe(t), BakeOptions{Log: logs.handler(), ManifestDir: t.TempDir(), TimeScale: 0.1, Wrap: snoop.wrap(c), Recorder: rec})
	if err != nil {
		t.Fatalf("Bake = %v\nlogs:\n%s", err, logs.text())
	}
	if !res.Succeeded() {
		t.Fatalf("bake failed: %s: %s\nlogs:\n%s", res.Execution.Error, res.Execution.Cause, logs.text())
	}
	st := res.State
	if st.Plan.Transport != "session_manager" {
		t.Errorf("transport = %q, want session_manager", st.Plan.Transport)
	}

	// The same result as over SSH: three AMIs, a parameter in each Region,
	// the manifest.
	if len(st.Published.Images) != 3 {
		t.Fatalf("published images = %v, want 3 Regions", st.Published.Images)
	}
	for region, ami := range st.Published.Images {
		p, err := c.SSM(region).GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/kiln/app/latest")})
		if err != nil || aws.ToString(p.Parameter.Value) != ami {
			t.Errorf("GetParameter(/kiln/app/latest in %s) = %v, %v; want %s", region, p, err, ami)
		}
	}
	obj, err := c.S3().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(c.Bucket()), Key: aws.String(st.Published.Manifest)})
	if err != nil {
		t.Fatalf("GetObject(manifest): %v", err)
	}
	var manifest struct {
		Builds []struct {
			Name       string `json:"name"`
			ArtifactID string `json:"artifact_id"`
		} `json:"builds"`
	}
	if err := json.NewDecoder(obj.Body).Decode(&manifest); err != nil || len(manifest.Builds) == 0 {
		t.Fatalf("manifest: %v %+v", err, manifest)
	}
	if b := manifest.Builds[len(manifest.Builds)-1]; b.Name != "app" || strings.Count(b.ArtifactID, ":ami-") != 3 {
		t.Errorf("manifest build = %+v, want name app and three region:ami pairs", b)
	}

	// The provisioners ran in the sandbox as the recipe's ssh_username,
	// their output reached the build's log, redacted.
	text := logs.text()
	for _, want := range []string{"hello from ubuntu", "configured-with-yes", "installed into /opt/app (password length 15)", "ssm agent online"} {
		if !strings.Contains(text, want) {
			t.Errorf("logs lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "s3cr3t-Pa55word") {
		t.Errorf("logs contain the sensitive variable's value")
	}
	// No key pair and no ingress rule: the instance had the stack's
	// instance profile instead.
	if !snoop.checked {
		t.Fatalf("launch's resources were never looked at")
	}
	if len(snoop.keyPairs) != 0 || len(snoop.ingress) != 0 {
		t.Errorf("after launch: key pairs %v, ingress %+v; want none", snoop.keyPairs, snoop.ingress)
	}
	if !strings.HasSuffix(snoop.profile, "/"+localProfile) {
		t.Errorf("instance profile = %q, want the stack's %s", snoop.profile, localProfile)
	}
	// moto recorded the commands (it ran none of them: the agent did).
	cmds, err := c.SSM(st.Launch.Region).ListCommands(ctx, &ssm.ListCommandsInput{InstanceId: aws.String(st.Launch.InstanceID)})
	if err != nil || len(cmds.Commands) != 3 {
		t.Errorf("ListCommands = %d commands, %v; want 3 (one per provisioner step)", len(cmds.Commands), err)
	}
	// Nothing temporary is left, the command log group and the staged
	// files included.
	if left := res.Left.Temporaries(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if n := c.Sandboxes(); n != 0 {
		t.Errorf("%d sandboxes still running", n)
	}
	t.Logf("bake: %d transitions, %s Lambda time", res.Report.Transitions, res.Report.TaskTime)
	crossCheck(t, rec.Recording(res.Execution))
}

// TestBakeSessionManagerFailingProvisioner: with session_manager as the
// stack's default transport, the failing recipe (which sets no
// ssh_interface) provisions over SSM; its provisioner exiting 3 fails the
// bake with the provisioner, the exit status and its last output lines,
// and nothing of the build is left.
func TestBakeSessionManagerFailingProvisioner(t *testing.T) {
	c := newCloud(t)
	logs := &logLines{}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := c.Bake(ctx, filepath.Join("testdata", "failing"), BakeOptions{Log: logs.handler(), ManifestDir: t.TempDir(), TimeScale: 0.1, DefaultTransport: "session_manager"})
	if err != nil {
		t.Fatalf("Bake = %v", err)
	}
	if res.Succeeded() {
		t.Fatalf("bake succeeded, want a failure")
	}
	if res.State.Plan == nil || res.State.Plan.Transport != "session_manager" {
		t.Errorf("plan = %+v, want the session_manager transport from the stack's default", res.State.Plan)
	}
	if res.Execution.Error != "ProvisionFailed" {
		t.Errorf("error = %q, want ProvisionFailed", res.Execution.Error)
	}
	var cause struct {
		ErrorMessage string `json:"errorMessage"`
	}
	if err := json.Unmarshal([]byte(res.Execution.Cause), &cause); err != nil {
		t.Fatalf("cause %q is not Lambda's error JSON: %v", res.Execution.Cause, err)
	}
	for _, want := range []string{`shell "smoke test" (failing.pkr.hcl:17)`, "status 3", "checking the service\nservice did not answer"} {
		if !strings.Contains(cause.ErrorMessage, want) {
			t.Errorf("error message %q lacks %q", cause.ErrorMessage, want)
		}
	}
	if left := res.Left.All(); len(left) > 0 {
		t.Errorf("left behind: %v\nlogs:\n%s", left, logs.text())
	}
	if n := c.Sandboxes(); n != 0 {
		t.Errorf("%d sandboxes still running", n)
	}
}

// TestAgent: the agent's stand-in registers an instance once its sandbox
// is up (and only one with an instance profile), runs commands there,
// answers with their real status, exit code and cut output while the whole
// output reaches CloudWatch Logs, and cancels a running command.
func TestAgent(t *testing.T) {
	c := newCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	profile, err := c.BuildInstanceProfile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := c.EC2(DefaultRegion)
	run := func(withProfile bool) string {
		in := &ec2.RunInstancesInput{ImageId: aws.String("ami-785db401"), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)}
		if withProfile {
			in.IamInstanceProfile = &ec2types.IamInstanceProfileSpecification{Name: aws.String(profile)}
		}
		out, err := e.RunInstances(ctx, in)
		if err != nil {
			t.Fatalf("RunInstances = %v", err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	id, bare := run(true), run(false)
	t.Cleanup(func() { c.StopSandbox(id) })
	a := c.Agent()
	in := func(region string) func(*ssm.Options) { return func(o *ssm.Options) { o.Region = region } }(DefaultRegion)
	group := "/kiln/commands/agent-test"
	if _, err := c.Logs(DefaultRegion).CreateLogGroup(ctx, &cloudwatchlogs.CreateLogGroupInput{LogGroupName: aws.String(group)}); err != nil {
		t.Fatal(err)
	}
	send := func(script string) (string, error) {
		out, err := a.SendCommand(ctx, &ssm.SendCommandInput{
			DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{id},
			Parameters:             map[string][]string{"commands": {script}},
			CloudWatchOutputConfig: &ssmtypes.CloudWatchOutputConfig{CloudWatchOutputEnabled: true, CloudWatchLogGroupName: aws.String(group)},
		}, in)
		if err != nil {
			return "", err
		}
		return aws.ToString(out.Command.CommandId), nil
	}
	if _, err := send("true"); bake.AWSCode(err) != "InvalidInstanceId" {
		t.Errorf("SendCommand before the agent is online = %v, want InvalidInstanceId", err)
	}
	// until is a bounded poll of cond.
	until := func(what string, cond func() bool) {
		t.Helper()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: not within the test's time", what)
			case <-tick.C:
			}
		}
	}
	online := func(instance string) bool {
		out, err := a.DescribeInstanceInformation(ctx, &ssm.DescribeInstanceInformationInput{
			Filters: []ssmtypes.InstanceInformationStringFilter{{Key: aws.String("InstanceIds"), Values: []string{instance}}}}, in)
		return err == nil && len(out.InstanceInformationList) == 1 && out.InstanceInformationList[0].PingStatus == ssmtypes.PingStatusOnline
	}
	until("agent online", func() bool { return online(id) })
	if inst := a.instance(bare, DefaultRegion); true {
		<-inst.ready
		if inst.err == nil || online(bare) {
			t.Errorf("an instance without a profile came online (%v)", inst.err)
		}
	}
	invocation := func(cmd string) *ssm.GetCommandInvocationOutput {
		out, err := a.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: aws.String(cmd), InstanceId: aws.String(id)}, in)
		if err != nil {
			t.Fatalf("GetCommandInvocation(%s) = %v", cmd, err)
		}
		return out
	}

	// Long output, exit 3.
	cmd, err := send(`i=0; while [ $i -lt 1000 ]; do echo "line $i of a long output, to pass the cut"; i=$((i+1)); done; id -un; exit 3`)
	if err != nil {
		t.Fatalf("SendCommand = %v", err)
	}
	until("the command's end", func() bool { return invocation(cmd).Status != ssmtypes.CommandInvocationStatusInProgress })
	got := invocation(cmd)
	if got.Status != ssmtypes.CommandInvocationStatusFailed || got.ResponseCode != 3 || len(aws.ToString(got.StandardOutputContent)) != maxInlineStdout {
		t.Errorf("invocation = %s, code %d, %d characters of output; want Failed, 3, %d", got.Status, got.ResponseCode, len(aws.ToString(got.StandardOutputContent)), maxInlineStdout)
	}
	var lines []string
	ev, err := c.Logs(DefaultRegion).GetLogEvents(ctx, &cloudwatchlogs.GetLogEventsInput{LogGroupName: aws.String(group),
		LogStreamName: aws.String(cmd + "/" + id + "/aws-runShellScript/stdout"), StartFromHead: aws.Bool(false), Limit: aws.Int32(2)})
	if err != nil {
		t.Fatalf("GetLogEvents = %v", err)
	}
	for _, e := range ev.Events {
		lines = append(lines, aws.ToString(e.Message))
	}
	if want := []string{"line 999 of a long output, to pass the cut", "root"}; strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("the output's end in CloudWatch Logs = %q, want %q", lines, want)
	}

	// Cancel a running command.
	cmd, err = send("echo started; sleep 600; echo not cancelled")
	if err != nil {
		t.Fatalf("SendCommand = %v", err)
	}
	until("the command's start", func() bool { return strings.Contains(aws.ToString(invocation(cmd).StandardOutputContent), "started") })
	if _, err := a.CancelCommand(ctx, &ssm.CancelCommandInput{CommandId: aws.String(cmd), InstanceIds: []string{id}}, in); err != nil {
		t.Fatalf("CancelCommand = %v", err)
	}
	until("the command's cancellation", func() bool { return invocation(cmd).Status == ssmtypes.CommandInvocationStatusCancelled })
	list, err := a.ListCommands(ctx, &ssm.ListCommandsInput{InstanceId: aws.String(id)}, in)
	if err != nil || len(list.Commands) != 2 {
		t.Fatalf("ListCommands = %+v, %v; want moto's record of both commands", list, err)
	}
	for _, c := range list.Commands {
		if aws.ToString(c.CommandId) == cmd && c.Status != ssmtypes.CommandStatusCancelled {
			t.Errorf("ListCommands says %s is %s, want Cancelled", cmd, c.Status)
		}
	}
}
