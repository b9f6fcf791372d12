package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/emulator"
)

// serving is a Server running in the background for a test, with every
// event it reported.
type serving struct {
	srv    *Server
	cancel context.CancelFunc
	done   chan error
	logs   *logLines

	mu     sync.Mutex
	events []ServeEvent
}

// serve runs a Server on c until the test ends (or stop), polling the
// bucket briskly and compressing the bakes' waits.
func serve(t *testing.T, c *Cloud, opts ServeOptions) *serving {
	t.Helper()
	s := &serving{done: make(chan error, 1), logs: &logLines{}}
	opts.Report = func(ev ServeEvent) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.events = append(s.events, ev)
	}
	if opts.Poll == 0 {
		opts.Poll = 50 * time.Millisecond
	}
	if opts.Bake.TimeScale == 0 {
		opts.Bake.TimeScale = 0.01
	}
	opts.Progress = func(name string, st bake.State) (asl.Observer, slog.Handler) {
		return nil, s.logs.handler()
	}
	srv, err := NewServer(c, opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	s.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- srv.Run(ctx) }()
	t.Cleanup(func() { s.stop(t) })
	s.waitFor(t, "the watcher", 30*time.Second, func(ev ServeEvent) bool { return ev.Kind == EventWatching })
	return s
}

// stop stops the server as Ctrl-C does and returns Run's error.
func (s *serving) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // for a second stop
		return err
	case <-time.After(90 * time.Second):
		t.Fatalf("Run did not return within 90s of being stopped")
		return nil
	}
}

// waitFor waits for an event matching ok and returns it.
func (s *serving) waitFor(t *testing.T, what string, timeout time.Duration, ok func(ServeEvent) bool) ServeEvent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, ev := range s.all() {
			if ok(ev) {
				return ev
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no event for %s within %s; events:\n%s\nlogs:\n%s", what, timeout, s.describe(), s.logs.text())
	return ServeEvent{}
}

func (s *serving) all() []ServeEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

func (s *serving) count(ok func(ServeEvent) bool) int {
	n := 0
	for _, ev := range s.all() {
		if ok(ev) {
			n++
		}
	}
	return n
}

func (s *serving) describe() string {
	var b strings.Builder
	for _, ev := range s.all() {
		fmt.Fprintf(&b, "  %s %s %s %s %s", ev.Kind, ev.Build, ev.Recipe.Key, ev.Recipe.Version, ev.Job)
		if ev.Result != nil {
			fmt.Fprintf(&b, " %s %s %s", ev.Result.Execution.Status, ev.Result.Execution.Error, ev.Result.Execution.Cause)
		}
		if ev.Err != nil {
			fmt.Fprintf(&b, " err=%v", ev.Err)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func is(kind ServeEventKind, ref bake.RecipeRef) func(ServeEvent) bool {
	return func(ev ServeEvent) bool { return ev.Kind == kind && ev.Recipe == ref }
}

// recipeImages lists the kiln images of recipe in us-east-1.
func recipeImages(t *testing.T, c *Cloud, recipe string) []string {
	t.Helper()
	out, err := c.EC2(DefaultRegion).DescribeImages(context.Background(), &ec2.DescribeImagesInput{
		Owners:  []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("tag:" + bake.TagRecipe), Values: []string{recipe}}},
	})
	if err != nil {
		t.Fatalf("DescribeImages(kiln:recipe=%s) = %v", recipe, err)
	}
	var ids []string
	for _, img := range out.Images {
		ids = append(ids, aws.ToString(img.ImageId))
	}
	return ids
}

// TestServeBakesEachUploadOnce: an upload starts exactly one bake of that
// object version, though the watcher lists it every poll; the same version
// delivered again (EventBridge delivers at least once) starts nothing, in
// this server (by name) and in a new one that remembers nothing (by the
// stored plan), and an execution of it under another name ends at the
// plan step's claim, as in AWS; each new version starts its own bake, and
// bakes run at once.
func TestServeBakesEachUploadOnce(t *testing.T) {
	c := newCloud(t)
	ctx := context.Background()
	s := serve(t, c, ServeOptions{})
	recipe := filepath.Join("testdata", "serve", "hello.pkr.hcl")

	ref1, err := c.Upload(ctx, recipe)
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	ended := s.waitFor(t, "the first bake", 90*time.Second, is(EventBakeEnded, ref1))
	if ended.Err != nil || !ended.Result.Succeeded() {
		t.Fatalf("bake of %s: %v %+v\nlogs:\n%s", ref1.Version, ended.Err, ended.Result.Execution, s.logs.text())
	}
	if want := bake.NewBuildID(ref1, nil, "", ""); ended.Build != want || ended.Result.State.BuildID != want {
		t.Errorf("bake name %s, build %s; want both %s (the upload's build ID)", ended.Build, ended.Result.State.BuildID, want)
	}
	if left := ended.Result.Left.Temporaries(); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if !strings.Contains(s.logs.text(), "hello from the sandbox") {
		t.Errorf("the provisioner's output is not in the bake's log:\n%s", s.logs.text())
	}
	// Many polls listed the version; it was one event and one bake.
	if n := s.count(is(EventUpload, ref1)); n != 1 {
		t.Errorf("%d upload events for %s, want 1", n, ref1.Version)
	}
	if n := s.count(is(EventBakeStarted, ref1)); n != 1 {
		t.Errorf("%d bakes started for %s, want 1", n, ref1.Version)
	}
	if imgs := recipeImages(t, c, "hello"); len(imgs) != 1 {
		t.Fatalf("images of hello = %v, want 1", imgs)
	}

	// The same event again: refused by name.
	if name, err := s.srv.Deliver(ctx, ref1); !errors.Is(err, bake.ErrBakeExists) {
		t.Errorf("Deliver(%s) again = %q, %v; want ErrBakeExists", ref1.Version, name, err)
	}
	// And by a server that never saw it, from the plan in the bucket.
	fresh, err := NewServer(c, ServeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if name, err := fresh.Deliver(ctx, ref1); !errors.Is(err, bake.ErrBakeExists) || !strings.Contains(err.Error(), "plan") {
		t.Errorf("a new server's Deliver(%s) = %q, %v; want ErrBakeExists naming the stored plan", ref1.Version, name, err)
	}

	// In AWS a repeated event starts an execution under a generated name,
	// and the plan step's claim ends it: the same here.
	again := bake.NewBuildID(ref1, nil, "", "") + "-redelivered"
	if _, err := s.srv.Bakes().StartBake(ctx, again, bake.State{Recipe: ref1}); err != nil {
		t.Fatalf("StartBake(%s) = %v", again, err)
	}
	dup := s.waitFor(t, "the redelivered execution", 60*time.Second, func(ev ServeEvent) bool { return ev.Kind == EventBakeEnded && ev.Build == again })
	if dup.Err != nil || !dup.Result.Succeeded() || dup.Result.State.DuplicateOf == "" {
		t.Errorf("execution %s: %v %+v, duplicate of %q; want it to end in AlreadyBaking", again, dup.Err, dup.Result.Execution.Status, dup.Result.State.DuplicateOf)
	}
	if imgs := recipeImages(t, c, "hello"); len(imgs) != 1 {
		t.Fatalf("images of hello after a redelivery = %v, want still 1", imgs)
	}

	// Two new versions at once: two bakes, running together.
	ref2, err := c.Upload(ctx, recipe)
	if err != nil {
		t.Fatal(err)
	}
	ref3, err := c.Upload(ctx, recipe)
	if err != nil {
		t.Fatal(err)
	}
	if ref2.Version == ref1.Version || ref3.Version == ref2.Version {
		t.Fatalf("versions %s, %s, %s: the bucket is not versioned", ref1.Version, ref2.Version, ref3.Version)
	}
	for _, ref := range []bake.RecipeRef{ref2, ref3} {
		ev := s.waitFor(t, "the bake of "+ref.Version, 90*time.Second, is(EventBakeEnded, ref))
		if ev.Err != nil || !ev.Result.Succeeded() {
			t.Fatalf("bake of %s: %v %+v\nlogs:\n%s", ref.Version, ev.Err, ev.Result.Execution, s.logs.text())
		}
	}
	var order []string
	for _, ev := range s.all() {
		if (ev.Kind == EventBakeStarted || ev.Kind == EventBakeEnded) && ev.Recipe != ref1 {
			order = append(order, string(ev.Kind))
		}
	}
	if !slices.Equal(order[:2], []string{string(EventBakeStarted), string(EventBakeStarted)}) {
		t.Errorf("events %v: want both bakes started before either ended", order)
	}
	if imgs := recipeImages(t, c, "hello"); len(imgs) != 3 {
		t.Errorf("images of hello = %v, want 3: one per version", imgs)
	}
	if err := s.stop(t); err != nil {
		t.Errorf("Run = %v after stopping with nothing running", err)
	}
}

// TestServeFiresRetentionNow: --fire-now retention runs the retention job
// at once, which deletes an old image and keeps the newest.
func TestServeFiresRetentionNow(t *testing.T) {
	c := newCloud(t)
	old := seedImage(t, c, "tidy", "tidy-old", time.Now().AddDate(0, 0, -200))
	newest := seedImage(t, c, "tidy", "tidy-new", time.Now().AddDate(0, 0, -1))
	s := serve(t, c, ServeOptions{FireNow: []string{JobRetention}, Policy: bake.RetentionPolicy{Keep: 1, MaxAgeDays: 30}})
	ended := s.waitFor(t, "the retention run", 30*time.Second, func(ev ServeEvent) bool { return ev.Kind == EventJobEnded })
	if ended.Job != JobRetention || ended.Why != "--fire-now" || ended.Err != nil {
		t.Fatalf("job ended: %s (%s): %v", ended.Job, ended.Why, ended.Err)
	}
	if r := ended.Retention; r.Deleted != 1 || r.Kept != 1 {
		t.Errorf("retention = %+v, want 1 deleted and 1 kept", r)
	}
	if imgs := recipeImages(t, c, "tidy"); !slices.Equal(imgs, []string{newest}) {
		t.Errorf("images of tidy = %v, want only %s (%s was old)", imgs, newest, old)
	}
	if n := s.count(func(ev ServeEvent) bool { return ev.Kind == EventJobStarted && ev.Job == JobRebuild }); n != 0 {
		t.Errorf("the rebuild job fired %d times; only retention was asked for", n)
	}
}

// TestServeRebuildUsesLocalBakes: the rebuild job, fired in serve, starts
// its bakes through the local Bakes (named by the decision's build ID, with
// its trigger), decides "up to date" once the image exists, and skips a
// recipe whose bake is running.
func TestServeRebuildUsesLocalBakes(t *testing.T) {
	c := newCloud(t)
	ctx := context.Background()
	// In the bucket before serve starts: no upload event bakes it.
	ref, err := c.Upload(ctx, filepath.Join("testdata", "serve", "hello.pkr.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, c, ServeOptions{})
	if ev := s.waitFor(t, "the watcher", time.Second, func(ev ServeEvent) bool { return ev.Kind == EventWatching }); ev.Count != 1 {
		t.Errorf("watching with %d versions there, want 1", ev.Count)
	}

	decisions := func() []bake.RebuildDecision {
		t.Helper()
		if err := s.srv.Fire(ctx, JobRebuild, "test"); err != nil {
			t.Fatalf("Fire(rebuild) = %v", err)
		}
		evs := s.all()
		for i := len(evs) - 1; i >= 0; i-- {
			if evs[i].Kind == EventJobEnded && evs[i].Job == JobRebuild {
				return evs[i].Rebuild.Decisions
			}
		}
		t.Fatalf("Fire(rebuild) reported no end")
		return nil
	}
	ds := decisions()
	if len(ds) != 1 || ds[0].Action != bake.RebuildBake || ds[0].Status != "started" || ds[0].Ref != ref {
		t.Fatalf("first rebuild decisions = %+v, want one started bake of %s", ds, ref.Version)
	}
	ended := s.waitFor(t, "the rebuild's bake", 90*time.Second, is(EventBakeEnded, ref))
	if ended.Err != nil || !ended.Result.Succeeded() {
		t.Fatalf("rebuild bake: %v %+v\nlogs:\n%s", ended.Err, ended.Result.Execution, s.logs.text())
	}
	if ended.Build != ds[0].BuildID || ended.Trigger != ds[0].Trigger || ended.Result.State.BuildID != ds[0].BuildID {
		t.Errorf("bake %s (trigger %q, build %s), want the decision's %s (%q)", ended.Build, ended.Trigger, ended.Result.State.BuildID, ds[0].BuildID, ds[0].Trigger)
	}
	if ds := decisions(); len(ds) != 1 || ds[0].Action != bake.RebuildSkip || !strings.Contains(ds[0].Reason, "up to date") {
		t.Errorf("second rebuild decisions = %+v, want hello up to date", ds)
	}

	// A recipe with a bake running is skipped.
	slow, err := c.Upload(ctx, filepath.Join("testdata", "serve", "slow.pkr.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	started := s.waitFor(t, "the upload's bake", 30*time.Second, is(EventBakeStarted, slow))
	if running, _ := s.srv.Bakes().RunningBakes(ctx, bake.RecipeRef{Bucket: slow.Bucket, Key: slow.Key}); !slices.Equal(running, []string{started.Build}) {
		t.Errorf("RunningBakes(%s) = %v, want [%s]", slow.Key, running, started.Build)
	}
	for _, d := range decisions() {
		if d.Recipe == "slow" && (d.Action != bake.RebuildSkip || !strings.Contains(d.Reason, "a bake is running: "+started.Build)) {
			t.Errorf("rebuild decision for slow = %s: %s; want skip, its bake running", d.Action, d.Reason)
		}
	}
}

// seedImage makes an image as a bake of recipe would have, built at.
func seedImage(t *testing.T, c *Cloud, recipe, build string, builtAt time.Time) string {
	t.Helper()
	ctx := context.Background()
	e := c.EC2(DefaultRegion)
	run, err := e.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-785db401"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatalf("RunInstances: %v", err)
	}
	id := run.Instances[0].InstanceId
	img, err := e.CreateImage(ctx, &ec2.CreateImageInput{
		InstanceId: id, Name: aws.String(build),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: []ec2types.Tag{
			{Key: aws.String(bake.TagBuild), Value: aws.String(build)},
			{Key: aws.String(bake.TagRecipe), Value: aws.String(recipe)},
			{Key: aws.String(bake.TagBuiltAt), Value: aws.String(builtAt.UTC().Format(time.RFC3339))},
		}}},
	})
	if err != nil {
		t.Fatalf("CreateImage(%s): %v", build, err)
	}
	if _, err := e.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{aws.ToString(id)}}); err != nil {
		t.Fatalf("TerminateInstances: %v", err)
	}
	return aws.ToString(img.ImageId)
}

// TestServeStopsCleanly: stopping serve (Ctrl-C) while a provisioner runs
// interrupts the bake, which goes through cleanup: it ends failed with
// Interrupted, nothing of the build is left, and once the cloud is closed
// no emulator or sandbox process serve started is left running.
func TestServeStopsCleanly(t *testing.T) {
	needSandbox(t)
	if _, external := emulator.ExternalEndpoint(); external {
		t.Skip("SKIPPING: the test starts its own moto, and AWS_ENDPOINT_URL names one to use instead")
	}
	before := descendants(t)
	c, err := Start(context.Background(), Options{})
	if err != nil {
		if errors.Is(err, emulator.ErrSetup) {
			t.Skipf("SKIPPING: moto is not available: %v", err)
		}
		t.Fatalf("Start: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			c.Close()
		}
	})
	s := serve(t, c, ServeOptions{Grace: time.Minute})
	ref, err := c.Upload(context.Background(), filepath.Join("testdata", "serve", "slow.pkr.hcl"))
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(s.logs.text(), "provisioning has begun") {
		if time.Now().After(deadline) {
			t.Fatalf("the provisioner did not start within 60s; events:\n%s\nlogs:\n%s", s.describe(), s.logs.text())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := c.Sandboxes(); n != 1 {
		t.Fatalf("%d sandboxes while provisioning, want 1", n)
	}

	stopped := time.Now()
	if err := s.stop(t); err != nil {
		t.Errorf("Run = %v, want a clean stop", err)
	}
	if d := time.Since(stopped); d > 30*time.Second {
		t.Errorf("stopping took %s, with a two-minute provisioner cut short", d)
	}
	stopping := s.waitFor(t, "stopping", time.Second, func(ev ServeEvent) bool { return ev.Kind == EventStopping })
	if want := []string{bake.NewBuildID(ref, nil, "", "")}; !slices.Equal(stopping.Running, want) {
		t.Errorf("stopping with running %v, want %v", stopping.Running, want)
	}
	ended := s.waitFor(t, "the bake's end", time.Second, is(EventBakeEnded, ref))
	if ended.Err != nil {
		t.Fatalf("bake: %v", ended.Err)
	}
	res := ended.Result
	if res.Execution.Status != asl.StatusFailed || res.Execution.Error != "Interrupted" {
		t.Errorf("bake ended %s %s: %s; want FAILED Interrupted", res.Execution.Status, res.Execution.Error, res.Execution.Cause)
	}
	if res.State.Cleanup == nil {
		t.Errorf("the bake ended without cleanup's report")
	}
	if strings.Contains(s.logs.text(), "too late") {
		t.Errorf("the provisioner ran on after the interrupt:\n%s", s.logs.text())
	}
	if left := res.Left.All(); len(left) > 0 {
		t.Errorf("left behind: %v\nlogs:\n%s", left, s.logs.text())
	}
	if n := c.Sandboxes(); n != 0 {
		t.Errorf("%d sandboxes still running after the bake", n)
	}
	if _, err := s.srv.Deliver(context.Background(), ref); !errors.Is(err, ErrStopping) && !errors.Is(err, bake.ErrBakeExists) {
		t.Errorf("Deliver after stopping = %v, want a refusal", err)
	}

	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	closed = true
	deadline = time.Now().Add(10 * time.Second)
	for {
		var extra []string
		for pid, cmd := range descendants(t) {
			if _, ok := before[pid]; !ok {
				extra = append(extra, fmt.Sprintf("%d %s", pid, cmd))
			}
		}
		if len(extra) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left running: %v", extra)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServeAbortsWhenTold: when stopping must not wait (a second Ctrl-C,
// or past Grace), running bakes are aborted where they are, and Run says
// which.
func TestServeAbortsWhenTold(t *testing.T) {
	c := newCloud(t)
	abort := make(chan struct{})
	s := serve(t, c, ServeOptions{Abort: abort})
	ref, err := c.Upload(context.Background(), filepath.Join("testdata", "serve", "slow.pkr.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	started := s.waitFor(t, "the bake", 30*time.Second, is(EventBakeStarted, ref))
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(s.logs.text(), "provisioning has begun") {
		if time.Now().After(deadline) {
			t.Fatalf("the provisioner did not start within 60s; logs:\n%s", s.logs.text())
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(abort)
	err = s.stop(t)
	if err == nil || !strings.Contains(err.Error(), started.Build) {
		t.Errorf("Run = %v, want it to name the aborted bake %s", err, started.Build)
	}
	ended := s.waitFor(t, "the bake's end", time.Second, is(EventBakeEnded, ref))
	if ended.Result == nil || ended.Result.Execution.Status != asl.StatusAborted {
		t.Errorf("bake ended %+v, %v; want ABORTED", ended.Result, ended.Err)
	}
}

// descendants returns this process's live descendants: pid → command line.
func descendants(t *testing.T) map[int]string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	parent := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			parent[pid] = ppid
		}
	}
	out := map[int]string{}
	self := os.Getpid()
	for pid := range parent {
		for p := parent[pid]; p != 0; p = parent[p] {
			if p == self {
				cmd, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
				out[pid] = strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " ")
				break
			}
			if _, ok := parent[p]; !ok {
				break
			}
		}
	}
	return out
}

// fakeVersions is a versioned bucket's object listing that a test adds
// versions to, as uploads would.
type fakeVersions struct {
	mu       sync.Mutex
	versions []s3types.ObjectVersion
	markers  []s3types.DeleteMarkerEntry
	n        int
}

func (f *fakeVersions) put(key string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	v := fmt.Sprintf("v%02d", f.n)
	f.versions = append(f.versions, s3types.ObjectVersion{
		Key: aws.String(key), VersionId: aws.String(v),
		LastModified: aws.Time(time.Date(2026, 11, 22, 10, 0, f.n, 0, time.UTC)),
	})
	return v
}

func (f *fakeVersions) ListObjectVersions(_ context.Context, in *s3.ListObjectVersionsInput, _ ...func(*s3.Options)) (*s3.ListObjectVersionsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &s3.ListObjectVersionsOutput{DeleteMarkers: f.markers}
	// Newest first within a key, as S3 lists them.
	for i := len(f.versions) - 1; i >= 0; i-- {
		if v := f.versions[i]; strings.HasPrefix(aws.ToString(v.Key), aws.ToString(in.Prefix)) {
			out.Versions = append(out.Versions, v)
		}
	}
	return out, nil
}

// TestWatcherReportsEachVersionOnce: versions there before the baseline
// are not events; each later version is one, oldest first, however often
// it is listed; delete markers and other prefixes are not.
func TestWatcherReportsEachVersionOnce(t *testing.T) {
	ctx := context.Background()
	f := &fakeVersions{}
	f.put("recipes/old.pkr.hcl")
	w := &Watcher{S3: f, Bucket: "kiln-local", Prefix: bake.RecipePrefix}
	if n, err := w.Baseline(ctx); err != nil || n != 1 {
		t.Fatalf("Baseline = %d, %v; want 1", n, err)
	}
	a := f.put("recipes/web.pkr.hcl")
	b := f.put("recipes/web.pkr.hcl")
	f.put("builds/x/plan.json")
	f.markers = append(f.markers, s3types.DeleteMarkerEntry{Key: aws.String("recipes/old.pkr.hcl"), VersionId: aws.String("m1")})
	got, err := w.Poll(ctx)
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	want := []bake.RecipeRef{
		{Bucket: "kiln-local", Key: "recipes/web.pkr.hcl", Version: a},
		{Bucket: "kiln-local", Key: "recipes/web.pkr.hcl", Version: b},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Poll = %v, want %v", got, want)
	}
	for range 3 {
		if got, err := w.Poll(ctx); err != nil || len(got) != 0 {
			t.Errorf("Poll again = %v, %v; want nothing new", got, err)
		}
	}
	c := f.put("recipes/app.tar.gz")
	if got, _ := w.Poll(ctx); !slices.Equal(got, []bake.RecipeRef{{Bucket: "kiln-local", Key: "recipes/app.tar.gz", Version: c}}) {
		t.Errorf("Poll after another upload = %v, want only %s", got, c)
	}
}

// TestInterruptedErrorName pins the error name the state machine records
// for an interrupted stage.
func TestInterruptedErrorName(t *testing.T) {
	if got := asl.ErrorName(&Interrupted{Function: "provision", Reason: "stopping"}); got != "Interrupted" {
		t.Errorf("ErrorName(*Interrupted) = %q, want Interrupted", got)
	}
}
