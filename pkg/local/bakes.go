package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/bake"
)

// Bakes runs local bakes in the background, as Step Functions runs
// executions of the bake state machine in AWS: it is the bake.Bakes of
// `kiln serve --local`, which the rebuild job asks what is running and
// starts its bakes with, and which serve starts each upload's bake with.
//
// An execution is named by its build ID, and a name is used once: StartBake
// refuses a name this process started before, or whose plan the bucket
// already holds (a bake of that build ran, perhaps under an earlier serve),
// with bake.ErrBakeExists, as StartExecution refuses a name used in the
// last 90 days.
type Bakes struct {
	cloud *Cloud
	// Options are the options of every bake; StartBake sets Vars, Only,
	// Trigger and Name from its input, and Observer and Log from Progress.
	Options BakeOptions
	// Progress, if set, gives a bake about to start the observer and log
	// handler that show its progress.
	Progress func(name string, st bake.State) (asl.Observer, slog.Handler)
	// Report, if set, is told when a bake starts (EventBakeStarted) and how
	// it ended (EventBakeEnded).
	Report func(ServeEvent)

	// interrupt ends when Shutdown begins: running bakes stop their
	// current stage and go to cleanup. abort ends when Shutdown gives up
	// waiting: executions stop where they are.
	interrupt, abort context.Context
	interruptAll     context.CancelCauseFunc
	abortAll         context.CancelFunc

	mu       sync.Mutex
	used     map[string]bool           // every name started
	running  map[string]bake.RecipeRef // by name
	stopping bool
	wg       sync.WaitGroup
}

// NewBakes returns the Bakes of c, with opts as every bake's options.
func NewBakes(c *Cloud, opts BakeOptions) *Bakes {
	b := &Bakes{
		cloud:   c,
		Options: opts,
		used:    map[string]bool{},
		running: map[string]bake.RecipeRef{},
	}
	b.interrupt, b.interruptAll = context.WithCancelCause(context.Background())
	b.abort, b.abortAll = context.WithCancel(context.Background())
	return b
}

// ErrStopping is StartBake's error once Shutdown has begun.
var ErrStopping = errors.New("kiln serve is stopping: no new bakes")

// StartBake starts a local bake of st.Recipe (that object version) with
// st's Vars, Only and Trigger, named name, and returns its name. It
// implements bake.BakeStarter.
func (b *Bakes) StartBake(ctx context.Context, name string, st bake.State) (string, error) {
	if name == "" {
		return "", errors.New("start bake: no name")
	}
	b.mu.Lock()
	switch {
	case b.stopping:
		b.mu.Unlock()
		return "", fmt.Errorf("start bake %s: %w", name, ErrStopping)
	case b.used[name]:
		b.mu.Unlock()
		return "", fmt.Errorf("start bake %s: started before by this serve: %w", name, bake.ErrBakeExists)
	}
	// Reserve the name before looking in the bucket, so that two starts
	// of one build at once cannot both pass.
	b.used[name] = true
	b.mu.Unlock()

	ran, err := b.ranBefore(ctx, name)
	if err != nil {
		b.mu.Lock()
		delete(b.used, name)
		b.mu.Unlock()
		return "", err
	}
	if ran {
		return "", fmt.Errorf("start bake %s: its plan is already stored at s3://%s/%s: %w", name, b.cloud.Bucket(), bake.PlanKey(name), bake.ErrBakeExists)
	}

	b.mu.Lock()
	if b.stopping {
		b.mu.Unlock()
		return "", fmt.Errorf("start bake %s: %w", name, ErrStopping)
	}
	b.running[name] = st.Recipe
	b.wg.Add(1)
	b.mu.Unlock()

	opts := b.Options
	opts.Vars, opts.Only, opts.Trigger, opts.Name = st.Vars, st.Only, st.Trigger, name
	if b.Progress != nil {
		opts.Observer, opts.Log = b.Progress(name, st)
	}
	opts.Wrap = interruptible(b.interrupt, opts.Wrap)
	b.report(ServeEvent{Kind: EventBakeStarted, Build: name, Recipe: st.Recipe, Trigger: st.Trigger})
	go b.run(name, st, opts)
	return name, nil
}

// ranBefore reports whether the bucket holds a plan of build name: the
// durable trace of a bake started before. The plan step's claim cannot
// tell: a local execution's ID derives from its name, so a second one of
// the same name would pass the claim as its first's retry.
func (b *Bakes) ranBefore(ctx context.Context, name string) (bool, error) {
	_, err := b.cloud.S3().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.cloud.Bucket()), Key: aws.String(bake.PlanKey(name))})
	switch {
	case err == nil:
		return true, nil
	case bake.IsNotFound(err):
		return false, nil
	}
	return false, fmt.Errorf("start bake %s: look for its stored plan: %w", name, err)
}

func (b *Bakes) run(name string, st bake.State, opts BakeOptions) {
	defer b.wg.Done()
	// The bake's context is not the caller's: an execution outlives the
	// request that started it, and ends by interruption (cleanup runs)
	// or, past Shutdown's bound, by abort.
	res, err := b.cloud.BakeRef(b.abort, st.Recipe, opts)
	b.mu.Lock()
	delete(b.running, name)
	b.mu.Unlock()
	b.report(ServeEvent{Kind: EventBakeEnded, Build: name, Recipe: st.Recipe, Trigger: st.Trigger, Result: res, Err: err})
}

func (b *Bakes) report(ev ServeEvent) {
	if b.Report != nil {
		b.Report(ev)
	}
}

// RunningBakes returns the names of the bakes running now of the recipe
// object recipe.Bucket/recipe.Key, whatever its version. It implements
// bake.BakeLister.
func (b *Bakes) RunningBakes(_ context.Context, recipe bake.RecipeRef) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for name, ref := range b.running {
		if ref.Bucket == recipe.Bucket && ref.Key == recipe.Key {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Running returns the names of the bakes running now.
func (b *Bakes) Running() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.running))
	for name := range b.running {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Shutdown stops the bakes cleanly: it refuses new ones, interrupts the
// running ones (each fails its current stage with Interrupted, which the
// state machine routes to cleanup, and cleanup itself runs to the end),
// and waits for them to finish until ctx ends. Then it aborts the ones
// left, which stop where they are, waits for them to return and says
// which they were.
func (b *Bakes) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	b.stopping = true
	b.mu.Unlock()
	b.interruptAll(errInterrupt)
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	left := b.Running()
	b.abortAll()
	<-done
	return fmt.Errorf("aborted %d bakes before their cleanup finished (%s): what each made is tagged %s=<its name>",
		len(left), strings.Join(left, ", "), bake.TagBuild)
}

// errInterrupt is why Shutdown interrupts bakes.
var errInterrupt = errors.New("kiln serve is stopping")

// Interrupted is the error a stage of an interrupted bake fails with. The
// state machine catches it like any stage failure and goes to cleanup, so
// the bake ends failed ("Interrupted") with its temporaries and its
// half-made images removed.
type Interrupted struct {
	// Function is the stage function that was interrupted.
	Function string
	// Reason says why.
	Reason string
}

func (e *Interrupted) Error() string {
	return e.Function + ": interrupted: " + e.Reason
}

// interruptible wraps every stage function's handler but cleanup's (after
// next, if set) so that once interrupt ends, a running handler's context
// is cancelled and its result replaced by *Interrupted, and every later
// call fails with it at once. Cleanup is left alone: it must run to the
// end.
func interruptible(interrupt context.Context, next func(string, asl.Handler) asl.Handler) func(string, asl.Handler) asl.Handler {
	return func(function string, h asl.Handler) asl.Handler {
		if next != nil {
			h = next(function, h)
		}
		if function == "cleanup" {
			return h
		}
		stopped := func() error {
			return &Interrupted{Function: function, Reason: context.Cause(interrupt).Error()}
		}
		return func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
			if interrupt.Err() != nil {
				return nil, stopped()
			}
			hctx, cancel := context.WithCancel(ctx)
			defer cancel()
			unhook := context.AfterFunc(interrupt, cancel)
			defer unhook()
			out, err := h(hctx, in)
			if err != nil && interrupt.Err() != nil {
				return nil, stopped()
			}
			return out, err
		}
	}
}

// buildRegions reads the recipe object ref as the plan step will (with
// vars, no environment) and returns the Regions of its build only: where
// it runs, and where its image is copied. A recipe that does not load
// gives DefaultRegion: the plan step then fails the bake and says why.
func (c *Cloud) buildRegions(ctx context.Context, ref bake.RecipeRef, vars map[string]string, only string) (region string, copies []string) {
	plan, err := c.loadRef(ctx, ref, vars)
	if err != nil {
		return DefaultRegion, nil
	}
	b, err := plan.Select(only)
	if err != nil || b.Source.Region == "" {
		return DefaultRegion, nil
	}
	return b.Source.Region, b.Source.AMIRegions
}

// loadRef loads the recipe object ref: a template file or a bundle.
func (c *Cloud) loadRef(ctx context.Context, ref bake.RecipeRef, vars map[string]string) (*bake.Plan, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(ref.Key)}
	if ref.Version != "" {
		in.VersionId = aws.String(ref.Version)
	}
	out, err := c.S3().GetObject(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("read recipe s3://%s/%s: %w", ref.Bucket, ref.Key, err)
	}
	defer out.Body.Close()
	limits := bake.DefaultBundleLimits()
	body, err := io.ReadAll(io.LimitReader(out.Body, limits.MaxCompressedSize+1))
	if err != nil {
		return nil, fmt.Errorf("read recipe s3://%s/%s: %w", ref.Bucket, ref.Key, err)
	}
	base := path.Base(ref.Key)
	var fsys *bake.RecipeFS
	entry := "."
	if bake.IsBundleName(base) {
		fsys, err = bake.OpenRecipeBundle(bytes.NewReader(body), int64(len(body)), base, limits)
	} else {
		entry = base
		fsys, err = bake.NewMemRecipeFS(base, map[string][]byte{base: body})
	}
	if err != nil {
		return nil, err
	}
	defer fsys.Close()
	return bake.LoadFS(fsys, entry, bake.RecipeName(ref.Key), bake.LoadOptions{Vars: vars, Env: map[string]string{}})
}
