package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/local"
)

// Defaults of kiln serve's schedules: the stack's (infra's
// DefaultRebuildSchedule and DefaultRetentionSchedule).
const (
	defaultRebuildSchedule   = "cron(0 3 * * ? *)"
	defaultRetentionSchedule = "cron(0 4 * * ? *)"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kiln serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		isLocal       = fs.Bool("local", false, "serve on this machine, against a local AWS emulator (required)")
		endpoint      = fs.String("endpoint", "", "an AWS emulator to use, at `URL` (default $AWS_ENDPOINT_URL; without either, serve starts moto)")
		bucket        = fs.String("bucket", local.DefaultBucket, "the kiln `bucket` whose recipes/ prefix is watched")
		rebuildSched  = fs.String("rebuild-schedule", defaultRebuildSchedule, "when the rebuild job runs: cron(...), rate(...), a crontab line, or off")
		retentionSch  = fs.String("retention-schedule", defaultRetentionSchedule, "when the retention job runs: cron(...), rate(...), a crontab line, or off")
		timeZone      = fs.String("time-zone", "UTC", "the `zone` the schedules' times are in (an IANA name, or Local)")
		keep          = fs.Int("keep", bake.DefaultRetentionKeep, "retention keeps each recipe's newest `N` builds (a recipe's kiln:keep-newest tag overrides)")
		maxAge        = fs.Int("max-age", bake.DefaultRetentionDays, "retention deletes images older than `D` days that are neither among the newest nor in use")
		deprecate     = fs.Int("deprecate", 0, "retention deprecates images `D` days before deleting them")
		rebuildMaxAge = fs.Int("rebuild-max-age", bake.DefaultRebuildMaxAgeDays, "the rebuild job rebakes a recipe whose newest image is `D` days old (0: never by age)")
		poll          = fs.Duration("poll", local.DefaultPoll, "how often to list the bucket for uploads")
		grace         = fs.Duration("grace", local.DefaultGrace, "how long Ctrl-C waits for running bakes to clean up before aborting them")
		timeScale     = fs.Float64("time-scale", 1, "compress the state machine's waits by this factor")
		verbose       = fs.Bool("v", false, "show every stage log line and every retention decision")
		fireNow       listFlag
		regions       listFlag
	)
	fs.Var(&fireNow, "fire-now", "run a job once at the start: rebuild, retention or all (repeatable)")
	fs.Var(&regions, "region", "a `Region` retention looks in; repeat for several (default $KILN_REGIONS, else "+local.DefaultRegion+")")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: kiln serve --local [--rebuild-schedule EXPR] [--retention-schedule EXPR] [--fire-now JOB]")
		fmt.Fprintln(stderr, "                  [--keep N] [--max-age D] [--region R ...] [--endpoint URL]")
		fmt.Fprintln(stderr, "\nRuns on this machine what the kiln stack runs in AWS: each recipe version uploaded under recipes/")
		fmt.Fprintln(stderr, "in the local bucket (kiln push, or aws s3 cp with AWS_ENDPOINT_URL) starts a bake of that version,")
		fmt.Fprintln(stderr, "once; the rebuild and retention jobs run on their schedules (the stack's by default, in UTC).")
		fmt.Fprintln(stderr, "Ctrl-C interrupts running bakes, waits for their cleanup, and stops everything serve started.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitError{2}
	}
	if !*isLocal {
		return errors.New("kiln serve needs --local: in AWS, the deployed stack is what serves (see docs/deploy.md)")
	}

	// Check every flag before starting anything.
	var errs []error
	loc, err := time.LoadLocation(*timeZone)
	if err != nil {
		errs = append(errs, fmt.Errorf("--time-zone %q: %w", *timeZone, err))
		loc = time.UTC
	}
	parse := func(flagName, expr string) *local.Schedule {
		if strings.EqualFold(expr, "off") || expr == "" {
			return nil
		}
		s, err := local.ParseSchedule(expr, loc)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", flagName, err))
		}
		return s
	}
	opts := local.ServeOptions{
		Rebuild:       parse("rebuild-schedule", *rebuildSched),
		Retention:     parse("retention-schedule", *retentionSch),
		RebuildMaxAge: time.Duration(*rebuildMaxAge) * 24 * time.Hour,
		Policy:        bake.RetentionPolicy{Keep: *keep, MaxAgeDays: *maxAge, DeprecateDays: *deprecate},
		Regions:       regions,
		Poll:          *poll,
		Grace:         *grace,
		Bake:          local.BakeOptions{TimeScale: *timeScale},
	}
	for _, j := range fireNow {
		for j := range strings.SplitSeq(j, ",") {
			switch j = strings.TrimSpace(j); j {
			case "all":
				opts.FireNow = append(opts.FireNow, local.Jobs...)
			case local.JobRebuild, local.JobRetention:
				opts.FireNow = append(opts.FireNow, j)
			default:
				errs = append(errs, fmt.Errorf("--fire-now %q: want rebuild, retention or all", j))
			}
		}
	}
	slices.Sort(opts.FireNow)
	opts.FireNow = slices.Compact(opts.FireNow)
	if len(opts.Regions) == 0 {
		opts.Regions = defaultRegions()
	}
	if err := opts.Policy.Validate(); err != nil {
		errs = append(errs, err)
	}
	if *rebuildMaxAge < 0 {
		errs = append(errs, fmt.Errorf("--rebuild-max-age %d: want 0 or more days", *rebuildMaxAge))
	}
	if *poll <= 0 || *grace <= 0 || *timeScale <= 0 {
		errs = append(errs, errors.New("--poll, --grace and --time-scale must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	out := &lockedWriter{w: stdout}
	pr := newServePrinter(out, *verbose)
	cloud, err := local.Start(ctx, local.Options{Endpoint: *endpoint, Bucket: *bucket, Log: io.Discard})
	if err != nil {
		return err
	}
	// Closing stops every sandbox and, when serve started it, moto.
	defer cloud.Close()
	pr.intro(cloud, opts)

	opts.Report = pr.event
	opts.Progress = pr.progress
	opts.JobLog = &jobLog{p: pr}
	abort := make(chan struct{})
	opts.Abort = abort
	srv, err := local.NewServer(cloud, opts)
	if err != nil {
		return err
	}
	// The first Ctrl-C (or SIGTERM) stops serve cleanly; a second one
	// stops waiting for the bakes' cleanup.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	served := make(chan struct{})
	defer close(served)
	go func() {
		for n := 0; ; {
			select {
			case <-sigs:
				if n++; n == 2 {
					pr.line.printf("interrupted again: aborting the running bakes without waiting for their cleanup\n")
					close(abort)
					return
				}
			case <-served:
				return
			}
		}
	}()
	runErr := srv.Run(ctx)
	what := "the sandboxes"
	if !cloud.External() {
		what += " and moto"
		if runErr != nil {
			what += ", and with it what the aborted bakes left"
		}
	}
	pr.line.printf("stopping %s\n", what)
	if err := cloud.Close(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if runErr != nil {
		return runErr
	}
	pr.line.printf("stopped: nothing kiln serve started is running\n")
	return nil
}

// lockedWriter makes each Write whole: concurrent bakes print whole lines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// taggedWriter writes each whole line with tag after its "[mm:ss.s] "
// timestamp (adding the timestamp to lines without one), so the lines of
// concurrent bakes and jobs say whose they are. Partial lines wait for
// their end; empty lines are dropped.
type taggedWriter struct {
	mu    sync.Mutex
	w     io.Writer
	tag   string
	start time.Time
	buf   []byte
}

func (t *taggedWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	var out bytes.Buffer
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			break
		}
		line := string(t.buf[:i])
		t.buf = t.buf[i+1:]
		if strings.TrimSpace(line) == "" {
			continue
		}
		stamp, rest := "", line
		if strings.HasPrefix(line, "[") {
			if j := strings.Index(line, "] "); j > 0 {
				stamp, rest = line[:j+2], line[j+2:]
			}
		}
		if stamp == "" {
			stamp = timestamp(time.Since(t.start)) + " "
		}
		out.WriteString(stamp + t.tag + " " + rest + "\n")
	}
	if out.Len() > 0 {
		if _, err := t.w.Write(out.Bytes()); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// timestamp renders elapsed time as progress does.
func timestamp(el time.Duration) string {
	return fmt.Sprintf("[%02d:%04.1f]", int(el.Minutes()), el.Seconds()-60*float64(int(el.Minutes())))
}

// servePrinter prints what kiln serve sees and does: its events, each
// bake's progress tagged with its build ID, and the jobs' decisions.
type servePrinter struct {
	out     io.Writer
	start   time.Time
	verbose bool
	line    *progress // serve's own lines

	mu    sync.Mutex
	bakes map[string]*bakeProgress
}

type bakeProgress struct {
	p       *progress
	started time.Time
}

func newServePrinter(out io.Writer, verbose bool) *servePrinter {
	start := time.Now()
	return &servePrinter{
		out: out, start: start, verbose: verbose,
		line:  &progress{w: out, start: start, redact: noRedact},
		bakes: map[string]*bakeProgress{},
	}
}

func noRedact(s string) string { return s }

// plural is "1 bake" or "2 bakes".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// tagged returns a progress printer whose lines carry tag.
func (s *servePrinter) tagged(tag string) *progress {
	return &progress{w: &taggedWriter{w: s.out, tag: tag, start: s.start}, start: s.start, verbose: s.verbose, redact: noRedact}
}

// intro says where AWS is, how to upload, and when the jobs run.
func (s *servePrinter) intro(c *local.Cloud, opts local.ServeOptions) {
	w := s.out
	where := "a local moto at " + c.Endpoint()
	if c.External() {
		where = "the emulator at " + c.Endpoint() + " ($AWS_ENDPOINT_URL or --endpoint)"
	}
	prefix := "s3://" + c.Bucket() + "/" + bake.RecipePrefix
	fmt.Fprintf(w, "kiln serve: AWS is %s; the instances are sandboxes on 127.0.0.1.\n", where)
	fmt.Fprintf(w, "Upload a recipe under %s to bake it (moto takes any credentials):\n", prefix)
	fmt.Fprintf(w, "  AWS_ENDPOINT_URL=%s aws s3 cp recipe.pkr.hcl %s\n", c.Endpoint(), prefix)
	fmt.Fprintf(w, "  AWS_ENDPOINT_URL=%s kiln push recipe.pkr.hcl   (a folder is bundled)\n", c.Endpoint())
	fmt.Fprintf(w, "The bucket is listed every %s: the local stand-in for the stack's S3 → EventBridge rule.\n", opts.Poll)
	now := time.Now()
	for _, j := range []struct {
		name  string
		sched *local.Schedule
		what  string
	}{
		{local.JobRebuild, opts.Rebuild, fmt.Sprintf("rebakes recipes whose base image or content changed, or older than %s", maxAgeText(int(opts.RebuildMaxAge.Hours()/24)))},
		{local.JobRetention, opts.Retention, fmt.Sprintf("keeps the newest %d builds, deletes images older than %d days, in %s", opts.Policy.Keep, opts.Policy.MaxAgeDays, strings.Join(opts.Regions, ", "))},
	} {
		when := "off"
		if j.sched != nil {
			next := "never"
			switch n := j.sched.First(now); {
			case n.IsZero():
			case !n.After(now):
				next = "now"
			default:
				next = n.In(j.sched.Location()).Format("2006-01-02 15:04 MST")
			}
			when = fmt.Sprintf("%s, next %s", j.sched, next)
		}
		if slices.Contains(opts.FireNow, j.name) {
			when += "; and now (--fire-now)"
		}
		fmt.Fprintf(w, "Schedule %-9s %s: %s.\n", j.name, when, j.what)
	}
	fmt.Fprintln(w, "Ctrl-C stops: running bakes are interrupted and cleaned up, then everything serve started stops.")
	fmt.Fprintln(w)
}

// progress gives a bake its printer: serve's progress printer, tagged
// with the bake's name.
func (s *servePrinter) progress(name string, _ bake.State) (asl.Observer, slog.Handler) {
	p := s.tagged(name)
	s.mu.Lock()
	s.bakes[name] = &bakeProgress{p: p, started: time.Now()}
	s.mu.Unlock()
	return p, p
}

// event prints one of the server's events.
func (s *servePrinter) event(ev local.ServeEvent) {
	l := s.line
	switch ev.Kind {
	case local.EventWatching:
		if ev.Count == 0 {
			l.printf("watching for uploads\n")
			return
		}
		l.printf("watching for uploads (%s already there: not baked now; the rebuild job looks at them)\n", plural(ev.Count, "recipe version"))
	case local.EventUpload:
		l.printf("event: Object Created s3://%s/%s version %s\n", ev.Recipe.Bucket, ev.Recipe.Key, ev.Recipe.Version)
	case local.EventBakeStarted:
		why := "for the upload"
		if ev.Trigger != "" {
			why = "by the rebuild job (" + ev.Trigger + ")"
		}
		l.printf("started bake %s of %s version %s %s\n", ev.Build, ev.Recipe.Key, ev.Recipe.Version, why)
	case local.EventBakeNotStarted:
		switch {
		case errors.Is(ev.Err, bake.ErrBakeExists):
			l.printf("no bake: build %s of this version was started before (%v)\n", ev.Build, ev.Err)
		case errors.Is(ev.Err, local.ErrStopping):
			l.printf("no bake of %s version %s: serve is stopping\n", ev.Recipe.Key, ev.Recipe.Version)
		default:
			l.printf("could not start bake %s: %v\n", ev.Build, ev.Err)
		}
	case local.EventBakeEnded:
		s.ended(ev)
	case local.EventJobStarted:
		l.printf("event: schedule %s fired (%s)\n", ev.Job, ev.Why)
	case local.EventJobEnded:
		s.jobEnded(ev)
	case local.EventWatchFailed:
		l.printf("warning: %v (trying again)\n", ev.Err)
	case local.EventStopping:
		if len(ev.Running) == 0 {
			l.printf("stopping: no bake is running\n")
			return
		}
		l.printf("stopping: interrupting %s (%s); waiting for cleanup (Ctrl-C again to abort)\n", plural(len(ev.Running), "running bake"), strings.Join(ev.Running, ", "))
	}
}

// ended prints a bake's summary, tagged with its name.
func (s *servePrinter) ended(ev local.ServeEvent) {
	s.mu.Lock()
	bp := s.bakes[ev.Build]
	delete(s.bakes, ev.Build)
	s.mu.Unlock()
	if bp == nil {
		bp = &bakeProgress{p: s.tagged(ev.Build), started: time.Now()}
	}
	switch res := ev.Result; {
	case res != nil && res.Execution.Status == asl.StatusAborted:
		bp.p.printf("Bake aborted before its cleanup finished.\n")
		if left := res.Left.All(); len(left) > 0 {
			bp.p.printf("LEFT BEHIND (tagged %s=%s): %s\n", bake.TagBuild, ev.Build, strings.Join(left, ", "))
		}
	case res != nil:
		// summary's error is the exit status of `kiln bake`: here the
		// summary says it all.
		_ = bp.p.summary(res, time.Since(bp.started))
	}
	if ev.Err != nil {
		bp.p.printf("error: %v\n", ev.Err)
	}
}

// jobEnded prints what a job decided and did.
func (s *servePrinter) jobEnded(ev local.ServeEvent) {
	p := s.tagged(ev.Job)
	if r := ev.Rebuild; r != nil {
		switch {
		case len(r.Decisions) > 0:
			_ = bake.WriteRebuildTable(p.w, r.Decisions, r.At)
		case ev.Err == nil:
			p.printf("no recipes under %s\n", bake.RecipePrefix)
		}
	}
	if r := ev.Retention; r != nil && !r.At.IsZero() {
		p.printf("%s kept, %d deprecated, %d deleted (with their snapshots)\n", plural(r.Kept, "image"), r.Deprecated, r.Deleted)
		for _, f := range r.Failed {
			p.printf("not done (the next run finishes it): %s\n", f)
		}
	}
	if ev.Err != nil {
		p.printf("failed: %v\n", ev.Err)
	}
}

// jobLog prints the scheduled jobs' log lines: retention's decisions to
// change something (every decision with -v) and warnings. The rebuild
// job's decisions are printed as a table when it ends.
type jobLog struct {
	p     *servePrinter
	attrs []slog.Attr
}

func (j *jobLog) Enabled(context.Context, slog.Level) bool { return true }

func (j *jobLog) Handle(_ context.Context, r slog.Record) error {
	attrs := map[string]string{}
	for _, a := range j.attrs {
		attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	job := attrs["job"]
	switch {
	case r.Message == "retention decision":
		if attrs["action"] == string(bake.RetainKeep) && !j.p.verbose {
			return nil
		}
		what := attrs["image"]
		if what == "" {
			what = attrs["snapshots"]
		}
		j.p.tagged(job).printf("%s %s (%s, %s, build %s): %s\n", attrs["action"], what, attrs["recipe"], attrs["region"], attrs["build"], attrs["reason"])
	case r.Level >= slog.LevelWarn:
		j.p.tagged(job).printf("warning: %s\n", r.Message)
	case j.p.verbose && r.Message != "rebuild decision":
		var extra []string
		for _, k := range slices.Sorted(maps.Keys(attrs)) {
			if k != "job" {
				extra = append(extra, k+"="+attrs[k])
			}
		}
		j.p.tagged(job).printf("  │ %s %s\n", r.Message, strings.Join(extra, " "))
	}
	return nil
}

func (j *jobLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &jobLog{p: j.p, attrs: append(slices.Clone(j.attrs), attrs...)}
}

func (j *jobLog) WithGroup(string) slog.Handler { return j }
