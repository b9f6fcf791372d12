package bake

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	cwltypes "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
)

// fakeRun is a stateful fake of what the session_manager transport talks
// to, for what moto cannot do (shared/FACTS.md): Systems Manager's
// inventory of one instance's agent (moto has no DescribeInstanceInformation),
// Run Command with commands that really run or that a test drives (moto's
// SendCommand runs nothing and its invocations succeed at once),
// CancelCommand (which moto lacks), CloudWatch Logs, the instance's profile
// (EC2) and the kiln bucket, whose presigned URLs it serves over HTTP.
//
// Its agent runs a command's script with /bin/sh on this machine, to
// completion, when the command is sent, streaming stdout and stderr line by
// line to the command's log streams as the real agent does; or, when
// behave is set, hands the command to the test, which moves it on
// (emit, finish) as the fake clock passes: a command that runs for hours.
type fakeRun struct {
	t     *testing.T
	clock *provClock
	srv   *httptest.Server

	mu sync.Mutex
	// instance is the instance's ID; profile its instance profile's ARN
	// ("" for none).
	instance, profile string
	// registerAt is when the agent registers (zero: never); ping is its
	// status from then on.
	registerAt time.Time
	ping       ssmtypes.PingStatus
	commands   []*fakeCommand
	groups     map[string]*fakeLogGroup
	objects    map[string][]byte // "bucket/key"
	// unfetchable objects answer 403 to their presigned URL.
	unfetchable map[string]bool
	fetches     []string
	calls       []string
	// fail makes the named call fail with the error.
	fail map[string]error
	// behave, if set, is handed each command as it is sent, which then
	// stays InProgress until the test finishes it.
	behave func(c *fakeCommand)
	// pageSize is how many events one GetLogEvents returns at most.
	pageSize int
}

// fakeCommand is one command sent to the instance.
type fakeCommand struct {
	id      string
	in      *ssm.SendCommandInput
	sentAt  time.Time
	status  ssmtypes.CommandInvocationStatus
	details string
	code    int32
	stdout  strings.Builder
	stderr  strings.Builder
}

type fakeLogGroup struct {
	tags      map[string]string
	retention int32
	streams   map[string][]cwltypes.OutputLogEvent
}

func newFakeRun(t *testing.T, clock *provClock) *fakeRun {
	t.Helper()
	f := &fakeRun{
		t: t, clock: clock, instance: testInstance, profile: "arn:aws:iam::123456789012:instance-profile/kiln-build",
		ping: ssmtypes.PingStatusOnline, groups: map[string]*fakeLogGroup{}, objects: map[string][]byte{},
		unfetchable: map[string]bool{}, fail: map[string]error{}, pageSize: 100,
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// serve answers presigned GETs of staged objects.
func (f *fakeRun) serve(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/")
	f.mu.Lock()
	body, ok := f.objects[key]
	deny := f.unfetchable[key]
	f.fetches = append(f.fetches, key)
	f.mu.Unlock()
	if r.URL.Query().Get("X-Amz-Signature") == "" || deny || !ok {
		http.Error(w, "AccessDenied", http.StatusForbidden)
		return
	}
	_, _ = w.Write(body)
}

func (f *fakeRun) call(name string) error {
	f.calls = append(f.calls, name)
	return f.fail[name]
}

// callCount counts the calls of one action.
func (f *fakeRun) callCount(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == name {
			n++
		}
	}
	return n
}

func fakeErr(code, msg string) error { return &smithy.GenericAPIError{Code: code, Message: msg} }

func (f *fakeRun) DescribeInstanceInformation(_ context.Context, in *ssm.DescribeInstanceInformationInput, _ ...func(*ssm.Options)) (*ssm.DescribeInstanceInformationOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DescribeInstanceInformation"); err != nil {
		return nil, err
	}
	out := &ssm.DescribeInstanceInformationOutput{}
	if len(in.Filters) != 1 || aws.ToString(in.Filters[0].Key) != "InstanceIds" || !slices.Equal(in.Filters[0].Values, []string{f.instance}) {
		return nil, fakeErr("InvalidFilterKey", fmt.Sprintf("want a filter InstanceIds=%s, got %+v", f.instance, in.Filters))
	}
	if !f.registerAt.IsZero() && !f.clock.Now().Before(f.registerAt) {
		out.InstanceInformationList = []ssmtypes.InstanceInformation{{
			InstanceId: aws.String(f.instance), PingStatus: f.ping, AgentVersion: aws.String("3.3.0.0"),
			PlatformName: aws.String("Ubuntu"), PlatformVersion: aws.String("24.04"), LastPingDateTime: aws.Time(f.registerAt),
		}}
	}
	return out, nil
}

func (f *fakeRun) SendCommand(_ context.Context, in *ssm.SendCommandInput, _ ...func(*ssm.Options)) (*ssm.SendCommandOutput, error) {
	f.mu.Lock()
	if err := f.call("SendCommand"); err != nil {
		f.mu.Unlock()
		return nil, err
	}
	if !slices.Equal(in.InstanceIds, []string{f.instance}) {
		f.mu.Unlock()
		return nil, fakeErr("InvalidInstanceId", "Instances "+strings.Join(in.InstanceIds, ",")+" not in a valid state")
	}
	c := &fakeCommand{id: fmt.Sprintf("cmd-%04d", len(f.commands)+1), in: in, sentAt: f.clock.Now(), status: ssmtypes.CommandInvocationStatusInProgress}
	f.commands = append(f.commands, c)
	behave := f.behave
	f.mu.Unlock()
	if behave != nil {
		behave(c)
	} else {
		f.runOnHost(c)
	}
	return &ssm.SendCommandOutput{Command: &ssmtypes.Command{CommandId: aws.String(c.id), Comment: in.Comment, Status: ssmtypes.CommandStatusInProgress}}, nil
}

// runOnHost runs c's commands with /bin/sh on this machine, as the agent
// does on the instance, to completion.
func (f *fakeRun) runOnHost(c *fakeCommand) {
	code := runOnHost(f.t, strings.Join(c.in.Parameters["commands"], "\n"), func(stream, line string) { f.emitTo(c, stream, line) })
	f.finish(c, code)
}

// runOnHost runs script with /bin/sh on this machine as the SSM agent runs
// an AWS-RunShellScript command (without HOME), handing each line of its
// stdout and stderr to out as it comes, and returns its exit status.
func runOnHost(t *testing.T, script string, out func(stream, line string)) int {
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = t.TempDir()
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Errorf("start command: %v", err)
		return -1
	}
	var wg sync.WaitGroup
	for _, s := range []struct {
		r    io.Reader
		name string
	}{{stdout, "stdout"}, {stderr, "stderr"}} {
		wg.Go(func() {
			sc := bufio.NewScanner(s.r)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				out(s.name, sc.Text())
			}
		})
	}
	wg.Wait()
	if err := cmd.Wait(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return -1
	}
	return 0
}

// emit writes lines to c's stdout, as its command prints them.
func (f *fakeRun) emit(c *fakeCommand, lines ...string) {
	for _, l := range lines {
		f.emitTo(c, "stdout", l)
	}
}

func (f *fakeRun) emitTo(c *fakeCommand, stream, line string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := &c.stdout
	if stream == "stderr" {
		b = &c.stderr
	}
	b.WriteString(line + "\n")
	cw := c.in.CloudWatchOutputConfig
	if cw == nil || !cw.CloudWatchOutputEnabled {
		return
	}
	g := f.groups[aws.ToString(cw.CloudWatchLogGroupName)]
	if g == nil {
		// The instance profile has no logs:CreateLogGroup: kiln must
		// have made the group.
		f.t.Errorf("command %s: log group %q does not exist", c.id, aws.ToString(cw.CloudWatchLogGroupName))
		return
	}
	name := c.id + "/" + f.instance + "/aws-runShellScript/" + stream
	g.streams[name] = append(g.streams[name], cwltypes.OutputLogEvent{Message: aws.String(line), Timestamp: aws.Int64(f.clock.Now().UnixMilli())})
}

// finish ends c with an exit status, as the agent reports it.
func (f *fakeRun) finish(c *fakeCommand, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.status != ssmtypes.CommandInvocationStatusInProgress {
		return
	}
	c.code = int32(code)
	c.status, c.details = ssmtypes.CommandInvocationStatusSuccess, "Success"
	if code != 0 {
		c.status, c.details = ssmtypes.CommandInvocationStatusFailed, "Failed"
	}
}

func (f *fakeRun) command(id string) *fakeCommand {
	for _, c := range f.commands {
		if c.id == id {
			return c
		}
	}
	return nil
}

// sent returns the commands sent so far.
func (f *fakeRun) sent() []*fakeCommand {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.commands)
}

func (f *fakeRun) ListCommands(_ context.Context, in *ssm.ListCommandsInput, _ ...func(*ssm.Options)) (*ssm.ListCommandsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ListCommands"); err != nil {
		return nil, err
	}
	out := &ssm.ListCommandsOutput{}
	for _, c := range f.commands {
		if aws.ToString(in.InstanceId) != "" && !slices.Contains(c.in.InstanceIds, aws.ToString(in.InstanceId)) {
			continue
		}
		status := ssmtypes.CommandStatus(c.status)
		out.Commands = append(out.Commands, ssmtypes.Command{CommandId: aws.String(c.id), Comment: c.in.Comment, Status: status})
	}
	return out, nil
}

func (f *fakeRun) GetCommandInvocation(_ context.Context, in *ssm.GetCommandInvocationInput, _ ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("GetCommandInvocation"); err != nil {
		return nil, err
	}
	c := f.command(aws.ToString(in.CommandId))
	if c == nil || aws.ToString(in.InstanceId) != f.instance {
		return nil, fakeErr("InvocationDoesNotExist", "")
	}
	code := c.code
	if c.status == ssmtypes.CommandInvocationStatusInProgress {
		code = -1
	}
	// SSM's own copy of the output is cut (FACTS.md).
	return &ssm.GetCommandInvocationOutput{
		CommandId: aws.String(c.id), InstanceId: in.InstanceId, Status: c.status, StatusDetails: aws.String(c.details),
		ResponseCode: code, StandardOutputContent: aws.String(cut(c.stdout.String(), 24000)), StandardErrorContent: aws.String(cut(c.stderr.String(), 8000)),
	}, nil
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (f *fakeRun) CancelCommand(_ context.Context, in *ssm.CancelCommandInput, _ ...func(*ssm.Options)) (*ssm.CancelCommandOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("CancelCommand"); err != nil {
		return nil, err
	}
	c := f.command(aws.ToString(in.CommandId))
	if c == nil {
		return nil, fakeErr("InvalidCommandId", "")
	}
	if c.status == ssmtypes.CommandInvocationStatusInProgress || c.status == ssmtypes.CommandInvocationStatusPending {
		c.status, c.details, c.code = ssmtypes.CommandInvocationStatusCancelled, "Cancelled", -1
	}
	return &ssm.CancelCommandOutput{}, nil
}

func (f *fakeRun) CreateLogGroup(_ context.Context, in *cloudwatchlogs.CreateLogGroupInput, _ ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.CreateLogGroupOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("CreateLogGroup"); err != nil {
		return nil, err
	}
	name := aws.ToString(in.LogGroupName)
	if _, ok := f.groups[name]; ok {
		return nil, fakeErr("ResourceAlreadyExistsException", "The specified log group already exists")
	}
	f.groups[name] = &fakeLogGroup{tags: in.Tags, streams: map[string][]cwltypes.OutputLogEvent{}}
	return &cloudwatchlogs.CreateLogGroupOutput{}, nil
}

func (f *fakeRun) PutRetentionPolicy(_ context.Context, in *cloudwatchlogs.PutRetentionPolicyInput, _ ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.PutRetentionPolicyOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("PutRetentionPolicy"); err != nil {
		return nil, err
	}
	g := f.groups[aws.ToString(in.LogGroupName)]
	if g == nil {
		return nil, fakeErr("ResourceNotFoundException", "The specified log group does not exist.")
	}
	g.retention = aws.ToInt32(in.RetentionInDays)
	return &cloudwatchlogs.PutRetentionPolicyOutput{}, nil
}

// GetLogEvents pages as CloudWatch Logs does: forward tokens "f/<n>", the
// same token back at the end of the stream, and the last events when
// reading from the tail.
func (f *fakeRun) GetLogEvents(_ context.Context, in *cloudwatchlogs.GetLogEventsInput, _ ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.GetLogEventsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("GetLogEvents"); err != nil {
		return nil, err
	}
	g := f.groups[aws.ToString(in.LogGroupName)]
	if g == nil {
		return nil, fakeErr("ResourceNotFoundException", "The specified log group does not exist.")
	}
	events, ok := g.streams[aws.ToString(in.LogStreamName)]
	if !ok {
		return nil, fakeErr("ResourceNotFoundException", "The specified log stream does not exist.")
	}
	limit := f.pageSize
	if in.Limit != nil {
		limit = min(limit, int(*in.Limit))
	}
	start := 0
	switch {
	case in.NextToken != nil:
		n, err := strconv.Atoi(strings.TrimPrefix(aws.ToString(in.NextToken), "f/"))
		if err != nil || !strings.HasPrefix(aws.ToString(in.NextToken), "f/") {
			return nil, fakeErr("InvalidParameterException", "bad token")
		}
		start = n
	case !aws.ToBool(in.StartFromHead):
		start = max(len(events)-limit, 0)
	}
	end := min(start+limit, len(events))
	return &cloudwatchlogs.GetLogEventsOutput{
		Events:           slices.Clone(events[start:end]),
		NextForwardToken: aws.String(fmt.Sprintf("f/%d", end)),
	}, nil
}

func (f *fakeRun) DeleteLogGroup(_ context.Context, in *cloudwatchlogs.DeleteLogGroupInput, _ ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.DeleteLogGroupOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DeleteLogGroup"); err != nil {
		return nil, err
	}
	name := aws.ToString(in.LogGroupName)
	if _, ok := f.groups[name]; !ok {
		return nil, fakeErr("ResourceNotFoundException", "The specified log group does not exist.")
	}
	delete(f.groups, name)
	return &cloudwatchlogs.DeleteLogGroupOutput{}, nil
}

func (f *fakeRun) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("DescribeInstances"); err != nil {
		return nil, err
	}
	inst := ec2types.Instance{InstanceId: aws.String(f.instance), State: &ec2types.InstanceState{Name: ec2types.InstanceStateNameRunning}}
	if f.profile != "" {
		inst.IamInstanceProfile = &ec2types.IamInstanceProfile{Arn: aws.String(f.profile), Id: aws.String("AIPAEXAMPLE")}
	}
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: []ec2types.Instance{inst}}}}, nil
}

func (f *fakeRun) PutObject(_ context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	b, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("PutObject"); err != nil {
		return nil, err
	}
	f.objects[aws.ToString(in.Bucket)+"/"+aws.ToString(in.Key)] = b
	return &s3.PutObjectOutput{}, nil
}

func (f *fakeRun) PresignGetObject(_ context.Context, in *s3.GetObjectInput, optFns ...func(*s3.PresignOptions)) (*v4.PresignedHTTPRequest, error) {
	var o s3.PresignOptions
	for _, fn := range optFns {
		fn(&o)
	}
	if o.Expires <= 0 || o.Expires > time.Hour {
		f.t.Errorf("PresignGetObject(%s) expires in %s, want within the hour", aws.ToString(in.Key), o.Expires)
	}
	u := fmt.Sprintf("%s/%s/%s?X-Amz-Expires=%d&X-Amz-Signature=fake", f.srv.URL, aws.ToString(in.Bucket), aws.ToString(in.Key), int(o.Expires/time.Second))
	return &v4.PresignedHTTPRequest{URL: u, Method: http.MethodGet}, nil
}

// stagedKeys lists the staged objects' keys.
func (f *fakeRun) stagedKeys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := range f.objects {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
