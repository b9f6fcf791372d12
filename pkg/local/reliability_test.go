package local

// Issue 8's reliability checks: the fault sweep, the throttle storm, crash
// and retry, concurrent bakes, and in all of them no secret in a state
// payload, log line or manifest. Every bake here is the real state machine
// definition with the real stages, provisioning over real SSH into a
// sandbox, with AWS played by moto behind pkg/awsfront, which records every
// call and injects the faults.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"golang.org/x/crypto/ssh"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/awsfront"
	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/emulator"
)

// appRegions are the Regions of testdata/app.
var appRegions = []string{"eu-west-1", "us-east-1", "us-west-2"}

// appSecret is testdata/app's sensitive variable's value.
const appSecret = "s3cr3t-Pa55word"

// rig is one AWS stand-in of the test's own: a moto server nobody else
// uses (so rigs can run bakes side by side) and a front before it, with a
// motoShim between them. The audit cloud talks to moto directly, so its
// inventories never appear in the front's call log and no injected fault
// reaches them.
type rig struct {
	shim     *motoShim
	moto     string
	upstream string // the shim before moto, where fronts send calls
	front    *awsfront.Front
	audit    *Cloud
}

// newRigs starts n rigs at once.
func newRigs(t testing.TB, n int, opts awsfront.Options) []*rig {
	t.Helper()
	rigs := make([]*rig, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range rigs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			srv, err := emulator.Start(ctx, emulator.Options{})
			if err != nil {
				errs[i] = err
				return
			}
			t.Cleanup(func() { _ = srv.Stop() })
			clock := opts.Clock
			if clock == nil && opts.Timings.Terminated > 0 {
				clock = asl.RealClock{}
			}
			shim, err := startMotoShim(srv.Endpoint(), clock, opts.Timings.Terminated, opts.TimeScale)
			if err != nil {
				errs[i] = err
				return
			}
			t.Cleanup(func() { _ = shim.Close() })
			o := opts
			o.Upstream = shim.url
			front, err := awsfront.Start(o)
			if err != nil {
				errs[i] = err
				return
			}
			t.Cleanup(func() { _ = front.Close() })
			audit, err := Start(ctx, Options{Endpoint: srv.Endpoint()})
			if err != nil {
				errs[i] = err
				return
			}
			t.Cleanup(func() { _ = audit.Close() })
			rigs[i] = &rig{shim: shim, moto: srv.Endpoint(), upstream: shim.url, front: front, audit: audit}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		if errors.Is(err, emulator.ErrSetup) && os.Getenv("CI") == "" {
			t.Skipf("SKIPPING: moto is not available: %v", err)
		}
		t.Fatalf("start rigs: %v", err)
	}
	return rigs
}

// reset empties moto and the front and returns a fresh Cloud through the
// front (it recreates the kiln bucket).
func (r *rig) reset() (*Cloud, error) {
	req, err := http.NewRequest(http.MethodPost, r.moto+"/moto-api/reset", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reset moto: %w", err)
	}
	resp.Body.Close()
	r.front.Reset()
	c, err := Start(context.Background(), Options{Endpoint: r.front.URL()})
	if err != nil {
		return nil, fmt.Errorf("start a cloud through the front: %w", err)
	}
	return c, nil
}

// leftovers lists the kiln-tagged resources of build buildID (of any
// build if empty) in regions, as the auditor finds them.
func (r *rig) leftovers(buildID string, regions []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inv, err := r.audit.Take(ctx, buildID, regions, bake.Config{}.WithDefaults())
	if err != nil {
		return nil, fmt.Errorf("take stock of %q: %w", buildID, err)
	}
	return inv.All(), nil
}

// chain applies wrappers in order, the first outermost.
func chain(ws ...func(string, asl.Handler) asl.Handler) func(string, asl.Handler) asl.Handler {
	return func(f string, h asl.Handler) asl.Handler {
		for i := len(ws) - 1; i >= 0; i-- {
			if ws[i] != nil {
				h = ws[i](f, h)
			}
		}
		return h
	}
}

// actionOf reads a task input's action and, for a Map iteration, Region.
func actionOf(in json.RawMessage) (action, region string) {
	var ev struct {
		Action string `json:"action"`
		Region string `json:"region"`
	}
	_ = json.Unmarshal(in, &ev)
	return ev.Action, ev.Region
}

// secretWatch collects everything a bake exposes (every task's input,
// output and error, the execution's output and cause, the stage log, the
// manifests) and the secrets that must appear in none of it: the recipe's
// sensitive values, and the private keys of each build, read where they
// live while the build runs (the login key from Parameter Store, the host
// key from the instance's user data).
type secretWatch struct {
	audit *Cloud

	mu      sync.Mutex
	secrets map[string]string // value -> what it is
	exposed []exposure
	logs    logLines
}

type exposure struct{ where, text string }

func newSecretWatch(audit *Cloud, sensitive ...string) *secretWatch {
	w := &secretWatch{audit: audit, secrets: map[string]string{}}
	for _, s := range sensitive {
		w.secrets[s] = "a sensitive variable's value"
	}
	return w
}

func (w *secretWatch) expose(where string, text []byte) {
	if len(text) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.exposed = append(w.exposed, exposure{where, string(text)})
}

// wrap records a handler's input, output and error, and learns the
// private keys once launch has made them.
func (w *secretWatch) wrap(f string, h asl.Handler) asl.Handler {
	return func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		action, _ := actionOf(in)
		where := f + "/" + action
		w.expose(where+" input", in)
		out, err := h(ctx, in)
		w.expose(where+" output", out)
		if err != nil {
			w.expose(where+" error", []byte(err.Error()))
		}
		if f == "launch" && err == nil {
			var st bake.State
			if json.Unmarshal(out, &st) == nil && st.Launch != nil {
				w.learnKeys(st.Launch)
			}
		}
		return out, err
	}
}

// learnKeys reads the build's private keys where kiln keeps them.
func (w *secretWatch) learnKeys(l *bake.Launched) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if l.KeyParameter != "" {
		p, err := w.audit.SSM(l.Region).GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(l.KeyParameter), WithDecryption: aws.Bool(true)})
		if err == nil {
			w.learnKey("the login private key "+l.KeyParameter, aws.ToString(p.Parameter.Value))
		}
	}
	if l.InstanceID != "" {
		attr, err := w.audit.EC2(l.Region).DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
			InstanceId: aws.String(l.InstanceID), Attribute: ec2types.InstanceAttributeNameUserData,
		})
		if err == nil && attr.UserData != nil {
			raw, _ := base64.StdEncoding.DecodeString(aws.ToString(attr.UserData.Value))
			if ud, err := bake.ParseKilnUserData(raw); err == nil {
				w.learnKey("the host private key of "+l.InstanceID, string(ud.HostKey))
			}
		}
	}
}

// learnKey records a PEM private key's body lines: any one of them
// appearing anywhere is a leak.
func (w *secretWatch) learnKey(what, pem string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for line := range strings.SplitSeq(pem, "\n") {
		line = strings.TrimSpace(line)
		if len(line) >= 40 && !strings.HasPrefix(line, "-----") {
			w.secrets[line] = what
		}
	}
}

// keys reports how many private key lines the watch knows.
func (w *secretWatch) keys() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, what := range w.secrets {
		if strings.Contains(what, "private key") {
			n++
		}
	}
	return n
}

// finish adds what a finished bake exposes: the execution's output and
// cause, the log, and the manifests (in the bucket and on disk).
func (w *secretWatch) finish(c *Cloud, res *BakeResult, manifestDir string) {
	if res == nil {
		return
	}
	w.expose("execution output", res.Execution.Output)
	w.expose("execution cause", []byte(res.Execution.Cause))
	if p := res.State.Published; p != nil && p.Manifest != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if obj, err := w.audit.S3().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(c.Bucket()), Key: aws.String(p.Manifest)}); err == nil {
			var b bytes.Buffer
			_, _ = b.ReadFrom(obj.Body)
			obj.Body.Close()
			w.expose("manifest s3://"+c.Bucket()+"/"+p.Manifest, b.Bytes())
		}
	}
	if manifestDir != "" {
		_ = filepath.WalkDir(manifestDir, func(path string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if b, err := os.ReadFile(path); err == nil {
					w.expose("manifest "+path, b)
				}
			}
			return nil
		})
	}
}

// leaks lists every secret found in what was exposed.
func (w *secretWatch) leaks() []string {
	w.expose("log", []byte(w.logs.text()))
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, e := range w.exposed {
		if strings.Contains(e.text, "PRIVATE KEY") {
			out = append(out, e.where+" contains a PEM private key")
		}
		for s, what := range w.secrets {
			if strings.Contains(e.text, s) {
				out = append(out, e.where+" contains "+what)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// checkSecrets fails t if w saw a secret, or saw no private key to look
// for although a build launched.
func (w *secretWatch) checkSecrets(t *testing.T, launched bool) {
	t.Helper()
	if launched && w.keys() == 0 {
		t.Errorf("secrets: the watch never read a build's private keys, so it could not look for them")
	}
	leaks := w.leaks()
	for _, l := range leaks {
		t.Errorf("secret leaked: %s", l)
	}
	w.mu.Lock()
	looked, secrets := len(w.exposed), len(w.secrets)
	w.mu.Unlock()
	report(t, "secrets: %d payloads, log lines, errors and manifests searched for %d private key lines and sensitive values; leaks found: %d", looked, secrets, len(leaks))
}

// report logs a summary line of a reliability check and appends it to the
// file $KILN_REPORT names, which make test prints at the end (go test shows
// a passing test's log only with -v).
func report(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Logf(format, args...)
	path := os.Getenv("KILN_REPORT")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("report: %v", err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s: "+format+"\n", append([]any{t.Name()}, args...)...); err != nil {
		t.Errorf("report: %v", err)
	}
}

// callSpan is the calls one handler invocation made (by the front's log
// length before and after); Map iterations overlap, but they are the same
// function and action.
type callSpan struct {
	function, action string
	from, to         int // calls (from, to] of the log
}

// spans records which handler invocation made which calls.
type spans struct {
	front *awsfront.Front
	mu    sync.Mutex
	list  []callSpan
}

func (s *spans) wrap(f string, h asl.Handler) asl.Handler {
	return func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		action, _ := actionOf(in)
		from := len(s.front.Calls())
		out, err := h(ctx, in)
		s.mu.Lock()
		s.list = append(s.list, callSpan{f, action, from, len(s.front.Calls())})
		s.mu.Unlock()
		return out, err
	}
}

// of names the invocation that made call seq, "" if none.
func (s *spans) of(seq int) (function, action string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sp := range s.list {
		if seq > sp.from && seq <= sp.to {
			return sp.function, sp.action
		}
	}
	return "", ""
}

// window remembers which calls the execution made: those after its first
// notice and up to its end. At the end it also clears the front's
// failures, so that the Bake's own inventory afterwards is not struck.
type window struct {
	front      *awsfront.Front
	mu         sync.Mutex
	from, to   int
	started    bool
	clearAtEnd bool
}

func (w *window) Observe(n asl.Notice) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started {
		w.started, w.from = true, len(w.front.Calls())
	}
	if n.Kind == asl.ExecutionEnded {
		w.to = len(w.front.Calls())
		if w.clearAtEnd {
			w.front.ClearFailures()
		}
	}
}

// causeMessage is the errorMessage of a Lambda-shaped cause.
func causeMessage(cause string) string {
	var c struct {
		ErrorMessage string `json:"errorMessage"`
	}
	if json.Unmarshal([]byte(cause), &c) == nil && c.ErrorMessage != "" {
		return c.ErrorMessage
	}
	return cause
}

// injection is one call of the reference bake to fail: the RegionN-th call
// of Action in Region, which is the same call in every rerun (the bake is
// sequential but for its copies, which run in different Regions).
type injection struct {
	Seq            int
	Action, Region string
	N              int
	// Function and Stage are the handler and action that made the call.
	Function, Stage string
	IDs             []string
}

func (in injection) String() string {
	return fmt.Sprintf("call %d %s %s#%d (%s/%s)", in.Seq, in.Action, in.Region, in.N, in.Function, in.Stage)
}

// optional reports whether a call may fail without failing the bake: only
// local mode's stand-in for the image's disk contents (the sandbox's
// changes stored as images/<ami>.tar.gz, which AWS keeps in the EBS
// snapshot), whose failure the snapshot stage logs as a warning. Every
// call kiln makes to AWS itself is required.
func (in injection) optional() bool {
	for _, id := range in.IDs {
		switch {
		case in.Action == "s3:PutObject" && strings.HasPrefix(id, DefaultBucket+"/images/"):
			return true
		case (in.Action == "s3:GetObject" || in.Action == "s3:PutObject") && strings.HasPrefix(id, DefaultBucket+"/timings/"):
			// What the recipe's bakes took (bake.LearnedTimings) only
			// saves polls: without it a bake plans around the defaults.
			return true
		}
	}
	return false
}

// sweepRun is one bake of the sweep and what it left.
type sweepRun struct {
	inj      injection
	res      *BakeResult
	left     []string // every kiln-tagged resource of any build
	secrets  []string
	keys     int
	struck   bool
	logs     string
	elapsed  time.Duration
	problems []string
}

// sweepBake bakes testdata/app on rig r, failing inj's call if inj is set,
// and takes stock. It runs on worker goroutines, so it reports problems
// rather than failing the test.
func sweepBake(r *rig, inj *injection, sp *spans, win *window) (run sweepRun) {
	start := time.Now()
	defer func() { run.elapsed = time.Since(start) }()
	c, err := r.reset()
	if err != nil {
		run.problems = append(run.problems, err.Error())
		return run
	}
	defer c.Close()
	if inj != nil {
		run.inj = *inj
		if err := r.front.Fail(awsfront.Failure{Action: inj.Action, Region: inj.Region, N: inj.N}); err != nil {
			run.problems = append(run.problems, err.Error())
			return run
		}
	}
	watch := newSecretWatch(r.audit, appSecret)
	if win == nil {
		win = &window{}
	}
	win.front, win.clearAtEnd = r.front, true
	var spanWrap func(string, asl.Handler) asl.Handler
	if sp != nil {
		sp.front = r.front
		spanWrap = sp.wrap
	}
	manifests, err := os.MkdirTemp("", "kiln-sweep-")
	if err != nil {
		run.problems = append(run.problems, err.Error())
		return run
	}
	defer os.RemoveAll(manifests)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := c.Bake(ctx, filepath.Join("testdata", "app"), BakeOptions{
		TimeScale:   0.001,
		Observer:    win,
		Log:         watch.logs.handler(),
		ManifestDir: manifests,
		Wrap:        chain(spanWrap, watch.wrap),
	})
	if err != nil {
		run.problems = append(run.problems, fmt.Sprintf("Bake: %v", err))
		return run
	}
	run.res = res
	watch.finish(c, res, manifests)
	run.secrets = watch.leaks()
	run.keys = watch.keys()
	run.logs = watch.logs.text()
	if run.left, err = r.leftovers("", appRegions); err != nil {
		run.problems = append(run.problems, err.Error())
	}
	for _, call := range r.front.Calls() {
		if call.Fault == awsfront.FaultFail {
			run.struck = true
		}
	}
	return run
}

// verdict is what a sweep run proves.
type verdict struct {
	optional bool
	// reported: the run left the resource whose deletion was the failing
	// call, named it in the failure, and a later cleanup removed it.
	reported bool
	// viaCleanup: cleanup repeated the failing call, so the execution
	// ended with cleanup's error (the stage's is the first failure in the
	// history and the state's error).
	viaCleanup bool
	leaks      []string
	problems   []string
	summary    string
}

// judgeSweepRun checks a sweep run on the rig it ran on, before the rig's
// next run: it may run cleanup once more, with the fault gone.
func judgeSweepRun(r *rig, run sweepRun) (v verdict) {
	v.problems = slices.Clone(run.problems)
	res := run.res
	if res == nil {
		v.summary = "no result"
		return v
	}
	x := res.Execution
	first := firstFailure(x.History)
	want := run.inj.Function + ": "
	switch {
	case run.inj.optional():
		v.optional = true
		if !res.Succeeded() {
			v.problems = append(v.problems, fmt.Sprintf("the bake ended %s (%s: %s), want success: the call is optional", x.Status, x.Error, causeMessage(x.Cause)))
		} else if n := len(res.State.Published.Images); n != len(appRegions) {
			v.problems = append(v.problems, fmt.Sprintf("the bake published %d images, want %d", n, len(appRegions)))
		}
	case x.Status != asl.StatusFailed:
		v.problems = append(v.problems, fmt.Sprintf("the bake ended %s, want FAILED: a required call failed permanently", x.Status))
	case first == nil:
		v.problems = append(v.problems, "the history has no failed state")
	default:
		if msg := causeMessage(first.Cause); !strings.HasPrefix(msg, want) {
			v.problems = append(v.problems, fmt.Sprintf("the first failure (%s in %s) says %q, want it to name the stage %q", first.Error, first.State, firstLine(msg), run.inj.Function))
		}
		msg := causeMessage(x.Cause)
		switch {
		case strings.HasPrefix(msg, want):
		case x.Error == "CleanupIncomplete" && strings.HasPrefix(msg, "cleanup: "):
			v.viaCleanup = run.inj.Function != "cleanup"
		default:
			v.problems = append(v.problems, fmt.Sprintf("the execution failed with %s %q, which names neither the stage %q nor cleanup", x.Error, firstLine(msg), run.inj.Function))
		}
	}
	if !run.struck {
		v.problems = append(v.problems, "the injected failure never struck")
	}
	for _, l := range run.secrets {
		v.problems = append(v.problems, "secret leaked: "+l)
	}
	if res.State.Launch != nil && res.State.Launch.InstanceID != "" && run.keys == 0 {
		v.problems = append(v.problems, "secrets: the build's private keys were never read, so nothing looked for them")
	}

	// What may stay: a bake that got through publishing keeps its images
	// (even when cleanup then failed), and a resource whose deletion was
	// the failing call stays if the failure names it.
	kept := map[string]bool{}
	if res.Succeeded() || publishedImages(x) {
		kept = outputsOf(res.State)
	}
	var named []string
	isNamed := func(l string) bool {
		return x.Error == "CleanupIncomplete" && strings.Contains(x.Cause, resourceID(l))
	}
	for _, l := range run.left {
		switch {
		case kept[l]:
		case isNamed(l):
			named = append(named, l)
		case strings.HasPrefix(l, "volume ") && slices.ContainsFunc(run.left, func(inst string) bool {
			return strings.HasPrefix(inst, "instance ") && isNamed(inst) && r.attachedTo(resourceID(l), resourceID(inst))
		}):
			// The root volume of an instance whose termination failed
			// goes with the instance.
			named = append(named, l)
		default:
			v.leaks = append(v.leaks, l)
		}
	}
	if len(named) > 0 {
		v.reported = true
		st := res.State
		if st.Error == nil && len(kept) == 0 {
			// The bake failed before publishing: cleanup removes its
			// half-made images too.
			st.Error = &bake.Failure{Error: x.Error, Cause: x.Cause}
		}
		if err := r.cleanupAgain(st); err != nil {
			v.leaks = append(v.leaks, fmt.Sprintf("cleanup once the fault was gone: %v (left %v)", err, named))
		} else if again, err := r.leftovers("", appRegions); err != nil {
			v.problems = append(v.problems, err.Error())
		} else {
			for _, l := range again {
				if !kept[l] {
					v.leaks = append(v.leaks, l+" (still there after a later cleanup)")
				}
			}
		}
	}
	for _, l := range v.leaks {
		v.problems = append(v.problems, "leak: "+l)
	}
	failedAt := ""
	if first != nil {
		failedAt = fmt.Sprintf(", first failure %s in %s", first.Error, first.State)
	}
	v.summary = fmt.Sprintf("%s %s%s; %d kept outputs, %d named leftovers, %d leaks (%s)",
		x.Status, x.Error, failedAt, len(run.left)-len(named)-len(v.leaks), len(named), len(v.leaks), run.elapsed.Round(time.Millisecond))
	return v
}

// cleanupAgain runs the cleanup stage on st directly against moto, as an
// operator would rerun it once the cause of a CleanupFailed is fixed.
// attachedTo reports whether volume is attached to instance and goes with
// it when it terminates.
func (r *rig) attachedTo(volume, instance string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := r.audit.EC2(DefaultRegion).DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{volume}})
	if err != nil || len(out.Volumes) != 1 {
		return false
	}
	for _, a := range out.Volumes[0].Attachments {
		// moto leaves DeleteOnTermination out of volume attachments: ask
		// the instance.
		if aws.ToString(a.InstanceId) == instance {
			return r.deletedWith(ctx, volume, instance)
		}
	}
	return false
}

// deletedWith reports whether instance's mapping deletes volume on
// termination.
func (r *rig) deletedWith(ctx context.Context, volume, instance string) bool {
	out, err := r.audit.EC2(DefaultRegion).DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{instance}})
	if err != nil {
		return false
	}
	for _, res := range out.Reservations {
		for _, in := range res.Instances {
			for _, m := range in.BlockDeviceMappings {
				if m.Ebs != nil && aws.ToString(m.Ebs.VolumeId) == volume {
					return aws.ToBool(m.Ebs.DeleteOnTermination)
				}
			}
		}
	}
	return false
}

func (r *rig) cleanupAgain(st bake.State) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := &bake.AWS{Config: r.audit.Config(DefaultRegion), S3Options: []func(*s3.Options){emulator.S3Options}}
	cl := bake.NewCleanup(a, bake.Config{Bucket: r.audit.Bucket()}.WithDefaults())
	for range 10 {
		out, err := cl.Run(ctx, st)
		if err != nil {
			return err
		}
		if out.Wait == nil || out.Wait.Ready {
			return nil
		}
		st = out
	}
	return errors.New("cleanup still waiting after 10 rounds")
}

// firstFailure is the first failed state attempt of a history.
func firstFailure(h []asl.Event) *asl.Event {
	for i := range h {
		if h[i].Error != "" {
			return &h[i]
		}
	}
	return nil
}

// publishedImages reports whether the execution got through publishing
// (its Publish state succeeded), so that its images are the build's
// outputs even if cleanup then failed.
func publishedImages(x *asl.Result) bool {
	for _, ev := range x.History {
		if ev.State == "Publish" && ev.Error == "" && !ev.Exited.IsZero() {
			return true
		}
	}
	return false
}

// outputsOf lists a build's images and their snapshots as Inventory.All
// names them.
func outputsOf(st bake.State) map[string]bool {
	out := map[string]bool{}
	home := ""
	if st.Launch != nil {
		home = st.Launch.Region
	}
	if st.Image != nil && st.Image.ID != "" && home != "" {
		out["image "+home+":"+st.Image.ID] = true
		for _, s := range st.Image.Snapshots {
			out["snapshot "+home+":"+s] = true
		}
	}
	for _, c := range st.Copies {
		if c.ImageID != "" {
			out["image "+c.Region+":"+c.ImageID] = true
		}
		for _, s := range c.Snapshots {
			out["snapshot "+c.Region+":"+s] = true
		}
	}
	return out
}

// resourceID is the ID in an Inventory line ("key pair us-east-1:kiln-x").
func resourceID(line string) string {
	f := strings.Fields(line)
	_, id, _ := strings.Cut(f[len(f)-1], ":")
	return id
}

// TestFaultSweep bakes testdata/app once through the front, recording every
// AWS call its execution makes, and then once more for every one of those
// calls (every call position, 57 today) with that call failing permanently:
// it and every later call repeating it (same action, Region and parameters)
// get a non-retryable AccessDenied. Each such bake must end FAILED; the
// first failed state's error must name the stage that made the call, and so
// must the execution's, unless cleanup hit the same failing call and failed
// too (then the execution's error is cleanup's). It must leave no
// kiln-tagged resource of any build, with two exceptions that are not
// leaks: a bake that got through publishing keeps its published images
// when only cleanup fails; and when the failing call is a deletion, the
// resource it would have deleted stays, named in the failure, and a later
// cleanup (once the fault is gone) removes it. The optional calls (the
// local manifest copy, the learned timings; see injection.optional) must
// fail without failing the bake. No run may show
// a secret (secretWatch).
//
// The bakes run three at a time, each rig with its own moto.
func TestFaultSweep(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	rigs := newRigs(t, 3, awsfront.Options{})

	sp, win := &spans{}, &window{}
	ref := sweepBake(rigs[0], nil, sp, win)
	if len(ref.problems) > 0 || !ref.res.Succeeded() {
		t.Fatalf("reference bake: %v %+v\nlogs:\n%s", ref.problems, ref.res, ref.logs)
	}
	calls := rigs[0].front.Calls()
	var points []injection
	for _, c := range calls[win.from:win.to] {
		f, a := sp.of(c.Seq)
		points = append(points, injection{Seq: c.Seq, Action: c.Action, Region: c.Region, N: c.RegionN, Function: f, Stage: a, IDs: c.IDs})
	}
	t.Logf("reference bake: %d AWS calls in the execution (%d with the harness's), %d transitions, %s",
		len(points), len(calls), ref.res.Report.Transitions, ref.elapsed.Round(time.Millisecond))
	for _, p := range points {
		if p.Function == "" {
			t.Errorf("%v: made outside any stage function", p)
		}
	}

	verdicts := make([]verdict, len(points))
	next := make(chan int)
	var wg sync.WaitGroup
	for _, r := range rigs {
		wg.Go(func() {
			for i := range next {
				verdicts[i] = judgeSweepRun(r, sweepBake(r, &points[i], nil, nil))
			}
		})
	}
	for i := range points {
		next <- i
	}
	close(next)
	wg.Wait()

	var failed, optional, reported, viaCleanup, leaks int
	for i, v := range verdicts {
		t.Logf("%v: %s", points[i], v.summary)
		for _, p := range v.problems {
			t.Errorf("%v: %s", points[i], p)
		}
		leaks += len(v.leaks)
		if v.optional {
			optional++
		} else {
			failed++
		}
		if v.reported {
			reported++
		}
		if v.viaCleanup {
			viaCleanup++
		}
	}
	report(t, "fault sweep: %d injection points tried (every AWS call of the reference bake, each failing permanently); leaks found: %d; "+
		"%d bakes failed, %d succeeded without an optional call; %d left only the resource whose deletion failed, named in the failure "+
		"and removed by a later cleanup; %d ended with cleanup's error because cleanup repeated the failing call",
		len(points), leaks, failed, optional, reported, viaCleanup)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// stormWindow turns the front's random faults on when the execution starts
// and off when it ends, so that the harness's own calls around it (the
// recipe upload, the inventory) are not part of the storm.
type stormWindow struct {
	front  *awsfront.Front
	faults awsfront.Faults
	once   sync.Once
}

func (w *stormWindow) Observe(n asl.Notice) {
	w.once.Do(func() {
		if err := w.front.SetFaults(w.faults); err != nil {
			panic(err)
		}
	})
	if n.Kind == asl.ExecutionEnded {
		_ = w.front.SetFaults(awsfront.Faults{})
	}
}

// TestThrottleStorm bakes testdata/app three times at once, each through
// its own front on one moto, with 30% of each execution's AWS calls
// throttled and 5% answered HTTP 500 (different seeds). The SDK's retries
// and the state machine's Retry on Throttled and Transient must carry every
// bake to success, with its images in all three Regions and nothing
// temporary left, and show no secret. The SDK's backoff is real time, so
// the bakes take about a minute, mostly asleep: the test runs in parallel
// with the other tests that bring their own moto.
func TestThrottleStorm(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	r := newRigs(t, 1, awsfront.Options{})[0]
	// The Clouds share the stand-in for the provisioning Lambda's
	// security group and the build instances' profile; make them before
	// the Clouds race to.
	if _, err := r.audit.ProvisionerSecurityGroup(context.Background(), DefaultRegion); err != nil {
		t.Fatal(err)
	}
	if _, err := r.audit.BuildInstanceProfile(context.Background()); err != nil {
		t.Fatal(err)
	}
	seeds := []uint64{1, 2, 3}
	type outcome struct {
		res       *BakeResult
		err       error
		calls     int
		throttled int
		failed500 int
		elapsed   time.Duration
		watch     *secretWatch
	}
	outs := make([]outcome, len(seeds))
	var wg sync.WaitGroup
	for i, seed := range seeds {
		wg.Go(func() {
			start := time.Now()
			front, err := awsfront.Start(awsfront.Options{Upstream: r.upstream})
			if err != nil {
				outs[i].err = err
				return
			}
			defer front.Close()
			c, err := Start(context.Background(), Options{Endpoint: front.URL()})
			if err != nil {
				outs[i].err = err
				return
			}
			defer c.Close()
			watch := newSecretWatch(r.audit, appSecret)
			storm := &stormWindow{front: front, faults: awsfront.Faults{ThrottleRate: 0.3, ServerErrorRate: 0.05, Seed: seed}}
			manifests := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			// Bakes of one recipe in the same second would pick the same
			// AMI name (app-<timestamp>): each bakes a copy of its own.
			recipe := copyRecipe(t, filepath.Join("testdata", "app"), fmt.Sprintf("storm%d", seed))
			res, err := c.Bake(ctx, recipe, BakeOptions{
				TimeScale: 0.001, Observer: storm, Log: watch.logs.handler(), ManifestDir: manifests, Wrap: watch.wrap,
			})
			o := outcome{res: res, err: err, watch: watch, elapsed: time.Since(start)}
			for _, call := range front.Calls() {
				o.calls++
				switch call.Fault {
				case awsfront.FaultThrottle:
					o.throttled++
				case awsfront.FaultServerError:
					o.failed500++
				}
			}
			watch.finish(c, res, manifests)
			outs[i] = o
		})
	}
	wg.Wait()
	var calls, throttled, failed500 int
	for i, o := range outs {
		if o.err != nil {
			t.Errorf("seed %d: Bake: %v", seeds[i], o.err)
			continue
		}
		x := o.res.Execution
		retries := 0
		for _, ev := range x.History {
			if ev.Attempt > 0 {
				retries++
			}
		}
		calls, throttled, failed500 = calls+o.calls, throttled+o.throttled, failed500+o.failed500
		t.Logf("seed %d: %s in %s: %d calls, %d throttled, %d answered 500; %d state retries, %d transitions",
			seeds[i], x.Status, o.elapsed.Round(time.Millisecond), o.calls, o.throttled, o.failed500, retries, o.res.Report.Transitions)
		if !o.res.Succeeded() {
			t.Errorf("seed %d: the bake ended %s: %s: %s", seeds[i], x.Status, x.Error, causeMessage(x.Cause))
			continue
		}
		if n := len(o.res.State.Published.Images); n != len(appRegions) {
			t.Errorf("seed %d: published %d images, want %d", seeds[i], n, len(appRegions))
		}
		if left := o.res.Left.Temporaries(); len(left) > 0 {
			t.Errorf("seed %d: left behind: %v", seeds[i], left)
		}
		o.watch.checkSecrets(t, true)
	}
	if throttled == 0 || failed500 == 0 {
		t.Errorf("the storm threw %d throttles and %d 500s: the faults never reached the bakes", throttled, failed500)
	}
	report(t, "throttle storm: %d bakes, %d AWS calls of which %d throttled and %d answered 500: all bakes succeeded = %v",
		len(seeds), calls, throttled, failed500, !t.Failed())
}

// copyRecipe copies testdata/app's folder to a temporary folder named
// name, with the AMI name prefix and the recipe's name changed to name, so
// that bakes of copies never pick the same AMI name.
func copyRecipe(t *testing.T, src, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		if strings.HasSuffix(path, ".pkr.hcl") {
			b = bytes.ReplaceAll(b, []byte(`ami_name      = "app-`), []byte(`ami_name      = "`+name+`-`))
		}
		return os.WriteFile(to, b, fi.Mode())
	})
	if err != nil {
		t.Fatalf("copy recipe %s: %v", src, err)
	}
	return dst
}

// crash is where a stage's Lambda dies in TestCrashRetry: in the first
// invocation of Function's Action (in Region, for a copy), right after the
// Nth successful answer to the AWS call After, or once the handler has
// finished if After is empty. Either way the call took effect and the
// state machine never hears of it: the task times out and is retried.
type crash struct {
	Function, Action, Region string
	After                    string
	N                        int
	// AWS turns on what moto lacks and AWS does: client tokens are
	// honoured, and a new instance or image stays invisible to its first
	// two describes (eventual consistency).
	AWS bool
}

func (c crash) String() string {
	at := "after it finished"
	if c.After != "" {
		at = "after " + c.After
		if c.N > 1 {
			at += fmt.Sprintf(" #%d", c.N)
		}
	}
	s := c.Function + "/" + c.Action
	if c.Region != "" {
		s += "[" + c.Region + "]"
	}
	s += " dies " + at
	if c.AWS {
		s += " (client tokens, eventual consistency)"
	}
	return s
}

// crasher makes a crash happen.
type crasher struct {
	spec  crash
	clock *asl.FakeClock

	mu     sync.Mutex
	used   bool // the first invocation has begun: later ones run normally
	armed  bool // that invocation is running
	cancel context.CancelFunc
	seen   int
	fired  bool
}

// hook is the front's OnResponse callback for spec.After: it cancels the
// armed invocation's context right after its call took effect, before the
// answer reaches it.
func (c *crasher) hook(call awsfront.Call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.armed || c.fired || call.Status >= 300 || (c.spec.Region != "" && call.Region != c.spec.Region) {
		return
	}
	c.seen++
	if c.seen == max(c.spec.N, 1) {
		c.fired = true
		c.cancel()
	}
}

func (c *crasher) wrap(f string, h asl.Handler) asl.Handler {
	if f != c.spec.Function {
		return h
	}
	return func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		action, region := actionOf(in)
		c.mu.Lock()
		if action != c.spec.Action || (c.spec.Region != "" && region != c.spec.Region) || c.used {
			c.mu.Unlock()
			return h(ctx, in)
		}
		c.used = true
		hctx, cancel := context.WithCancel(ctx)
		defer cancel()
		c.armed, c.cancel = true, cancel
		c.mu.Unlock()

		out, err := h(hctx, in)

		c.mu.Lock()
		c.armed = false
		if c.spec.After == "" && err == nil {
			c.fired = true
		}
		fired := c.fired
		c.mu.Unlock()
		if !fired {
			return out, err
		}
		// The Lambda is gone: nothing answers until the task's timeout,
		// which the fake clock reaches at once.
		for {
			c.clock.Advance(10 * time.Second)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// created counts what the front saw created, by action and Region.
func created(calls []awsfront.Call) map[string]int {
	n := map[string]int{}
	for _, c := range calls {
		if c.Forwarded {
			n[c.Action+" "+c.Region] += len(c.Created)
		}
	}
	return n
}

// TestCrashRetry interrupts each stage action that creates something, in
// its first invocation, right after one of its AWS calls took effect (the
// front holds the answer back and the Lambda's context is cancelled) or
// right after the whole action finished, and lets the Lambda die: Step
// Functions then sees the task time out and retries it (the definition
// retries States.Timeout). The bake must succeed, with exactly one
// instance, key pair, AMI and copy per Region, no security group of its own (counted by
// what the front saw created and by tag), one manifest entry and one
// launch permission per image, and no secret shown.
//
// moto ignores client tokens (FACTS.md), so the plain cases show that each
// stage finds what a dead invocation made before making it again; the
// "AWS" cases add client tokens and eventual consistency, where the find
// comes up empty and the token must do the work. Time is a fake clock:
// the task timeouts and retry waits pass at once.
func TestCrashRetry(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	cases := []crash{
		{Function: "launch", Action: "plan"},
		// The login key, then the host key (a retry must send the same
		// user data).
		{Function: "launch", Action: "run", After: "ssm:PutParameter"},
		{Function: "launch", Action: "run", After: "ssm:PutParameter", N: 2},
		{Function: "launch", Action: "run", After: "ec2:ImportKeyPair"},
		{Function: "launch", Action: "run", After: "ec2:RunInstances"},
		// The retry cannot see the instance yet, so it must repeat
		// RunInstances exactly, client token and all, for AWS to answer
		// with the first instance.
		{Function: "launch", Action: "run", After: "ec2:RunInstances", AWS: true},
		{Function: "launch", Action: "run"},
		{Function: "snapshot", Action: "create", After: "ec2:CreateImage"},
		{Function: "snapshot", Action: "create"},
		{Function: "distribute", Action: "copy", Region: "eu-west-1", After: "ec2:CopyImage"},
		{Function: "distribute", Action: "copy", Region: "eu-west-1", After: "ec2:CopyImage", AWS: true},
		{Function: "distribute", Action: "copy", Region: "eu-west-1", After: "ec2:CreateTags"},
		{Function: "distribute", Action: "copy", Region: "us-west-2"},
		{Function: "distribute", Action: "publish", After: "ec2:ModifyImageAttribute"},
		{Function: "distribute", Action: "publish", After: "ssm:PutParameter", N: 2},
		{Function: "distribute", Action: "publish", After: "s3:PutObject"},
		{Function: "distribute", Action: "publish", After: "events:PutEvents"},
		{Function: "distribute", Action: "publish"},
		{Function: "cleanup", Action: "run", After: "ec2:TerminateInstances"},
		{Function: "cleanup", Action: "run"},
	}
	rigs := newRigs(t, 2, awsfront.Options{})
	type outcome struct {
		problems []string
		summary  string
	}
	outs := make([]outcome, len(cases))
	next := make(chan int)
	var wg sync.WaitGroup
	for _, r := range rigs {
		wg.Go(func() {
			for i := range next {
				p, s := crashBake(r, cases[i])
				outs[i] = outcome{p, s}
			}
		})
	}
	for i := range cases {
		next <- i
	}
	close(next)
	wg.Wait()
	dups, leaks, failed := 0, 0, 0
	for i, o := range outs {
		t.Logf("%v: %s", cases[i], o.summary)
		for _, p := range o.problems {
			t.Errorf("%v: %s", cases[i], p)
			switch {
			case strings.HasPrefix(p, "duplicate"):
				dups++
			case strings.HasPrefix(p, "leak"):
				leaks++
			case strings.HasPrefix(p, "the bake ended"):
				failed++
			}
		}
	}
	report(t, "crash and retry: %d interruptions; duplicates found: %d; leaks found: %d; bakes the retry did not carry to success: %d",
		len(cases), dups, leaks, failed)
}

// crashBake bakes testdata/app on r with one crash and checks the outcome.
func crashBake(r *rig, spec crash) (problems []string, summary string) {
	start := time.Now()
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	c, err := r.reset()
	if err != nil {
		return []string{err.Error()}, "no bake"
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The stack's groups exist before the front's log starts, so every
	// security group the log shows created is the build's: none, as the
	// build uses the stack's.
	if _, _, err := c.InstanceSecurityGroups(ctx, DefaultRegion); err != nil {
		return []string{err.Error()}, "no bake"
	}
	r.front.Reset()
	if spec.AWS {
		r.front.SetClientTokens(true)
		r.front.SetConsistencyDelay(2)
	}
	clock := asl.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	clock.SetAuto(true)
	cr := &crasher{spec: spec, clock: clock}
	if spec.After != "" {
		defer r.front.OnResponse(spec.After, cr.hook)()
	}
	watch := newSecretWatch(r.audit, appSecret)
	manifests, err := os.MkdirTemp("", "kiln-crash-")
	if err != nil {
		return []string{err.Error()}, "no bake"
	}
	defer os.RemoveAll(manifests)
	res, err := c.Bake(ctx, filepath.Join("testdata", "app"), BakeOptions{
		Clock:       clock,
		Log:         watch.logs.handler(),
		ManifestDir: manifests,
		Wrap:        chain(watch.wrap, cr.wrap),
	})
	if err != nil {
		return []string{"Bake: " + err.Error()}, "no bake"
	}
	watch.finish(c, res, manifests)
	for _, l := range watch.leaks() {
		fail("secret leaked: %s", l)
	}
	x := res.Execution
	if !cr.fired {
		fail("the crash never happened")
	}
	timedOut := false
	for _, ev := range x.History {
		if ev.Error == asl.StatesTimeout {
			timedOut = true
		}
	}
	if cr.fired && !timedOut {
		fail("no task timed out: the state machine never saw the crash")
	}
	// What the front saw created: one of each, one copy per Region (at
	// most one of each if the bake failed).
	made := created(r.front.Calls())
	want := map[string]int{
		"ec2:CreateSecurityGroup us-east-1": 0,
		"ec2:ImportKeyPair us-east-1":       1,
		"ec2:RunInstances us-east-1":        1,
		"ec2:CreateImage us-east-1":         1,
		"ec2:CopyImage eu-west-1":           1,
		"ec2:CopyImage us-west-2":           1,
	}
	for k, n := range want {
		if made[k] > n || (res.Succeeded() && made[k] != n) {
			fail("duplicate: %s created %d resources, want %d", k, made[k], n)
		}
	}
	if !res.Succeeded() {
		msg := causeMessage(x.Cause)
		fail("the bake ended %s: %s: %s", x.Status, x.Error, firstLine(msg))
		if left := res.Left.All(); len(left) > 0 {
			fail("leak: the failed bake left %v", left)
		}
		return problems, fmt.Sprintf("%s in %s: %s: %s", x.Status, time.Since(start).Round(time.Millisecond), x.Error, firstLine(msg))
	}
	// By tag: every instance (of any state), image and snapshot of the
	// build.
	st := res.State
	tag := []ec2types.Filter{{Name: aws.String("tag:" + bake.TagBuild), Values: []string{st.BuildID}}}
	insts, err := r.audit.EC2(DefaultRegion).DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: tag})
	if err != nil {
		fail("DescribeInstances: %v", err)
	} else {
		n := 0
		for _, rv := range insts.Reservations {
			n += len(rv.Instances)
		}
		if n != 1 {
			fail("duplicate: %d instances tagged %s, want 1", n, st.BuildID)
		}
	}
	for _, region := range appRegions {
		imgs, err := r.audit.EC2(region).DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: tag})
		if err != nil {
			fail("DescribeImages in %s: %v", region, err)
			continue
		}
		if len(imgs.Images) != 1 {
			fail("duplicate: %d images tagged %s in %s, want 1", len(imgs.Images), st.BuildID, region)
			continue
		}
		ami := aws.ToString(imgs.Images[0].ImageId)
		// And by name: an untagged copy would escape the count by tag.
		named, err := r.audit.EC2(region).DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
			Filters: []ec2types.Filter{{Name: aws.String("name"), Values: []string{st.Image.Name}}}})
		if err == nil && len(named.Images) != 1 {
			fail("duplicate: %d images named %s in %s, want 1", len(named.Images), st.Image.Name, region)
		}
		if st.Published.Images[region] != ami {
			fail("published image in %s = %s, want the one tagged image %s", region, st.Published.Images[region], ami)
		}
		perm, err := r.audit.EC2(region).DescribeImageAttribute(ctx, &ec2.DescribeImageAttributeInput{ImageId: aws.String(ami), Attribute: ec2types.ImageAttributeNameLaunchPermission})
		if err == nil && len(perm.LaunchPermissions) != 1 {
			fail("duplicate: image %s has %d launch permissions, want 1", ami, len(perm.LaunchPermissions))
		}
		p, err := r.audit.SSM(region).GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/kiln/app/latest")})
		if err != nil || aws.ToString(p.Parameter.Value) != ami {
			fail("/kiln/app/latest in %s = %v (%v), want %s", region, p, err, ami)
		}
	}
	if left := res.Left.Temporaries(); len(left) > 0 {
		fail("left behind: %v", left)
	}
	// One manifest entry, in the bucket and on disk.
	for where, body := range manifestsOf(r.audit, c.Bucket(), st, manifests) {
		var m struct {
			Builds []json.RawMessage `json:"builds"`
		}
		if err := json.Unmarshal(body, &m); err != nil || len(m.Builds) != 1 {
			fail("duplicate: manifest %s has %d builds (%v), want 1", where, len(m.Builds), err)
		}
	}
	events := 0
	for _, call := range r.front.Calls() {
		if call.Action == "events:PutEvents" && call.Forwarded {
			events++
		}
	}
	// The event is announced at least once; a publish that died after
	// sending it sends it again (consumers dedupe on build_id).
	if events < 1 || events > 2 {
		fail("%d kiln.image.baked events, want 1 (2 if publish died after sending it)", events)
	}
	return problems, fmt.Sprintf("%s after the retry in %s: created %d instance, %d AMI, %d+%d copies; %d events; %d transitions",
		x.Status, time.Since(start).Round(time.Millisecond), made["ec2:RunInstances us-east-1"], made["ec2:CreateImage us-east-1"],
		made["ec2:CopyImage eu-west-1"], made["ec2:CopyImage us-west-2"], events, res.Report.Transitions)
}

// manifestsOf reads a build's manifest from the bucket and from dir.
func manifestsOf(audit *Cloud, bucket string, st bake.State, dir string) map[string][]byte {
	out := map[string][]byte{}
	if st.Published != nil && st.Published.Manifest != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if obj, err := audit.S3().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(st.Published.Manifest)}); err == nil {
			var b bytes.Buffer
			_, _ = b.ReadFrom(obj.Body)
			obj.Body.Close()
			out["s3://"+bucket+"/"+st.Published.Manifest] = b.Bytes()
		}
	}
	if st.Published != nil && st.Published.ManifestPath != "" {
		if b, err := os.ReadFile(st.Published.ManifestPath); err == nil {
			out[st.Published.ManifestPath] = b
		}
	}
	return out
}

// motoShim sits between a front and moto and does two things AWS does and
// moto does not (FACTS.md lists moto's gaps):
//
//   - CopyImage honours TagSpecifications: before it answers a successful
//     CopyImage, the shim tags the new image with the request's image tags,
//     as AWS tags a copy at creation. Without it, a copy stage that dies
//     between CopyImage and its own CreateTags would leave an untagged copy
//     that AWS never would.
//   - With a clock (the simulated-time rigs), DeleteSecurityGroup answers
//     DependencyViolation while an instance launched into the group is not
//     terminated yet: not until Terminated (AWS time) after its
//     TerminateInstances, the time the front shows it shutting down. So
//     cleanup's wait for the instance to go is on the simulated clock as
//     on AWS.
type motoShim struct {
	moto  string
	srv   *http.Server
	proxy *httputil.ReverseProxy
	url   string

	clock       awsfront.Clock // nil: no DependencyViolation model
	terminating time.Duration  // on clock

	mu     sync.Mutex
	groups map[string][]string  // instance -> its security groups
	gone   map[string]time.Time // instance -> when it is terminated
	// busy is how long moto took per action, count how many it answered.
	busy  map[string]time.Duration
	count map[string]int
}

// startMotoShim starts a shim before moto. With a clock, instances take
// terminated (AWS time, times scale on the clock) to release their
// security groups.
func startMotoShim(moto string, clock awsfront.Clock, terminated time.Duration, scale float64) (*motoShim, error) {
	u, err := url.Parse(moto)
	if err != nil {
		return nil, err
	}
	if scale == 0 {
		scale = 1
	}
	s := &motoShim{moto: moto, proxy: httputil.NewSingleHostReverseProxy(u), clock: clock,
		terminating: time.Duration(float64(terminated) * scale), groups: map[string][]string{}, gone: map[string]time.Time{},
		busy: map[string]time.Duration{}, count: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.url = "http://" + ln.Addr().String()
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *motoShim) Close() error { return s.srv.Close() }

// total reports how long moto took over all calls, and how many.
func (s *motoShim) total() (time.Duration, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var busy time.Duration
	n := 0
	for k, d := range s.busy {
		busy += d
		n += s.count[k]
	}
	return busy, n
}

var (
	credentialRegion = regexp.MustCompile(`Credential=[^/]+/[^/]+/([^/]+)/ec2/`)
	instanceIDs      = regexp.MustCompile(`<instanceId>(i-[0-9a-f]+)</instanceId>`)
)

func (s *motoShim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	action := r.Method + " " + r.URL.Path
	defer func() {
		s.mu.Lock()
		s.busy[action] += time.Since(start)
		s.count[action]++
		s.mu.Unlock()
	}()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	m := credentialRegion.FindStringSubmatch(r.Header.Get("Authorization"))
	if r.Method != http.MethodPost || m == nil {
		s.proxy.ServeHTTP(w, r)
		return
	}
	form, _ := url.ParseQuery(string(body))
	action = form.Get("Action")
	if action == "" {
		action = r.Header.Get("X-Amz-Target")
	}
	if action == "DeleteSecurityGroup" && s.inUse(form.Get("GroupId")) {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Response><Errors><Error><Code>DependencyViolation</Code><Message>resource %s has a dependent object</Message></Error></Errors><RequestID>moto-shim</RequestID></Response>`, form.Get("GroupId"))
		return
	}
	if action != "CopyImage" && action != "RunInstances" && action != "TerminateInstances" {
		s.proxy.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	s.proxy.ServeHTTP(rec, r)
	if rec.Code == http.StatusOK {
		if err := s.after(r.Context(), m[1], action, form, rec.Body.Bytes()); err != nil {
			http.Error(w, "moto shim: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	for k, vs := range rec.Header() {
		w.Header()[k] = vs
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// after completes a successful call the way AWS would have.
func (s *motoShim) after(ctx context.Context, region, action string, form url.Values, answer []byte) error {
	switch action {
	case "CopyImage":
		var out struct {
			ImageID string `xml:"imageId"`
		}
		tags := imageTagSpecs(form)
		if xml.Unmarshal(answer, &out) != nil || out.ImageID == "" || len(tags) == 0 {
			return nil
		}
		cfg, err := emulator.Config(ctx, s.moto, region)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, err = ec2.NewFromConfig(cfg).CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{out.ImageID}, Tags: tags})
		return err
	case "RunInstances":
		var groups []string
		for i := 1; form.Has(fmt.Sprintf("SecurityGroupId.%d", i)); i++ {
			groups = append(groups, form.Get(fmt.Sprintf("SecurityGroupId.%d", i)))
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, id := range instanceIDs.FindAllSubmatch(answer, -1) {
			s.groups[string(id[1])] = groups
		}
	case "TerminateInstances":
		if s.clock == nil {
			return nil
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for i := 1; form.Has(fmt.Sprintf("InstanceId.%d", i)); i++ {
			id := form.Get(fmt.Sprintf("InstanceId.%d", i))
			if _, ok := s.gone[id]; !ok {
				s.gone[id] = s.clock.Now().Add(s.terminating)
			}
		}
	}
	return nil
}

// inUse reports whether an instance not yet terminated holds group.
func (s *motoShim) inUse(group string) bool {
	if s.clock == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	for id, gs := range s.groups {
		if !slices.Contains(gs, group) {
			continue
		}
		if end, ok := s.gone[id]; !ok || now.Before(end) {
			return true
		}
	}
	return false
}

// imageTagSpecs reads the image tags of a query-protocol CopyImage.
func imageTagSpecs(form url.Values) []ec2types.Tag {
	var tags []ec2types.Tag
	for i := 1; form.Has(fmt.Sprintf("TagSpecification.%d.ResourceType", i)); i++ {
		if form.Get(fmt.Sprintf("TagSpecification.%d.ResourceType", i)) != "image" {
			continue
		}
		for j := 1; ; j++ {
			k := fmt.Sprintf("TagSpecification.%d.Tag.%d.", i, j)
			if !form.Has(k + "Key") {
				break
			}
			tags = append(tags, ec2types.Tag{Key: aws.String(form.Get(k + "Key")), Value: aws.String(form.Get(k + "Value"))})
		}
	}
	return tags
}

// concurrentRecipe is one of TestConcurrentBakes' recipes: its own name and
// AMI name, one extra Region, a trivial provisioner and a sensitive
// variable of its own.
const concurrentRecipe = `variable "token" {
  type      = string
  default   = "%[2]s"
  sensitive = true
}

source "amazon-ebs" "%[1]s" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  ssh_username  = "ubuntu"
  source_ami    = "ami-785db401"
  ami_name      = "%[1]s-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  ami_regions   = ["us-west-2"]
  tags          = { Recipe = "%[1]s" }
}

build {
  sources = ["source.amazon-ebs.%[1]s"]

  provisioner "shell" {
    inline           = ["echo hello from %[1]s", "test $${#TOKEN} -gt 8"]
    environment_vars = ["TOKEN=${var.token}"]
  }
}
`

// TestConcurrentBakes bakes 20 different recipes at once through a front
// that enforces EC2's token buckets (in AWS time, at a quarter of real
// time, the state machine's waits likewise). Every bake must succeed and
// none may touch another's resources: each build's inventory by its tag is
// exactly its own images and snapshots (nothing else carries its tag, and
// no other build deleted them), nothing carries a tag of no build, each
// build's cleanup report names only resources its own launch made, the
// front saw exactly one instance, image and copy made per build and no
// image deregistered, and no secret is shown.
func TestConcurrentBakes(t *testing.T) {
	needSandbox(t)
	t.Parallel()
	const n = 20
	const scale = 0.25
	r := newRigs(t, 1, awsfront.Options{TimeScale: scale})[0]
	c, err := r.reset()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if _, err := c.ProvisionerSecurityGroup(ctx, DefaultRegion); err != nil {
		t.Fatal(err)
	}
	r.front.EnableBuckets(true)

	dir := t.TempDir()
	var recipes, tokens []string
	for i := range n {
		name := fmt.Sprintf("conc%02d", i+1)
		token := fmt.Sprintf("tok-%02d-Zx81qPw7", i+1)
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, name+".pkr.hcl"), fmt.Appendf(nil, concurrentRecipe, name, token), 0o644); err != nil {
			t.Fatal(err)
		}
		recipes, tokens = append(recipes, filepath.Join(dir, name)), append(tokens, token)
	}
	watch := newSecretWatch(r.audit, tokens...)
	results := make([]*BakeResult, n)
	errs := make([]error, n)
	manifests := t.TempDir()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = c.Bake(ctx, recipes[i], BakeOptions{
				TimeScale:   scale,
				Log:         watch.logs.handler(),
				ManifestDir: manifests,
				Wrap:        watch.wrap,
			})
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	regions := []string{"us-east-1", "us-west-2"}
	all := map[string]bool{}
	for i, res := range results {
		if errs[i] != nil {
			t.Errorf("%s: Bake: %v", recipes[i], errs[i])
			continue
		}
		watch.finish(c, res, "")
		x := res.Execution
		if !res.Succeeded() {
			t.Errorf("%s: the bake ended %s: %s: %s", filepath.Base(recipes[i]), x.Status, x.Error, firstLine(causeMessage(x.Cause)))
			continue
		}
		st := res.State
		outputs := outputsOf(st)
		if len(st.Published.Images) != len(regions) {
			t.Errorf("%s: published %v, want images in %v", st.BuildID, st.Published.Images, regions)
		}
		// Its tag marks exactly its own outputs: nothing of another build
		// carries it, and nothing of its own is gone.
		own, err := r.leftovers(st.BuildID, regions)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := slices.Sorted(slices.Values(own)), slices.Sorted(maps.Keys(outputs)); !slices.Equal(got, want) {
			t.Errorf("%s: resources tagged with the build = %v, want exactly its outputs %v", st.BuildID, got, want)
		}
		maps.Copy(all, outputs)
		// Its cleanup deleted only what its launch made.
		l := st.Launch
		mine := []string{l.InstanceID, l.SecurityGroupID, l.KeyPairName, l.KeyParameter, l.HostKeyParameter}
		for _, d := range st.Cleanup.Deleted {
			if !slices.ContainsFunc(mine, func(id string) bool { return id != "" && strings.HasSuffix(d, " "+id) }) {
				t.Errorf("%s: cleanup deleted %q, which its launch did not make (%v)", st.BuildID, d, mine)
			}
		}
		if len(st.Cleanup.Deleted) == 0 {
			t.Errorf("%s: cleanup deleted nothing", st.BuildID)
		}
	}
	// Nothing kiln-tagged belongs to no build.
	every, err := r.leftovers("", regions)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range every {
		if !all[l] {
			t.Errorf("%s is kiln-tagged but no build's output", l)
		}
	}
	calls := r.front.Calls()
	made := created(calls)
	for _, k := range []string{"ec2:RunInstances us-east-1", "ec2:CreateImage us-east-1", "ec2:CopyImage us-west-2"} {
		if made[k] != n {
			t.Errorf("%s created %d resources for %d bakes, want one each", k, made[k], n)
		}
	}
	throttled, deregistered := 0, 0
	for _, call := range calls {
		if call.Fault == awsfront.FaultBucket {
			throttled++
		}
		if (call.Action == "ec2:DeregisterImage" || call.Action == "ec2:DeleteSnapshot") && call.Forwarded {
			deregistered++
		}
	}
	if deregistered > 0 {
		t.Errorf("%d images or snapshots were deleted during %d successful bakes", deregistered, n)
	}
	if c.Sandboxes() != 0 {
		t.Errorf("%d sandboxes still running", c.Sandboxes())
	}
	watch.checkSecrets(t, true)
	report(t, "concurrency: %d bakes at once in %s: %d AWS calls, %d throttled by the token buckets; all succeeded, none touched another's resources = %v",
		n, elapsed.Round(time.Millisecond), len(calls), throttled, !t.Failed())
}

// TestSecretWatchCatchesLeaks: the watch every reliability test relies on
// finds a private key's line, a PEM header and a sensitive value wherever
// they were exposed, and nothing in clean text.
func TestSecretWatchCatchesLeaks(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	key := string(pem.EncodeToMemory(block))
	lines := strings.Split(strings.TrimSpace(key), "\n")
	for _, tc := range []struct {
		name, text string
		leak       bool
	}{
		{"clean", `{"launch":{"key_parameter":"/kiln/builds/b/ssh-key"}}`, false},
		{"a line of the key", `{"note":"` + lines[1] + `"}`, true},
		{"a PEM header", "-----BEGIN OPENSSH PRIVATE KEY-----", true},
		{"the sensitive value", "password is " + appSecret, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newSecretWatch(nil, appSecret)
			w.learnKey("the login private key", key)
			w.expose("payload", []byte(tc.text))
			if got := len(w.leaks()) > 0; got != tc.leak {
				t.Errorf("leaks() of %q = %v, want a leak: %v", tc.text, w.leaks(), tc.leak)
			}
		})
	}
}
