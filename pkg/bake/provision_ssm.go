package bake

// The session_manager transport: provisioners run through SSM Run Command
// (the AWS-RunShellScript document), with no inbound port, no key pair and
// no Lambda in the VPC.
//
// How a provisioner runs:
//
//   - Its steps are the SSH transport's (provisioners.go: shellScripts,
//     planUpload, planAnsible): each script, upload or Ansible command is
//     one SendCommand, run as ssh_username when the recipe names one (as
//     over SSH, and as Packer's session_manager does), else as root, the
//     agent's user.
//   - Nothing secret travels in the command itself, which SSM keeps in its
//     command history for anyone with ssm:ListCommands: the step's script
//     (its files, execute_command with the environment variables) is
//     staged in the stack's bucket under StagedPrefix, and the command
//     only fetches it, through a presigned URL that expires within the
//     hour, with curl or wget. The instance thus needs no S3 permission
//     and no AWS CLI; cleanup deletes the staged objects.
//   - The command's output (stdout and stderr, merged as over SSH) goes to
//     the build's CloudWatch Logs group (CommandLogGroup), which the agent
//     streams to as the command runs; SSM's own copy is cut at 24,000
//     characters. Each invocation reads what is new into the build's log;
//     a failed provisioner's last lines come from there too. The command
//     ends its output with a marker line, so kiln knows when the output is
//     complete. The group is unredacted raw output: cleanup deletes it,
//     and its retention is a backstop.
//   - The state machine polls: Run sends a command, records it in
//     st.Provision.Running (ID = CommandId, Cursor = where its output
//     continues) and answers with a not-ready Wait that backs off with the
//     command's age (at most maxCommandPoll), so a provisioner may run for
//     hours without a sleeping Lambda or a large execution history.
//   - A failure or a provisioner's timeout cancels the running command
//     (CancelCommand); cleanup cancels what is left.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	cwltypes "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// ssmRunAPI is the part of SSM Run Command the session_manager transport
// uses, in the instance's Region (named per call).
type ssmRunAPI interface {
	DescribeInstanceInformation(ctx context.Context, in *ssm.DescribeInstanceInformationInput, optFns ...func(*ssm.Options)) (*ssm.DescribeInstanceInformationOutput, error)
	SendCommand(ctx context.Context, in *ssm.SendCommandInput, optFns ...func(*ssm.Options)) (*ssm.SendCommandOutput, error)
	ListCommands(ctx context.Context, in *ssm.ListCommandsInput, optFns ...func(*ssm.Options)) (*ssm.ListCommandsOutput, error)
	GetCommandInvocation(ctx context.Context, in *ssm.GetCommandInvocationInput, optFns ...func(*ssm.Options)) (*ssm.GetCommandInvocationOutput, error)
	CancelCommand(ctx context.Context, in *ssm.CancelCommandInput, optFns ...func(*ssm.Options)) (*ssm.CancelCommandOutput, error)
}

// commandOutputAPI is the part of CloudWatch Logs that holds the commands'
// full output, in the instance's Region (named per call).
type commandOutputAPI interface {
	CreateLogGroup(ctx context.Context, in *cloudwatchlogs.CreateLogGroupInput, optFns ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.CreateLogGroupOutput, error)
	PutRetentionPolicy(ctx context.Context, in *cloudwatchlogs.PutRetentionPolicyInput, optFns ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.PutRetentionPolicyOutput, error)
	GetLogEvents(ctx context.Context, in *cloudwatchlogs.GetLogEventsInput, optFns ...func(*cloudwatchlogs.Options)) (*cloudwatchlogs.GetLogEventsOutput, error)
}

// instanceDescriber looks at the instance when its agent stays away.
type instanceDescriber interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

// presignAPI signs the URLs the instance fetches staged files with
// (s3.PresignClient).
type presignAPI interface {
	PresignGetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.PresignOptions)) (*v4.PresignedHTTPRequest, error)
}

// Defaults of the session_manager transport.
const (
	// DefaultAgentTimeout bounds the wait for the SSM agent to come
	// online: a fresh instance profile or agent can take a while.
	DefaultAgentTimeout = 15 * time.Minute
	// runShellScript is the SSM document each step runs as, and
	// runShellScriptStream the name of its plugin in output stream names
	// (<command>/<instance>/aws-runShellScript/stdout).
	runShellScript       = "AWS-RunShellScript"
	runShellScriptStream = "aws-runShellScript"
	// deliveryTimeout is SendCommand's TimeoutSeconds: how long SSM tries
	// to deliver a command to an agent that does not pick it up (for
	// example while the instance reboots). How long the command may run
	// is the document's executionTimeout.
	// https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_SendCommand.html
	deliveryTimeout = 10 * time.Minute
	// maxExecutionTimeout is AWS-RunShellScript's largest executionTimeout
	// (48 hours), used for provisioners without a timeout.
	maxExecutionTimeout = 48 * time.Hour
	// presignTTL is how long a staged file's URL works: the command fetches
	// its files as soon as it starts, within deliveryTimeout.
	presignTTL = 30 * time.Minute
	// outputRetentionDays is the command log group's retention, a backstop
	// for a build whose cleanup never ran.
	outputRetentionDays = 7
	// outputSettle is how long after a command ended kiln waits for the
	// rest of its output to reach CloudWatch Logs.
	outputSettle = 2 * time.Minute
	// invocationGrace is how long after SendCommand an unknown invocation
	// is SSM's eventual consistency rather than absence.
	invocationGrace = time.Minute
	// maxCommandPoll caps the wait between two polls of a long command:
	// with the polls backing off to a tenth of its age, a 48-hour command
	// costs about 600 rounds of the wait loop.
	maxCommandPoll = 5 * time.Minute
	// defaultCommandPoll is the shortest wait between polls.
	defaultCommandPoll = 2 * time.Second
)

// runSSM runs provisioners through SSM Run Command: it waits for the agent
// and then sends, polls and collects one command at a time. A failure
// while a command runs cancels it (the state that records the command is
// lost with the error), unless the state machine retries the task on that
// error (Throttled, Transient): the retry, with the earlier state, carries
// on with the command, found by its Comment if need be.
func (p *Provision) runSSM(ctx context.Context, st *State, plan *Plan, build *Build, polls int) (w *Wait, err error) {
	if p.RunCommand == nil || p.Output == nil || p.Stage == nil || p.Presign == nil {
		return nil, fmt.Errorf("provision %s: the session_manager transport is not wired (SSM Run Command, CloudWatch Logs, S3 staging)", st.Launch.InstanceID)
	}
	prov := st.Provision
	if !prov.AgentOnline {
		if w, err := p.waitForAgent(ctx, st, polls); err != nil || w != nil {
			return w, err
		}
	}
	stopAt, opCtx, cancel := p.stopAt(ctx, p.Reserve)
	defer cancel()
	run := &ssmRun{invocation: invocation{p: p, st: st, plan: plan, build: build, log: Logger(ctx), polls: polls, stopAt: stopAt}, region: st.Launch.Region}
	defer func() {
		if err != nil && prov.Running != nil && !IsThrottle(err) && !isTransient(err) {
			run.cancel(context.WithoutCancel(ctx), prov.Running.ID)
		}
	}()
	return run.provisioners(opCtx)
}

// waitForAgent returns nil once the instance's SSM agent is online, a
// not-ready Wait while it is not, and an error naming what never came up:
// the instance profile (the instance has none, so the agent cannot
// register) or the agent (the profile is there, but the agent never
// registered or lost contact).
func (p *Provision) waitForAgent(ctx context.Context, st *State, polls int) (*Wait, error) {
	l, prov := st.Launch, st.Provision
	id, region := l.InstanceID, l.Region
	info, err := p.agentInfo(ctx, id, region)
	if err != nil {
		return nil, err
	}
	now := p.now()
	if info != nil && info.PingStatus == ssmtypes.PingStatusOnline {
		prov.AgentOnline, prov.AgentSince = true, time.Time{}
		Logger(ctx).Info("ssm agent online", "instance", id, "agent_version", aws.ToString(info.AgentVersion),
			"platform", aws.ToString(info.PlatformName)+" "+aws.ToString(info.PlatformVersion))
		return nil, nil
	}
	first := prov.AgentSince.IsZero()
	if first {
		// The first wait counts from launch; a later one (after a
		// reboot) from when it began.
		prov.AgentSince = now
		if prov.Next == 0 && prov.Attempt == 0 && !l.LaunchedAt.IsZero() && l.LaunchedAt.Before(now) {
			prov.AgentSince = l.LaunchedAt
		}
	}
	waited := now.Sub(prov.AgentSince)
	limit := cmp.Or(p.AgentTimeout, DefaultAgentTimeout)
	if first || waited >= limit {
		// An instance without a profile can never register: say so at
		// once rather than after the bound.
		profile, err := p.instanceProfile(ctx, id, region)
		if err != nil {
			return nil, err
		}
		if profile == "" {
			return nil, fmt.Errorf("instance profile never came up: instance %s has no instance profile, so its SSM agent cannot register; set iam_instance_profile, or the stack's build instance profile (KILN_INSTANCE_PROFILE)", id)
		}
		if waited >= limit {
			what := fmt.Sprintf("SSM agent of %s (instance profile %s)", id, profile)
			if info == nil {
				return nil, fmt.Errorf("%w: the agent never came up: it never registered with Systems Manager although the instance has its profile; check that the image runs amazon-ssm-agent, that the subnet reaches the ssm, ssmmessages and ec2messages endpoints (a NAT gateway or VPC endpoints), and that the profile's role allows ssm:UpdateInstanceInformation and the ec2messages/ssmmessages actions",
					&WaitTimeoutError{For: what, After: waited})
			}
			return nil, fmt.Errorf("%w: the agent never came up: it registered but is %s (last ping %s)",
				&WaitTimeoutError{For: what, After: waited}, info.PingStatus, aws.ToTime(info.LastPingDateTime).UTC().Format(time.RFC3339))
		}
	}
	status := "not registered"
	if info != nil {
		status = string(info.PingStatus)
	}
	Logger(ctx).Info("ssm agent not online", "instance", id, "status", status, "waited", waited.Round(time.Second).String())
	return notReady("SSM agent of "+id+" online", polls, now.Sub(prov.AgentSince), expectFor(*st, p.Config).Agent), nil
}

// agentInfo returns what Systems Manager knows of the instance's agent, or
// nil if it never registered.
func (p *Provision) agentInfo(ctx context.Context, id, region string) (*ssmtypes.InstanceInformation, error) {
	out, err := p.RunCommand.DescribeInstanceInformation(ctx, &ssm.DescribeInstanceInformationInput{
		Filters: []ssmtypes.InstanceInformationStringFilter{{Key: aws.String("InstanceIds"), Values: []string{id}}},
	}, ssmIn(region))
	if err != nil {
		return nil, fmt.Errorf("describe ssm agent of %s: %w", id, err)
	}
	for i, info := range out.InstanceInformationList {
		if aws.ToString(info.InstanceId) == id {
			return &out.InstanceInformationList[i], nil
		}
	}
	return nil, nil
}

// instanceProfile returns the ARN of the instance's profile, "" if none.
func (p *Provision) instanceProfile(ctx context.Context, id, region string) (string, error) {
	if p.EC2 == nil {
		return "unknown", nil
	}
	out, err := p.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, ec2In(region))
	if err != nil {
		return "", fmt.Errorf("describe instance %s: %w", id, err)
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			if aws.ToString(in.InstanceId) == id && in.IamInstanceProfile != nil {
				return cmp.Or(aws.ToString(in.IamInstanceProfile.Arn), aws.ToString(in.IamInstanceProfile.Id)), nil
			}
		}
	}
	return "", nil
}

// ssmRun is one invocation's work for the session_manager transport.
type ssmRun struct {
	invocation
	region string
}

// provisioners runs provisioners from st.Provision.Next on, as far as this
// invocation goes, and returns the Wait to answer with.
func (run *ssmRun) provisioners(ctx context.Context) (*Wait, error) {
	p, prov, provs := run.p, run.st.Provision, run.build.Provisioners
	for prov.Next < len(provs) {
		pr := provs[prov.Next]
		if w := p.pause(prov, pr, run.polls); w != nil {
			return w, nil
		}
		if prov.StartedAt.IsZero() {
			prov.StartedAt = p.now()
		}
		if prov.Running == nil && prov.Step == 0 && !timeUp(run.stopAt) {
			run.log.Info(fmt.Sprintf("provisioner %s: starting (attempt %d of %d)", pr.Label(), prov.Attempt+1, pr.MaxRetries+1))
		}
		a := &ssmAttempt{index: prov.Next, id: fmt.Sprintf("p%d-a%d", prov.Next, prov.Attempt), pr: pr,
			step: prov.Step, running: prov.Running, startedAt: prov.StartedAt}
		w, err := run.attempt(ctx, a)
		prov.Step, prov.Running = a.step, a.running
		if err != nil {
			if w := run.retry(pr, err); w != nil {
				return w, nil
			}
			return nil, err
		}
		if w != nil {
			return w, nil
		}
		run.done(pr)
		if pr.Shell != nil && pr.Shell.ExpectDisconnect {
			// It may have rebooted the instance: wait for the agent again
			// before the next command (SSM would queue it meanwhile, but
			// its delivery timeout would start counting).
			prov.AgentOnline, prov.AgentSince = false, p.now()
			return run.again(fmt.Sprintf("SSM agent of %s after expect_disconnect", run.st.Launch.InstanceID), reconnectAfter), nil
		}
	}
	prov.Done = true
	run.log.Info(fmt.Sprintf("provisioning: %d provisioners done", len(provs)))
	return ready("provisioning", run.polls), nil
}

// ssmAttempt is one try of one provisioner over SSM.
type ssmAttempt struct {
	// index is the provisioner's index, -1 for error-cleanup-provisioner;
	// id names the attempt ("p2-a0").
	index   int
	id      string
	pr      Provisioner
	step    int
	running *Command
	// startedAt is when the attempt began, for the provisioner's timeout.
	startedAt time.Time
}

// stepID names step i of the attempt, unique within the build.
func (a *ssmAttempt) stepID(i int) string { return fmt.Sprintf("%s-s%d", a.id, i) }

// attempt carries attempt a on from a.step: it collects a finished
// command, sends the next one, and returns a not-ready Wait while a
// command runs, nil once every step is done.
func (run *ssmRun) attempt(ctx context.Context, a *ssmAttempt) (*Wait, error) {
	label := a.pr.Label()
	sc := run.stepContext(a)
	steps, err := ssmSteps(sc, a.pr)
	if err != nil {
		return nil, &ProvisionerError{Provisioner: label, ExitStatus: -1, Err: err}
	}
	var timeoutAt time.Time
	if a.pr.Timeout > 0 {
		timeoutAt = a.startedAt.Add(time.Duration(a.pr.Timeout))
	}
	for a.step < len(steps) {
		s := steps[a.step]
		if a.running == nil {
			switch {
			case !timeoutAt.IsZero() && !run.p.now().Before(timeoutAt):
				return nil, run.timedOut(ctx, a, "")
			case timeUp(run.stopAt):
				return run.again("provisioner "+label+" to continue in a new invocation", time.Second), nil
			}
			cmdID, err := run.send(ctx, sc, a, s, timeoutAt)
			if err != nil {
				if ctx.Err() != nil {
					return run.again("provisioner "+label+" to continue in a new invocation", time.Second), nil
				}
				return nil, &ProvisionerError{Provisioner: label, ExitStatus: -1, Err: err}
			}
			a.running = &Command{ID: cmdID, Provisioner: a.index, StartedAt: run.p.now()}
			// A command takes a moment to be delivered and to run.
			return run.again(fmt.Sprintf("command %s (%s of provisioner %s)", cmdID, s.what, label), run.p.commandPoll(0)), nil
		}
		res, err := run.collect(ctx, a, s, timeoutAt)
		if err != nil {
			return nil, err
		}
		if res.wait != nil {
			return res.wait, nil
		}
		if res.kilnErr != "" {
			a.running = nil
			return nil, &ProvisionerError{Provisioner: label, ExitStatus: -1, Err: errors.New(res.kilnErr), Tail: res.tail}
		}
		if res.noStatus {
			if a.pr.Shell == nil || !a.pr.Shell.ExpectDisconnect {
				a.running = nil
				return nil, &ProvisionerError{Provisioner: label, ExitStatus: -1, Tail: res.tail,
					Err: fmt.Errorf("%s ended without an exit status (%s): the instance rebooted or the command was killed (set expect_disconnect = true for a provisioner that reboots)", s.what, res.status)}
			}
			run.log.Info(fmt.Sprintf("provisioner %s: %s ended without an exit status (a reboot), as expect_disconnect allows", label, s.what))
		} else if !validExit(a.pr.Shell, res.exit) {
			a.running = nil
			return nil, &ProvisionerError{Provisioner: label, ExitStatus: res.exit, Tail: res.tail}
		}
		a.step, a.running = a.step+1, nil
	}
	return nil, nil
}

// stepContext is the context ssmSteps builds attempt a's steps in.
func (run *ssmRun) stepContext(a *ssmAttempt) stepContext {
	label := a.pr.Label()
	return stepContext{
		build: run.build, buildID: run.st.BuildID, id: a.id, tempDir: run.p.tempDir(),
		files: run.recipeFiles,
		logf: func(format string, args ...any) {
			run.log.Info(label + ": " + run.plan.Redact(fmt.Sprintf(format, args...)))
		},
	}
}

// commandPoll is how long to wait before polling a command that started
// elapsed ago: a tenth of its age, between the floor (Provision.Poll,
// defaultCommandPoll if zero) and maxCommandPoll.
func (p *Provision) commandPoll(elapsed time.Duration) time.Duration {
	return min(max(cmp.Or(p.Poll, defaultCommandPoll), elapsed/10), maxCommandPoll)
}

// timedOut cancels a's running command and returns the provisioner's
// timeout error, with the command's last output lines.
func (run *ssmRun) timedOut(ctx context.Context, a *ssmAttempt, detail string) error {
	var tail []string
	if a.running != nil {
		run.cancel(ctx, a.running.ID)
		tail = run.tail(ctx, a.running.ID, stepNonce(run.st.BuildID, a.stepID(a.step)))
		a.running = nil
	}
	msg := fmt.Sprintf("timed out after %s", time.Duration(a.pr.Timeout))
	if detail != "" {
		msg += " (" + detail + ")"
	}
	return &ProvisionerError{Provisioner: a.pr.Label(), ExitStatus: -1, Tail: tail, Err: errors.New(msg)}
}

// cancel cancels command id, best effort: a command that has ended
// already, or one cleanup cancels later, is no failure of the build.
func (run *ssmRun) cancel(ctx context.Context, id string) {
	_, err := run.p.RunCommand.CancelCommand(ctx, &ssm.CancelCommandInput{
		CommandId: aws.String(id), InstanceIds: []string{run.st.Launch.InstanceID},
	}, ssmIn(run.region))
	if err != nil {
		run.log.Warn(fmt.Sprintf("cancel command %s: %v", id, err))
		return
	}
	run.log.Info(fmt.Sprintf("cancelled command %s", id))
}

// ---------------------------------------------------------------- steps

// ssmStep is one command of the session_manager transport: the files it
// puts on the instance, then the command it runs there.
type ssmStep struct {
	// what names it in logs ("script scripts/setup.sh").
	what string
	// files lists what to place before the command.
	files func(ctx context.Context) ([]ssmFile, error)
	// need is a program the command needs ("" for none).
	need string
	// command is the command line; empty for an upload-only step.
	command string
	// remove is a file to delete after the command (a shell script,
	// unless skip_clean).
	remove string
}

// ssmFile is a file a step places on the instance.
type ssmFile struct {
	content []byte
	target  string
	// intoName: if target is a folder on the instance, the file goes into
	// it under this name instead (see uploadFile.intoDir).
	intoName string
	perm     fs.FileMode
}

// ssmSteps are the steps of provisioner pr over SSM, the same as the SSH
// transport's (provisionerSteps).
func ssmSteps(sc stepContext, pr Provisioner) ([]ssmStep, error) {
	switch {
	case pr.Shell != nil:
		var steps []ssmStep
		for _, s := range shellScripts(sc, pr.Shell) {
			step := ssmStep{what: s.what, command: s.command, files: func(ctx context.Context) ([]ssmFile, error) {
				content, err := s.content(ctx)
				if err != nil {
					return nil, err
				}
				return []ssmFile{{content: content, target: s.remote, perm: 0o755}}, nil
			}}
			if !pr.Shell.SkipClean {
				step.remove = s.remote
			}
			steps = append(steps, step)
		}
		return steps, nil
	case pr.File != nil:
		f := pr.File
		return []ssmStep{{what: "upload to " + f.Destination, files: func(ctx context.Context) ([]ssmFile, error) {
			if len(f.Sources) == 0 {
				return []ssmFile{{content: []byte(f.Content), target: f.Destination, perm: 0o644}}, nil
			}
			var files []ssmFile
			for _, src := range f.Sources {
				more, err := sc.uploadFiles(ctx, src, f.Destination, len(f.Sources) > 1)
				if err != nil {
					return nil, err
				}
				files = append(files, more...)
			}
			return files, nil
		}}}, nil
	case pr.Ansible != nil:
		if pr.Type == "ansible" {
			sc.logf("kiln runs Ansible on the instance itself (as ansible-local does), not from the build host")
		}
		run := planAnsible(sc, pr.Ansible, pr.Type != "ansible")
		steps := []ssmStep{{what: "stage playbook in " + run.staging, files: func(ctx context.Context) ([]ssmFile, error) {
			var files []ssmFile
			for _, u := range run.uploads {
				more, err := sc.uploadFiles(ctx, u.src, u.dst, u.into)
				if err != nil {
					return nil, err
				}
				files = append(files, more...)
			}
			return append(files, ssmFile{content: []byte(run.inventoryContent), target: run.inventory, perm: 0o644}), nil
		}}}
		for _, c := range run.commands {
			steps = append(steps, ssmStep{what: c.what, need: c.program, command: c.command})
		}
		return steps, nil
	}
	return nil, fmt.Errorf("provisioner type %q is not supported", pr.Type)
}

// uploadFiles reads the files of the recipe path src that go to dst
// (planUpload), logging what goes where.
func (sc stepContext) uploadFiles(ctx context.Context, src, dst string, into bool) ([]ssmFile, error) {
	fsys, err := sc.files(ctx)
	if err != nil {
		return nil, err
	}
	up, err := planUpload(fsys, src, dst, into)
	if err != nil {
		return nil, err
	}
	if up.dir {
		sc.logf("uploading %s (%d files) to %s", src, len(up.files), up.base)
	}
	var files []ssmFile
	for _, f := range up.files {
		b, err := fs.ReadFile(fsys, f.name)
		if err != nil {
			return nil, fmt.Errorf("upload %s: %w", f.name, err)
		}
		fi, err := fs.Stat(fsys, f.name)
		if err != nil {
			return nil, fmt.Errorf("upload %s: %w", f.name, err)
		}
		perm := fi.Mode().Perm()
		if perm == 0 {
			perm = 0o644
		}
		file := ssmFile{content: b, target: f.target, perm: perm}
		if f.intoDir {
			file.intoName = path.Base(f.name)
		}
		if !up.dir {
			if f.intoDir {
				sc.logf("uploading %s to %s (into it, if it is a folder)", src, f.target)
			} else {
				sc.logf("uploading %s to %s", src, f.target)
			}
		}
		files = append(files, file)
	}
	return files, nil
}

// ---------------------------------------------------------------- send

// stepNonce marks the output lines kiln's own scripts add to step id's
// output: derived from the build and the step, so any invocation can
// recognise them, and unlikely to appear in a recipe's output.
func stepNonce(buildID, stepID string) string {
	sum := sha256.Sum256([]byte("kiln step\x00" + buildID + "\x00" + stepID))
	return hex.EncodeToString(sum[:8])
}

// stepComment is the Comment of step id's command, by which a rerun after
// a lost response finds the command instead of sending it again.
func stepComment(buildID, stepID string) string { return "kiln " + buildID + " " + stepID }

// send stages step s's script and files and sends the command that runs
// them, unless an earlier try of this invocation sent it already (SSM
// commands have no client token: the command is found by its Comment).
func (run *ssmRun) send(ctx context.Context, sc stepContext, a *ssmAttempt, s ssmStep, timeoutAt time.Time) (string, error) {
	p, inst := run.p, run.st.Launch.InstanceID
	stepID := a.stepID(a.step)
	comment := stepComment(run.st.BuildID, stepID)
	if id, err := run.findCommand(ctx, comment, a.startedAt); err != nil || id != "" {
		if id != "" {
			run.log.Info(fmt.Sprintf("provisioner %s: found %s sent earlier as command %s", a.pr.Label(), s.what, id))
		}
		return id, err
	}
	if err := run.ensureLogGroup(ctx); err != nil {
		return "", err
	}
	nonce := stepNonce(run.st.BuildID, stepID)
	script, err := run.stageStep(ctx, s, stepID)
	if err != nil {
		return "", err
	}
	url, err := run.stage(ctx, stepID+"/step.sh", script)
	if err != nil {
		return "", err
	}
	execution := maxExecutionTimeout
	if !timeoutAt.IsZero() {
		execution = min(max(timeoutAt.Sub(p.now()), time.Second), maxExecutionTimeout)
	}
	out, err := p.RunCommand.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName: aws.String(runShellScript),
		InstanceIds:  []string{inst},
		Comment:      aws.String(comment),
		Parameters: map[string][]string{
			"commands":         strings.Split(bootstrapScript(run.build.Source.SSHUsername, nonce, url, run.plan.Redact(s.what+" of "+a.pr.Label())), "\n"),
			"executionTimeout": {strconv.Itoa(int((execution + time.Second - 1) / time.Second))},
		},
		TimeoutSeconds: aws.Int32(int32(deliveryTimeout / time.Second)),
		CloudWatchOutputConfig: &ssmtypes.CloudWatchOutputConfig{
			CloudWatchOutputEnabled: true,
			CloudWatchLogGroupName:  aws.String(CommandLogGroup(p.Config, run.st.BuildID)),
		},
	}, ssmIn(run.region))
	if err != nil {
		return "", fmt.Errorf("send command for %s to %s: %w", s.what, inst, err)
	}
	if out.Command == nil || aws.ToString(out.Command.CommandId) == "" {
		return "", fmt.Errorf("send command for %s to %s: no command ID", s.what, inst)
	}
	id := aws.ToString(out.Command.CommandId)
	run.log.Info(fmt.Sprintf("provisioner %s: running %s as command %s", a.pr.Label(), s.what, id))
	return id, nil
}

// findCommand returns the ID of the build's command with this comment
// sent to the instance since the attempt began, or "".
func (run *ssmRun) findCommand(ctx context.Context, comment string, since time.Time) (string, error) {
	in := &ssm.ListCommandsInput{InstanceId: aws.String(run.st.Launch.InstanceID)}
	if !since.IsZero() {
		in.Filters = []ssmtypes.CommandFilter{{Key: ssmtypes.CommandFilterKeyInvokedAfter, Value: aws.String(since.Add(-time.Minute).UTC().Format(time.RFC3339))}}
	}
	pg := ssm.NewListCommandsPaginator(run.p.RunCommand, in)
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx, ssmIn(run.region))
		if err != nil {
			return "", fmt.Errorf("list commands of %s: %w", run.st.Launch.InstanceID, err)
		}
		for _, c := range out.Commands {
			if aws.ToString(c.Comment) == comment {
				return aws.ToString(c.CommandId), nil
			}
		}
	}
	return "", nil
}

// ensureLogGroup creates the build's command log group, tagged with the
// build, before the agent needs it (so the instance profile needs no
// logs:CreateLogGroup).
func (run *ssmRun) ensureLogGroup(ctx context.Context) error {
	group := CommandLogGroup(run.p.Config, run.st.BuildID)
	_, err := run.p.Output.CreateLogGroup(ctx, &cloudwatchlogs.CreateLogGroupInput{
		LogGroupName: aws.String(group),
		Tags:         identityTags(*run.st),
	}, logsIn(run.region))
	switch {
	case AWSCode(err) == "ResourceAlreadyExistsException":
		return nil
	case err != nil:
		return fmt.Errorf("create log group %s: %w", group, err)
	}
	_, err = run.p.Output.PutRetentionPolicy(ctx, &cloudwatchlogs.PutRetentionPolicyInput{
		LogGroupName: aws.String(group), RetentionInDays: aws.Int32(outputRetentionDays),
	}, logsIn(run.region))
	if err != nil {
		return fmt.Errorf("set retention of log group %s: %w", group, err)
	}
	run.log.Info("created log group", "group", group)
	return nil
}

// stage stores content as the staged object <StagedPrefix>/<name> and
// returns a presigned URL to fetch it with.
func (run *ssmRun) stage(ctx context.Context, name string, content []byte) (string, error) {
	bucket, key := run.p.Config.Bucket, StagedPrefix(run.st.BuildID)+name
	if bucket == "" {
		return "", errors.New("stage files: no kiln bucket configured (KILN_BUCKET)")
	}
	_, err := run.p.Stage.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(content),
		ContentType: aws.String("application/octet-stream"),
	})
	if err != nil {
		return "", fmt.Errorf("stage s3://%s/%s: %w", bucket, key, err)
	}
	req, err := run.p.Presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)},
		func(o *s3.PresignOptions) { o.Expires = presignTTL })
	if err != nil {
		return "", fmt.Errorf("presign s3://%s/%s: %w", bucket, key, err)
	}
	return req.URL, nil
}

// stageStep stages step s's files and returns its script, which the
// command fetches and runs as the provisioning user: it places the files,
// checks for the program the command needs, runs the command as the SSH
// transport does ("${SHELL:-/bin/sh}" -c), and removes the script after.
func (run *ssmRun) stageStep(ctx context.Context, s ssmStep, stepID string) ([]byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# kiln build %s, step %s: %s\n", run.st.BuildID, stepID, s.what)
	b.WriteString(stepFunctions)
	if s.files != nil {
		files, err := s.files(ctx)
		if err != nil {
			return nil, err
		}
		for i, f := range files {
			url, err := run.stage(ctx, fmt.Sprintf("%s/f%d", stepID, i), f.content)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "kiln_place %s %s %o %s\n", quoteShell(url), quoteShell(f.target), f.perm, quoteShell(f.intoName))
		}
	}
	if s.need != "" {
		fmt.Fprintf(&b, "command -v %s >/dev/null 2>&1 || kiln_fail %s\n", quoteShell(s.need),
			quoteShell(fmt.Sprintf("%s is %v: %s", s.need, errMissingCommand, installHint)))
	}
	if s.command == "" {
		b.WriteString("exit 0\n")
		return []byte(b.String()), nil
	}
	fmt.Fprintf(&b, "\"${SHELL:-/bin/sh}\" -c %s </dev/null\ns=$?\n", quoteShell(s.command))
	if s.remove != "" {
		fmt.Fprintf(&b, "rm -f %s\n", quoteShell(s.remove))
	}
	b.WriteString("exit $s\n")
	return []byte(b.String()), nil
}

// failFetch are the shell functions both a step's script and its
// bootstrap use: kiln_fail ends with the error marker line for nonce $m,
// kiln_fetch downloads a presigned URL with curl or wget.
const failFetch = `kiln_fail() {
	printf 'kiln:%s:error:%s\n' "$m" "$(printf '%s' "$*" | tr '\n' ' ')"
	exit 1
}
kiln_fetch() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS --retry 3 -o "$2" "$1"
	elif command -v wget >/dev/null 2>&1; then
		wget -q -O "$2" "$1"
	else
		echo "neither curl nor wget is installed on the instance"
		return 127
	fi
}
`

// stepFunctions are the shell functions of a step's script. $1 is the
// step's nonce, for kiln_fail's marker line.
const stepFunctions = `m=$1
` + failFetch + `kiln_place() {
	t=$2
	if [ -n "$4" ] && [ -d "$t" ]; then t=${t%/}/$4; fi
	[ -d "$t" ] && kiln_fail "upload to $t: it is a folder"
	mkdir -p "$(dirname "$t")" || kiln_fail "upload to $t: cannot create its folder"
	if ! e=$(kiln_fetch "$1" "$t.kiln-new" 2>&1); then
		rm -f "$t.kiln-new"
		kiln_fail "upload to $t: $e"
	fi
	chmod "$3" "$t.kiln-new" && mv -f "$t.kiln-new" "$t" || { rm -f "$t.kiln-new"; kiln_fail "upload to $t: cannot write it"; }
}
`

// bootstrapScript is the AWS-RunShellScript command of a step. It runs as
// root (the agent's user), fetches the step's script from its presigned
// URL into a private folder, runs it as user (a login shell, as SSH gives)
// or as root with a HOME, with stderr merged into stdout, and ends the
// output with the marker line "kiln:<nonce>:done:<status>", by which kiln
// knows it has all of the output. It holds no secret: SSM keeps it in the
// command history.
func bootstrapScript(user, nonce, url, what string) string {
	return "# kiln: " + strings.ReplaceAll(what, "\n", " ") + `
u=` + quoteShell(user) + `
m=` + nonce + `
` + failFetch + `d=$(mktemp -d /tmp/kiln-step.XXXXXXXX) || kiln_fail "cannot make a temporary folder"
if ! e=$(kiln_fetch ` + quoteShell(url) + ` "$d/step.sh" 2>&1); then
	rm -rf "$d"
	kiln_fail "fetch the step from the kiln bucket: $e"
fi
if [ -n "$u" ] && [ "$u" != root ]; then
	id "$u" >/dev/null 2>&1 || { rm -rf "$d"; kiln_fail "user $u (ssh_username) does not exist on the instance"; }
	chown -R "$u" "$d" || { rm -rf "$d"; kiln_fail "cannot hand the step to $u"; }
	su - "$u" -c "exec sh $d/step.sh $m" </dev/null 2>&1
else
	(cd /root 2>/dev/null; HOME=/root; export HOME; exec sh "$d/step.sh" "$m") </dev/null 2>&1
fi
s=$?
rm -rf "$d"
printf 'kiln:%s:done:%s\n' "$m" "$s"
exit $s`
}

// ---------------------------------------------------------------- collect

// collected is what a poll of a running command found.
type collected struct {
	// wait is set while the command (or its output) is not finished.
	wait *Wait
	// exit is its exit status; noStatus is set when it ended without one
	// (status says how).
	exit     int
	noStatus bool
	status   string
	// kilnErr is a failure of kiln's own part of the step (a file it could
	// not fetch, a missing program).
	kilnErr string
	// tail holds the last lines of its output, for an error.
	tail []string
}

// collect polls a's running command: it logs the output that is new and
// says whether (and how) the command ended.
func (run *ssmRun) collect(ctx context.Context, a *ssmAttempt, s ssmStep, timeoutAt time.Time) (collected, error) {
	p, cur, inst := run.p, a.running, run.st.Launch.InstanceID
	label := a.pr.Label()
	nonce := stepNonce(run.st.BuildID, a.stepID(a.step))
	out, err := p.RunCommand.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{
		CommandId: aws.String(cur.ID), InstanceId: aws.String(inst),
	}, ssmIn(run.region))
	status := ssmtypes.CommandInvocationStatusPending
	switch {
	case AWSCode(err) == "InvocationDoesNotExist" && p.now().Sub(cur.StartedAt) < invocationGrace:
	case err != nil:
		return collected{}, fmt.Errorf("poll command %s on %s: %w", cur.ID, inst, err)
	default:
		status = out.Status
	}
	read, err := run.readOutput(ctx, cur, label, nonce)
	if err != nil {
		return collected{}, err
	}
	// The end marker can be read before SSM reports the end: remember it.
	cur.Complete = cur.Complete || read.done
	if read.kilnErr != "" {
		cur.Failure = read.kilnErr
	}
	elapsed := p.now().Sub(cur.StartedAt)
	switch status {
	case ssmtypes.CommandInvocationStatusPending, ssmtypes.CommandInvocationStatusInProgress,
		ssmtypes.CommandInvocationStatusDelayed, ssmtypes.CommandInvocationStatusCancelling:
		if !timeoutAt.IsZero() && !p.now().Before(timeoutAt) {
			return collected{}, run.timedOut(ctx, a, "")
		}
		return collected{wait: run.again(fmt.Sprintf("command %s (%s of provisioner %s)", cur.ID, s.what, label), p.commandPoll(elapsed))}, nil
	case ssmtypes.CommandInvocationStatusTimedOut:
		if aws.ToString(out.StatusDetails) == "DeliveryTimedOut" {
			a.running = nil
			return collected{}, &ProvisionerError{Provisioner: label, ExitStatus: -1,
				Err: fmt.Errorf("%s: SSM could not deliver command %s within %s: the agent went offline", s.what, cur.ID, deliveryTimeout)}
		}
		return collected{}, run.timedOut(ctx, a, "the command's executionTimeout")
	case ssmtypes.CommandInvocationStatusSuccess, ssmtypes.CommandInvocationStatusFailed:
	default:
		// Cancelled (outside kiln), Undeliverable, Terminated.
		tail := run.tail(ctx, cur.ID, nonce)
		a.running = nil
		return collected{}, &ProvisionerError{Provisioner: label, ExitStatus: -1, Tail: tail,
			Err: fmt.Errorf("%s: command %s ended %s: %s", s.what, cur.ID, status, aws.ToString(out.StatusDetails))}
	}
	res := collected{exit: int(out.ResponseCode), status: string(status), kilnErr: cur.Failure}
	if !cur.Complete {
		// The agent sends output to CloudWatch Logs in batches: the
		// status can be final before the last lines have arrived.
		if cur.EndedAt.IsZero() {
			cur.EndedAt = p.now()
		}
		if p.now().Sub(cur.EndedAt) < outputSettle {
			return collected{wait: run.again(fmt.Sprintf("the rest of the output of command %s", cur.ID), max(p.commandPoll(0), 5*time.Second))}, nil
		}
		run.log.Warn(fmt.Sprintf("provisioner %s: command %s ended %s, but its output in CloudWatch Logs has no end marker after %s; it may be incomplete",
			label, cur.ID, status, outputSettle))
		if status == ssmtypes.CommandInvocationStatusFailed && res.exit < 0 {
			// Killed, as a reboot kills it: no exit status.
			res.noStatus = true
		}
	}
	if res.kilnErr != "" || res.noStatus || !validExit(a.pr.Shell, res.exit) {
		res.tail = run.tail(ctx, cur.ID, nonce)
	}
	return res, nil
}

// outputRead is what reading a command's output found.
type outputRead struct {
	// done is set when the end marker has been read.
	done    bool
	kilnErr string
}

// outputStream is the CloudWatch Logs stream of command id's output.
func outputStream(commandID, instanceID string) string {
	return commandID + "/" + instanceID + "/" + runShellScriptStream + "/stdout"
}

// readOutput logs the command's output that is new since cur.Cursor, each
// line prefixed with the provisioner's label and redacted, and moves the
// cursor on. kiln's marker lines are not logged.
func (run *ssmRun) readOutput(ctx context.Context, cur *Command, label, nonce string) (outputRead, error) {
	var res outputRead
	group, stream := CommandLogGroup(run.p.Config, run.st.BuildID), outputStream(cur.ID, run.st.Launch.InstanceID)
	lines := &lineLog{log: run.log, prefix: label + ": ", redact: run.plan.Redact}
	for read := 0; read < maxReadPerPoll; {
		in := &cloudwatchlogs.GetLogEventsInput{LogGroupName: aws.String(group), LogStreamName: aws.String(stream), StartFromHead: aws.Bool(true)}
		if cur.Cursor != "" {
			in.NextToken = aws.String(cur.Cursor)
		}
		out, err := run.p.Output.GetLogEvents(ctx, in, logsIn(run.region))
		if AWSCode(err) == "ResourceNotFoundException" {
			return res, nil // no output yet
		}
		if err != nil {
			return res, fmt.Errorf("read output of command %s (%s %s): %w", cur.ID, group, stream, err)
		}
		for _, ev := range out.Events {
			msg := aws.ToString(ev.Message)
			read += len(msg)
			cur.Offset += int64(len(msg))
			for _, line := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
				text, marker := splitMarker(line, nonce)
				if text != "" || marker == "" {
					lines.write([]byte(text + "\n"))
				}
				switch {
				case strings.HasPrefix(marker, "done:"):
					res.done = true
				case strings.HasPrefix(marker, "error:"):
					res.kilnErr = strings.TrimSpace(strings.TrimPrefix(marker, "error:"))
				}
			}
		}
		next := aws.ToString(out.NextForwardToken)
		if len(out.Events) == 0 || next == "" || next == cur.Cursor {
			break
		}
		cur.Cursor = next
	}
	lines.flush()
	return res, nil
}

// splitMarker splits kiln's marker "kiln:<nonce>:<what>" off an output
// line: text is what came before it (a last line without a newline),
// marker the <what>, "" if the line has none.
func splitMarker(line, nonce string) (text, marker string) {
	line = strings.TrimRight(line, "\r")
	tag := "kiln:" + nonce + ":"
	i := strings.Index(line, tag)
	if i < 0 {
		return line, ""
	}
	return line[:i], line[i+len(tag):]
}

// tail returns the last lines of command id's output from CloudWatch Logs,
// the whole output (SSM's own copy is cut at 24,000 characters), without
// kiln's marker lines and redacted.
func (run *ssmRun) tail(ctx context.Context, id, nonce string) []string {
	group, stream := CommandLogGroup(run.p.Config, run.st.BuildID), outputStream(id, run.st.Launch.InstanceID)
	out, err := run.p.Output.GetLogEvents(ctx, &cloudwatchlogs.GetLogEventsInput{
		LogGroupName: aws.String(group), LogStreamName: aws.String(stream),
		StartFromHead: aws.Bool(false), Limit: aws.Int32(tailLines + 5),
	}, logsIn(run.region))
	if err != nil {
		run.log.Warn(fmt.Sprintf("read the end of the output of command %s: %v", id, err))
		return nil
	}
	return tailOf(out.Events, nonce, tailLines, run.plan.Redact)
}

// tailOf returns the last n output lines of events, without kiln's marker
// lines (and the empty line before the end marker), redacted.
func tailOf(events []cwltypes.OutputLogEvent, nonce string, n int, redact func(string) string) []string {
	var lines []string
	for _, ev := range events {
		for _, line := range strings.Split(strings.TrimRight(aws.ToString(ev.Message), "\n"), "\n") {
			text, marker := splitMarker(line, nonce)
			if marker == "" || text != "" {
				lines = append(lines, redact(text))
			}
		}
	}
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// logsIn sends a CloudWatch Logs call to region.
func logsIn(region string) func(*cloudwatchlogs.Options) {
	return func(o *cloudwatchlogs.Options) {
		if region != "" {
			o.Region = region
		}
	}
}

// ---------------------------------------------------------------- error cleanup

// errorCleanupSSM runs error-cleanup-provisioner over SSM, once, best
// effort, polling within this invocation until stopAt; a command still
// running then is cancelled. It never fails: the build's own error is what
// the bake reports.
func (p *Provision) errorCleanupSSM(ctx context.Context, st *State, plan *Plan, build *Build, stopAt time.Time) {
	log := Logger(ctx)
	pr := *build.ErrorCleanup
	label := pr.Label()
	if p.RunCommand == nil || p.Output == nil || p.Stage == nil || p.Presign == nil {
		log.Warn(fmt.Sprintf("error-cleanup-provisioner %s skipped: the session_manager transport is not wired", label))
		return
	}
	info, err := p.agentInfo(ctx, st.Launch.InstanceID, st.Launch.Region)
	if err != nil || info == nil || info.PingStatus != ssmtypes.PingStatusOnline {
		log.Warn(fmt.Sprintf("error-cleanup-provisioner %s skipped: the SSM agent of %s is not online (%v)", label, st.Launch.InstanceID, err))
		return
	}
	log.Info(fmt.Sprintf("error-cleanup-provisioner %s: starting", label))
	run := &ssmRun{invocation: invocation{p: p, st: st, plan: plan, build: build, log: log, stopAt: stopAt}, region: st.Launch.Region}
	a := &ssmAttempt{index: -1, id: "error-cleanup", pr: pr, startedAt: p.now()}
	for {
		w, err := run.attempt(ctx, a)
		switch {
		case err != nil:
			log.Error(fmt.Sprintf("error-cleanup-provisioner %s failed: %s", label, plan.Redact(err.Error())))
			return
		case w == nil:
			log.Info(fmt.Sprintf("error-cleanup-provisioner %s: done", label))
			return
		case timeUp(stopAt):
			if a.running != nil {
				run.cancel(context.WithoutCancel(ctx), a.running.ID)
			}
			log.Error(fmt.Sprintf("error-cleanup-provisioner %s did not finish in time; stopped it", label))
			return
		}
		t := time.NewTimer(min(p.commandPoll(p.now().Sub(a.startedAt)), max(time.Until(stopAt), 0)+time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			if a.running != nil {
				run.cancel(context.WithoutCancel(ctx), a.running.ID)
			}
			return
		case <-t.C:
		}
	}
}
