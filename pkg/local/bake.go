package local

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/emulator"
	"github.com/kiln-dev/kiln/statemachine"
)

// Account is the account ID the local stage functions' ARNs carry.
const Account = "000000000000"

// BakeOptions configures a local bake.
type BakeOptions struct {
	// Vars, VarFiles and Env are the recipe's inputs, as for bake.Load.
	Vars     map[string]string
	VarFiles []string
	Env      map[string]string
	// Only selects one build of a recipe with several.
	Only string
	// DefaultTransport is the stack's default transport for recipes that
	// leave ssh_interface unset: "ssh" (if empty) or "session_manager".
	DefaultTransport string
	// Trigger distinguishes a deliberate rebake of the same recipe version
	// (a rebuild decision's); see bake.State.Trigger. Empty for uploads.
	Trigger string
	// Name is the execution's name; the build ID if empty.
	Name string
	// ManifestDir is where the manifest post-processor's output paths are
	// relative to (the current directory for the CLI).
	ManifestDir string
	// Expect are the expected AWS timings the waits poll around; zero for
	// an emulator that changes state at once.
	Expect bake.Timings
	// TimeScale compresses the state machine's waits (1 if zero).
	TimeScale float64
	// Clock runs the state machine; the wall clock if nil.
	Clock asl.Clock
	// Observer is told about the execution's progress.
	Observer asl.Observer
	// Log receives the stages' log lines (provisioner output among them);
	// nil discards them.
	Log slog.Handler
	// Recorder, if set, records every task call of the execution, for
	// replaying it in another engine (pkg/asl/crosscheck).
	Recorder *asl.Recorder
	// Wrap, if set, wraps each stage function's handler (tests use it to
	// record invocations or inject crashes).
	Wrap func(function string, h asl.Handler) asl.Handler
	// AWSConfig, if set, adjusts the stages' AWS config (a simulation
	// scales the SDK's retry backoff with TimeScale).
	AWSConfig func(*aws.Config)
}

// BakeResult is a finished local bake.
type BakeResult struct {
	// Execution is the state machine's result: status, output, error,
	// history.
	Execution *asl.Result
	// State is the final build state (the execution's output, or on
	// failure the last state a stage returned).
	State bake.State
	// Report counts transitions and Lambda time and prices them.
	Report asl.Report
	// Regions are the Regions the build used.
	Regions []string
	// Left is what of the build still exists after the run, found by tag.
	Left Inventory
}

// Succeeded reports whether the bake made its images.
func (r *BakeResult) Succeeded() bool { return r.Execution.Status == asl.StatusSucceeded }

// Bake uploads the recipe at path to the local bucket (as `aws s3 cp`
// would) and runs the state machine definition on it with the stages wired
// to the emulator: the same definition and stage code that run in AWS.
// A recipe that does not load is reported before anything is uploaded.
func (c *Cloud) Bake(ctx context.Context, path string, opts BakeOptions) (*BakeResult, error) {
	plan, err := bake.Load(path, bake.LoadOptions{Vars: opts.Vars, VarFiles: opts.VarFiles, Env: opts.Env})
	if err != nil {
		return nil, err
	}
	build, err := plan.Select(opts.Only)
	if err != nil {
		return nil, err
	}
	// Var files given on the command line are folded into -var values:
	// the pipeline reads only the recipe object and the execution input.
	vars, err := mergeVarFiles(plan, opts.Vars)
	if err != nil {
		return nil, err
	}
	ref, err := c.Upload(ctx, path)
	if err != nil {
		return nil, err
	}
	opts.Vars = vars
	return c.bakeRef(ctx, ref, build.Source.Region, build.Source.AMIRegions, opts)
}

// BakeRef runs the state machine on a recipe already in the bucket, that
// object version, as an upload event or a rebuild decision starts it in
// AWS. The input is the object, opts.Vars, opts.Only and opts.Trigger;
// VarFiles and Env are not read (the pipeline sees only the object and the
// input). A recipe that does not load fails the bake in its Plan step.
func (c *Cloud) BakeRef(ctx context.Context, ref bake.RecipeRef, opts BakeOptions) (*BakeResult, error) {
	region, copies := c.buildRegions(ctx, ref, opts.Vars, opts.Only)
	return c.bakeRef(ctx, ref, region, copies, opts)
}

// bakeRef runs the state machine on ref, whose build runs in region and is
// copied to copies.
func (c *Cloud) bakeRef(ctx context.Context, ref bake.RecipeRef, region string, copies []string, opts BakeOptions) (*BakeResult, error) {
	sg, err := c.ProvisionerSecurityGroup(ctx, region)
	if err != nil {
		return nil, err
	}
	sshGroup, isolatedGroup, err := c.InstanceSecurityGroups(ctx, region)
	if err != nil {
		return nil, err
	}
	profile, err := c.BuildInstanceProfile(ctx)
	if err != nil {
		return nil, err
	}
	conf := bake.Config{
		Bucket:                   c.bucket,
		ProvisionerSecurityGroup: sg,
		InstanceSecurityGroup:    sshGroup,
		IsolatedSecurityGroup:    isolatedGroup,
		ParameterPrefix:          "/kiln",
		KeyPrefix:                "/kiln/builds",
		EventBus:                 "default",
		InstanceProfile:          profile,
		DefaultTransport:         cmp.Or(opts.DefaultTransport, "ssh"),
		CommandLogPrefix:         "/kiln/commands",
		Expect:                   opts.Expect,
	}
	var last lastState
	handlers := c.handlers(conf, region, opts, &last)
	def := definition()
	ropts := asl.Options{
		Handlers:        handlers,
		Clock:           opts.Clock,
		TimeScale:       opts.TimeScale,
		Observer:        opts.Observer,
		StateMachineARN: "arn:aws:states:" + region + ":" + Account + ":stateMachine:kiln",
	}
	if opts.Recorder != nil {
		ropts = opts.Recorder.Options(ropts)
	}
	runner, err := asl.New(def, ropts)
	if err != nil {
		return nil, fmt.Errorf("load state machine: %w", err)
	}
	input := bake.State{Recipe: ref, Vars: opts.Vars, Only: opts.Only, Trigger: opts.Trigger}
	buildID := bake.NewBuildID(ref, opts.Vars, opts.Only, opts.Trigger)
	in, err := json.Marshal(input)
	if err != nil {
		return nil, err
	}
	res, err := runner.Run(ctx, cmp.Or(opts.Name, buildID), in)
	if err != nil {
		return nil, fmt.Errorf("run state machine: %w", err)
	}
	out := &BakeResult{Execution: res, Report: res.Report(asl.Pricing{})}
	out.State = last.get()
	if len(res.Output) > 0 {
		var st bake.State
		if json.Unmarshal(res.Output, &st) == nil {
			out.State = st
		}
	}
	out.Regions = append([]string{region}, copies...)
	slices.Sort(out.Regions)
	out.Regions = slices.Compact(out.Regions)
	// Take stock with a fresh context: an interrupted bake still reports.
	invCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	out.Left, err = c.Take(invCtx, buildID, out.Regions, conf.WithDefaults())
	if err != nil {
		return out, fmt.Errorf("take stock after the bake: %w", err)
	}
	return out, nil
}

// functionARN is the local stand-in ARN of a stage function.
func functionARN(function string) string {
	return "arn:aws:lambda:us-east-1:" + Account + ":function:kiln-" + function
}

// definition returns the state machine with the local functions' ARNs.
func definition() []byte {
	subs := map[string]string{}
	for _, f := range statemachine.Functions {
		subs[statemachine.PlaceholderName(f)] = functionARN(f)
	}
	def, err := statemachine.Substitute(subs)
	if err != nil {
		panic(err) // the definition and its function list are compiled in
	}
	return def
}

// handlers wires each stage to the emulator, as the Lambda mains wire them
// to AWS, plus what the emulator cannot do itself: booting a sandbox for an
// instance (Provision.Resolve for SSH; the SSM agent's stand-in, Agent, for
// session_manager), keeping an image's content when it is made, and
// shutting a sandbox down with its instance.
func (c *Cloud) handlers(conf bake.Config, region string, opts BakeOptions, last *lastState) map[string]asl.Handler {
	cfg := c.Config(region)
	if opts.AWSConfig != nil {
		opts.AWSConfig(&cfg)
	}
	a := &bake.AWS{Config: cfg, S3Options: []func(*s3.Options){emulator.S3Options}}
	logh := opts.Log
	if logh == nil {
		logh = slog.NewTextHandler(io.Discard, nil)
	}
	log := slog.New(logh)

	launch := bake.NewLaunch(a, conf)
	prov := bake.NewProvision(a, conf)
	prov.Resolve = c.Resolve
	// moto runs no SSM command and lacks DescribeInstanceInformation and
	// CancelCommand: the agent's stand-in covers that (ssmagent.go).
	prov.RunCommand = c.Agent()
	snap := bake.NewSnapshot(a, conf)
	snap.Emulator = true
	dist := bake.NewDistribute(a, conf)
	dist.Emulator = true
	dist.ManifestDir = opts.ManifestDir
	clean := bake.NewCleanup(a, conf)
	clean.Commands = c.Agent()
	if opts.Clock != nil {
		// The stages keep time on the state machine's clock, so that a
		// simulated run (a fake clock, an emulator front modelling AWS's
		// timings) is consistent from end to end.
		launch.Now, prov.Now, snap.Now, dist.Now, clean.Now = opts.Clock.Now, opts.Clock.Now, opts.Clock.Now, opts.Clock.Now, opts.Clock.Now
	}

	snapActions := snap.Actions()
	create := snapActions["create"]
	snapActions["create"] = func(ctx context.Context, ev bake.Event) (bake.State, error) {
		st, err := create(ctx, ev)
		if err == nil && st.Image != nil && st.Launch != nil {
			if cerr := c.CaptureImage(ctx, st.Launch.InstanceID, st.Image.ID); cerr != nil {
				bake.Logger(ctx).Warn("local image content not kept: " + cerr.Error())
			}
		}
		return st, err
	}
	cleanActions := clean.Actions()
	run := cleanActions["run"]
	cleanActions["run"] = func(ctx context.Context, ev bake.Event) (bake.State, error) {
		st, err := run(ctx, ev)
		if err == nil && st.Launch != nil && (st.Wait == nil || st.Wait.Ready) {
			c.StopSandbox(st.Launch.InstanceID)
		}
		return st, err
	}

	stages := map[string]map[string]bake.Action{
		"launch":     launch.Actions(),
		"provision":  prov.Actions(),
		"snapshot":   snapActions,
		"distribute": dist.Actions(),
		"cleanup":    cleanActions,
	}
	hs := map[string]asl.Handler{}
	for _, f := range statemachine.Functions {
		h := asl.Typed(last.track(bake.Handler(f, stages[f], log)))
		if opts.Wrap != nil {
			h = opts.Wrap(f, h)
		}
		hs[functionARN(f)] = h
	}
	return hs
}

// lastState remembers the last state a stage returned, which for a failed
// execution (whose output is only the error) is what the stages recorded.
type lastState struct {
	mu sync.Mutex
	st bake.State
}

func (l *lastState) track(h func(context.Context, bake.Event) (bake.State, error)) func(context.Context, bake.Event) (bake.State, error) {
	return func(ctx context.Context, ev bake.Event) (bake.State, error) {
		st, err := h(ctx, ev)
		if err == nil && ev.Region == "" {
			l.mu.Lock()
			l.st = st
			l.mu.Unlock()
		}
		return st, err
	}
}

func (l *lastState) get() bake.State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

// mergeVarFiles turns the loaded plan's variables that came from -var-file
// into -var values, so that the pipeline, which reads only the recipe object
// and the execution input, sees the same values.
func mergeVarFiles(plan *bake.Plan, vars map[string]string) (map[string]string, error) {
	out := maps.Clone(vars)
	if out == nil {
		out = map[string]string{}
	}
	for _, v := range plan.Variables {
		if v.From != "var-file" {
			continue
		}
		if v.Sensitive {
			return nil, fmt.Errorf("variable %s is sensitive and comes from a -var-file: put the var file in the recipe folder (as *.auto.pkrvars.hcl) so its value never appears in the execution's input", v.Name)
		}
		var s string
		if err := json.Unmarshal(v.Value, &s); err == nil {
			out[v.Name] = s
		} else {
			out[v.Name] = strings.TrimSpace(string(v.Value))
		}
	}
	return out, nil
}
