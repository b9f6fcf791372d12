package bake

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"golang.org/x/crypto/ssh"
)

// provisionSSM reads the login private key that launch stored.
type provisionSSM interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

// Defaults of the Provision stage.
const (
	// DefaultSSHTimeout is Packer's ssh_timeout: how long provisioning
	// waits for SSH to answer, at first and after each expected reboot.
	DefaultSSHTimeout = 5 * time.Minute
	// DefaultProvisionReserve is how much of an invocation's time
	// provisioning leaves unused: with less left it stops watching and
	// returns its progress, and a later invocation carries on.
	DefaultProvisionReserve = 2 * time.Minute
	// DefaultErrorCleanupLimit bounds error-cleanup-provisioner.
	DefaultErrorCleanupLimit = 10 * time.Minute
	// tailLines is how many of its last output lines a failed
	// provisioner's error carries.
	tailLines = 20
	// probeEvery is how often a watched command's process is checked
	// (does it still run, has the instance rebooted).
	probeEvery = 10 * time.Second
	// reconnectAfter is the wait after a provisioner with
	// expect_disconnect: long enough for a reboot to have closed SSH, so
	// that the next provisioner does not start on a machine going down.
	reconnectAfter = 5 * time.Second
	// maxReadPerPoll bounds the output read in one poll, so a chatty
	// command cannot keep the watch loop from checking its deadlines.
	maxReadPerPoll = 4 << 20
	// maxLine is the longest output line kept whole; a longer one is
	// logged in pieces.
	maxLine = 64 << 10
)

// Provision is the provision stage: it logs in to the build instance over
// SSH, pinning the host key that launch generated, and runs the recipe's
// provisioners in order (shell, file, ansible and ansible-local), across as
// many Lambda invocations as they take. With ssh_interface =
// "session_manager" it runs the same steps through SSM Run Command instead
// (provision_ssm.go). Every command runs detached on the
// instance (see job), so a provisioner may run for hours: each invocation
// streams its output to the log and returns, before its deadline, with the
// progress in State.Provision and a not-ready Wait; the next one picks up
// where it stopped.
//
// Its actions:
//
//   - "run" (Run): wait for SSH, then run provisioners. Answers with
//     st.Wait not ready while SSH does not answer, during pause_before,
//     before a retry, after an expected disconnect and when the invocation
//     runs out of time; with st.Provision.Done and a ready Wait once every
//     provisioner has succeeded.
//   - "error-cleanup" (ErrorCleanup): run error-cleanup-provisioner after a
//     provisioner failed, best effort. The state machine calls it from its
//     ProvisionFailed catch, before cleanup.
type Provision struct {
	// SSM reads the login private key, st.Launch.KeyParameter. The key is
	// read afresh by every invocation and is never logged or put in state.
	SSM provisionSSM
	// S3 reads the stored plan and, unless Files is set, the recipe.
	S3 objectGetter
	// Files opens the recipe's files that provisioners upload (scripts,
	// file sources, playbooks); nil reads the recipe object st.Recipe from
	// S3 (S3Recipe).
	Files RecipeSource
	// Resolve returns the address ("host:port") to reach the instance's
	// SSH server at. nil means the instance's private IP on port 22 (its
	// public IP with ssh_interface = "public_ip"). Tests and local mode set
	// it to a loopback sandbox: an emulator's instance addresses are not
	// reachable.
	Resolve func(ctx context.Context, st State) (string, error)
	// Dial opens an SSH connection to addr; nil dials TCP and logs in with
	// bounded waits. Tests swap it.
	Dial func(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error)
	// Config is the deployment's settings; Config.Expect.SSH sets how the
	// SSH wait polls.
	Config Config
	// Now is the clock of the recorded times (pause_before, timeout,
	// ssh_timeout); time.Now if nil. The invocation's deadline is always
	// wall-clock time.
	Now func() time.Time
	// Reserve is how much of the invocation's time to leave unused (at
	// most a quarter of it); zero means DefaultProvisionReserve.
	Reserve time.Duration
	// Poll is how often a running command's output is read; zero means
	// one second (over SSH), or two seconds as the shortest wait between
	// two polls of an SSM command.
	Poll time.Duration
	// TempDir is the folder on the instance for kiln's own files (the
	// command folders of non-shell provisioners, Ansible's staging
	// folder); empty means /tmp. Shell provisioners use their
	// remote_folder.
	TempDir string

	// The session_manager transport (provision_ssm.go):

	// RunCommand is SSM Run Command, which session_manager builds
	// provision through: the agent's status, and the commands.
	RunCommand ssmRunAPI
	// Output reads the commands' full output from CloudWatch Logs.
	Output commandOutputAPI
	// EC2 describes the instance (its instance profile) while its agent
	// is not online.
	EC2 instanceDescriber
	// Stage stores the files a command fetches in Config.Bucket, under
	// StagedPrefix; Presign signs the URLs it fetches them with.
	Stage   objectPutter
	Presign presignAPI
	// AgentTimeout bounds the wait for the SSM agent to come online; zero
	// means DefaultAgentTimeout.
	AgentTimeout time.Duration
}

// Actions returns the stage's actions by name.
func (p *Provision) Actions() map[string]Action {
	return map[string]Action{
		"run":           func(ctx context.Context, ev Event) (State, error) { return p.Run(ctx, ev.State) },
		"error-cleanup": func(ctx context.Context, ev Event) (State, error) { return p.ErrorCleanup(ctx, ev.State) },
	}
}

func (p *Provision) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Provision) tempDir() string {
	if p.TempDir != "" {
		return p.TempDir
	}
	return defaultRemoteFolder
}

// stopAt is when this invocation stops starting and watching commands:
// Reserve before its deadline (at most a quarter of the time left), or
// never without a deadline. The returned context ends halfway between then
// and the deadline, so that an operation still going then (a large upload)
// is abandoned in time to return the progress made.
func (p *Provision) stopAt(ctx context.Context, reserve time.Duration) (time.Time, context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return time.Time{}, ctx, func() {}
	}
	if reserve <= 0 {
		reserve = DefaultProvisionReserve
	}
	reserve = min(reserve, time.Until(dl)/4)
	opCtx, cancel := context.WithDeadline(ctx, dl.Add(-reserve/2))
	return dl.Add(-reserve), opCtx, cancel
}

// Run connects to the instance and runs the provisioners from
// st.Provision.Next on, as many as fit in this invocation.
//
// It reads st.Launch (instance, host key, key parameter, addresses),
// st.Plan (the stored plan: provisioners, ssh_username, ssh_timeout) and
// st.Provision (progress), and sets st.Provision and st.Wait. Errors: a
// *HostKeyError when the server presents another host key (before anything
// runs), a *WaitTimeoutError when SSH does not answer within ssh_timeout,
// a *ProvisionerError when a provisioner fails after max_retries.
func (p *Provision) Run(ctx context.Context, st State) (State, error) {
	if st.Launch == nil || st.Launch.InstanceID == "" {
		return st, errors.New("provision: the state has no launched instance")
	}
	plan, build, err := fetchPlan(ctx, p.S3, st.Plan)
	if err != nil {
		return st, fmt.Errorf("provision %s: %w", st.Launch.InstanceID, err)
	}
	prov := Provisioned{}
	if st.Provision != nil {
		prov = *st.Provision
		if prov.Running != nil {
			r := *prov.Running
			prov.Running = &r
		}
	}
	st.Provision = &prov
	polls := 0
	if st.Wait != nil && !st.Wait.Ready {
		polls = st.Wait.Polls
	}
	if prov.Done {
		st.Wait = ready("provisioning", polls)
		return st, nil
	}
	switch t := p.transport(st, build); t {
	case "none":
		prov.Done = true
		st.Wait = ready("provisioning (communicator none)", polls)
		return st, nil
	case "session_manager":
		w, err := p.runSSM(ctx, &st, plan, build, polls)
		st.Wait = w
		return st, err
	case "ssh":
	default:
		return st, fmt.Errorf("provision %s: transport %q is not supported by SSH provisioning", st.Launch.InstanceID, t)
	}
	if prov.Next < len(build.Provisioners) {
		if w := p.pause(&prov, build.Provisioners[prov.Next], polls); w != nil {
			st.Wait = w
			return st, nil
		}
	}
	r, w, err := p.connect(ctx, &st, build, polls)
	if err != nil || w != nil {
		st.Wait = w
		return st, err
	}
	defer r.Close()
	stopAt, opCtx, cancel := p.stopAt(ctx, p.Reserve)
	defer cancel()
	run := &provisionRun{invocation: invocation{p: p, st: &st, plan: plan, build: build, log: Logger(ctx), polls: polls, stopAt: stopAt}, r: r}
	w, err = run.provisioners(opCtx)
	st.Wait = w
	return st, err
}

// transport is how the build's provisioning reaches the instance: as the
// plan step resolved it (st.Plan.Transport), or from the recipe and the
// stack's default for a state without it. communicator = "none" in the
// stored plan wins over a state that says otherwise.
func (p *Provision) transport(st State, build *Build) string {
	if build.Source.Communicator == "none" {
		return "none"
	}
	if st.Plan != nil && st.Plan.Transport != "" {
		return st.Plan.Transport
	}
	return ResolveTransport(build.Source, p.Config)
}

// pause returns the Wait for provisioner pr's pause_before, or nil when
// it does not pause (any more). The pause happens once, before the first
// attempt; retries wait for their backoff instead.
func (p *Provision) pause(prov *Provisioned, pr Provisioner, polls int) *Wait {
	if pr.PauseBefore <= 0 || prov.Attempt > 0 || prov.Step > 0 || prov.Running != nil || !prov.StartedAt.IsZero() {
		return nil
	}
	now := p.now()
	if prov.PauseUntil.IsZero() {
		prov.PauseUntil = now.Add(time.Duration(pr.PauseBefore))
	}
	left := prov.PauseUntil.Sub(now)
	if left <= 0 {
		return nil
	}
	return &Wait{For: fmt.Sprintf("pause_before %s of provisioner %s", time.Duration(pr.PauseBefore), pr.Label()), Seconds: waitSeconds(left), Polls: polls + 1}
}

// connect logs in to the instance. While SSH does not answer it returns a
// not-ready Wait (recording when the wait began in st.Provision.SSHSince),
// and a *WaitTimeoutError once that has lasted ssh_timeout.
func (p *Provision) connect(ctx context.Context, st *State, build *Build, polls int) (*sshRemote, *Wait, error) {
	l, prov := st.Launch, st.Provision
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l.HostKey))
	if err != nil {
		return nil, nil, fmt.Errorf("provision %s: pinned host key %q: %w", l.InstanceID, l.HostKey, err)
	}
	user := build.Source.SSHUsername
	if user == "" {
		return nil, nil, fmt.Errorf("provision %s: ssh_username is not set", l.InstanceID)
	}
	addr, err := p.address(ctx, *st, build)
	if err != nil {
		return nil, nil, fmt.Errorf("provision %s: %w", l.InstanceID, err)
	}
	signer, err := p.loginKey(ctx, l)
	if err != nil {
		return nil, nil, fmt.Errorf("provision %s: %w", l.InstanceID, err)
	}
	var mismatch *HostKeyError
	cfg := &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   pinHostKey(addr, hostKey, &mismatch),
		HostKeyAlgorithms: hostKeyAlgorithms(hostKey),
		Timeout:           sshDialTimeout,
	}
	dial := p.Dial
	if dial == nil {
		dial = dialSSH
	}
	client, err := dial(ctx, addr, cfg)
	if mismatch == nil {
		mismatch = hostKeyAbsent(addr, hostKey, err)
	}
	if mismatch != nil {
		if client != nil {
			client.Close()
		}
		return nil, nil, mismatch
	}
	now := p.now()
	if err == nil {
		prov.SSHSince = time.Time{}
		return newSSHRemote(addr, client), nil, nil
	}
	if ctx.Err() != nil {
		return nil, nil, fmt.Errorf("provision %s: ssh to %s: %w", l.InstanceID, addr, ctx.Err())
	}
	what := fmt.Sprintf("ssh to %s at %s", l.InstanceID, addr)
	first := prov.SSHSince.IsZero() && prov.Next == 0 && prov.Step == 0 && prov.Attempt == 0 && prov.Running == nil
	if prov.SSHSince.IsZero() {
		prov.SSHSince = now
	}
	waited := now.Sub(prov.SSHSince)
	limit := time.Duration(build.Source.SSHTimeout)
	if limit <= 0 {
		limit = DefaultSSHTimeout
	}
	if waited >= limit {
		return nil, nil, fmt.Errorf("%w (last error: %v)", &WaitTimeoutError{For: what, After: limit}, err)
	}
	// The first wait counts from launch: SSH usually answers a fixed
	// time after boot.
	elapsed := waited
	if first && !l.LaunchedAt.IsZero() {
		elapsed = now.Sub(l.LaunchedAt)
	}
	Logger(ctx).Info("ssh not ready", "addr", addr, "error", err.Error(), "waited", waited.Round(time.Second).String())
	return nil, notReady(what, polls, elapsed, expectFor(*st, p.Config).SSH), nil
}

// address returns where to reach the instance's SSH server.
func (p *Provision) address(ctx context.Context, st State, build *Build) (string, error) {
	if p.Resolve != nil {
		return p.Resolve(ctx, st)
	}
	return instanceSSHAddr(st.Launch, build.Source.SSHInterface)
}

// instanceSSHAddr is the default address of an instance's SSH server: its
// private IP (kiln's default ssh_interface, since the provisioning Lambda
// runs in the VPC), or its public IP for public_ip. Launch records no DNS
// names, so private_dns and public_dns use the matching IP, which reaches
// the same interface.
func instanceSSHAddr(l *Launched, iface string) (string, error) {
	var ip string
	switch iface {
	case "", "private_ip", "private_dns":
		ip = l.PrivateIP
	case "public_ip", "public_dns":
		ip = l.PublicIP
	default:
		return "", fmt.Errorf("ssh_interface %q cannot be reached over SSH", iface)
	}
	if ip == "" {
		return "", fmt.Errorf("instance %s has no address for ssh_interface %q", l.InstanceID, iface)
	}
	return net.JoinHostPort(ip, "22"), nil
}

// loginKey reads the login private key from Parameter Store.
func (p *Provision) loginKey(ctx context.Context, l *Launched) (ssh.Signer, error) {
	if l.KeyParameter == "" {
		return nil, errors.New("the state names no login key parameter")
	}
	out, err := p.SSM.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(l.KeyParameter), WithDecryption: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("read login key %q: %w", l.KeyParameter, err)
	}
	if out.Parameter == nil || out.Parameter.Value == nil {
		return nil, fmt.Errorf("read login key %q: no value", l.KeyParameter)
	}
	signer, err := ssh.ParsePrivateKey([]byte(*out.Parameter.Value))
	if err != nil {
		return nil, fmt.Errorf("parse login key %q: %w", l.KeyParameter, err)
	}
	return signer, nil
}

// invocation is what one provisioning invocation carries and does the
// same way over either transport.
type invocation struct {
	p     *Provision
	st    *State
	plan  *Plan
	build *Build
	log   *slog.Logger
	polls int
	// stopAt is when to stop starting and watching commands (zero: never).
	stopAt time.Time
	fsys   fs.FS // the recipe's files, once opened
}

// again is a not-ready Wait of d for what.
func (run *invocation) again(what string, d time.Duration) *Wait {
	return &Wait{For: what, Seconds: waitSeconds(d), Polls: run.polls + 1}
}

// recipeFiles opens the recipe's files on first use.
func (run *invocation) recipeFiles(ctx context.Context) (fs.FS, error) {
	return run.p.openRecipe(ctx, *run.st, &run.fsys)
}

// retry answers the failed attempt of pr, the current provisioner: while
// it has retries left, the Wait for the next attempt after a backoff
// (the attempt's progress reset); else nil, and the error stands.
func (run *invocation) retry(pr Provisioner, err error) *Wait {
	prov := run.st.Provision
	if prov.Attempt >= pr.MaxRetries {
		return nil
	}
	backoff := min(5*time.Second<<prov.Attempt, time.Minute)
	run.log.Warn(fmt.Sprintf("provisioner %s: attempt %d of %d failed, retrying in %s: %s",
		pr.Label(), prov.Attempt+1, pr.MaxRetries+1, backoff, run.plan.Redact(err.Error())))
	prov.Attempt++
	prov.Step, prov.Running, prov.StartedAt = 0, nil, time.Time{}
	return run.again(fmt.Sprintf("retry of provisioner %s", pr.Label()), backoff)
}

// done moves on from pr, the current provisioner, which has succeeded.
func (run *invocation) done(pr Provisioner) {
	prov := run.st.Provision
	run.log.Info(fmt.Sprintf("provisioner %s: done in %s", pr.Label(), run.p.now().Sub(prov.StartedAt).Round(time.Second)))
	prov.Next++
	prov.Attempt, prov.Step, prov.Running, prov.StartedAt, prov.PauseUntil = 0, 0, nil, time.Time{}, time.Time{}
}

// provisionRun is one invocation's work on a connected instance.
type provisionRun struct {
	invocation
	r *sshRemote
}

// provisioners runs provisioners from st.Provision.Next on and returns
// the Wait to answer with.
func (run *provisionRun) provisioners(ctx context.Context) (*Wait, error) {
	p, prov, provs, stopAt := run.p, run.st.Provision, run.build.Provisioners, run.stopAt
	for prov.Next < len(provs) {
		pr := provs[prov.Next]
		if w := p.pause(prov, pr, run.polls); w != nil {
			return w, nil
		}
		if timeUp(stopAt) {
			return run.again("provisioner "+pr.Label()+" to start in a new invocation", time.Second), nil
		}
		if prov.StartedAt.IsZero() {
			prov.StartedAt = p.now()
		}
		if prov.Running == nil && prov.Step == 0 {
			run.log.Info(fmt.Sprintf("provisioner %s: starting (attempt %d of %d)", pr.Label(), prov.Attempt+1, pr.MaxRetries+1))
		}
		a := &attempt{
			index: prov.Next, id: fmt.Sprintf("p%d-a%d", prov.Next, prov.Attempt), pr: pr,
			step: prov.Step, running: prov.Running, startedAt: prov.StartedAt, stopAt: stopAt,
		}
		out, err := run.attempt(ctx, a)
		prov.Step, prov.Running = a.step, a.running
		if err != nil {
			if w := run.retry(pr, err); w != nil {
				return w, nil
			}
			return nil, err
		}
		switch out {
		case attemptSuspended:
			return run.again("provisioner "+pr.Label()+" to continue in a new invocation", time.Second), nil
		case attemptLost:
			run.log.Warn(fmt.Sprintf("provisioner %s: ssh connection lost; reconnecting", pr.Label()))
			prov.SSHSince = p.now()
			return run.again(fmt.Sprintf("ssh to %s to come back", run.st.Launch.InstanceID), time.Second), nil
		}
		if a.done {
			run.done(pr)
		}
		if out == attemptReconnect || (a.done && pr.Shell != nil && pr.Shell.ExpectDisconnect) {
			// A provisioner that expects a disconnect usually reboots:
			// reconnect through the SSH wait rather than start the next
			// one on a machine going down.
			run.r.Close()
			prov.SSHSince = p.now()
			return run.again(fmt.Sprintf("ssh to %s after expect_disconnect", run.st.Launch.InstanceID), reconnectAfter), nil
		}
	}
	if err := run.finish(ctx); err != nil {
		if errors.Is(err, errConnLost) {
			prov.SSHSince = p.now()
			return run.again(fmt.Sprintf("ssh to %s to finish provisioning", run.st.Launch.InstanceID), time.Second), nil
		}
		run.log.Warn("provisioning: could not remove command output from the instance: " + err.Error())
	}
	prov.Done = true
	run.log.Info(fmt.Sprintf("provisioning: %d provisioners done", len(provs)))
	return ready("provisioning", run.polls), nil
}

// finish removes the output and command files of the build's commands
// from the instance (they may hold secrets, and the instance becomes the
// image). The exit-status markers stay, so that a rerun of this invocation
// finds every command finished instead of running it again.
func (run *provisionRun) finish(ctx context.Context) error {
	if len(run.build.Provisioners) == 0 {
		return nil
	}
	roots := map[string]bool{}
	for _, pr := range run.build.Provisioners {
		roots[run.jobFolder(pr)] = true
	}
	var quoted []string
	for d := range roots {
		quoted = append(quoted, quoteShell(d))
	}
	cmd := "for d in " + strings.Join(quoted, " ") + `; do rm -f "$d"/*/out "$d"/*/cmd "$d"/*/run; done; true`
	_, _, err := run.r.run(ctx, cmd)
	return err
}

// jobFolder is where the commands of pr keep their job folders.
func (run *provisionRun) jobFolder(pr Provisioner) string {
	folder := run.p.tempDir()
	if pr.Shell != nil {
		folder = cmp.Or(pr.Shell.RemoteFolder, folder)
	}
	return jobRoot(folder, run.st.BuildID)
}

// openRecipe returns the recipe's files for st, opening them (from Files,
// or the recipe object in S3) only when *cache is still empty. Both
// transports' runs keep their cache this way.
func (p *Provision) openRecipe(ctx context.Context, st State, cache *fs.FS) (fs.FS, error) {
	if *cache != nil {
		return *cache, nil
	}
	src := p.Files
	if src == nil {
		src = &S3Recipe{S3: p.S3}
	}
	fsys, err := src.Open(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("open recipe files: %w", err)
	}
	*cache = fsys
	return fsys, nil
}

// attempt is one try of one provisioner, possibly spread over several
// invocations.
type attempt struct {
	// index is the provisioner's index in the build, -1 for
	// error-cleanup-provisioner; id names the attempt ("p2-a0").
	index int
	id    string
	pr    Provisioner
	// step is the next step; running its command when it has started.
	step    int
	running *Command
	// startedAt is when the attempt began (for timeout); stopAt when this
	// invocation stops (zero: never).
	startedAt, stopAt time.Time
	// done is set when every step has finished.
	done bool
}

// attemptOutcome is how an attempt left off, when it did not fail.
type attemptOutcome int

const (
	// attemptFinished: every step done (attempt.done).
	attemptFinished attemptOutcome = iota
	// attemptSuspended: the invocation is running out of time.
	attemptSuspended
	// attemptLost: the connection went away unexpectedly.
	attemptLost
	// attemptReconnect: the connection went away as expect_disconnect
	// allows; the step counts as done.
	attemptReconnect
)

// attempt runs a's steps from a.step on.
func (run *provisionRun) attempt(ctx context.Context, a *attempt) (attemptOutcome, error) {
	label := a.pr.Label()
	sc := stepContext{
		r: run.r, build: run.build, buildID: run.st.BuildID, id: a.id, tempDir: run.p.tempDir(),
		files: run.recipeFiles,
		logf: func(format string, args ...any) {
			run.log.Info(label + ": " + run.plan.Redact(fmt.Sprintf(format, args...)))
		},
	}
	steps, err := provisionerSteps(sc, a.pr)
	if err != nil {
		return 0, &ProvisionerError{Provisioner: label, ExitStatus: -1, Err: err}
	}
	var timeoutAt time.Time
	if a.pr.Timeout > 0 {
		timeoutAt = a.startedAt.Add(time.Duration(a.pr.Timeout))
	}
	expectDisconnect := a.pr.Shell != nil && a.pr.Shell.ExpectDisconnect
	for a.step < len(steps) {
		s := steps[a.step]
		switch {
		case timeUp(a.stopAt):
			return attemptSuspended, nil
		case !timeoutAt.IsZero() && !run.p.now().Before(timeoutAt):
			return 0, run.timedOut(ctx, a)
		}
		if s.command == "" {
			if err := run.upload(ctx, s, timeoutAt); err != nil {
				if ctx.Err() != nil {
					// The invocation's time is up: upload again next time.
					return attemptSuspended, nil
				}
				if errors.Is(err, context.DeadlineExceeded) {
					return 0, run.timedOut(ctx, a)
				}
				if errors.Is(err, errConnLost) {
					return attemptLost, nil
				}
				return 0, &ProvisionerError{Provisioner: label, ExitStatus: -1, Err: err}
			}
			a.step++
			continue
		}
		res, err := run.command(ctx, a, s, timeoutAt)
		switch {
		case err != nil && ctx.Err() != nil:
			return attemptSuspended, nil
		case errors.Is(err, errConnLost) && expectDisconnect && a.running != nil:
			res = cmdResult{kind: cmdLost}
		case errors.Is(err, errConnLost):
			return attemptLost, nil
		case err != nil:
			return 0, &ProvisionerError{Provisioner: label, ExitStatus: -1, Err: err, Tail: run.tail(ctx, a)}
		}
		switch res.kind {
		case cmdSuspended:
			return attemptSuspended, nil
		case cmdLost:
			if !expectDisconnect {
				return attemptLost, nil
			}
			run.log.Info(fmt.Sprintf("provisioner %s: disconnected during %s, as expect_disconnect allows", label, s.what))
			a.step, a.running = a.step+1, nil
			a.done = a.step >= len(steps)
			return attemptReconnect, nil
		case cmdTimedOut:
			return 0, run.timedOut(ctx, a)
		case cmdDied:
			if expectDisconnect {
				run.log.Info(fmt.Sprintf("provisioner %s: %s ended with the connection (a reboot), as expect_disconnect allows", label, s.what))
				a.step, a.running = a.step+1, nil
				continue
			}
			return 0, &ProvisionerError{Provisioner: label, ExitStatus: -1, Tail: run.tail(ctx, a),
				Err: fmt.Errorf("%s ended without an exit status: the instance rebooted or the command was killed (set expect_disconnect = true for a provisioner that reboots)", s.what)}
		}
		if !validExit(a.pr.Shell, res.status) {
			return 0, &ProvisionerError{Provisioner: label, ExitStatus: res.status, Tail: run.tail(ctx, a)}
		}
		if s.cleanup != nil {
			if err := s.cleanup(ctx); err != nil {
				run.log.Warn(fmt.Sprintf("provisioner %s: cleanup after %s: %v", label, s.what, err))
			}
		}
		a.step, a.running = a.step+1, nil
	}
	a.done = true
	return attemptFinished, nil
}

// upload runs an upload-only step, bounded by the provisioner's timeout.
func (run *provisionRun) upload(ctx context.Context, s provisionStep, timeoutAt time.Time) error {
	if !timeoutAt.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeoutAt.Sub(run.p.now()))
		defer cancel()
	}
	return s.prepare(ctx)
}

// timedOut stops a's running command and returns the provisioner's
// timeout error.
func (run *provisionRun) timedOut(ctx context.Context, a *attempt) error {
	var tail []string
	if a.running != nil {
		j := run.job(a, a.running.ID)
		if err := j.kill(ctx); err != nil {
			run.log.Warn(fmt.Sprintf("provisioner %s: %v", a.pr.Label(), err))
		}
		tail = run.tail(ctx, a)
	}
	return &ProvisionerError{Provisioner: a.pr.Label(), ExitStatus: -1, Tail: tail,
		Err: fmt.Errorf("timed out after %s", time.Duration(a.pr.Timeout))}
}

// tail returns the last lines of a's running or last command, redacted.
func (run *provisionRun) tail(ctx context.Context, a *attempt) []string {
	id := fmt.Sprintf("%s-s%d", a.id, a.step)
	if a.running != nil {
		id = a.running.ID
	}
	lines, err := run.job(a, id).tail(ctx, tailLines)
	if err != nil {
		return nil
	}
	for i, l := range lines {
		lines[i] = run.plan.Redact(l)
	}
	return lines
}

// job returns the job named id of attempt a.
func (run *provisionRun) job(a *attempt, id string) job {
	return job{r: run.r, dir: path.Join(run.jobFolder(a.pr), id)}
}

// cmdKind is how watching a command ended.
type cmdKind int

const (
	cmdExited    cmdKind = iota // it exited; status holds its exit status
	cmdSuspended                // the invocation is running out of time
	cmdLost                     // the connection went away
	cmdTimedOut                 // the provisioner's timeout passed
	cmdDied                     // it ended without an exit status
)

type cmdResult struct {
	kind   cmdKind
	status int
}

// command starts step s's command (or reattaches to it, when this or an
// earlier invocation started it) and watches it: a.running records it,
// with how much of its output has been logged.
func (run *provisionRun) command(ctx context.Context, a *attempt, s provisionStep, timeoutAt time.Time) (cmdResult, error) {
	id := fmt.Sprintf("%s-s%d", a.id, a.step)
	j := run.job(a, id)
	label := a.pr.Label()
	resumed := a.running != nil && a.running.ID == id
	status, err := j.probe(ctx)
	if err != nil {
		return cmdResult{}, err
	}
	cur := Command{ID: id, Provisioner: a.index, StartedAt: run.p.now()}
	if resumed {
		cur = *a.running
	}
	switch {
	case !status.Started && resumed:
		// It ran, but its folder is gone: a reboot emptied /tmp.
		a.running = &cur
		return cmdResult{kind: cmdDied}, nil
	case !status.Started:
		if s.prepare != nil {
			if err := s.prepare(ctx); err != nil {
				return cmdResult{}, err
			}
		}
		if err := j.start(ctx, s.command); err != nil {
			return cmdResult{}, err
		}
		run.log.Info(fmt.Sprintf("provisioner %s: running %s", label, s.what))
		status = jobStatus{Started: true, Alive: true, SameBoot: true}
	default:
		run.log.Info(fmt.Sprintf("provisioner %s: reattached to %s (output from byte %d)", label, s.what, cur.Offset))
	}
	a.running = &cur
	return run.watch(ctx, j, a, status, timeoutAt)
}

// watch streams a running job's output to the log until it exits, the
// provisioner's timeout passes, the connection goes, or the invocation
// runs out of time. a.running.Offset follows the output logged.
func (run *provisionRun) watch(ctx context.Context, j job, a *attempt, status jobStatus, timeoutAt time.Time) (cmdResult, error) {
	lines := &lineLog{log: run.log, prefix: a.pr.Label() + ": ", redact: run.plan.Redact}
	pos := a.running.Offset
	drain := func() error {
		for read := 0; read < maxReadPerPoll; {
			b, err := run.r.readAt(ctx, j.dir+"/out", pos, 1<<20)
			if err != nil {
				return err
			}
			if len(b) == 0 {
				return nil
			}
			lines.write(b)
			pos += int64(len(b))
			a.running.Offset = pos - int64(len(lines.partial))
			read += len(b)
		}
		return nil
	}
	poll := run.p.Poll
	if poll <= 0 {
		poll = time.Second
	}
	dead := status.Started && !status.Exited && !(status.Alive && status.SameBoot)
	lastProbe := time.Now()
	for {
		code, exited, err := j.exitStatus(ctx)
		if err != nil {
			return cmdResult{}, err
		}
		if err := drain(); err != nil {
			return cmdResult{}, err
		}
		if exited {
			lines.flush()
			a.running.Offset = pos
			return cmdResult{kind: cmdExited, status: code}, nil
		}
		if dead {
			lines.flush()
			a.running.Offset = pos
			return cmdResult{kind: cmdDied}, nil
		}
		switch {
		case !timeoutAt.IsZero() && !run.p.now().Before(timeoutAt):
			return cmdResult{kind: cmdTimedOut}, nil
		case timeUp(a.stopAt):
			return cmdResult{kind: cmdSuspended}, nil
		}
		if time.Since(lastProbe) >= probeEvery {
			lastProbe = time.Now()
			s, err := j.probe(ctx)
			if err != nil {
				return cmdResult{}, err
			}
			// Check the exit file once more before declaring it dead:
			// it may have ended between the two reads.
			dead = !s.Exited && !(s.Alive && s.SameBoot)
			continue
		}
		select {
		case <-ctx.Done():
			return cmdResult{}, ctx.Err()
		case <-run.r.dead:
			return cmdResult{kind: cmdLost}, nil
		case <-time.After(poll):
		}
	}
}

// timeUp reports whether the invocation should stop (stopAt zero: never).
func timeUp(stopAt time.Time) bool {
	return !stopAt.IsZero() && !time.Now().Before(stopAt)
}

// lineLog logs a command's output line by line, each line prefixed with
// the provisioner's label and with the plan's sensitive values redacted.
// An unfinished last line waits for its end.
type lineLog struct {
	log     *slog.Logger
	prefix  string
	redact  func(string) string
	partial []byte
}

func (l *lineLog) write(b []byte) {
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.emit(l.partial[:i])
		l.partial = l.partial[i+1:]
	}
	if len(l.partial) >= maxLine {
		l.emit(l.partial)
		l.partial = nil
	}
	l.partial = bytes.Clone(l.partial)
}

// flush logs the unfinished last line, if any.
func (l *lineLog) flush() {
	if len(l.partial) > 0 {
		l.emit(l.partial)
		l.partial = nil
	}
}

func (l *lineLog) emit(b []byte) {
	s := strings.ToValidUTF8(strings.TrimRight(string(b), "\r"), "\uFFFD")
	l.log.Info(l.prefix + l.redact(s))
}

// ErrorCleanup runs the build's error-cleanup-provisioner after a
// provisioner failed, as Packer does, before cleanup terminates the
// instance. It is best effort and bounded (by the provisioner's timeout,
// DefaultErrorCleanupLimit and the invocation's deadline): it does not wait
// for SSH, runs the provisioner once, logs its output, and never returns an
// error of its own, so that the build's original error is what the bake
// reports. It sets st.Provision.ErrorCleanupRan; a second call does
// nothing. It does nothing when the build has no error-cleanup-provisioner
// or no instance, and never runs anything on a host whose key does not
// match.
func (p *Provision) ErrorCleanup(ctx context.Context, st State) (State, error) {
	log := Logger(ctx)
	if st.Provision != nil && st.Provision.ErrorCleanupRan {
		return st, nil
	}
	if st.Launch == nil || st.Launch.InstanceID == "" {
		return st, nil
	}
	plan, build, err := fetchPlan(ctx, p.S3, st.Plan)
	if err != nil {
		log.Warn("error-cleanup-provisioner skipped: " + err.Error())
		return st, nil
	}
	transport := p.transport(st, build)
	if build.ErrorCleanup == nil || (transport != "ssh" && transport != "session_manager") {
		return st, nil
	}
	prov := Provisioned{}
	if st.Provision != nil {
		prov = *st.Provision
	}
	prov.ErrorCleanupRan = true
	st.Provision = &prov
	pr := *build.ErrorCleanup
	label := pr.Label()

	limit := DefaultErrorCleanupLimit
	if pr.Timeout > 0 {
		limit = min(limit, time.Duration(pr.Timeout))
	}
	stopAt := time.Now().Add(limit)
	dl, ctx, cancel := p.stopAt(ctx, cmp.Or(p.Reserve, DefaultProvisionReserve)/4)
	defer cancel()
	if !dl.IsZero() && dl.Before(stopAt) {
		stopAt = dl
	}
	if transport == "session_manager" {
		p.errorCleanupSSM(ctx, &st, plan, build, stopAt)
		return st, nil
	}
	// connect must not record an SSH wait for a stage that does not wait.
	since := prov.SSHSince
	r, w, err := p.connect(ctx, &st, build, 0)
	prov.SSHSince = since
	switch {
	case err != nil:
		log.Warn(fmt.Sprintf("error-cleanup-provisioner %s skipped: %v", label, err))
		return st, nil
	case w != nil:
		log.Warn(fmt.Sprintf("error-cleanup-provisioner %s skipped: %s not ready", label, w.For))
		return st, nil
	}
	defer r.Close()
	log.Info(fmt.Sprintf("error-cleanup-provisioner %s: starting", label))
	run := &provisionRun{invocation: invocation{p: p, st: &st, plan: plan, build: build, log: log}, r: r}
	a := &attempt{index: -1, id: "error-cleanup", pr: pr, startedAt: p.now(), stopAt: stopAt}
	out, err := run.attempt(ctx, a)
	switch {
	case err != nil:
		log.Error(fmt.Sprintf("error-cleanup-provisioner %s failed: %s", label, plan.Redact(err.Error())))
	case out == attemptSuspended:
		if a.running != nil {
			if err := run.job(a, a.running.ID).kill(ctx); err != nil {
				log.Warn(err.Error())
			}
		}
		log.Error(fmt.Sprintf("error-cleanup-provisioner %s did not finish within %s; stopped it", label, limit))
	case out == attemptLost:
		log.Error(fmt.Sprintf("error-cleanup-provisioner %s: ssh connection lost", label))
	default:
		log.Info(fmt.Sprintf("error-cleanup-provisioner %s: done", label))
	}
	return st, nil
}
