package local

// Issue 4's timing target and issue 8's benchmark, in simulated time: the
// state machine, the stages and the front share one fake clock in auto
// mode, so every Wait state jumps the clock to its end, every handler takes
// no time at all, and the front makes moto's instances and images take
// AWS's time (awsfront.DefaultTimings) on that clock. A bake's virtual
// duration is then exactly AWS's waits plus what the orchestration adds by
// noticing readiness late, independent of this machine's load.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/awsfront"
	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/emulator"
	"github.com/kiln-dev/kiln/pkg/sandbox"
)

// lambdaMemoryMB is each stage function's memory, as infra/kiln.go deploys
// it, for pricing Lambda time.
var lambdaMemoryMB = map[string]int{"launch": 1024, "provision": 1024, "snapshot": 256, "distribute": 256, "cleanup": 256}

// simStart is the fake clock's start: before any time moto stamps
// (instances' LaunchTime is wall-clock time), so that the stages never take
// moto's clock for theirs.
var simStart = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// simRig is a rig whose front keeps AWS's time on a fake clock.
type simRig struct {
	*rig
	clock *asl.FakeClock
}

func newSimRig(tb testing.TB) *simRig {
	tb.Helper()
	clock := asl.NewFakeClock(simStart)
	clock.SetAuto(true)
	r := newRigs(tb, 1, awsfront.Options{Clock: clock, Timings: awsfront.DefaultTimings})[0]
	return &simRig{rig: r, clock: clock}
}

// awaited is one readiness the bake waited for: when it happened in the
// model and how much later the state machine noticed.
type awaited struct {
	What  string
	Ready time.Duration // the model's duration
	Late  time.Duration // noticed this long after it happened
}

// simBake is a bake in simulated time.
type simBake struct {
	res *BakeResult
	// Wall is the execution's virtual duration; Published is when its
	// images were published (Publish ended), cleanup's time excluded.
	Wall, Published time.Duration
	// Floor is the critical path of AWS work in the model: the instance
	// running, stopped, the image available and the slowest copy.
	Floor   time.Duration
	Awaited []awaited
	// Transitions by state name.
	Transitions map[string]int
	// EC2 counts the execution's EC2 calls by action.
	EC2 map[string]int
	// Handler is each function's real run time, for Lambda GB-seconds.
	Handler     map[string]time.Duration
	Invocations int
	gbs         float64
}

// GBSeconds prices the handlers' real run time at the functions' memory,
// each invocation rounded up to the millisecond as Lambda bills.
func (s simBake) GBSeconds() float64 {
	return s.gbs
}

// handlerClock measures each handler's real run time.
type handlerClock struct {
	mu          sync.Mutex
	byFunction  map[string]time.Duration
	gbs         float64
	invocations int
}

func (h *handlerClock) wrap(f string, next asl.Handler) asl.Handler {
	return func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		start := time.Now()
		out, err := next(ctx, in)
		d := time.Since(start)
		billed := (d + time.Millisecond - 1).Truncate(time.Millisecond)
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.byFunction == nil {
			h.byFunction = map[string]time.Duration{}
		}
		h.byFunction[f] += d
		h.gbs += billed.Seconds() * float64(lambdaMemoryMB[f]) / 1024
		h.invocations++
		return out, err
	}
}

// floorOf is the model's critical path for a build with copies or not.
func floorOf(t awsfront.Timings, copies bool) time.Duration {
	f := t.Running + t.Stopped + t.Image
	if copies {
		f += t.Copy
	}
	return f
}

// bake runs one bake of recipe in simulated time, with AWS taking t.
func (s *simRig) bake(tb testing.TB, c *Cloud, recipe string, vars map[string]string, t awsfront.Timings) simBake {
	tb.Helper()
	s.front.Reset()
	s.front.SetTimings(t)
	var hc handlerClock
	win := &window{front: s.front}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := c.Bake(ctx, recipe, BakeOptions{
		Vars:     vars,
		Expect:   bake.AWSTimings,
		Clock:    s.clock,
		Wrap:     hc.wrap,
		Observer: win,
	})
	if err != nil {
		tb.Fatalf("Bake(%s): %v", recipe, err)
	}
	x := res.Execution
	if !res.Succeeded() {
		tb.Fatalf("Bake(%s) ended %s: %s: %s", recipe, x.Status, x.Error, causeMessage(x.Cause))
	}
	out := simBake{
		res:         res,
		Wall:        x.StopTime.Sub(x.StartTime),
		Floor:       floorOf(t, len(res.State.Copies) > 0),
		Transitions: map[string]int{},
		EC2:         map[string]int{},
		Handler:     hc.byFunction,
		Invocations: hc.invocations,
		gbs:         hc.gbs,
	}
	for _, ev := range x.History {
		out.Transitions[ev.State]++
	}
	for _, call := range s.front.Calls()[win.from:win.to] {
		if a, ok := strings.CutPrefix(call.Action, "ec2:"); ok {
			out.EC2[a]++
		}
	}
	// When each awaited thing became ready, and when the state machine
	// moved on past its wait.
	entered := func(state string, last bool) time.Time {
		var at time.Time
		for _, ev := range x.History {
			if ev.State == state && ev.Scope == "" && (at.IsZero() || last) {
				at = ev.Entered
			}
		}
		return at
	}
	exited := func(state string) time.Time {
		var at time.Time
		for _, ev := range x.History {
			if ev.State == state && ev.Scope == "" {
				at = ev.Exited
			}
		}
		return at
	}
	note := func(what string, d time.Duration, started, noticed time.Time) {
		if !started.IsZero() && !noticed.IsZero() {
			out.Awaited = append(out.Awaited, awaited{what, d, noticed.Sub(started) - d})
		}
	}
	note("instance running", t.Running, exited("Launch"), entered("Provision", false))
	note("instance stopped", t.Stopped, exited("StopInstance"), entered("CreateImage", false))
	note("image available", t.Image, exited("CreateImage"), entered("CopyToRegions", false))
	if len(res.State.Copies) > 0 {
		note("copies available", t.Copy, exited("CopyToRegions"), entered("Publish", false))
	}
	out.Published = exited("Publish").Sub(x.StartTime)
	return out
}

// forget deletes what earlier bakes taught kiln about the recipes' timings
// (bake.LearnedTimings), so that the next bake plans its waits around
// kiln's defaults.
func forget(tb testing.TB, c *Cloud) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.S3().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(c.Bucket()), Prefix: aws.String("timings/")})
	if err != nil {
		tb.Fatalf("list learned timings: %v", err)
	}
	for _, o := range out.Contents {
		if _, err := c.S3().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(c.Bucket()), Key: o.Key}); err != nil {
			tb.Fatalf("forget %s: %v", aws.ToString(o.Key), err)
		}
	}
}

// baseline drives a bake's AWS work directly, in the same model and on
// the same clock as the bakes: launch, stop, image, copy to the other
// Regions at once, each wait a poll every second, no state machine and no
// provisioning (which takes no simulated time in a bake either). It
// returns how long that took.
func (s *simRig) baseline(tb testing.TB, regions []string, t awsfront.Timings) time.Duration {
	tb.Helper()
	s.front.Reset()
	s.front.SetTimings(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := func(region string) *ec2.Client {
		cfg, err := emulator.Config(ctx, s.front.URL(), region)
		if err != nil {
			tb.Fatal(err)
		}
		return ec2.NewFromConfig(cfg)
	}
	poll := func(what string, ready func() (bool, error)) {
		for range 3600 {
			ok, err := ready()
			if err != nil {
				tb.Fatalf("baseline: %s: %v", what, err)
			}
			if ok {
				return
			}
			_ = s.clock.Sleep(ctx, time.Second)
		}
		tb.Fatalf("baseline: %s: not ready after an hour", what)
	}
	instanceIs := func(e *ec2.Client, id string, want ec2types.InstanceStateName) func() (bool, error) {
		return func() (bool, error) {
			out, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
			if err != nil {
				return false, err
			}
			return out.Reservations[0].Instances[0].State.Name == want, nil
		}
	}
	imageAvailable := func(e *ec2.Client, id string) func() (bool, error) {
		return func() (bool, error) {
			out, err := e.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
			if err != nil || len(out.Images) == 0 {
				return false, err
			}
			return out.Images[0].State == ec2types.ImageStateAvailable, nil
		}
	}
	start := s.clock.Now()
	home := client(regions[0])
	run, err := home.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-785db401"), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		tb.Fatalf("baseline: RunInstances: %v", err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	poll("instance running", instanceIs(home, id, ec2types.InstanceStateNameRunning))
	if _, err := home.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		tb.Fatalf("baseline: StopInstances: %v", err)
	}
	poll("instance stopped", instanceIs(home, id, ec2types.InstanceStateNameStopped))
	name := fmt.Sprintf("baseline-%d", s.clock.Now().UnixNano())
	img, err := home.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String(name)})
	if err != nil {
		tb.Fatalf("baseline: CreateImage: %v", err)
	}
	ami := aws.ToString(img.ImageId)
	poll("image available", imageAvailable(home, ami))
	copies := map[string]string{}
	for _, region := range regions[1:] {
		out, err := client(region).CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(ami), SourceRegion: aws.String(regions[0]), Name: aws.String(name)})
		if err != nil {
			tb.Fatalf("baseline: CopyImage to %s: %v", region, err)
		}
		copies[region] = aws.ToString(out.ImageId)
	}
	for region, id := range copies {
		poll("copy in "+region+" available", imageAvailable(client(region), id))
	}
	return s.clock.Now().Sub(start)
}

// TestBakeTimingTarget is issue 4's target, in simulated time: with AWS's
// timings (instance running after 30 s, stopped after 45 s, image after
// 120 s, copies after 300 s), a three-Region bake notices each readiness
// within a few seconds, publishes its images and ends within 3% of the sum
// of those waits (cleanup does not wait for the instance's termination: the
// build uses the stack's security group, so nothing depends on it), and
// costs at most 80 state transitions; it logs the transitions per state.
//
// AWS is never on time to the second, so the test also bakes with AWS 7%
// and 40% slower and 15% faster than kiln expects, and logs how a
// recipe's first bake degrades without asserting it (the benchmark reports
// it too): a wait sleeps through 90% of the expected time and then polls
// every couple of seconds, so late work costs three transitions per poll
// and early work is noticed only at the 90% mark. The recipe's second bake
// plans its waits around what the first took (bake.LearnedTimings), and
// must meet the same targets as a bake whose AWS is on time. Nothing here
// depends on this machine's speed: the clock is fake.
func TestBakeTimingTarget(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	s := newSimRig(t)
	c, err := s.reset()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		name   string
		factor float64
		strict bool
		// learned: the bake is the recipe's second, planned around what
		// the first took.
		learned bool
	}{
		{"as expected", 1, true, false},
		{"7% slower", 1.07, false, false},
		{"15% faster", 0.85, false, false},
		{"40% slower", 1.4, false, false},
		{"40% slower, learned", 1.4, true, true},
		{"15% faster, learned", 0.85, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			timings := scaleTimings(awsfront.DefaultTimings, tc.factor)
			forget(t, c)
			if tc.learned {
				first := s.bake(t, c, filepath.Join("testdata", "app"), nil, timings)
				t.Logf("first bake: published / floor = %.4f, %d transitions", ratio(first.Published, first.Floor), first.res.Report.Transitions)
			}
			b := s.bake(t, c, filepath.Join("testdata", "app"), nil, timings)
			base := s.baseline(t, appRegions, timings)
			check := t.Errorf
			if !tc.strict {
				check = t.Logf
			}
			t.Logf("three-Region bake, simulated: images published after %s, execution done after %s; floor %s; the same AWS work driven directly: %s",
				b.Published, b.Wall, b.Floor, base)
			t.Logf("  published / floor = %.4f; execution / floor = %.4f", ratio(b.Published, b.Floor), ratio(b.Wall, b.Floor))
			for _, a := range b.Awaited {
				t.Logf("  %s after %s: noticed %s later", a.What, a.Ready, a.Late)
				if a.Late < 0 || a.Late > 5*time.Second {
					check("%s: noticed %s after it happened, want within a few seconds (at most 5 s)", a.What, a.Late)
				}
			}
			if r := ratio(b.Published, b.Floor); r > 1.03 {
				check("images published after %s, %.4f× the %s floor: want at most 1.03×", b.Published, r, b.Floor)
			}
			if r := ratio(b.Wall, b.Floor); r > 1.03 {
				check("the execution took %s, %.4f× the %s floor: want at most 1.03×", b.Wall, r, b.Floor)
			}
			if r := ratio(base, b.Floor); r > 1.01 || r < 1 {
				t.Errorf("the AWS work alone took %s, %.4f× the floor %s: the model is off", base, r, b.Floor)
			}
			total := b.res.Report.Transitions
			t.Logf("transitions: %d in all", total)
			for _, name := range slices.Sorted(maps.Keys(b.Transitions)) {
				t.Logf("  %-22s %d", name, b.Transitions[name])
			}
			if total > 80 {
				check("the bake took %d state transitions, want at most 80", total)
			}
		})
	}
}

// scaleTimings makes AWS f times as slow, to the millisecond.
func scaleTimings(t awsfront.Timings, f float64) awsfront.Timings {
	sc := func(d time.Duration) time.Duration { return time.Duration(float64(d) * f).Round(time.Millisecond) }
	return awsfront.Timings{Running: sc(t.Running), Stopped: sc(t.Stopped), Image: sc(t.Image), Copy: sc(t.Copy), Terminated: t.Terminated}
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// sandboxUnavailable says why local bakes cannot run here, or "".
func sandboxUnavailable() string {
	switch {
	case os.Geteuid() != 0:
		return sandbox.ErrNotRoot.Error()
	}
	if _, err := os.Stat(sandbox.SSHDPath); err != nil {
		return sandbox.ErrNoSSHD.Error()
	}
	if _, err := exec.LookPath("sudo"); err != nil {
		return "sudo is not installed"
	}
	return ""
}

// reportBake reports a simulated bake's figures on b, averaged over bakes.
func reportBake(b *testing.B, bakes []simBake, baseline time.Duration) {
	n := float64(len(bakes))
	var wall, published, floor, gbs, usd, transitions, invocations float64
	ec2Calls := map[string]float64{}
	for _, sb := range bakes {
		wall += sb.Wall.Seconds()
		published += sb.Published.Seconds()
		floor += sb.Floor.Seconds()
		gbs += sb.GBSeconds()
		transitions += float64(sb.res.Report.Transitions)
		invocations += float64(sb.Invocations)
		usd += float64(sb.res.Report.Transitions)*asl.DefaultPerTransition + sb.GBSeconds()*asl.DefaultPerGBSecond + float64(sb.Invocations)*asl.DefaultPerRequest
		for a, k := range sb.EC2 {
			ec2Calls[a] += float64(k)
		}
	}
	b.ReportMetric(wall/n, "wall-s")
	b.ReportMetric(published/n, "published-s")
	b.ReportMetric(floor/n, "floor-s")
	b.ReportMetric(baseline.Seconds(), "baseline-s")
	b.ReportMetric(wall/floor, "wall/floor")
	b.ReportMetric(published/floor, "published/floor")
	b.ReportMetric(wall/n/baseline.Seconds(), "wall/baseline")
	b.ReportMetric(transitions/n, "transitions/bake")
	b.ReportMetric(invocations/n, "invocations/bake")
	b.ReportMetric(gbs/n, "GB-s/bake")
	b.ReportMetric(usd/n, "USD/bake")
	total := 0.0
	for a, k := range ec2Calls {
		b.ReportMetric(k/n, "ec2:"+a+"/bake")
		total += k
	}
	b.ReportMetric(total/n, "ec2-calls/bake")
}

// BenchmarkBake bakes in simulated time (see TestBakeTimingTarget) and
// reports, per bake: the virtual wall time and when the images were
// published, against the floor (the critical path of AWS's work) and
// against the same AWS work driven directly in the same run (the
// baseline); transitions; Lambda GB-seconds at the functions' memory
// (from the handlers' real run time here, which moto's latency inflates
// and AWS's would not) and the price of it all; EC2 calls by action. One
// Region and five; five again with AWS 7% slower and 15% faster than kiln
// expects. `make bench` turns the output into one table.
func BenchmarkBake(b *testing.B) {
	if why := sandboxUnavailable(); why != "" {
		b.Skipf("SKIPPING: local bakes cannot run here: %s", why)
	}
	s := newSimRig(b)
	c, err := s.reset()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, bc := range []struct {
		name    string
		recipe  string
		regions []string
		factor  float64
	}{
		{"regions=1", "one", []string{"us-east-1"}, 1},
		{"regions=5", "five", []string{"us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"}, 1},
		{"regions=5,aws=1.07x", "five", []string{"us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"}, 1.07},
		{"regions=5,aws=0.85x", "five", []string{"us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"}, 0.85},
		{"regions=5,aws=1.4x", "five", []string{"us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"}, 1.4},
		{"regions=5,aws=1.4x,learned", "five", []string{"us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"}, 1.4},
	} {
		b.Run(bc.name, func(b *testing.B) {
			timings := scaleTimings(awsfront.DefaultTimings, bc.factor)
			base := s.baseline(b, bc.regions, timings)
			recipe := filepath.Join("testdata", "bench", bc.recipe)
			// Each case starts from kiln's defaults; a learned one is the
			// recipe's second bake, its waits planned around the first's.
			learned := strings.HasSuffix(bc.name, ",learned")
			forget(b, c)
			if learned {
				s.bake(b, c, recipe, nil, timings)
			}
			var bakes []simBake
			b.ResetTimer()
			for range b.N {
				if !learned {
					b.StopTimer()
					forget(b, c)
					b.StartTimer()
				}
				bakes = append(bakes, s.bake(b, c, recipe, nil, timings))
			}
			b.StopTimer()
			reportBake(b, bakes, base)
			var per []string
			for _, name := range slices.Sorted(maps.Keys(bakes[0].Transitions)) {
				per = append(per, fmt.Sprintf("%s %d", name, bakes[0].Transitions[name]))
			}
			b.Logf("transitions by state: %s", strings.Join(per, ", "))
		})
	}
}

// scaledRetry makes the SDK's retry backoff take scale times as long, so
// that it keeps pace with a simulation whose AWS time runs 1/scale times as
// fast as the wall clock.
func scaledRetry(scale float64) func(*aws.Config) {
	return func(cfg *aws.Config) {
		cfg.Retryer = func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				jitter := retry.NewExponentialJitterBackoff(20 * time.Second)
				o.Backoff = retry.BackoffDelayerFunc(func(attempt int, err error) (time.Duration, error) {
					d, err := jitter.BackoffDelay(attempt, err)
					return time.Duration(float64(d) * scale), err
				})
			})
		}
	}
}

// BenchmarkBakeScale starts 200 bakes at once against EC2's token buckets
// and AWS's timings, at a quarter of real time (the state machine's waits,
// the front's model and buckets, and the SDK's backoff all scaled alike),
// with communicator "none" recipes so that no sandbox is needed. It
// reports the failures (goal: none) and the throughput in bakes per hour
// of AWS time, sustained (between the first and the last bake to finish)
// and overall (200 over the whole run), against the bound RunInstances'
// bucket sets (2 a second: 7,200 an hour) and the bound the mutating-call
// bucket sets for the mutating calls a bake makes (5 a second).
//
// One moto cannot answer 200 bakes' calls in time (its answers queue for
// seconds and the bakes' own timeouts fire), so the account is split into
// shards: each of 5 motos serves 40 bakes behind its own front, whose
// buckets hold a fifth of the account's tokens and refill at a fifth of
// its rates; together they enforce the account's buckets. The shards' moto
// loads only the one public image the recipe launches from (moto answers
// DescribeImages by scanning the hundreds it preloads per Region).
// KILN_SCALE_N sets another number of bakes, for a quicker look.
func BenchmarkBakeScale(b *testing.B) {
	n, scale, shards := 200, 0.25, 5
	if v := os.Getenv("KILN_SCALE_N"); v != "" {
		fmt.Sscan(v, &n)
	}
	amis := filepath.Join(b.TempDir(), "amis.json")
	if err := os.WriteFile(amis, []byte(sourceAMIOnly), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Setenv("MOTO_AMIS_PATH", amis)
	rigs := newRigs(b, shards, awsfront.Options{TimeScale: scale, Timings: awsfront.DefaultTimings})
	buckets := slices.Clone(awsfront.EC2Buckets)
	for i := range buckets {
		buckets[i].Size /= float64(shards)
		buckets[i].Refill /= float64(shards)
	}
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		clouds := make([]*Cloud, shards)
		for k, r := range rigs {
			c, err := r.reset()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.ProvisionerSecurityGroup(ctx, DefaultRegion); err != nil {
				b.Fatal(err)
			}
			r.front.Reset()
			if err := r.front.SetBuckets(buckets); err != nil {
				b.Fatal(err)
			}
			r.front.EnableBuckets(true)
			clouds[k] = c
		}
		// Each bake has a recipe folder of its own: moto's versioned
		// bucket loses versions when many uploads of one key race.
		recipes := make([]string, n)
		src, err := os.ReadFile(filepath.Join("testdata", "bench", "none", "none.pkr.hcl"))
		if err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		for i := range recipes {
			recipes[i] = filepath.Join(dir, fmt.Sprintf("none%03d", i))
			if err := os.MkdirAll(recipes[i], 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(recipes[i], "none.pkr.hcl"), src, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		results := make([]*BakeResult, n)
		ends := make([]time.Time, n)
		errs := make([]error, n)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				results[i], errs[i] = clouds[i%shards].Bake(ctx, recipes[i], BakeOptions{
					Vars:      map[string]string{"n": fmt.Sprint(i)},
					Expect:    bake.AWSTimings,
					TimeScale: scale,
					AWSConfig: scaledRetry(scale),
				})
				ends[i] = time.Now()
			})
		}
		wg.Wait()
		makespan := time.Since(start)
		cancel()
		for _, c := range clouds {
			c.Close()
		}

		// What failed and what stayed behind, taken stock of afterwards
		// straight from moto (Bake's own inventory draws on the buckets
		// and may have been throttled). A bake that got through publishing
		// keeps its image even if its cleanup then failed; anything else
		// left is a leak.
		failures, transitions, leaks := 0, 0, 0
		why := map[string]int{}
		var done []time.Time
		for i, res := range results {
			if errs[i] != nil && (res == nil || res.Execution == nil) {
				failures++
				why[errs[i].Error()]++
				continue
			}
			x := res.Execution
			left, err := rigs[i%shards].leftovers(x.Name, []string{DefaultRegion})
			if err != nil {
				b.Fatal(err)
			}
			keeps := res.Succeeded() || publishedImages(x)
			for _, l := range left {
				if !keeps || !(strings.HasPrefix(l, "image ") || strings.HasPrefix(l, "snapshot ")) {
					leaks++
					why["left "+strings.Fields(l)[0]]++
				}
			}
			if !res.Succeeded() {
				failures++
				msg := firstLine(causeMessage(x.Cause))
				msg = regexp.MustCompile(`(ami|sg|snap|subnet|i|none\d+)-[0-9a-f]+|RequestID: [^,]*`).ReplaceAllString(msg, "$1-…")
				why[x.Error+": "+msg[:min(len(msg), 140)]]++
				continue
			}
			transitions += res.Report.Transitions
			done = append(done, ends[i])
		}
		if len(why) > 0 {
			var lines []string
			for _, k := range slices.Sorted(maps.Keys(why)) {
				lines = append(lines, fmt.Sprintf("%4d× %s", why[k], k))
			}
			b.Logf("failures and leftovers:\n%s", strings.Join(lines, "\n"))
		}
		var throttled, mutating, motoCalls int
		var launches []time.Time
		var motoBusy time.Duration
		for _, r := range rigs {
			for _, call := range r.front.Calls() {
				if call.Fault == awsfront.FaultBucket {
					throttled++
				}
				if !call.Forwarded || call.Status >= 300 || !strings.HasPrefix(call.Action, "ec2:") {
					continue
				}
				op := strings.TrimPrefix(call.Action, "ec2:")
				if bucketFor(call.Action) == "mutating" {
					mutating++
				}
				if op == "RunInstances" {
					launches = append(launches, call.Time)
				}
			}
			busy, calls := r.shim.total()
			motoBusy, motoCalls = motoBusy+busy, motoCalls+calls
		}
		aws := func(d time.Duration) float64 { return d.Seconds() / scale }
		sortTimes := func(ts []time.Time) { slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) }) }
		sortTimes(done)
		sortTimes(launches)
		sustained := 0.0
		if len(done) > 1 {
			sustained = float64(len(done)-1) / aws(done[len(done)-1].Sub(done[0])) * 3600
		}
		const runBound = 2 * 3600.0
		mutatingBound := 0.0
		if mutating > 0 {
			mutatingBound = 5 * 3600 / (float64(mutating) / float64(n))
		}
		b.ReportMetric(float64(n), "bakes")
		b.ReportMetric(float64(failures), "failures")
		b.ReportMetric(float64(leaks), "leaks")
		b.ReportMetric(aws(makespan), "makespan-s")
		b.ReportMetric(float64(n)/aws(makespan)*3600, "bakes/h")
		b.ReportMetric(sustained, "sustained-bakes/h")
		b.ReportMetric(runBound, "RunInstances-bound-bakes/h")
		b.ReportMetric(sustained/runBound, "sustained/RunInstances-bound")
		b.ReportMetric(mutatingBound, "mutating-bound-bakes/h")
		if mutatingBound > 0 {
			b.ReportMetric(sustained/mutatingBound, "sustained/mutating-bound")
		}
		if len(launches) > 1 {
			b.ReportMetric(float64(len(launches)-1)/aws(launches[len(launches)-1].Sub(launches[0])), "launches/s")
		}
		b.ReportMetric(float64(throttled)/float64(n), "throttled/bake")
		b.ReportMetric(float64(mutating)/float64(n), "mutating-calls/bake")
		if ok := n - failures; ok > 0 {
			b.ReportMetric(float64(transitions)/float64(ok), "transitions/bake")
		}
		if motoCalls > 0 {
			b.ReportMetric(float64(motoBusy.Milliseconds())/float64(motoCalls), "moto-ms/call")
		}
	}
}

// bucketFor is the name of the first of EC2Buckets matching action.
func bucketFor(action string) string {
	for _, b := range awsfront.EC2Buckets {
		for _, p := range b.Actions {
			if ok, _ := path.Match(p, action); ok {
				return b.Name
			}
		}
	}
	return ""
}

// sourceAMIOnly is a MOTO_AMIS_PATH file with the one image the scale
// benchmark's recipe launches from, as moto's own list has it.
const sourceAMIOnly = `[{"ami_id": "ami-785db401", "state": "available", "public": true, "owner_id": "099720109477",
  "image_location": "amazon/getting-started", "sriov": "simple", "root_device_type": "ebs", "root_device_name": "/dev/sda1",
  "description": "Canonical, Ubuntu, 16.04 LTS, amd64 xenial image build on 2017-07-21", "image_type": "machine",
  "platform": null, "architecture": "x86_64", "name": "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-20170721",
  "virtualization_type": "hvm", "hypervisor": "xen"}]`
