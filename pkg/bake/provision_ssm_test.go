package bake

// Unit tests of the session_manager transport against fakeRun: what moto
// cannot show (an agent that is not online yet, commands that run for
// hours, output past SSM's 24,000-character cut, CancelCommand), and the
// commands' scripts run for real with /bin/sh on this machine. The moto
// tests (provision_ssm_moto_test.go) check the same calls through the real
// SDK clients.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
)

// ssmFixture is a session_manager build on fakeRun, in the state launch
// leaves it.
type ssmFixture struct {
	t     *testing.T
	run   *fakeRun
	p     *Provision
	st    State
	plan  *Plan
	logs  *logSink
	clock *provClock
	dir   string // the instance's folders (remote_folder, TempDir)
}

var ssmPlanSeq atomic.Int64

func needFetcher(t *testing.T) {
	t.Helper()
	for _, p := range []string{"curl", "wget"} {
		if _, err := exec.LookPath(p); err == nil {
			return
		}
	}
	t.Skip("SKIPPING: neither curl nor wget is installed (the commands fetch staged files with them)")
}

func newSSMFixture(t *testing.T, provs []Provisioner, files fstest.MapFS, edit ...func(*Plan)) *ssmFixture {
	t.Helper()
	clock := &provClock{}
	run := newFakeRun(t, clock)
	run.registerAt = clock.Now().Add(-time.Minute)
	dir := t.TempDir()
	for i := range provs {
		if provs[i].Pos == "" {
			provs[i].Pos = fmt.Sprintf("test.pkr.hcl:%d", 10*(i+1))
		}
		if provs[i].Shell != nil && provs[i].Shell.RemoteFolder == "" {
			provs[i].Shell.RemoteFolder = dir
		}
	}
	plan := &Plan{Name: "test", Format: "hcl2", Builds: []Build{{
		Name: "app", Type: "amazon-ebs",
		Source:       AmazonEBS{Region: "eu-west-1", Communicator: "ssh", SSHInterface: "session_manager"},
		Provisioners: provs,
	}}}
	for _, e := range edit {
		e(plan)
	}
	if ec := plan.Builds[0].ErrorCleanup; ec != nil && ec.Shell != nil && ec.Shell.RemoteFolder == "" {
		ec.Shell.RemoteFolder = dir
	}
	b, err := json.Marshal(plan)
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("builds/%s-%d/plan.json", t.Name(), ssmPlanSeq.Add(1))
	f := &ssmFixture{t: t, run: run, plan: plan, logs: &logSink{}, clock: clock, dir: dir}
	f.st = State{
		BuildID: testBuildID,
		Plan:    &PlanRef{Bucket: "kiln-test", Key: key, Recipe: "test", Build: "app", Region: "eu-west-1", Transport: "session_manager"},
		Launch:  &Launched{Region: "eu-west-1", SourceAMI: "ami-0base", InstanceID: testInstance, LaunchedAt: clock.Now().Add(-time.Minute)},
	}
	f.p = &Provision{
		S3: &provS3{objects: map[string][]byte{"kiln-test/" + key: b}}, Files: FSRecipe{FS: files},
		Config: Config{Bucket: "kiln-test", Expect: AWSTimings}.withDefaults(), Now: clock.Now, TempDir: dir,
		RunCommand: run, Output: run, EC2: run, Stage: run, Presign: run,
	}
	return f
}

func (f *ssmFixture) ctx() context.Context {
	return WithLogger(context.Background(), slog.New(f.logs))
}

// bake calls Run as the state machine does until provisioning is done or
// fails, moving the clock past each wait, and returns the waits.
func (f *ssmFixture) bake(max int) ([]*Wait, error) {
	f.t.Helper()
	var waits []*Wait
	for range max {
		st, err := f.p.Run(f.ctx(), f.st)
		if err != nil {
			return waits, err
		}
		f.st = st
		waits = append(waits, st.Wait)
		if st.Provision.Done {
			if st.Wait == nil || !st.Wait.Ready {
				f.t.Fatalf("Run() = done with Wait %+v, want ready", st.Wait)
			}
			return waits, nil
		}
		if st.Wait == nil || st.Wait.Ready || st.Wait.Seconds < 1 {
			f.t.Fatalf("Run() = not done with Wait %+v, want not ready", st.Wait)
		}
		f.clock.advance(time.Duration(st.Wait.Seconds) * time.Second)
	}
	f.t.Fatalf("provisioning not done after %d invocations; logs:\n%s", max, f.logs.text())
	return waits, nil
}

func (f *ssmFixture) mustBake(max int) []*Wait {
	f.t.Helper()
	waits, err := f.bake(max)
	if err != nil {
		f.t.Fatalf("Run() = %v; logs:\n%s", err, f.logs.text())
	}
	return waits
}

// TestSSMProvisionRunsProvisioners: shell inline and script provisioners
// with environment variables and execute_command, and file uploads, each
// become AWS-RunShellScript commands with the expected parameters, whose
// scripts (run for real) place the files and run the commands; the output
// reaches the build's log, and no secret is in a command's parameters.
func TestSSMProvisionRunsProvisioners(t *testing.T) {
	needFetcher(t)
	files := fstest.MapFS{
		"scripts/setup.sh":     {Data: []byte("#!/bin/sh\necho \"setup sees $GREETING and $SECRET_LEN\"\n"), Mode: 0o755},
		"files/app.conf":       {Data: []byte("port=8080\n"), Mode: 0o640},
		"files/conf.d/x.conf":  {Data: []byte("x=1\n"), Mode: 0o644},
		"files/conf.d/y.conf":  {Data: []byte("y=2\n"), Mode: 0o600},
		"files/single.txt":     {Data: []byte("one\n"), Mode: 0o644},
		"playbooks/unused.yml": {Data: []byte("[]\n")},
	}
	var dir string
	f := newSSMFixture(t, nil, files, func(p *Plan) {
		dir = t.TempDir()
		p.Sensitive = []string{"hunter2-secret"}
		p.Builds[0].Provisioners = []Provisioner{
			{Type: "shell", Name: "hello", Timeout: Duration(10 * time.Minute), Shell: &Shell{
				Inline:          []string{"echo \"hello $GREETING from $(pwd)\"", "echo \"secret is $SECRET\"", "echo to-stderr >&2"},
				EnvironmentVars: []string{"GREETING=world", "SECRET=hunter2-secret"},
			}},
			{Type: "shell", Shell: &Shell{
				Scripts:         []string{"scripts/setup.sh"},
				EnvironmentVars: []string{"GREETING=there", "SECRET_LEN=14"},
				ExecuteCommand:  "{{.Vars}} sh {{.Path}} && echo executed-by-template",
			}},
			{Type: "file", File: &File{Sources: []string{"files/"}, Destination: filepath.Join(dir, "all")}},
			{Type: "file", File: &File{Sources: []string{"files/single.txt"}, Destination: dir}},
			{Type: "file", File: &File{Content: "literal hunter2-secret\n", Destination: filepath.Join(dir, "literal.txt")}},
		}
	})
	f.mustBake(40)

	// The commands ran and their output is in the build's log, redacted.
	text := f.logs.text()
	for _, want := range []string{"hello world from ", "secret is <sensitive>", "to-stderr", "setup sees there and 14", "executed-by-template"} {
		if !strings.Contains(text, want) {
			t.Errorf("logs lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "hunter2-secret") {
		t.Errorf("logs hold the sensitive value:\n%s", text)
	}
	// The files are where Packer's file provisioner puts them, with their modes.
	for _, c := range []struct {
		path, content string
		mode          os.FileMode
	}{
		{filepath.Join(dir, "all/app.conf"), "port=8080\n", 0o640},
		{filepath.Join(dir, "all/conf.d/x.conf"), "x=1\n", 0o644},
		{filepath.Join(dir, "all/conf.d/y.conf"), "y=2\n", 0o600},
		{filepath.Join(dir, "single.txt"), "one\n", 0o644}, // into the existing folder
		{filepath.Join(dir, "literal.txt"), "literal hunter2-secret\n", 0o644},
	} {
		b, err := os.ReadFile(c.path)
		if err != nil || string(b) != c.content {
			t.Errorf("%s = %q, %v; want %q", c.path, b, err, c.content)
			continue
		}
		if fi, _ := os.Stat(c.path); fi.Mode().Perm() != c.mode {
			t.Errorf("%s mode = %v, want %v", c.path, fi.Mode().Perm(), c.mode)
		}
	}
	// The scripts are removed after they ran.
	if left, _ := filepath.Glob(filepath.Join(f.dir, "script_*")); len(left) > 0 {
		t.Errorf("scripts left on the instance: %v", left)
	}

	// One command per step, each AWS-RunShellScript with the output in
	// the build's log group and a bounded delivery.
	sent := f.run.sent()
	if len(sent) != 5 {
		t.Fatalf("sent %d commands, want 5", len(sent))
	}
	group := "/kiln/commands/" + testBuildID
	for i, c := range sent {
		in := c.in
		if aws.ToString(in.DocumentName) != "AWS-RunShellScript" || aws.ToInt32(in.TimeoutSeconds) != 600 {
			t.Errorf("command %d: document %s, timeout %d; want AWS-RunShellScript, 600", i, aws.ToString(in.DocumentName), aws.ToInt32(in.TimeoutSeconds))
		}
		if cw := in.CloudWatchOutputConfig; cw == nil || !cw.CloudWatchOutputEnabled || aws.ToString(cw.CloudWatchLogGroupName) != group {
			t.Errorf("command %d: CloudWatchOutputConfig = %+v, want enabled into %s", i, cw, group)
		}
		if !strings.HasPrefix(aws.ToString(in.Comment), "kiln "+testBuildID+" p") {
			t.Errorf("command %d: comment %q", i, aws.ToString(in.Comment))
		}
		params, _ := json.Marshal(in.Parameters)
		for _, secret := range []string{"hunter2-secret", "GREETING=world", "port=8080"} {
			if strings.Contains(string(params), secret) {
				t.Errorf("command %d's parameters hold %q (SSM keeps them in its history): %s", i, secret, params)
			}
		}
	}
	// The first provisioner's timeout bounds its command; the others get
	// the longest AWS-RunShellScript allows.
	if got := sent[0].in.Parameters["executionTimeout"]; len(got) != 1 || got[0] != "600" {
		t.Errorf("executionTimeout of a provisioner with timeout 10m = %v, want [600]", got)
	}
	if got := sent[1].in.Parameters["executionTimeout"]; len(got) != 1 || got[0] != "172800" {
		t.Errorf("executionTimeout without a timeout = %v, want [172800]", got)
	}
	// The staged files are under the build's staged prefix; the log group
	// is the build's, tagged, with a retention.
	for _, k := range f.run.stagedKeys() {
		if !strings.HasPrefix(k, "kiln-test/"+StagedPrefix(testBuildID)) {
			t.Errorf("staged %s, outside %s", k, StagedPrefix(testBuildID))
		}
	}
	g := f.run.groups[group]
	if g == nil || g.tags[TagBuild] != testBuildID || g.retention != outputRetentionDays {
		t.Errorf("log group %s = %+v, want tagged %s with retention %d", group, g, testBuildID, outputRetentionDays)
	}
	t.Logf("build log:\n%s", f.logs.text())
}

// TestSSMExitCodes: an exit status outside valid_exit_codes fails with the
// provisioner's label, the status and the last lines of its output.
func TestSSMExitCodes(t *testing.T) {
	needFetcher(t)
	for _, c := range []struct {
		name  string
		valid []int
		code  int
		ok    bool
	}{
		{name: "zero", code: 0, ok: true},
		{name: "three", code: 3},
		{name: "three allowed", valid: []int{0, 3}, code: 3, ok: true},
		{name: "zero not allowed", valid: []int{2}, code: 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newSSMFixture(t, []Provisioner{{Type: "shell", Name: "smoke test", Shell: &Shell{
				Inline:         []string{"echo checking", "echo 'service did not answer' >&2", fmt.Sprintf("exit %d", c.code)},
				ValidExitCodes: c.valid,
			}}}, nil)
			_, err := f.bake(20)
			if c.ok {
				if err != nil {
					t.Fatalf("Run() = %v, want success", err)
				}
				return
			}
			var pe *ProvisionerError
			if !errors.As(err, &pe) {
				t.Fatalf("Run() = %v, want a *ProvisionerError", err)
			}
			want := &ProvisionerError{Provisioner: `shell "smoke test" (test.pkr.hcl:10)`, ExitStatus: c.code, Tail: []string{"checking", "service did not answer"}}
			if diff := cmp.Diff(want, pe); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if name := ErrorName(ForLambda("provision", err)); name != "ProvisionFailed" {
				t.Errorf("routed as %s, want ProvisionFailed", name)
			}
		})
	}
}

// TestSSMWaitsForAgent: provisioning waits, through the state machine,
// until the agent is online, counting from launch, then runs.
func TestSSMWaitsForAgent(t *testing.T) {
	needFetcher(t)
	f := newSSMFixture(t, []Provisioner{shellInline("x", "echo ran")}, nil)
	f.st.Launch.LaunchedAt = f.clock.Now()
	f.run.registerAt = f.clock.Now().Add(3 * time.Minute)
	waits := f.mustBake(60)
	if !strings.HasPrefix(waits[0].For, "SSM agent of "+testInstance) {
		t.Errorf("first wait = %+v, want one for the agent", waits[0])
	}
	if waits[0].Seconds < 30 {
		t.Errorf("first wait = %ds, want most of the agent's expected minute in one wait", waits[0].Seconds)
	}
	agentWaits := 0
	for _, w := range waits {
		if strings.HasPrefix(w.For, "SSM agent") {
			agentWaits++
		}
	}
	// pollAfter's schedule: one wait to just before the expected minute,
	// brisk polls until twice that, then backing off.
	if agentWaits > 45 {
		t.Errorf("%d waits for the agent over 3 minutes, want at most 45", agentWaits)
	}
	if n := f.run.callCount("SendCommand"); n != 1 {
		t.Errorf("SendCommand called %d times, want 1", n)
	}
	if !strings.Contains(f.logs.text(), "ssm agent online") {
		t.Errorf("logs lack the agent coming online:\n%s", f.logs.text())
	}
}

// TestSSMAgentNeverOnline: the wait is bounded and names what never came
// up: the instance profile (none attached: at once) or the agent.
func TestSSMAgentNeverOnline(t *testing.T) {
	for _, c := range []struct {
		name    string
		profile string
		ping    ssmtypes.PingStatus
		// registered: the agent registered once (and lost contact).
		registered bool
		want       []string
		timedOut   bool
	}{
		{name: "no instance profile", want: []string{"instance profile never came up", "has no instance profile"}},
		{name: "agent never registered", profile: "arn:aws:iam::123456789012:instance-profile/kiln-build", timedOut: true,
			want: []string{"agent never came up", "never registered", "instance-profile/kiln-build", "ssmmessages"}},
		{name: "agent lost", profile: "arn:aws:iam::123456789012:instance-profile/kiln-build", registered: true, ping: ssmtypes.PingStatusConnectionLost,
			timedOut: true, want: []string{"agent never came up", "registered but is ConnectionLost"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newSSMFixture(t, []Provisioner{shellInline("x", "true")}, nil)
			f.run.profile = c.profile
			f.run.registerAt = time.Time{}
			if c.registered {
				f.run.registerAt = f.clock.Now().Add(-time.Hour)
				f.run.ping = c.ping
			}
			_, err := f.bake(200)
			if err == nil {
				t.Fatalf("Run() succeeded, want an error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, ok := errors.AsType[*WaitTimeoutError](err); ok != c.timedOut {
				t.Errorf("error %v is a *WaitTimeoutError: %v, want %v", err, ok, c.timedOut)
			}
			if c.timedOut {
				if name := ErrorName(ForLambda("provision", err)); name != "WaitTimedOut" {
					t.Errorf("routed as %s, want WaitTimedOut", name)
				}
				if waited := f.clock.Now().Sub(f.st.Launch.LaunchedAt); waited < DefaultAgentTimeout || waited > DefaultAgentTimeout+2*time.Minute {
					t.Errorf("gave up after %s, want about %s", waited, DefaultAgentTimeout)
				}
			}
			if n := f.run.callCount("SendCommand"); n != 0 {
				t.Errorf("SendCommand called %d times with no agent online", n)
			}
		})
	}
}

// TestSSMLongCommand: a command that runs for three hours is polled across
// invocations with waits that back off (never longer than maxCommandPoll),
// its output is logged as it comes, once each, and its end is noticed.
func TestSSMLongCommand(t *testing.T) {
	f := newSSMFixture(t, []Provisioner{shellInline("long", "sleep 10800")}, nil)
	var cmd *fakeCommand
	f.run.behave = func(c *fakeCommand) { cmd = c }
	var waits []*Wait
	lines := 0
	for i := 0; ; i++ {
		if i > 500 {
			t.Fatalf("not done after %d invocations", i)
		}
		st, err := f.p.Run(f.ctx(), f.st)
		if err != nil {
			t.Fatalf("Run() = %v; logs:\n%s", err, f.logs.text())
		}
		f.st = st
		if st.Provision.Done {
			break
		}
		waits = append(waits, st.Wait)
		if r := st.Provision.Running; r == nil || r.ID != cmd.id {
			t.Fatalf("running = %+v, want %s", r, cmd.id)
		}
		f.clock.advance(time.Duration(st.Wait.Seconds) * time.Second)
		// The command prints a line every poll or so, and ends after
		// three hours.
		f.run.emit(cmd, fmt.Sprintf("progress %d", lines))
		lines++
		if f.clock.Now().Sub(cmd.sentAt) >= 3*time.Hour {
			f.run.emit(cmd, "finished", "kiln:"+stepNonce(testBuildID, "p0-a0-s0")+":done:0")
			f.run.finish(cmd, 0)
		}
	}
	if n := f.run.callCount("SendCommand"); n != 1 {
		t.Errorf("SendCommand called %d times, want 1", n)
	}
	longest := 0
	for _, w := range waits {
		longest = max(longest, w.Seconds)
	}
	if longest > int(maxCommandPoll/time.Second) || longest < 60 {
		t.Errorf("longest wait = %ds, want between 60s and %s", longest, maxCommandPoll)
	}
	if len(waits) > 120 {
		t.Errorf("%d polls for a three-hour command, want few", len(waits))
	}
	for i := range lines {
		if n := f.logs.count(fmt.Sprintf(`shell "long" (test.pkr.hcl:10): progress %d`, i)); n != 1 {
			t.Errorf("progress %d logged %d times, want once", i, n)
		}
	}
	if strings.Contains(f.logs.text(), "kiln:") {
		t.Errorf("kiln's marker line reached the log:\n%s", f.logs.text())
	}
	t.Logf("%d polls, longest wait %ds", len(waits), longest)
}

// TestSSMFullOutput: a command printing far more than SSM's 24,000
// characters and exiting 3 is logged whole, and its error carries the
// real last lines, read from CloudWatch Logs, not from SSM's cut copy.
func TestSSMFullOutput(t *testing.T) {
	needFetcher(t)
	f := newSSMFixture(t, []Provisioner{shellInline("chatty",
		`i=0; while [ $i -lt 1500 ]; do echo "line $i of the build output, padded to be long enough"; i=$((i+1)); done`,
		"echo 'the last word' >&2", "exit 3")}, nil)
	_, err := f.bake(20)
	pe, ok := errors.AsType[*ProvisionerError](err)
	if !ok {
		t.Fatalf("Run() = %v, want a *ProvisionerError", err)
	}
	if pe.ExitStatus != 3 || len(pe.Tail) != tailLines || pe.Tail[len(pe.Tail)-1] != "the last word" || pe.Tail[len(pe.Tail)-2] != "line 1499 of the build output, padded to be long enough" {
		t.Errorf("error = status %d, tail %q; want 3 and the last %d lines", pe.ExitStatus, pe.Tail, tailLines)
	}
	c := f.run.sent()[0]
	if c.stdout.Len() <= 24000 {
		t.Fatalf("the command printed %d characters; the test needs more than 24,000", c.stdout.Len())
	}
	for _, i := range []int{0, 700, 1499} {
		if n := f.logs.count(fmt.Sprintf(`shell "chatty" (test.pkr.hcl:10): line %d of the build output, padded to be long enough`, i)); n != 1 {
			t.Errorf("line %d logged %d times, want once", i, n)
		}
	}
}

// TestSSMTimeoutCancels: a provisioner past its timeout has its command
// cancelled and fails as timed out.
func TestSSMTimeoutCancels(t *testing.T) {
	f := newSSMFixture(t, []Provisioner{{Type: "shell", Name: "slow", Timeout: Duration(10 * time.Minute), Shell: &Shell{Inline: []string{"sleep 3600"}}}}, nil)
	var cmd *fakeCommand
	f.run.behave = func(c *fakeCommand) { cmd = c; f.run.emit(c, "working") }
	_, err := f.bake(100)
	if err == nil || !strings.Contains(err.Error(), "timed out after 10m0s") {
		t.Fatalf("Run() = %v, want a timeout", err)
	}
	if pe, _ := errors.AsType[*ProvisionerError](err); pe == nil || len(pe.Tail) != 1 || pe.Tail[0] != "working" {
		t.Errorf("error = %#v, want the output so far", pe)
	}
	if cmd.status != ssmtypes.CommandInvocationStatusCancelled {
		t.Errorf("command %s is %s, want Cancelled", cmd.id, cmd.status)
	}
}

// TestSSMFailureCancelsRunningCommand: when provisioning fails while a
// command runs (here: SSM refuses the poll), the command is cancelled
// before the error returns, since the state naming it is lost with it.
func TestSSMFailureCancelsRunningCommand(t *testing.T) {
	f := newSSMFixture(t, []Provisioner{shellInline("x", "sleep 3600")}, nil)
	var cmd *fakeCommand
	f.run.behave = func(c *fakeCommand) { cmd = c }
	st, err := f.p.Run(f.ctx(), f.st)
	if err != nil || st.Provision.Running == nil {
		t.Fatalf("Run() = %+v, %v; want a running command", st.Provision, err)
	}
	f.st = st
	f.run.fail["GetCommandInvocation"] = fakeErr("AccessDeniedException", "not allowed")
	if _, err := f.p.Run(f.ctx(), f.st); err == nil {
		t.Fatalf("Run() succeeded, want the poll's error")
	}
	if cmd.status != ssmtypes.CommandInvocationStatusCancelled {
		t.Errorf("command is %s after the failure, want Cancelled", cmd.status)
	}
}

// TestSSMTransientFailureKeepsCommand: an error the state machine retries
// (here SSM's 500) leaves the command running for the retry to collect.
func TestSSMTransientFailureKeepsCommand(t *testing.T) {
	f := newSSMFixture(t, []Provisioner{shellInline("x", "sleep 3600")}, nil)
	var cmd *fakeCommand
	f.run.behave = func(c *fakeCommand) { cmd = c }
	st, err := f.p.Run(f.ctx(), f.st)
	if err != nil {
		t.Fatal(err)
	}
	f.run.fail["GetCommandInvocation"] = &smithy.GenericAPIError{Code: "InternalError", Message: "try again"}
	_, err = f.p.Run(f.ctx(), st)
	if name := ErrorName(ForLambda("provision", err)); name != "Transient" {
		t.Fatalf("Run() = %v (%s), want a Transient error", err, name)
	}
	if cmd.status != ssmtypes.CommandInvocationStatusInProgress {
		t.Errorf("command is %s after a transient failure, want still InProgress", cmd.status)
	}
	delete(f.run.fail, "GetCommandInvocation")
	f.run.emit(cmd, "kiln:"+stepNonce(testBuildID, "p0-a0-s0")+":done:0")
	f.run.finish(cmd, 0)
	if st, err = f.p.Run(f.ctx(), st); err != nil || !st.Provision.Done {
		t.Errorf("retried Run() = %+v, %v; want done", st.Provision, err)
	}
}

// TestSSMRerunSendsNothingTwice: an invocation whose response was lost
// after SendCommand is run again with the earlier state: it finds the
// command by its comment instead of running it a second time.
func TestSSMRerunSendsNothingTwice(t *testing.T) {
	f := newSSMFixture(t, []Provisioner{shellInline("x", "echo once")}, nil)
	f.run.behave = func(c *fakeCommand) {}
	before := f.st
	st, err := f.p.Run(f.ctx(), before)
	if err != nil || st.Provision.Running == nil {
		t.Fatalf("Run() = %+v, %v", st.Provision, err)
	}
	again, err := f.p.Run(f.ctx(), before) // the first answer was lost
	if err != nil || again.Provision.Running == nil || again.Provision.Running.ID != st.Provision.Running.ID {
		t.Fatalf("rerun: Run() = %+v, %v; want command %s again", again.Provision, err, st.Provision.Running.ID)
	}
	if n := f.run.callCount("SendCommand"); n != 1 {
		t.Errorf("SendCommand called %d times, want 1", n)
	}
}

// TestSSMWaitsForTheRestOfTheOutput: a command reported finished before
// its last output lines reached CloudWatch Logs is collected once they
// have (the end marker), not before.
func TestSSMWaitsForTheRestOfTheOutput(t *testing.T) {
	f := newSSMFixture(t, []Provisioner{shellInline("x", "echo a; echo b")}, nil)
	var cmd *fakeCommand
	f.run.behave = func(c *fakeCommand) { cmd = c; f.run.emit(c, "a"); f.run.finish(c, 0) }
	st, err := f.p.Run(f.ctx(), f.st) // sends
	if err != nil {
		t.Fatal(err)
	}
	f.clock.advance(2 * time.Second)
	st, err = f.p.Run(f.ctx(), st) // finished, but "b" and the marker are missing
	if err != nil || st.Provision.Done || st.Provision.Running == nil || !strings.Contains(st.Wait.For, "rest of the output") {
		t.Fatalf("Run() = %+v, wait %+v, %v; want a wait for the rest of the output", st.Provision, st.Wait, err)
	}
	f.run.emit(cmd, "b", "kiln:"+stepNonce(testBuildID, "p0-a0-s0")+":done:0")
	f.clock.advance(2 * time.Second)
	if st, err = f.p.Run(f.ctx(), st); err != nil || !st.Provision.Done {
		t.Fatalf("Run() = %+v, %v; want done", st.Provision, err)
	}
	if f.logs.count(`shell "x" (test.pkr.hcl:10): b`) != 1 {
		t.Errorf("the late line was not logged:\n%s", f.logs.text())
	}
}

// TestSSMExpectDisconnect: a command killed by the reboot it caused ends
// without an exit status; with expect_disconnect that is success, and
// provisioning waits for the agent again.
func TestSSMExpectDisconnect(t *testing.T) {
	f := newSSMFixture(t, []Provisioner{
		{Type: "shell", Shell: &Shell{Inline: []string{"reboot"}, ExpectDisconnect: true}},
		shellInline("after", "echo after"),
	}, nil)
	f.run.behave = func(c *fakeCommand) {
		if len(f.run.commands) == 1 {
			f.run.emit(c, "going down")
			f.run.mu.Lock()
			c.status, c.details, c.code = ssmtypes.CommandInvocationStatusFailed, "Failed", -1
			f.run.mu.Unlock()
			return
		}
		f.run.emit(c, "after", "kiln:"+stepNonce(testBuildID, "p1-a0-s0")+":done:0")
		f.run.finish(c, 0)
	}
	waits := f.mustBake(50)
	sawAgent := false
	for _, w := range waits {
		sawAgent = sawAgent || strings.Contains(w.For, "after expect_disconnect")
	}
	if !sawAgent || f.run.callCount("DescribeInstanceInformation") < 2 {
		t.Errorf("waits %v: want a wait for the agent after expect_disconnect", waits)
	}
	if f.logs.count(`shell "after" (test.pkr.hcl:20): after`) != 1 {
		t.Errorf("the second provisioner did not run:\n%s", f.logs.text())
	}
}

// TestSSMKilnStepError: a file kiln cannot fetch on the instance fails the
// provisioner with kiln's message, not as the command's exit status.
func TestSSMKilnStepError(t *testing.T) {
	needFetcher(t)
	dir := t.TempDir()
	f := newSSMFixture(t, []Provisioner{{Type: "file", File: &File{Content: "x", Destination: filepath.Join(dir, "x.txt")}}}, nil)
	f.run.unfetchable["kiln-test/"+StagedPrefix(testBuildID)+"p0-a0-s0/f0"] = true
	_, err := f.bake(20)
	pe, ok := errors.AsType[*ProvisionerError](err)
	if !ok || pe.ExitStatus != -1 || !strings.Contains(err.Error(), "upload to "+filepath.Join(dir, "x.txt")) {
		t.Fatalf("Run() = %v, want kiln's upload failure", err)
	}
}

// TestSSMErrorCleanup: error-cleanup-provisioner runs over SSM too.
func TestSSMErrorCleanup(t *testing.T) {
	needFetcher(t)
	f := newSSMFixture(t, []Provisioner{shellInline("x", "exit 1")}, nil, func(p *Plan) {
		p.Builds[0].ErrorCleanup = &Provisioner{Type: "shell", Pos: "test.pkr.hcl:99", Shell: &Shell{Inline: []string{"echo cleaning up"}}}
	})
	f.p.Poll = 10 * time.Millisecond
	if _, err := f.bake(20); err == nil {
		t.Fatal("Run() succeeded, want a failure")
	}
	ctx, cancel := context.WithTimeout(f.ctx(), 20*time.Second)
	defer cancel()
	st, err := f.p.ErrorCleanup(ctx, f.st)
	if err != nil || !st.Provision.ErrorCleanupRan {
		t.Fatalf("ErrorCleanup() = %+v, %v", st.Provision, err)
	}
	if f.logs.count(`shell (test.pkr.hcl:99): cleaning up`) != 1 {
		t.Errorf("error-cleanup-provisioner's output not logged:\n%s", f.logs.text())
	}
}

// TestCleanupCancelsSSMCommands: cleanup cancels the command the state
// records and any other of the build's commands still running, and deletes
// the build's command log group.
func TestCleanupCancelsSSMCommands(t *testing.T) {
	f := newSSMFixture(t, []Provisioner{shellInline("x", "sleep 3600")}, nil)
	f.run.behave = func(c *fakeCommand) {}
	st, err := f.p.Run(f.ctx(), f.st)
	if err != nil || st.Provision.Running == nil {
		t.Fatalf("Run() = %+v, %v", st.Provision, err)
	}
	// Another command of the build, sent by an invocation whose state was
	// lost, and one of another build.
	send := func(build, step string) string {
		out, err := f.run.SendCommand(f.ctx(), &ssm.SendCommandInput{DocumentName: aws.String(runShellScript),
			InstanceIds: []string{testInstance}, Comment: aws.String(stepComment(build, step))})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.Command.CommandId)
	}
	lost, other := send(testBuildID, "p0-a1-s0"), send("other-build", "p0-a0-s0")

	cloud := newFakeCloud(t)
	c := &Cleanup{EC2: cloud.EC2("eu-west-1"), S3: cloud.S3(), Commands: f.run, Logs: f.run, Config: f.p.Config}
	st.Error = &Failure{Error: "ProvisionFailed", Cause: "x"}
	if _, err := c.Run(f.ctx(), st); err != nil {
		t.Fatalf("Cleanup.Run() = %v", err)
	}
	for id, want := range map[string]ssmtypes.CommandInvocationStatus{
		st.Provision.Running.ID: ssmtypes.CommandInvocationStatusCancelled,
		lost:                    ssmtypes.CommandInvocationStatusCancelled,
		other:                   ssmtypes.CommandInvocationStatusInProgress,
	} {
		if got := f.run.command(id).status; got != want {
			t.Errorf("command %s is %s, want %s", id, got, want)
		}
	}
	if _, ok := f.run.groups[CommandLogGroup(f.p.Config, testBuildID)]; ok {
		t.Errorf("log group %s not deleted", CommandLogGroup(f.p.Config, testBuildID))
	}
}

// TestSSMEndMarkerBeforeStatus: the end of the output can be read before
// SSM reports the command finished; the command is then collected as soon
// as it does, without waiting for output that has all arrived.
func TestSSMEndMarkerBeforeStatus(t *testing.T) {
	f := newSSMFixture(t, []Provisioner{shellInline("x", "echo a")}, nil)
	var cmd *fakeCommand
	f.run.behave = func(c *fakeCommand) { cmd = c }
	st, err := f.p.Run(f.ctx(), f.st) // sends
	if err != nil {
		t.Fatal(err)
	}
	f.run.emit(cmd, "a", "kiln:"+stepNonce(testBuildID, "p0-a0-s0")+":done:0")
	f.clock.advance(2 * time.Second)
	if st, err = f.p.Run(f.ctx(), st); err != nil || st.Provision.Done || !st.Provision.Running.Complete {
		t.Fatalf("Run() = %+v, %v; want the command running with its output complete", st.Provision, err)
	}
	f.run.finish(cmd, 0)
	f.clock.advance(2 * time.Second)
	if st, err = f.p.Run(f.ctx(), st); err != nil || !st.Provision.Done {
		t.Fatalf("Run() = %+v, wait %+v, %v; want done at once", st.Provision, st.Wait, err)
	}
}
