package local

// The SSM agent's stand-in. In AWS, ssh_interface = "session_manager"
// builds provision through SSM Run Command: the provision stage calls
// SendCommand, the agent on the instance runs the command and streams its
// output to CloudWatch Logs, and the stage polls GetCommandInvocation.
// moto records SendCommand but runs nothing, reports every invocation as a
// success with no output, and lacks DescribeInstanceInformation and
// CancelCommand (shared/FACTS.md). Agent covers that gap: it is the SSM
// client the provision and cleanup stages get in local mode, in front of
// moto. It forwards SendCommand to moto (so the call is made and recorded)
// and does the agent's part in the instance's sandbox, the same sandbox an
// SSH build provisions in: it runs the command there as root, sends its
// output to moto's CloudWatch Logs as it comes, and answers
// GetCommandInvocation, ListCommands and CancelCommand with the real status,
// exit code and output, and DescribeInstanceInformation with "Online" once
// the sandbox is up.
//
// The sandbox's only door is its sshd, so the agent reaches it over SSH with
// a key pair of its own that never leaves this process, pinning a host key
// it generated too: launch gives a session_manager instance no SSH keys at
// all. It logs in as the user kiln's cloud-config names (the recipe's
// ssh_username, which the sandbox creates with sudo, as cloud-init would),
// or as root, and becomes root with sudo, as the real agent runs as root.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	cwltypes "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	"golang.org/x/crypto/ssh"

	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/sandbox"
)

// SSM's own copies of a command's output are cut at these lengths
// (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetCommandInvocation.html);
// the full output is in CloudWatch Logs.
const (
	maxInlineStdout = 24000
	maxInlineStderr = 8000
)

// Agent is the SSM agent's stand-in in local mode (see the file comment).
// Its methods are those of the SSM client the session_manager transport
// uses; each names its Region per call, as the stages do.
type Agent struct {
	c *Cloud

	mu        sync.Mutex
	instances map[string]*agentInstance // by instance ID
	commands  map[string]*agentCommand  // by command ID
}

// agentInstance is one instance's agent: booting, online, or failed.
type agentInstance struct {
	region string
	ready  chan struct{} // closed once booted or failed
	err    error
	box    *sandbox.Sandbox
	client *ssh.Client
	user   string
}

// agentCommand is one command on one instance.
type agentCommand struct {
	id, instance, region string
	in                   *ssm.SendCommandInput
	start                time.Time

	mu        sync.Mutex
	status    ssmtypes.CommandInvocationStatus
	details   string
	code      int32
	stdout    bytes.Buffer
	stderr    bytes.Buffer
	pid       int
	cancelled bool
	end       time.Time
}

// Agent returns the cloud's SSM agent stand-in.
func (c *Cloud) Agent() *Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent == nil {
		c.agent = &Agent{c: c, instances: map[string]*agentInstance{}, commands: map[string]*agentCommand{}}
	}
	return c.agent
}

// regionOf is the Region an SSM call is sent to.
func regionOf(optFns []func(*ssm.Options)) string {
	o := ssm.Options{Region: DefaultRegion}
	for _, f := range optFns {
		f(&o)
	}
	return o.Region
}

// DescribeInstanceInformation answers for the operation moto lacks: an
// instance is listed, Online, once its sandbox is up. The first question
// about an instance boots its sandbox in the background, as the instance
// would boot on its own; until then the instance is not listed, as an
// agent that has not registered yet is not.
func (a *Agent) DescribeInstanceInformation(ctx context.Context, in *ssm.DescribeInstanceInformationInput, optFns ...func(*ssm.Options)) (*ssm.DescribeInstanceInformationOutput, error) {
	region := regionOf(optFns)
	out := &ssm.DescribeInstanceInformationOutput{}
	for _, f := range in.Filters {
		if aws.ToString(f.Key) != "InstanceIds" {
			return nil, &smithy.GenericAPIError{Code: "InvalidFilterKey", Message: "the local agent knows only the InstanceIds filter"}
		}
		for _, id := range f.Values {
			inst := a.instance(id, region)
			select {
			case <-inst.ready:
				if inst.err == nil {
					out.InstanceInformationList = append(out.InstanceInformationList, ssmtypes.InstanceInformation{
						InstanceId: aws.String(id), PingStatus: ssmtypes.PingStatusOnline, AgentVersion: aws.String("kiln-local"),
						PlatformName: aws.String("kiln sandbox"), PlatformType: ssmtypes.PlatformTypeLinux, LastPingDateTime: aws.Time(time.Now()),
					})
				}
			default:
			}
		}
	}
	return out, nil
}

// instance returns the agent of instance id, booting its sandbox the first
// time.
func (a *Agent) instance(id, region string) *agentInstance {
	a.mu.Lock()
	defer a.mu.Unlock()
	if inst, ok := a.instances[id]; ok {
		return inst
	}
	inst := &agentInstance{region: region, ready: make(chan struct{})}
	a.instances[id] = inst
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		inst.err = a.boot(ctx, id, inst)
		if inst.err != nil {
			fmt.Fprintf(a.c.log, "local ssm agent of %s never came online: %v\n", id, inst.err)
		}
		close(inst.ready)
	}()
	return inst
}

// boot starts the instance's sandbox as the instance and cloud-init would:
// an agent needs the instance to have an instance profile (it registers
// with its credentials), and the login user is the one kiln's cloud-config
// names, or root.
func (a *Agent) boot(ctx context.Context, id string, inst *agentInstance) error {
	e := a.c.EC2(inst.region)
	out, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return fmt.Errorf("describe %s: %w", id, err)
	}
	var found *ec2types.Instance
	for _, r := range out.Reservations {
		for i := range r.Instances {
			if aws.ToString(r.Instances[i].InstanceId) == id {
				found = &r.Instances[i]
			}
		}
	}
	switch {
	case found == nil:
		return fmt.Errorf("instance %s not found in %s", id, inst.region)
	case found.IamInstanceProfile == nil:
		return fmt.Errorf("instance %s has no instance profile: the agent cannot register", id)
	}
	user := "root"
	attr, err := e.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(id), Attribute: ec2types.InstanceAttributeNameUserData})
	if err != nil {
		return fmt.Errorf("read user data of %s: %w", id, err)
	}
	if attr.UserData != nil && attr.UserData.Value != nil {
		raw, err := base64.StdEncoding.DecodeString(aws.ToString(attr.UserData.Value))
		if err != nil {
			return fmt.Errorf("decode user data of %s: %w", id, err)
		}
		if boot, err := bake.ParseKilnUserData(raw); err == nil && boot.User != "" {
			user = boot.User
		}
	}
	// The agent's own keys: a host key to pin and a login key, which
	// exist only in this process.
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(hostPriv, "kiln local agent host key")
	if err != nil {
		return err
	}
	_, loginPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(loginPriv)
	if err != nil {
		return err
	}
	box, err := sandbox.Start(ctx, sandbox.Options{
		HostKey:        pem.EncodeToMemory(block),
		AuthorizedKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))},
		User:           user,
	})
	if err != nil {
		return fmt.Errorf("boot sandbox for %s: %w", id, err)
	}
	client, err := ssh.Dial("tcp", box.Addr(), &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   ssh.FixedHostKey(box.HostKey()),
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           10 * time.Second,
	})
	if err != nil {
		_ = box.Stop()
		return fmt.Errorf("log in to the sandbox of %s: %w", id, err)
	}
	inst.box, inst.client, inst.user = box, client, user
	a.c.addSandbox(id, box)
	fmt.Fprintf(a.c.log, "local ssm agent of %s online (sandbox %s, commands as root via %s)\n", id, box.Addr(), user)
	return nil
}

// stop forgets instance id's agent (its sandbox is stopped by the cloud).
func (a *Agent) stop(id string) {
	a.mu.Lock()
	inst := a.instances[id]
	delete(a.instances, id)
	a.mu.Unlock()
	if inst == nil {
		return
	}
	go func() {
		<-inst.ready
		if inst.client != nil {
			_ = inst.client.Close()
		}
	}()
}

// online returns instance id's agent if it is online.
func (a *Agent) online(id string) *agentInstance {
	a.mu.Lock()
	inst := a.instances[id]
	a.mu.Unlock()
	if inst == nil {
		return nil
	}
	select {
	case <-inst.ready:
		if inst.err == nil {
			return inst
		}
	default:
	}
	return nil
}

// SendCommand forwards the command to moto, which records it, and runs it
// in the instance's sandbox as the agent would. Only AWS-RunShellScript is
// known here.
func (a *Agent) SendCommand(ctx context.Context, in *ssm.SendCommandInput, optFns ...func(*ssm.Options)) (*ssm.SendCommandOutput, error) {
	if aws.ToString(in.DocumentName) != "AWS-RunShellScript" {
		return nil, &smithy.GenericAPIError{Code: "InvalidDocument", Message: "the local agent runs AWS-RunShellScript only"}
	}
	region := regionOf(optFns)
	var insts []*agentInstance
	for _, id := range in.InstanceIds {
		inst := a.online(id)
		if inst == nil {
			// AWS answers so for an instance that is not a managed,
			// online node.
			return nil, &smithy.GenericAPIError{Code: "InvalidInstanceId", Message: fmt.Sprintf("Instances [[%s]] not in a valid state for account %s", id, Account)}
		}
		insts = append(insts, inst)
	}
	out, err := a.c.SSM(region).SendCommand(ctx, in, optFns...)
	if err != nil {
		return nil, err
	}
	id := aws.ToString(out.Command.CommandId)
	for i, inst := range insts {
		cmd := &agentCommand{id: id, instance: in.InstanceIds[i], region: region, in: in, start: time.Now(), status: ssmtypes.CommandInvocationStatusInProgress, code: -1}
		a.mu.Lock()
		a.commands[id+"/"+cmd.instance] = cmd
		a.mu.Unlock()
		go a.run(cmd, inst)
	}
	out.Command.Status = ssmtypes.CommandStatusPending
	return out, nil
}

// run runs cmd in the instance's sandbox, as root, and streams its output.
func (a *Agent) run(cmd *agentCommand, inst *agentInstance) {
	timeout := 3600 * time.Second // AWS-RunShellScript's default
	if v := cmd.in.Parameters["executionTimeout"]; len(v) == 1 {
		if n, err := strconv.Atoi(v[0]); err == nil && n > 0 {
			timeout = time.Duration(n) * time.Second
		}
	}
	script := strings.Join(cmd.in.Parameters["commands"], "\n")
	// The first stderr line is the command's PID, for CancelCommand.
	line := "sh -c " + quote("echo kiln-agent-pid $$ >&2; exec /bin/sh -c "+quote(script))
	if inst.user != "root" {
		line = "sudo -n " + line
	}
	out := &logPublisher{a: a, cmd: cmd}
	sess, err := inst.client.NewSession()
	if err != nil {
		a.end(cmd, ssmtypes.CommandInvocationStatusFailed, -1, "the local agent lost its sandbox: "+err.Error())
		return
	}
	defer sess.Close()
	stdout, _ := sess.StdoutPipe()
	stderr, _ := sess.StderrPipe()
	if err := sess.Start(line); err != nil {
		a.end(cmd, ssmtypes.CommandInvocationStatusFailed, -1, err.Error())
		return
	}
	timer := time.AfterFunc(timeout, func() {
		cmd.mu.Lock()
		cmd.details = "execution timed out"
		cmd.mu.Unlock()
		a.kill(cmd, inst)
	})
	defer timer.Stop()
	done := make(chan struct{})
	published := make(chan struct{})
	go func() { out.publishUntil(done); close(published) }()
	var wg sync.WaitGroup
	wg.Go(func() { out.pump(stdout, "stdout", false) })
	wg.Go(func() { out.pump(stderr, "stderr", true) })
	wg.Wait()
	err = sess.Wait()
	close(done)
	<-published
	code := int32(0)
	if exit, ok := errors.AsType[*ssh.ExitError](err); ok {
		code = int32(exit.ExitStatus())
		if exit.Signal() != "" {
			code = -1
		}
	} else if err != nil {
		code = -1
	}
	cmd.mu.Lock()
	cancelled, timedOut := cmd.cancelled, cmd.details == "execution timed out"
	cmd.mu.Unlock()
	switch {
	case cancelled:
		a.end(cmd, ssmtypes.CommandInvocationStatusCancelled, -1, "Cancelled")
	case timedOut:
		a.end(cmd, ssmtypes.CommandInvocationStatusTimedOut, -1, "ExecutionTimedOut")
	case code == 0:
		a.end(cmd, ssmtypes.CommandInvocationStatusSuccess, 0, "Success")
	default:
		a.end(cmd, ssmtypes.CommandInvocationStatusFailed, code, "Failed")
	}
}

func (a *Agent) end(cmd *agentCommand, status ssmtypes.CommandInvocationStatus, code int32, details string) {
	cmd.mu.Lock()
	defer cmd.mu.Unlock()
	cmd.status, cmd.code, cmd.details, cmd.end = status, code, details, time.Now()
}

// kill stops cmd's processes: its process group, from another session.
func (a *Agent) kill(cmd *agentCommand, inst *agentInstance) {
	cmd.mu.Lock()
	pid := cmd.pid
	cmd.mu.Unlock()
	if pid <= 0 {
		return
	}
	script := fmt.Sprintf(`p=%d; g=$(cut -d' ' -f5 /proc/$p/stat 2>/dev/null)
kill -TERM "-$g" 2>/dev/null || kill -TERM "$p" 2>/dev/null
sleep 1
kill -KILL "-$g" 2>/dev/null || kill -KILL "$p" 2>/dev/null
true`, pid)
	line := "sh -c " + quote(script)
	if inst.user != "root" {
		line = "sudo -n " + line
	}
	sess, err := inst.client.NewSession()
	if err != nil {
		return
	}
	defer sess.Close()
	_ = sess.Run(line)
}

// logPublisher sends a command's output to CloudWatch Logs as the agent
// does with CloudWatchOutputConfig: one event per line, in batches every
// publishEvery, and keeps SSM's cut copy.
type logPublisher struct {
	a       *Agent
	cmd     *agentCommand
	mu      sync.Mutex
	pending map[string][]cwltypes.InputLogEvent // by stream
	streams map[string]bool                     // created
}

// publishEvery is how often a running command's new output is sent.
const publishEvery = 200 * time.Millisecond

func (p *logPublisher) pump(r io.Reader, stream string, pidFirst bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if pidFirst {
			pidFirst = false
			if n, ok := strings.CutPrefix(line, "kiln-agent-pid "); ok {
				pid, _ := strconv.Atoi(n)
				p.cmd.mu.Lock()
				p.cmd.pid = pid
				p.cmd.mu.Unlock()
				continue
			}
		}
		p.cmd.mu.Lock()
		if stream == "stdout" {
			p.cmd.stdout.WriteString(line + "\n")
		} else {
			p.cmd.stderr.WriteString(line + "\n")
		}
		p.cmd.mu.Unlock()
		p.mu.Lock()
		if p.pending == nil {
			p.pending = map[string][]cwltypes.InputLogEvent{}
		}
		p.pending[stream] = append(p.pending[stream], cwltypes.InputLogEvent{Message: aws.String(line), Timestamp: aws.Int64(time.Now().UnixMilli())})
		p.mu.Unlock()
	}
}

// publishUntil sends the pending output every publishEvery until done is
// closed, and once more then.
func (p *logPublisher) publishUntil(done <-chan struct{}) {
	tick := time.NewTicker(publishEvery)
	defer tick.Stop()
	for {
		select {
		case <-done:
			p.publish()
			return
		case <-tick.C:
			p.publish()
		}
	}
}

func (p *logPublisher) publish() {
	cw := p.cmd.in.CloudWatchOutputConfig
	p.mu.Lock()
	defer p.mu.Unlock()
	if cw == nil || !cw.CloudWatchOutputEnabled || len(p.pending) == 0 {
		p.pending = nil
		return
	}
	group := aws.ToString(cw.CloudWatchLogGroupName)
	if group == "" {
		group = "/aws/ssm/AWS-RunShellScript"
	}
	logs := p.a.c.Logs(p.cmd.region)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if p.streams == nil {
		p.streams = map[string]bool{}
	}
	for _, stream := range []string{"stdout", "stderr"} {
		events := p.pending[stream]
		if len(events) == 0 {
			continue
		}
		name := p.cmd.id + "/" + p.cmd.instance + "/aws-runShellScript/" + stream
		if !p.streams[name] {
			_, err := logs.CreateLogStream(ctx, &cloudwatchlogs.CreateLogStreamInput{LogGroupName: aws.String(group), LogStreamName: aws.String(name)})
			if err != nil && bake.AWSCode(err) != "ResourceAlreadyExistsException" {
				fmt.Fprintf(p.a.c.log, "local ssm agent: create log stream %s in %s: %v\n", name, group, err)
				continue
			}
			p.streams[name] = true
		}
		for len(events) > 0 {
			n := min(len(events), 1000)
			_, err := logs.PutLogEvents(ctx, &cloudwatchlogs.PutLogEventsInput{LogGroupName: aws.String(group), LogStreamName: aws.String(name), LogEvents: events[:n]})
			if err != nil {
				fmt.Fprintf(p.a.c.log, "local ssm agent: put log events into %s: %v\n", name, err)
				break
			}
			events = events[n:]
		}
	}
	p.pending = nil
}

// command returns the known command id on instance, or nil.
func (a *Agent) command(id, instance string) *agentCommand {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.commands[id+"/"+instance]
}

// GetCommandInvocation answers with the command's real status, exit code
// and (cut) output, where moto would answer Success with none.
func (a *Agent) GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, optFns ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error) {
	cmd := a.command(aws.ToString(in.CommandId), aws.ToString(in.InstanceId))
	if cmd == nil {
		return a.c.SSM(regionOf(optFns)).GetCommandInvocation(ctx, in, optFns...)
	}
	cmd.mu.Lock()
	defer cmd.mu.Unlock()
	out := &ssm.GetCommandInvocationOutput{
		CommandId: in.CommandId, InstanceId: in.InstanceId, DocumentName: cmd.in.DocumentName, Comment: cmd.in.Comment,
		PluginName: aws.String("aws:runShellScript"), Status: cmd.status, StatusDetails: aws.String(cmd.details), ResponseCode: cmd.code,
		StandardOutputContent:  aws.String(cutString(cmd.stdout.String(), maxInlineStdout)),
		StandardErrorContent:   aws.String(cutString(cmd.stderr.String(), maxInlineStderr)),
		ExecutionStartDateTime: aws.String(cmd.start.UTC().Format(time.RFC3339)),
	}
	if cw := cmd.in.CloudWatchOutputConfig; cw != nil {
		out.CloudWatchOutputConfig = cw
	}
	if !cmd.end.IsZero() {
		out.ExecutionEndDateTime = aws.String(cmd.end.UTC().Format(time.RFC3339))
	}
	return out, nil
}

func cutString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ListCommands is moto's list with the real status of the commands the
// agent runs (moto's are all Success).
func (a *Agent) ListCommands(ctx context.Context, in *ssm.ListCommandsInput, optFns ...func(*ssm.Options)) (*ssm.ListCommandsOutput, error) {
	out, err := a.c.SSM(regionOf(optFns)).ListCommands(ctx, in, optFns...)
	if err != nil {
		return nil, err
	}
	for i, c := range out.Commands {
		for _, inst := range c.InstanceIds {
			if cmd := a.command(aws.ToString(c.CommandId), inst); cmd != nil {
				cmd.mu.Lock()
				out.Commands[i].Status = ssmtypes.CommandStatus(cmd.status)
				cmd.mu.Unlock()
			}
		}
	}
	return out, nil
}

// CancelCommand stands in for the operation moto lacks: it stops the
// command's processes in the sandbox.
func (a *Agent) CancelCommand(_ context.Context, in *ssm.CancelCommandInput, _ ...func(*ssm.Options)) (*ssm.CancelCommandOutput, error) {
	id := aws.ToString(in.CommandId)
	found := false
	a.mu.Lock()
	var cmds []*agentCommand
	for _, cmd := range a.commands {
		if cmd.id == id && (len(in.InstanceIds) == 0 || slices.Contains(in.InstanceIds, cmd.instance)) {
			cmds = append(cmds, cmd)
		}
	}
	a.mu.Unlock()
	for _, cmd := range cmds {
		found = true
		cmd.mu.Lock()
		running := cmd.status == ssmtypes.CommandInvocationStatusInProgress
		if running {
			cmd.cancelled = true
		}
		cmd.mu.Unlock()
		if inst := a.online(cmd.instance); running && inst != nil {
			a.kill(cmd, inst)
		}
	}
	if !found {
		return nil, &smithy.GenericAPIError{Code: "InvalidCommandId", Message: "no such command: " + id}
	}
	return &ssm.CancelCommandOutput{}, nil
}

// quote quotes s for a POSIX shell.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}
