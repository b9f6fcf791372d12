package bake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"
	"github.com/google/go-cmp/cmp"
)

const (
	rbBucket = "kiln-rebuild-test"
	rbRegion = "us-east-1"
	rbOwner  = "137112412989"
	rbKey    = "recipes/web.pkr.hcl"
)

// rbWorld is one rebuild test's fake account: the kiln bucket with the
// web recipe, a base image, and the job wired to them.
type rbWorld struct {
	t     *testing.T
	ctx   context.Context
	c     *fakeCloud
	r     *Rebuild
	bakes *rbBakes
	base  string
}

func newRBWorld(t *testing.T) *rbWorld {
	t.Helper()
	c := newFakeCloud(t)
	c.AddBucket(rbBucket)
	bakes := &rbBakes{running: map[string][]string{}, started: map[string]State{}}
	w := &rbWorld{t: t, ctx: WithLogger(context.Background(), sdQuiet), c: c, bakes: bakes, r: &Rebuild{
		S3: c.S3(), EC2: c.EC2(rbRegion), SSM: c.SSM(rbRegion),
		Bakes: bakes, Starter: bakes, Events: c.Events(rbRegion),
		Config: Config{Bucket: rbBucket, EventBus: "default"}, MaxAge: 30 * retDay, Now: c.Now,
	}}
	w.base = w.baseImage("base-linux-2025.05", 20*retDay)
	w.putRecipe(rbKey, rbRecipe(t, ""))
	return w
}

// rbRecipe is the web recipe with extra tag lines.
func rbRecipe(t *testing.T, tags string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "retention", "web.pkr.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.Replace(string(b), "    team = \"web\"\n", "    team = \"web\"\n"+tags, 1))
}

func (w *rbWorld) putRecipe(key string, body []byte) string {
	return w.c.PutObject(rbBucket, key, body)
}

func (w *rbWorld) baseImage(name string, age time.Duration) string {
	return w.c.AddImage(rbRegion, fakeImageSpec{Name: name, Owner: rbOwner, OwnerAlias: "amazon", Public: true, Created: w.c.Now().Add(-age)})
}

// hash is the content hash a bake of the recipe at key would record now.
func (w *rbWorld) hash(key string) string {
	w.t.Helper()
	plan, err := w.r.launchLookups().evaluate(w.ctx, State{Recipe: RecipeRef{Bucket: rbBucket, Key: key}})
	if err != nil {
		w.t.Fatalf("evaluate %s: %v", key, err)
	}
	return plan.Hash
}

// baked seeds a kiln image of the recipe made age ago from base with hash.
func (w *rbWorld) baked(recipe, build, hash, base string, age time.Duration, extra map[string]string) string {
	built := w.c.Now().Add(-age)
	tags := map[string]string{TagBuild: build, TagRecipe: recipe, TagRecipeHash: hash, TagSourceAMI: base, TagBuiltAt: built.Format(time.RFC3339), "team": "web"}
	for k, v := range extra {
		tags[k] = v
	}
	return w.c.AddImage(rbRegion, fakeImageSpec{Name: recipe + "-" + build, Created: built, Tags: tags})
}

func (w *rbWorld) decide(recipes ...string) []RebuildDecision {
	w.t.Helper()
	ds, err := w.r.Decide(w.ctx, recipes)
	if err != nil {
		w.t.Fatalf("Decide(%q) = %v", recipes, err)
	}
	return ds
}

// rbBakes is a stateful fake of the bakes: the running ones by recipe key,
// and those started, by name.
type rbBakes struct {
	running map[string][]string
	started map[string]State
}

func (b *rbBakes) RunningBakes(ctx context.Context, recipe RecipeRef) ([]string, error) {
	return b.running[recipe.Key], nil
}

func (b *rbBakes) StartBake(ctx context.Context, name string, st State) (string, error) {
	if _, ok := b.started[name]; ok {
		return "", fmt.Errorf("start %s: %w", name, ErrBakeExists)
	}
	b.started[name] = st
	return "exec:" + name, nil
}

// TestRebuildDecisions covers each reason to bake or skip.
func TestRebuildDecisions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(w *rbWorld)
		action RebuildAction
		reason string // a prefix
	}{
		{"unchanged recipe and base", func(w *rbWorld) {
			w.baked("web", "web-000000000001", w.hash(rbKey), w.base, 3*retDay, nil)
		}, RebuildSkip, "up to date: build web-000000000001 is 3d old (max 30d)"},
		{"new base image", func(w *rbWorld) {
			w.baked("web", "web-000000000001", w.hash(rbKey), w.base, 3*retDay, nil)
			w.baseImage("base-linux-2025.06", retDay)
		}, RebuildBake, "base image changed (" + "ami-"},
		{"changed recipe file", func(w *rbWorld) {
			w.baked("web", "web-000000000001", w.hash(rbKey), w.base, 3*retDay, nil)
			w.putRecipe(rbKey, []byte(strings.Replace(string(rbRecipe(w.t, "")), "echo web", "echo web v2", 1)))
		}, RebuildBake, "recipe changed ("},
		{"running bake", func(w *rbWorld) {
			w.putRecipe(rbKey, []byte(strings.Replace(string(rbRecipe(w.t, "")), "echo web", "echo web v2", 1)))
			w.bakes.running[rbKey] = []string{"arn:aws:states:us-east-1:123456789012:execution:kiln:upload-1"}
		}, RebuildSkip, "a bake is running: arn:aws:states:us-east-1:123456789012:execution:kiln:upload-1"},
		{"max age reached", func(w *rbWorld) {
			w.baked("web", "web-000000000001", w.hash(rbKey), w.base, 31*retDay, nil)
		}, RebuildBake, "newest image is 31d old (max 30d)"},
		{"no image yet", func(w *rbWorld) {}, RebuildBake, "no image of this recipe in us-east-1 yet"},
		{"opted out", func(w *rbWorld) {
			w.putRecipe(rbKey, rbRecipe(w.t, "    \"kiln:rebuild\" = \"never\"\n"))
		}, RebuildSkip, `opted out (kiln:rebuild = "never")`},
		{"own cadence", func(w *rbWorld) {
			w.putRecipe(rbKey, rbRecipe(w.t, "    \"kiln:rebuild\" = \"7d\"\n"))
			w.baked("web", "web-000000000001", w.hash(rbKey), w.base, 8*retDay, nil)
		}, RebuildBake, "newest image is 8d old (max 7d)"},
		{"only on change", func(w *rbWorld) {
			w.putRecipe(rbKey, rbRecipe(w.t, "    \"kiln:rebuild\" = \"on-change\"\n"))
			w.baked("web", "web-000000000001", w.hash(rbKey), w.base, 100*retDay, nil)
		}, RebuildSkip, "up to date: build web-000000000001 has this recipe and base image"},
		{"bad cadence", func(w *rbWorld) {
			w.putRecipe(rbKey, rbRecipe(w.t, "    \"kiln:rebuild\" = \"sometimes\"\n"))
		}, RebuildSkip, `tag kiln:rebuild="sometimes": want never, on-change`},
		{"recipe and base already baked", func(w *rbWorld) {
			w.baked("web", "web-000000000002", w.hash(rbKey), w.base, 5*retDay, nil)
			w.baked("web", "web-000000000003", "sha256:other", w.base, 2*retDay, nil)
		}, RebuildSkip, "build web-000000000002 (ami-"},
		{"recipe does not load", func(w *rbWorld) {
			w.putRecipe(rbKey, []byte(strings.Replace(string(rbRecipe(w.t, "")), "instance_type", "instance_typo", 1)))
		}, RebuildSkip, `recipe does not load: web.pkr.hcl:4: Missing required argument: The amazon-ebs argument "instance_type" is required. (and 1 more problem`},
		{"base image does not resolve", func(w *rbWorld) {
			w.putRecipe(rbKey, []byte(strings.Replace(string(rbRecipe(w.t, "")), rbOwner, "111111111111", 1)))
		}, RebuildSkip, "base image does not resolve: source_ami_filter: no image in us-east-1 matches"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newRBWorld(t)
			tc.setup(w)
			ds := w.decide()
			if len(ds) != 1 {
				t.Fatalf("Decide() = %d decisions, want 1: %+v", len(ds), ds)
			}
			d := ds[0]
			if d.Action != tc.action || !strings.HasPrefix(d.Reason, tc.reason) {
				t.Errorf("Decide() = %s %q, want %s %q...", d.Action, d.Reason, tc.action, tc.reason)
			}
			if d.Recipe != "web" || d.Ref.Key != rbKey || d.Ref.Version == "" || d.Ref.Bucket != rbBucket {
				t.Errorf("Decide() recipe %q at %+v, want web at the current version of %s", d.Recipe, d.Ref, rbKey)
			}
			if d.Action == RebuildBake && (d.BuildID != NewBuildID(d.Ref, nil, "", d.Trigger) || !strings.Contains(d.Trigger, "hash="+d.Hash) || !strings.Contains(d.Trigger, "base="+d.BaseAMI)) {
				t.Errorf("bake decision build %q trigger %q: want the build ID of a trigger naming hash %s and base %s", d.BuildID, d.Trigger, d.Hash, d.BaseAMI)
			}
			if n := w.c.Calls("RunInstances") + w.c.Calls("PutObject"); n != 0 {
				t.Errorf("Decide() made %d RunInstances/PutObject calls, want none", n)
			}
		})
	}
}

// TestRebuildStartOnce: the same decision made twice names the same build,
// which is started once; a refresh of an old image is one build until that
// image is replaced.
func TestRebuildStartOnce(t *testing.T) {
	w := newRBWorld(t)
	w.baked("web", "web-000000000001", w.hash(rbKey), w.base, 3*retDay, nil)
	w.baseImage("base-linux-2025.06", retDay)
	first, err := w.r.Start(w.ctx, w.decide())
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	if first[0].Status != "started" || first[0].Execution != "exec:"+first[0].BuildID {
		t.Fatalf("Start() = %+v, want started", first[0])
	}
	st := w.bakes.started[first[0].BuildID]
	want := State{Recipe: first[0].Ref, Trigger: first[0].Trigger}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("bake input (-want +got):\n%s", diff)
	}

	again, err := w.r.Start(w.ctx, w.decide())
	if err != nil {
		t.Fatalf("second Start() = %v", err)
	}
	if again[0].BuildID != first[0].BuildID || again[0].Status != "already started" || len(w.bakes.started) != 1 {
		t.Errorf("second run: build %s status %q, %d bakes started; want %s already started, 1 bake", again[0].BuildID, again[0].Status, len(w.bakes.started), first[0].BuildID)
	}

	// Max age: the refresh names the newest build, so it too is one build.
	w2 := newRBWorld(t)
	w2.baked("web", "web-000000000001", w2.hash(rbKey), w2.base, 40*retDay, nil)
	a, b := w2.decide()[0], w2.decide()[0]
	if a.Action != RebuildBake || a.BuildID != b.BuildID || !strings.HasSuffix(a.Trigger, "refresh=web-000000000001") {
		t.Errorf("max-age decisions = %+v / %+v, want one build refreshing web-000000000001", a, b)
	}
	if a.BuildID == NewBuildID(a.Ref, nil, "", "rebuild hash="+a.Hash+" base="+a.BaseAMI) {
		t.Errorf("max-age refresh has the build ID of a change rebuild of the same hash and base")
	}
}

// TestRebuildHandle: one run, one event listing every decision; a dry run
// starts nothing.
func TestRebuildHandle(t *testing.T) {
	for _, dry := range []bool{true, false} {
		t.Run(fmt.Sprintf("dry_run=%t", dry), func(t *testing.T) {
			w := newRBWorld(t)
			w.putRecipe("recipes/nightly.pkr.hcl", rbRecipe(t, "    \"kiln:rebuild\" = \"never\"\n"))
			w.putRecipe("recipes/README.md", []byte("not a recipe"))
			res, err := w.r.Handle(w.ctx, RebuildEvent{DryRun: dry})
			if err != nil {
				t.Fatalf("Handle() = %v", err)
			}
			if len(res.Decisions) != 2 {
				t.Fatalf("Handle() = %d decisions, want 2 (README is not a recipe): %+v", len(res.Decisions), res.Decisions)
			}
			if started := len(w.bakes.started); (started == 1) == dry {
				t.Errorf("Handle(dry run %t) started %d bakes", dry, started)
			}
			events := w.c.EventsPut()
			if len(events) != 1 || aws.ToString(events[0].DetailType) != EventRebuildDecisions || aws.ToString(events[0].Source) != "kiln" {
				t.Fatalf("events = %v, want one %s", events, EventRebuildDecisions)
			}
			var detail RebuildDecisionsDetail
			if err := json.Unmarshal([]byte(aws.ToString(events[0].Detail)), &detail); err != nil {
				t.Fatal(err)
			}
			if len(detail.Decisions) != 2 || detail.DryRun != dry {
				t.Errorf("event detail = %+v, want 2 decisions, dry run %t", detail, dry)
			}
		})
	}
}

func TestRebuildSelectRecipes(t *testing.T) {
	w := newRBWorld(t)
	w.putRecipe("recipes/api.pkr.hcl", rbRecipe(t, ""))
	if ds := w.decide("api"); len(ds) != 1 || ds[0].Recipe != "api" {
		t.Errorf("Decide(api) = %+v, want only api", ds)
	}
	if ds := w.decide("recipes/web.pkr.hcl", "web"); len(ds) != 1 || ds[0].Recipe != "web" {
		t.Errorf("Decide(key, name of web) = %+v, want web once", ds)
	}
	if _, err := w.r.Decide(w.ctx, []string{"nope"}); err == nil || !strings.Contains(err.Error(), "no recipe nope") {
		t.Errorf("Decide(nope) = %v, want no such recipe", err)
	}
}

// TestRebuildSeveralBuilds: a recipe with several builds is decided per
// build, against the images of that build (kiln:build-name).
func TestRebuildSeveralBuilds(t *testing.T) {
	w := newRBWorld(t)
	two := strings.Replace(string(rbRecipe(t, "")), `sources = ["source.amazon-ebs.web"]`, `sources = ["source.amazon-ebs.web", "source.amazon-ebs.worker"]`, 1)
	worker := strings.Replace(string(rbRecipe(t, "")), `"amazon-ebs" "web"`, `"amazon-ebs" "worker"`, 1)
	worker = worker[:strings.Index(worker, "build {")]
	w.putRecipe(rbKey, []byte(two+"\n"+worker))
	h := w.hash(rbKey)
	w.baked("web", "web-000000000001", h, w.base, 3*retDay, map[string]string{TagBuildName: "web"})
	ds := w.decide()
	got := map[string]string{}
	for _, d := range ds {
		got[d.Build] = string(d.Action) + ": " + d.Reason
	}
	want := map[string]string{
		"web":    "skip: up to date: build web-000000000001 is 3d old (max 30d)",
		"worker": "bake: no image of this recipe in us-east-1 yet",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Decide() per build (-want +got):\n%s", diff)
	}
	for _, d := range ds {
		if d.Action == RebuildBake && d.BuildID != NewBuildID(d.Ref, nil, "worker", d.Trigger) {
			t.Errorf("worker's build ID %s does not select the build (only)", d.BuildID)
		}
	}
}

func TestRebuildCadence(t *testing.T) {
	for _, tc := range []struct {
		in      string
		maxAge  time.Duration
		never   bool
		wantErr bool
	}{
		{"", 30 * retDay, false, false},
		{"never", 0, true, false},
		{"Off", 0, true, false},
		{"on-change", 0, false, false},
		{"7d", 7 * retDay, false, false},
		{"2w", 14 * retDay, false, false},
		{"36h", 36 * time.Hour, false, false},
		{"0d", 0, false, true},
		{"-1h", 0, false, true},
		{"weekly", 0, false, true},
	} {
		maxAge, never, err := rebuildCadence(tc.in, 30*retDay)
		if maxAge != tc.maxAge || never != tc.never || (err != nil) != tc.wantErr {
			t.Errorf("rebuildCadence(%q) = %v, %t, %v; want %v, %t, error %t", tc.in, maxAge, never, err, tc.maxAge, tc.never, tc.wantErr)
		}
	}
}

// TestRebuildTableGolden pins what `kiln rebuild --dry-run` prints.
func TestRebuildTableGolden(t *testing.T) {
	w := newRBWorld(t)
	w.baked("web", "web-000000000001", w.hash(rbKey), w.base, 3*retDay, nil)
	w.putRecipe("recipes/api.pkr.hcl", rbRecipe(t, ""))
	w.baked("api", "api-000000000001", "sha256:0123456789abcdef", w.base, 40*retDay, nil)
	w.putRecipe("recipes/nightly.pkr.hcl", rbRecipe(t, "    \"kiln:rebuild\" = \"never\"\n"))
	var b strings.Builder
	if err := WriteRebuildTable(&b, w.decide(), w.c.Now()); err != nil {
		t.Fatal(err)
	}
	retGolden(t, filepath.Join("testdata", "retention", "rebuild.golden"), b.String())
}

// rbSFN is a stateful fake of Step Functions: executions with their
// names, inputs and statuses.
type rbSFN struct {
	arn        string
	executions []rbExecution
	describes  int
}

type rbExecution struct {
	arn, name, input string
	status           sfntypes.ExecutionStatus
}

func (f *rbSFN) ListExecutions(ctx context.Context, in *sfn.ListExecutionsInput, optFns ...func(*sfn.Options)) (*sfn.ListExecutionsOutput, error) {
	if aws.ToString(in.StateMachineArn) != f.arn {
		return nil, &sfntypes.StateMachineDoesNotExist{Message: aws.String("no such state machine")}
	}
	var match []rbExecution
	for _, e := range f.executions {
		if in.StatusFilter == "" || e.status == in.StatusFilter {
			match = append(match, e)
		}
	}
	start, _ := strconv.Atoi(aws.ToString(in.NextToken))
	end := min(start+2, len(match)) // small pages, to exercise paging
	out := &sfn.ListExecutionsOutput{}
	for _, e := range match[start:end] {
		out.Executions = append(out.Executions, sfntypes.ExecutionListItem{ExecutionArn: aws.String(e.arn), Name: aws.String(e.name), Status: e.status})
	}
	if end < len(match) {
		out.NextToken = aws.String(strconv.Itoa(end))
	}
	return out, nil
}

func (f *rbSFN) DescribeExecution(ctx context.Context, in *sfn.DescribeExecutionInput, optFns ...func(*sfn.Options)) (*sfn.DescribeExecutionOutput, error) {
	f.describes++
	for _, e := range f.executions {
		if e.arn == aws.ToString(in.ExecutionArn) {
			return &sfn.DescribeExecutionOutput{ExecutionArn: aws.String(e.arn), Name: aws.String(e.name), Input: aws.String(e.input), Status: e.status}, nil
		}
	}
	return nil, &sfntypes.ExecutionDoesNotExist{Message: aws.String("no such execution")}
}

func (f *rbSFN) StartExecution(ctx context.Context, in *sfn.StartExecutionInput, optFns ...func(*sfn.Options)) (*sfn.StartExecutionOutput, error) {
	name := aws.ToString(in.Name)
	for _, e := range f.executions {
		if e.name == name {
			return nil, &sfntypes.ExecutionAlreadyExists{Message: aws.String("Execution Already Exists: " + name)}
		}
	}
	arn := strings.Replace(f.arn, ":stateMachine:", ":execution:", 1) + ":" + name
	f.executions = append(f.executions, rbExecution{arn: arn, name: name, input: aws.ToString(in.Input), status: sfntypes.ExecutionStatusRunning})
	return &sfn.StartExecutionOutput{ExecutionArn: aws.String(arn)}, nil
}

// TestStepFunctionsBakes: running bakes are found by the recipe in their
// input (executions started by uploads have generated names), and a name
// used before is ErrBakeExists.
func TestStepFunctionsBakes(t *testing.T) {
	ctx := context.Background()
	f := &rbSFN{arn: "arn:aws:states:us-east-1:123456789012:stateMachine:kiln"}
	input := func(key string) string {
		b, _ := json.Marshal(State{Recipe: RecipeRef{Bucket: rbBucket, Key: key, Version: "v1"}})
		return string(b)
	}
	f.executions = []rbExecution{
		{"arn:x:1", "4f1c-upload", input("recipes/web.pkr.hcl"), sfntypes.ExecutionStatusRunning},
		{"arn:x:2", "web-aaaaaaaaaaaa", input("recipes/web.pkr.hcl"), sfntypes.ExecutionStatusSucceeded},
		{"arn:x:3", "9a2b-upload", input("recipes/api.pkr.hcl"), sfntypes.ExecutionStatusRunning},
		{"arn:x:4", "odd", "{}", sfntypes.ExecutionStatusRunning},
		{"arn:x:5", "web-bbbbbbbbbbbb", input("recipes/web.pkr.hcl"), sfntypes.ExecutionStatusRunning},
	}
	s := NewStepFunctions(f, f.arn)
	got, err := s.RunningBakes(ctx, RecipeRef{Bucket: rbBucket, Key: "recipes/web.pkr.hcl", Version: "v2"})
	if err != nil || !cmp.Equal(got, []string{"arn:x:1", "arn:x:5"}) {
		t.Errorf("RunningBakes(web) = %v, %v; want arn:x:1 and arn:x:5", got, err)
	}
	if _, err := s.RunningBakes(ctx, RecipeRef{Bucket: rbBucket, Key: "recipes/api.pkr.hcl"}); err != nil || f.describes != 4 {
		t.Errorf("second RunningBakes: %v, %d DescribeExecution calls in all; want 4 (inputs remembered)", err, f.describes)
	}

	st := State{Recipe: RecipeRef{Bucket: rbBucket, Key: rbKey, Version: "v2"}, Trigger: "rebuild hash=h base=b"}
	arn, err := s.StartBake(ctx, "web-cccccccccccc", st)
	if err != nil || !strings.HasSuffix(arn, ":execution:kiln:web-cccccccccccc") {
		t.Fatalf("StartBake() = %q, %v", arn, err)
	}
	var sent State
	if err := json.Unmarshal([]byte(f.executions[len(f.executions)-1].input), &sent); err != nil || !cmp.Equal(sent, st) {
		t.Errorf("execution input = %+v (%v), want %+v", sent, err, st)
	}
	if _, err := s.StartBake(ctx, "web-cccccccccccc", st); !errors.Is(err, ErrBakeExists) {
		t.Errorf("StartBake(same name) = %v, want ErrBakeExists", err)
	}
	if _, err := (&StepFunctions{Client: f}).RunningBakes(ctx, st.Recipe); err == nil {
		t.Errorf("RunningBakes without a state machine = nil error")
	}
}
