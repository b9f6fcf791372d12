package bake

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLearnFolds(t *testing.T) {
	now := time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	first := learn(nil, "web", "app", Timings{Running: 40 * time.Second, Image: 480 * time.Second}, now)
	if want := (LearnedTimings{Recipe: "web", Build: "app", Bakes: 1, Updated: now, Expect: Timings{Running: 40 * time.Second, Image: 480 * time.Second}}); !cmp.Equal(first, want) {
		t.Errorf("first bake: %+v, want %+v", first, want)
	}
	// The next bake weighs half; what it did not measure stays.
	second := learn(&first, "web", "app", Timings{Image: 400 * time.Second, Copy: 600 * time.Second}, now.Add(time.Hour))
	want := Timings{Running: 40 * time.Second, Image: 440 * time.Second, Copy: 600 * time.Second}
	if second.Bakes != 2 || second.Expect != want || !second.Updated.Equal(now.Add(time.Hour)) {
		t.Errorf("second bake: %+v, want 2 bakes expecting %+v", second, want)
	}
}

func TestExpectFor(t *testing.T) {
	conf := Config{Expect: AWSTimings}
	if got := expectFor(State{}, conf); got != AWSTimings {
		t.Errorf("no learned timings: %+v, want the defaults", got)
	}
	st := State{Expect: &Timings{Image: 8 * time.Minute, Copy: 100 * time.Millisecond}}
	want := AWSTimings
	want.Image, want.Copy = 8*time.Minute, time.Second
	if got := expectFor(st, conf); got != want {
		t.Errorf("learned: %+v, want %+v (at least 1 s each)", got, want)
	}
	// An emulator that changes state at once (zero defaults) stays so.
	if got := expectFor(st, Config{}); got != (Timings{}) {
		t.Errorf("zero defaults with learned timings: %+v, want zero", got)
	}
}

// TestLearnedTimingsSaveChecks: an image that takes 8 minutes (the
// defaults expect 2) costs a poll every few seconds from the second minute
// on; publish keeps what the bake took, the next plan of the recipe reads
// it, and the next bake sleeps through most of the 8 minutes in one wait.
func TestLearnedTimingsSaveChecks(t *testing.T) {
	bake := func(w *sdWorld, st State) (State, int) {
		sa := w.snap.Actions()
		st = w.stopped(st)
		st = w.must(sa, "create", "", st)
		st, polls := w.poll(sa, "check", st)
		st = w.copied(st)
		st, _ = w.poll(w.dist.Actions(), "check", st)
		st = w.must(w.dist.Actions(), "publish", "", st)
		return st, polls
	}
	w := newSDWorld(t, nil)
	w.c.Delays.Image = 8 * time.Minute
	st, coldPolls := bake(w, w.st)
	// Noticed late by up to a tenth of the time waited: the defaults'
	// schedule backs off once the work is twice as late as expected.
	if st.Took == nil || st.Took.Image < 8*time.Minute || st.Took.Image > 8*time.Minute+48*time.Second {
		t.Fatalf("Took = %+v, want the image's 8 minutes (noticed within 48 s)", st.Took)
	}
	obj, ok := w.c.Object(sdBucket, TimingsKey("web", "app"))
	if !ok {
		t.Fatalf("no learned timings at %s", TimingsKey("web", "app"))
	}
	var learned LearnedTimings
	if err := json.Unmarshal(obj.Body, &learned); err != nil || learned.Bakes != 1 || learned.Expect.Image != st.Took.Image {
		t.Fatalf("learned timings %s (%v), want one bake's %s image", obj.Body, err, st.Took.Image)
	}
	if got := readLearned(context.Background(), w.c.S3(), sdBucket, "web", "app"); got == nil || got.Expect != learned.Expect {
		t.Fatalf("readLearned = %+v, want %+v", got, learned)
	}

	// The next bake of the recipe (its plan carries what was learned:
	// TestLaunchPlanReadsLearnedTimings).
	next := w.st
	next.Expect = &learned.Expect
	w2 := newSDWorld(t, nil)
	w2.c.Delays.Image = 8 * time.Minute
	next.Launch, next.BuildID, next.Plan = w2.st.Launch, w2.st.BuildID, w2.st.Plan
	_, warmPolls := bake(w2, next)
	if warmPolls >= coldPolls/3 || warmPolls > 10 {
		t.Errorf("image checks: %d with the defaults, %d with the learned timings: want a third or fewer, at most 10", coldPolls, warmPolls)
	}
	t.Logf("image checks for an 8-minute image: %d with the defaults, %d once learned", coldPolls, warmPolls)
}

func TestLaunchPlanReadsLearnedTimings(t *testing.T) {
	e := newStageEnv(t)
	body, err := os.ReadFile("testdata/stages/app.pkr.hcl")
	if err != nil {
		t.Fatal(err)
	}
	st0 := e.recipeObject(fmt.Sprintf("recipes/app-%d.pkr.hcl", testBuildSeq.Add(1)), body)
	recipe := RecipeName(st0.Recipe.Key)
	st, err := e.launch.Plan(context.Background(), st0)
	if err != nil || st.Expect != nil {
		t.Fatalf("Launch.Plan without learned timings = Expect %+v, %v; want none", st.Expect, err)
	}
	want := Timings{Image: 8 * time.Minute}
	learned, _ := json.Marshal(LearnedTimings{Recipe: recipe, Build: "app", Bakes: 1, Expect: want})
	e.cloud.PutObject(testBucket, TimingsKey(recipe, "app"), learned)
	st, err = e.launch.Plan(context.Background(), st0)
	if err != nil || st.Expect == nil || *st.Expect != want {
		t.Fatalf("Launch.Plan = Expect %+v, %v; want %+v", st.Expect, err, want)
	}
	// Unreadable learned timings are the defaults, not a failed bake.
	e.cloud.PutObject(testBucket, TimingsKey(recipe, "app"), []byte("{not json"))
	if st, err = e.launch.Plan(context.Background(), st0); err != nil || st.Expect != nil {
		t.Fatalf("Launch.Plan with unreadable timings = Expect %+v, %v; want none", st.Expect, err)
	}
}

func TestTimingsJSON(t *testing.T) {
	in := Timings{Running: 31 * time.Second, Image: 8*time.Minute + 500*time.Millisecond}
	b, err := json.Marshal(in)
	if err != nil || string(b) != `{"running":"31s","image":"8m0.5s"}` {
		t.Fatalf("json.Marshal = %s, %v", b, err)
	}
	var out Timings
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("json.Unmarshal = %+v, %v; want %+v", out, err, in)
	}
	if err := json.Unmarshal([]byte(`{"image":"soon"}`), &out); err == nil {
		t.Errorf("json.Unmarshal of a bad duration: no error")
	}
}
