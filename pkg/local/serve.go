package local

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/emulator"
)

// The scheduled jobs, by the names the stack gives them.
const (
	JobRebuild   = "rebuild"
	JobRetention = "retention"
)

// Jobs are the scheduled jobs' names.
var Jobs = []string{JobRebuild, JobRetention}

// Defaults of ServeOptions.
const (
	// DefaultPoll is how often the recipe prefix is listed.
	DefaultPoll = time.Second
	// DefaultGrace bounds how long stopping waits for running bakes to
	// finish cleaning up.
	DefaultGrace = 2 * time.Minute
)

// ServeOptions configures a Server.
type ServeOptions struct {
	// Poll is how often the watcher lists the recipe prefix; DefaultPoll
	// if zero.
	Poll time.Duration
	// Rebuild and Retention are the jobs' schedules; nil turns one off.
	Rebuild, Retention *Schedule
	// FireNow are jobs (JobRebuild, JobRetention) to run once as soon as
	// the server runs.
	FireNow []string
	// RebuildMaxAge is the rebuild job's maximum image age (zero: none).
	RebuildMaxAge time.Duration
	// Policy and Regions are the retention job's: the default policy
	// (zero fields take the stack's defaults) and the Regions it looks in
	// (DefaultRegion if empty).
	Policy  bake.RetentionPolicy
	Regions []string
	// Bake are every bake's options (TimeScale, Expect, ...).
	Bake BakeOptions
	// Progress, if set, gives a bake about to start the observer and log
	// handler that show its progress.
	Progress func(name string, st bake.State) (asl.Observer, slog.Handler)
	// JobLog receives the scheduled jobs' log lines (every decision);
	// discarded if nil.
	JobLog slog.Handler
	// Report, if set, is told each event and what came of it. It is
	// called from several goroutines.
	Report func(ServeEvent)
	// Grace bounds how long stopping waits for running bakes to clean up
	// before aborting them; DefaultGrace if zero.
	Grace time.Duration
	// Abort, if set, cuts that wait short when it closes (a second
	// Ctrl-C).
	Abort <-chan struct{}
}

// ServeEventKind says what a ServeEvent reports.
type ServeEventKind string

// What a Server reports.
const (
	// EventWatching: the watcher is ready; Count versions were there
	// before it (no event announces them).
	EventWatching ServeEventKind = "watching"
	// EventUpload: an object version was created under recipes/ (Recipe).
	EventUpload ServeEventKind = "upload"
	// EventBakeStarted: bake Build of Recipe started (Trigger is a
	// rebuild decision's; empty for an upload).
	EventBakeStarted ServeEventKind = "bake started"
	// EventBakeNotStarted: an upload's bake Build was not started; Err
	// says why (errors.Is bake.ErrBakeExists for one started before).
	EventBakeNotStarted ServeEventKind = "bake not started"
	// EventBakeEnded: bake Build ended with Result (or Err).
	EventBakeEnded ServeEventKind = "bake ended"
	// EventJobStarted: scheduled job Job fired; Why says what fired it
	// (its schedule, or --fire-now).
	EventJobStarted ServeEventKind = "job started"
	// EventJobEnded: job Job ended with Rebuild or Retention (and Err).
	EventJobEnded ServeEventKind = "job ended"
	// EventWatchFailed: listing the recipe prefix failed (Err); reported
	// once until it changes.
	EventWatchFailed ServeEventKind = "watch failed"
	// EventStopping: the server is stopping; Running are the bakes it
	// interrupts and waits for.
	EventStopping ServeEventKind = "stopping"
)

// ServeEvent is something a Server saw or did.
type ServeEvent struct {
	Kind ServeEventKind
	// Recipe is the object version uploaded or baked.
	Recipe bake.RecipeRef
	// Trigger is a rebuild decision's trigger (bakes the schedule
	// started); empty for an upload's bake.
	Trigger string
	// Build is the bake's name: its build ID.
	Build string
	// Job and Why name a scheduled job and what fired it.
	Job, Why string
	// Count is EventWatching's count of versions already there.
	Count int
	// Running are the bakes running when the server began to stop.
	Running []string
	// Result is a bake's outcome.
	Result *BakeResult
	// Rebuild and Retention are a job's outcome.
	Rebuild   *bake.RebuildResult
	Retention *bake.RetentionResult
	Err       error
}

// Server is `kiln serve --local`: it runs on this machine what the kiln
// stack runs in AWS, against a Cloud. Each recipe version uploaded under
// recipes/ starts a bake of that version (Watcher stands in for the S3 →
// EventBridge rule, Bakes for Step Functions), the rebuild and retention
// jobs fire on their schedules (EventBridge Scheduler's part), and several
// bakes may run at once.
type Server struct {
	cloud     *Cloud
	opts      ServeOptions
	bakes     *Bakes
	watcher   *Watcher
	rebuild   *bake.Rebuild
	retention *bake.Retention
	jobLog    *slog.Logger

	jobMu map[string]*sync.Mutex
}

// NewServer returns a Server on c.
func NewServer(c *Cloud, opts ServeOptions) (*Server, error) {
	var errs []error
	for _, j := range opts.FireNow {
		if !slices.Contains(Jobs, j) {
			errs = append(errs, fmt.Errorf("no job %q to fire: want %s or %s", j, JobRebuild, JobRetention))
		}
	}
	policy := opts.Policy
	if policy.Keep == 0 {
		policy.Keep = bake.DefaultRetentionKeep
	}
	if policy.MaxAgeDays == 0 {
		policy.MaxAgeDays = bake.DefaultRetentionDays
	}
	if err := policy.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	regions := opts.Regions
	if len(regions) == 0 {
		regions = []string{DefaultRegion}
	}
	s := &Server{
		cloud:   c,
		opts:    opts,
		bakes:   NewBakes(c, opts.Bake),
		watcher: &Watcher{S3: c.S3(), Bucket: c.Bucket(), Prefix: bake.RecipePrefix},
		jobLog:  slog.New(slog.DiscardHandler),
		jobMu:   map[string]*sync.Mutex{JobRebuild: {}, JobRetention: {}},
	}
	if opts.JobLog != nil {
		s.jobLog = slog.New(opts.JobLog)
	}
	s.bakes.Progress = opts.Progress
	s.bakes.Report = s.report
	a := &bake.AWS{Config: c.Config(DefaultRegion), S3Options: []func(*s3.Options){emulator.S3Options}}
	conf := bake.Config{Bucket: c.Bucket()}.WithDefaults()
	s.rebuild = bake.NewRebuild(a, conf, s.bakes, opts.RebuildMaxAge)
	s.retention = bake.NewRetention(a, conf, policy, regions)
	s.retention.Emulator = true
	return s, nil
}

// Bakes returns the server's bakes.
func (s *Server) Bakes() *Bakes { return s.bakes }

func (s *Server) report(ev ServeEvent) {
	if s.opts.Report != nil {
		s.opts.Report(ev)
	}
}

// Run serves until ctx ends, then stops cleanly: it stops watching and
// scheduling, interrupts the running bakes so that each goes through
// cleanup, waits for them (at most Grace, then aborts the rest) and
// returns. Closing the Cloud afterwards stops the sandboxes and the
// emulator. Run fails at once only if it cannot list the bucket.
func (s *Server) Run(ctx context.Context) error {
	n, err := s.watcher.Baseline(ctx)
	if err != nil {
		return err
	}
	s.report(ServeEvent{Kind: EventWatching, Count: n})
	var wg sync.WaitGroup
	wg.Go(func() { s.watch(ctx) })
	schedules := map[string]*Schedule{JobRebuild: s.opts.Rebuild, JobRetention: s.opts.Retention}
	for _, job := range Jobs {
		sched, now := schedules[job], slices.Contains(s.opts.FireNow, job)
		if sched != nil || now {
			wg.Go(func() { s.schedule(ctx, job, sched, now) })
		}
	}
	<-ctx.Done()
	s.report(ServeEvent{Kind: EventStopping, Running: s.bakes.Running()})
	// The watcher stops at once; a job run stops where it is, which both
	// jobs are made to tolerate (a later run finishes the work).
	wg.Wait()
	grace, cancel := context.WithTimeout(context.Background(), cmp.Or(s.opts.Grace, DefaultGrace))
	defer cancel()
	if s.opts.Abort != nil {
		go func() {
			select {
			case <-s.opts.Abort:
				cancel()
			case <-grace.Done():
			}
		}()
	}
	return s.bakes.Shutdown(grace)
}

// watch polls the recipe prefix until ctx ends and delivers each new
// version.
func (s *Server) watch(ctx context.Context) {
	tick := time.NewTicker(cmp.Or(s.opts.Poll, DefaultPoll))
	defer tick.Stop()
	var failing string
	for {
		refs, err := s.watcher.Poll(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if err.Error() != failing {
				s.report(ServeEvent{Kind: EventWatchFailed, Err: err})
			}
			failing = err.Error()
		default:
			failing = ""
			for _, ref := range refs {
				_, _ = s.Deliver(ctx, ref)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Deliver handles one "Object Created" event for the recipe version ref,
// as the stack's rule does: it starts a bake of that version, named by its
// build ID, and returns the name. The same version delivered again starts
// nothing: the error then matches bake.ErrBakeExists.
func (s *Server) Deliver(ctx context.Context, ref bake.RecipeRef) (string, error) {
	s.report(ServeEvent{Kind: EventUpload, Recipe: ref})
	name := bake.NewBuildID(ref, nil, "", "")
	id, err := s.bakes.StartBake(ctx, name, bake.State{Recipe: ref})
	if err != nil {
		s.report(ServeEvent{Kind: EventBakeNotStarted, Recipe: ref, Build: name, Err: err})
	}
	return id, err
}

// schedule fires job now (if asked) and then on sched until ctx ends.
func (s *Server) schedule(ctx context.Context, job string, sched *Schedule, now bool) {
	if now {
		_ = s.Fire(ctx, job, "--fire-now")
	}
	if sched == nil {
		return
	}
	start := time.Now()
	next := sched.First(start)
	if now && !next.After(start) {
		next = sched.Next(next) // it just fired
	}
	for !next.IsZero() {
		if !sleepUntil(ctx, next) {
			return
		}
		_ = s.Fire(ctx, job, sched.String())
		// Fire times missed while the job ran are skipped, as a run is
		// not worth repeating back to back.
		at := time.Now()
		n := sched.Next(next)
		for !n.IsZero() && !n.After(at) {
			n = sched.Next(n)
		}
		next = n
	}
}

// sleepUntil waits until t on the wall clock (re-reading it every minute,
// so that a machine that slept does not delay a schedule) or until ctx
// ends, and reports whether t came.
func sleepUntil(ctx context.Context, t time.Time) bool {
	for {
		d := time.Until(t)
		if d <= 0 {
			return true
		}
		timer := time.NewTimer(min(d, time.Minute))
		select {
		case <-ctx.Done():
			timer.Stop()
			return false
		case <-timer.C:
		}
	}
}

// Fire runs job once now, as its schedule would: the rebuild job decides
// and starts bakes (through Bakes), the retention job plans and applies;
// each logs every decision to JobLog and puts its report event on the
// emulator's default event bus, as the Lambdas do. why says what fired it.
// A job does not overlap itself: a second Fire waits for the first.
func (s *Server) Fire(ctx context.Context, job, why string) error {
	mu, ok := s.jobMu[job]
	if !ok {
		return fmt.Errorf("no job %q: want %s or %s", job, JobRebuild, JobRetention)
	}
	mu.Lock()
	defer mu.Unlock()
	s.report(ServeEvent{Kind: EventJobStarted, Job: job, Why: why})
	ev := ServeEvent{Kind: EventJobEnded, Job: job, Why: why}
	switch job {
	case JobRebuild:
		res, err := bake.JobHandler(job, s.rebuild.Handle, s.jobLog)(ctx, bake.RebuildEvent{})
		ev.Rebuild, ev.Err = &res, err
	case JobRetention:
		res, err := bake.JobHandler(job, s.retention.Handle, s.jobLog)(ctx, bake.RetentionEvent{})
		ev.Retention, ev.Err = &res, err
	}
	s.report(ev)
	return ev.Err
}
