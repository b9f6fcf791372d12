package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/local"
)

func runBake(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		isLocal   bool
		only      string
		timeScale float64
		verbose   bool
		transport string
	)
	rf, path, err := parseRecipeArgs("bake", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&isLocal, "local", false, "bake on this machine: a local AWS emulator (moto, or $AWS_ENDPOINT_URL) and a throwaway sandbox instead of AWS")
		fs.StringVar(&only, "only", "", "the build to bake, for a recipe with several (name or amazon-ebs.name)")
		fs.Float64Var(&timeScale, "time-scale", 1, "compress the state machine's waits by this factor")
		fs.BoolVar(&verbose, "v", false, "show every stage log line")
		fs.StringVar(&transport, "default-transport", os.Getenv("KILN_DEFAULT_TRANSPORT"),
			`the stack's default transport for recipes that set no ssh_interface: "ssh" (the default) or "session_manager"`)
	})
	if err != nil {
		return err
	}
	switch transport {
	case "", "ssh", "session_manager":
	default:
		return fmt.Errorf("-default-transport %q: want ssh or session_manager", transport)
	}
	if !isLocal {
		return fmt.Errorf("kiln bake needs --local: in AWS, a bake starts when you upload the recipe to the stack's bucket (see docs/deploy.md)")
	}
	opts := rf.options()
	// Load first: a broken recipe is reported before anything starts.
	plan, err := bake.Load(path, opts)
	if err != nil {
		return reportLoadError(stderr, err)
	}
	build, err := plan.Select(only)
	if err != nil {
		return err
	}
	started := time.Now()
	p := &progress{w: stdout, start: started, verbose: verbose, redact: plan.Redact}
	p.printf("kiln: baking %s (%s) locally\n", plan.Name, build.FullName())

	cloud, err := local.Start(ctx, local.Options{Log: io.Discard})
	if err != nil {
		return err
	}
	defer cloud.Close()
	where := "a local moto at " + cloud.Endpoint()
	if cloud.External() {
		where = "the emulator at " + cloud.Endpoint() + " ($AWS_ENDPOINT_URL)"
	}
	p.printf("kiln: AWS is %s; the instance is a sandbox on 127.0.0.1\n", where)

	cwd, _ := os.Getwd()
	res, err := cloud.Bake(ctx, path, local.BakeOptions{
		Vars:             opts.Vars,
		VarFiles:         opts.VarFiles,
		Env:              opts.Env,
		Only:             only,
		DefaultTransport: transport,
		ManifestDir:      cwd,
		TimeScale:        timeScale,
		Observer:         p,
		Log:              p,
	})
	if err != nil {
		var re *bake.RecipeError
		if errors.As(err, &re) {
			return reportLoadError(stderr, err)
		}
		return err
	}
	return p.summary(res, time.Since(started))
}

// progress shows a bake as it happens: each stage's start and end with its
// duration, what a wait is for, provisioner output as it streams, retries
// and failures. It is both the runner's Observer and the stages' log
// handler.
type progress struct {
	mu      sync.Mutex
	w       io.Writer
	start   time.Time
	verbose bool
	redact  func(string) string
	attrs   []slog.Attr
}

func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.printfLocked(format, args...)
}

func (p *progress) printfLocked(format string, args ...any) {
	el := time.Since(p.start)
	fmt.Fprintf(p.w, "[%02d:%04.1f] %s", int(el.Minutes()), el.Seconds()-60*float64(int(el.Minutes())), p.redact(fmt.Sprintf(format, args...)))
}

// Observe implements asl.Observer.
func (p *progress) Observe(n asl.Notice) {
	name := n.State
	if n.Scope != "" {
		name = n.Scope + "/" + n.State
	}
	switch n.Kind {
	case asl.TaskStarted:
		p.printf("▶ %s\n", name)
	case asl.TaskEnded:
		if n.Error != "" {
			p.printf("✗ %s failed after %s: %s\n", name, round(n.Duration), n.Error)
			return
		}
		p.printf("✓ %s (%s)\n", name, round(n.Duration))
	case asl.Retrying:
		p.printf("↻ %s: %s; retrying in %s\n", name, n.Error, round(n.Duration))
	case asl.Caught:
		p.printf("→ %s: %s caught; going to %s\n", name, n.Error, n.Next)
	}
}

// Enabled implements slog.Handler.
func (p *progress) Enabled(context.Context, slog.Level) bool { return true }

// Handle implements slog.Handler: it prints a stage's log line, indented
// under its stage, leaving out the start/done lines the Observer shows.
func (p *progress) Handle(_ context.Context, r slog.Record) error {
	attrs := map[string]string{}
	for _, a := range p.attrs {
		attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	switch r.Message {
	case "start", "done":
		if !p.verbose {
			return nil
		}
	case "failed":
		return nil // the Observer shows the failure
	case "waiting":
		p.printf("  … waiting %ss for %s\n", attrs["seconds"], attrs["for"])
		return nil
	}
	var extra []string
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		if k != "stage" && k != "action" && k != "build" && (k != "region" || p.verbose) {
			extra = append(extra, k+"="+attrs[k])
		}
	}
	line := r.Message
	// A command's progress meter rewrites its line with carriage returns:
	// show what it ended on.
	if i := strings.LastIndexByte(strings.TrimRight(line, "\r"), '\r'); i >= 0 {
		line = line[i+1:]
	}
	if len(extra) > 0 {
		line += " (" + strings.Join(extra, " ") + ")"
	}
	if r.Level >= slog.LevelWarn {
		line = strings.ToLower(r.Level.String()) + ": " + line
	}
	p.printf("  │ %s\n", line)
	return nil
}

// WithAttrs implements slog.Handler.
func (p *progress) WithAttrs(attrs []slog.Attr) slog.Handler {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &progress{w: p.w, start: p.start, verbose: p.verbose, redact: p.redact, attrs: append(slices.Clone(p.attrs), attrs...)}
	return &sharedProgress{progress: c, root: p}
}

// WithGroup implements slog.Handler.
func (p *progress) WithGroup(string) slog.Handler { return p }

// sharedProgress is a progress with extra attributes that writes under its
// root's lock, so lines from concurrent stages never interleave.
type sharedProgress struct {
	*progress
	root *progress
}

func (s *sharedProgress) Handle(ctx context.Context, r slog.Record) error {
	for _, a := range s.progress.attrs {
		r.AddAttrs(a)
	}
	return s.root.Handle(ctx, r)
}

func (s *sharedProgress) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := &progress{w: s.w, start: s.start, verbose: s.verbose, redact: s.redact, attrs: append(slices.Clone(s.progress.attrs), attrs...)}
	return &sharedProgress{progress: c, root: s.root}
}

func round(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

// summary prints the outcome: the AMI per Region and the manifest on
// success, the failing stage and error on failure, the totals, and what
// cleanup left (nothing, or the bake fails).
func (p *progress) summary(res *local.BakeResult, wall time.Duration) error {
	st := res.State
	w := p.w
	fmt.Fprintln(w)
	if res.Succeeded() && st.Published != nil {
		fmt.Fprintf(w, "Baked %s (build %s):\n", st.Plan.Recipe, st.BuildID)
		for _, r := range slices.Sorted(maps.Keys(st.Published.Images)) {
			fmt.Fprintf(w, "  %-12s %s   (SSM %s)\n", r, st.Published.Images[r], st.Published.Parameters[r])
		}
		if st.Published.ManifestPath != "" {
			fmt.Fprintf(w, "  manifest:    %s\n", st.Published.ManifestPath)
		}
		if st.Published.Manifest != "" {
			fmt.Fprintf(w, "  manifest:    s3://%s/%s\n", st.Plan.Bucket, st.Published.Manifest)
		}
	} else if res.Succeeded() {
		fmt.Fprintf(w, "Nothing to do: build %s is already baking or baked.\n", st.BuildID)
	} else {
		fmt.Fprintf(w, "Bake failed: %s\n", res.Execution.Error)
		fmt.Fprintf(w, "  %s\n", indent(p.redact(lambdaMessage(res.Execution.Cause)), "  "))
	}
	rep := res.Report
	fmt.Fprintf(w, "Totals: %s wall time, %d state transitions, %s of Lambda time (%.4f GB-s); in AWS about $%.4f\n",
		wall.Round(100*time.Millisecond), rep.Transitions, rep.TaskTime.Round(time.Millisecond), rep.GBSeconds, rep.Total)
	if st.Cleanup != nil {
		fmt.Fprintf(w, "Cleanup removed %d resources", len(st.Cleanup.Deleted))
		if len(st.Cleanup.Failed) > 0 {
			fmt.Fprintf(w, " and could not remove %d: %s", len(st.Cleanup.Failed), strings.Join(st.Cleanup.Failed, ", "))
		}
		fmt.Fprintln(w, ".")
	}
	left := res.Left.Temporaries()
	if !res.Succeeded() {
		left = res.Left.All()
	}
	if len(left) > 0 {
		fmt.Fprintf(w, "LEFT BEHIND (tagged %s=%s): %s\n", bake.TagBuild, st.BuildID, strings.Join(left, ", "))
		return exitError{1}
	}
	what := "instance, volume, security group, key pair, stored key or staged file"
	if !res.Succeeded() {
		what += ", image or snapshot"
	}
	fmt.Fprintf(w, "Checked by tag: no %s of this build is left.\n", what)
	if !res.Succeeded() {
		return exitError{1}
	}
	return nil
}

// lambdaMessage extracts errorMessage from a Lambda error Cause.
func lambdaMessage(cause string) string { return bake.Failure{Cause: cause}.Message() }

func indent(s, prefix string) string {
	return strings.ReplaceAll(s, "\n", "\n"+prefix)
}
