package bake

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/google/go-cmp/cmp"
)

const (
	retEast = "us-east-1"
	retWest = "eu-west-1"
	retDay  = 24 * time.Hour
)

// retWorld is one retention test's fake account with the job wired to it.
type retWorld struct {
	t   *testing.T
	ctx context.Context
	c   *fakeCloud
	r   *Retention
}

func newRetWorld(t *testing.T, policy RetentionPolicy) *retWorld {
	t.Helper()
	c := newFakeCloud(t)
	return &retWorld{t: t, ctx: WithLogger(context.Background(), sdQuiet), c: c, r: &Retention{
		EC2:     func(region string) retentionEC2API { return c.EC2(region) },
		SSM:     func(region string) parameterGetter { return c.SSM(region) },
		Events:  c.Events(retEast),
		Config:  Config{ParameterPrefix: "/kiln", EventBus: "default"},
		Policy:  policy,
		Regions: []string{retEast, retWest},
		Now:     c.Now,
	}}
}

// image seeds an available kiln image of build in region, built age ago,
// tagged as the snapshot and distribute stages tag images (plus extra),
// with its root snapshot tagged with the build's identity.
func (w *retWorld) image(region, recipe, build string, age time.Duration, extra map[string]string) string {
	w.t.Helper()
	built := w.c.Now().Add(-age)
	tags := map[string]string{
		TagBuild: build, TagRecipe: recipe, TagBuiltAt: built.Format(time.RFC3339),
		TagRecipeHash: "sha256:aa", TagSourceAMI: "ami-base",
	}
	maps.Copy(tags, extra)
	id := w.c.AddImage(region, fakeImageSpec{Name: recipe + "-" + build, Created: built, Tags: tags})
	w.c.TagImageSnapshots(region, id, map[string]string{TagBuild: build, TagRecipe: recipe})
	return id
}

func (w *retWorld) plan() RetentionPlan {
	w.t.Helper()
	p, err := w.r.Plan(w.ctx, w.r.Policy, w.r.Regions)
	if err != nil {
		w.t.Fatalf("Plan() = %v", err)
	}
	return p
}

func (w *retWorld) apply(p RetentionPlan) RetentionReport {
	w.t.Helper()
	rep, err := w.r.Apply(w.ctx, p)
	if err != nil {
		w.t.Fatalf("Apply() = %v", err)
	}
	return rep
}

// retRow is a decision as a test states it.
type retRow struct {
	Recipe, Region, Image string
	Action                RetentionAction
	Reason                string
}

func retRows(p RetentionPlan) []retRow {
	var out []retRow
	for _, d := range p.Decisions {
		img := d.ImageID
		if img == "" {
			img = strings.Join(d.Snapshots, ",")
		}
		out = append(out, retRow{d.Recipe, d.Region, img, d.Action, d.Reason})
	}
	return out
}

// retHistory is the history TestRetentionDecisions and the table golden
// share: two recipes in two Regions, with every kind of use.
type retHistory struct {
	w                                  *retWorld
	w1, w2, w3, w4, w5, w6             [2]string // web builds: [east, west]
	a1, a2, a3, a4                     string    // api builds (east only)
	stopped, terminated, lt, oldLT     string
	notKiln, foreign, w6Extra, w1Extra string
}

func seedRetHistory(t *testing.T) *retHistory {
	w := newRetWorld(t, RetentionPolicy{Keep: 2, MaxAgeDays: 30})
	h := &retHistory{w: w}
	both := func(build string, age time.Duration, east map[string]string) [2]string {
		return [2]string{w.image(retEast, "web", build, age, east), w.image(retWest, "web", build, age, nil)}
	}
	h.w1 = both("web-000000000001", 1*retDay, nil)
	h.w2 = both("web-000000000002", 10*retDay, nil)
	h.w3 = both("web-000000000003", 40*retDay, nil)
	h.w4 = both("web-000000000004", 50*retDay, nil)
	h.w5 = both("web-000000000005", 60*retDay, map[string]string{TagKeep: "true"})
	h.w6 = both("web-000000000006", 70*retDay, nil)
	c := w.c
	// Published in the East; in the West the parameter holds the newest.
	c.PutParam(retEast, "/kiln/web/latest", h.w3[0])
	c.PutParam(retWest, "/kiln/web/latest", h.w1[1])
	h.stopped = c.AddInstanceOf(retEast, h.w4[0], ec2types.InstanceStateNameStopped)
	h.terminated = c.AddInstanceOf(retEast, h.w6[0], ec2types.InstanceStateNameTerminated)
	// web-lt: version 1 (default) runs w4, version 2 (latest) w5.
	h.lt = c.AddLaunchTemplate(retWest, "web-lt", h.w4[1], h.w5[1])
	// old-lt: version 1 ran w6, but version 2 is both default and latest.
	h.oldLT = c.AddLaunchTemplate(retWest, "old-lt", h.w6[1], h.w1[1])
	c.SetDefaultVersion(retWest, h.oldLT, 2)
	// A snapshot of w6 kiln tagged but in no mapping; one of w1 likewise.
	h.w6Extra = c.AddSnapshot(retEast, c.Now().Add(-70*retDay), map[string]string{TagBuild: "web-000000000006", TagRecipe: "web"})
	h.w1Extra = c.AddSnapshot(retEast, c.Now().Add(-1*retDay), map[string]string{TagBuild: "web-000000000001", TagRecipe: "web"})

	apiTags := map[string]string{TagKeepNewest: "1", TagMaxAgeDays: "5"}
	h.a1 = w.image(retEast, "api", "api-000000000001", 1*retDay, apiTags)
	h.a2 = w.image(retEast, "api", "api-000000000002", 3*retDay, apiTags)
	h.a3 = w.image(retEast, "api", "api-000000000003", 6*retDay, apiTags)
	h.a4 = w.image(retEast, "api", "api-000000000004", 0, apiTags)
	c.SetImagePending(retEast, h.a4, time.Hour)

	// Not kiln's: no kiln:recipe tag; and someone else's kiln-tagged image.
	h.notKiln = c.AddImage(retEast, fakeImageSpec{Name: "hand-made", Created: c.Now().Add(-400 * retDay), Tags: map[string]string{TagBuild: "x"}})
	h.foreign = c.AddImage(retEast, fakeImageSpec{Name: "theirs", Owner: "999999999999", Public: true, Created: c.Now().Add(-400 * retDay),
		Tags: map[string]string{TagBuild: "web-000000000009", TagRecipe: "web"}})
	return h
}

// TestRetentionDecisions covers every decision branch: the newest builds
// counted across Regions, the per-recipe tags, every kind of use, kiln:keep,
// age, images that are not available, and images kiln did not make.
func TestRetentionDecisions(t *testing.T) {
	h := seedRetHistory(t)
	p := h.w.plan()
	del := func(days, keep int) string {
		return fmt.Sprintf("older than %d days and not among the newest %d", days, keep)
	}
	want := []retRow{
		{"api", retEast, h.a4, RetainKeep, "image is pending: retention only retires available images"},
		{"api", retEast, h.a1, RetainKeep, "newest 1 kept"},
		{"api", retEast, h.a2, RetainKeep, "younger than 5 days"},
		{"api", retEast, h.a3, RetainDelete, del(5, 1)},
		{"web", retWest, h.w1[1], RetainKeep, "published in /kiln/web/latest; in use by launch template " + h.oldLT + " (old-lt) $Default version 2"},
		{"web", retEast, h.w1[0], RetainKeep, "newest 2 kept"},
		{"web", retWest, h.w2[1], RetainKeep, "newest 2 kept"},
		{"web", retEast, h.w2[0], RetainKeep, "newest 2 kept"},
		{"web", retWest, h.w3[1], RetainDelete, del(30, 2)},
		{"web", retEast, h.w3[0], RetainKeep, "published in /kiln/web/latest"},
		{"web", retWest, h.w4[1], RetainKeep, "in use by launch template " + h.lt + " (web-lt) $Default version 1"},
		{"web", retEast, h.w4[0], RetainKeep, "in use by instance " + h.stopped},
		{"web", retWest, h.w5[1], RetainKeep, "in use by launch template " + h.lt + " (web-lt) $Latest version 2"},
		{"web", retEast, h.w5[0], RetainKeep, "tagged kiln:keep"},
		{"web", retWest, h.w6[1], RetainDelete, del(30, 2)},
		{"web", retEast, h.w6[0], RetainDelete, del(30, 2)},
	}
	// Sorted by recipe, newest build first, then Region.
	if diff := cmp.Diff(want, retRows(p)); diff != "" {
		t.Errorf("Plan() decisions (-want +got):\n%s", diff)
	}
	for _, d := range p.Decisions {
		if d.ImageID == h.notKiln || d.ImageID == h.foreign {
			t.Errorf("Plan() decided on %s, which kiln did not make", d.ImageID)
		}
	}
	if got, want := p.Recipes["api"], (RetentionPolicy{Keep: 1, MaxAgeDays: 5}); got != want {
		t.Errorf("Plan().Recipes[api] = %+v, want %+v (from the recipe's tags)", got, want)
	}
	if len(p.Warnings) != 0 {
		t.Errorf("Plan().Warnings = %q, want none", p.Warnings)
	}
}

// TestRetentionApplyDeletesExactly: images to delete are deregistered with
// their snapshots (mapped and build-tagged), everything else stays, and a
// second run changes nothing.
func TestRetentionApplyDeletesExactly(t *testing.T) {
	h := seedRetHistory(t)
	w, c := h.w, h.w.c
	before := map[string][]string{}
	for _, r := range []string{retEast, retWest} {
		for _, s := range c.Snapshots(r) {
			before[r] = append(before[r], aws.ToString(s.SnapshotId))
		}
	}
	snapsOf := func(region, image string) []string {
		img, ok := c.Image(region, image)
		if !ok {
			t.Fatalf("no image %s in %s", image, region)
		}
		return imageSnapshotIDs(img.Image)
	}
	gone := map[string][]string{
		retEast: append(append(append([]string{h.w6[0], h.a3}, snapsOf(retEast, h.w6[0])...), snapsOf(retEast, h.a3)...), h.w6Extra),
		retWest: append(append([]string{h.w3[1], h.w6[1]}, snapsOf(retWest, h.w3[1])...), snapsOf(retWest, h.w6[1])...),
	}
	p := w.plan()
	rep := w.apply(p)
	if len(rep.Deleted) != len(gone[retEast])+len(gone[retWest]) || len(rep.Failed) != 0 {
		t.Errorf("Apply() report = %+v, want %d deletions", rep, len(gone[retEast])+len(gone[retWest]))
	}
	for _, region := range []string{retEast, retWest} {
		for _, id := range gone[region] {
			if _, ok := c.Image(region, id); ok {
				t.Errorf("image %s in %s survived Apply, want deleted", id, region)
			}
			if _, ok := c.Snapshot(region, id); ok {
				t.Errorf("snapshot %s in %s survived Apply, want deleted", id, region)
			}
		}
		for _, s := range before[region] {
			_, exists := c.Snapshot(region, s)
			if want := !retContains(gone[region], s); exists != want {
				t.Errorf("snapshot %s in %s exists = %t after Apply, want %t", s, region, exists, want)
			}
		}
	}
	for _, id := range []string{h.notKiln, h.foreign, h.w1[0], h.w5[0], h.a4} {
		if _, ok := c.Image(retEast, id); !ok {
			t.Errorf("image %s in %s deleted, want kept", id, retEast)
		}
	}
	if _, ok := c.Snapshot(retEast, h.w1Extra); !ok {
		t.Errorf("snapshot %s of kept build web-000000000001 deleted", h.w1Extra)
	}

	// Again: nothing to do, and nothing done.
	calls := c.Calls("DeregisterImage") + c.Calls("DeleteSnapshot")
	again := w.plan()
	if n := again.Count(RetainDelete) + again.Count(RetainDeprecate); n != 0 {
		t.Errorf("second Plan() has %d changes, want none:\n%v", n, retRows(again))
	}
	w.apply(again)
	if got := c.Calls("DeregisterImage") + c.Calls("DeleteSnapshot"); got != calls {
		t.Errorf("second Apply made %d delete calls, want 0", got-calls)
	}
}

func retContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestRetentionInterruptedRunFinishes: a snapshot deletion fails after the
// image is deregistered; the next run finds the snapshot by its build tag
// and deletes it.
func TestRetentionInterruptedRunFinishes(t *testing.T) {
	w := newRetWorld(t, RetentionPolicy{Keep: 1, MaxAgeDays: 30})
	w.image(retEast, "web", "web-000000000001", retDay, nil)
	old := w.image(retEast, "web", "web-000000000002", 40*retDay, nil)
	img, _ := w.c.Image(retEast, old)
	mapped := imageSnapshotIDs(img.Image)
	extra := w.c.AddSnapshot(retEast, w.c.Now().Add(-40*retDay), map[string]string{TagBuild: "web-000000000002", TagRecipe: "web"})

	w.c.Fail(fakeFault{Action: "DeleteSnapshot", Code: "RequestLimitExceeded"})
	_, err := w.r.Apply(w.ctx, w.plan())
	if err == nil || !strings.Contains(err.Error(), "delete snapshot") {
		t.Fatalf("Apply() with a failing DeleteSnapshot = %v, want the failure", err)
	}
	if _, ok := w.c.Image(retEast, old); ok {
		t.Fatalf("image %s still registered after the interrupted run", old)
	}
	left := 0
	for _, s := range append(mapped, extra) {
		if _, ok := w.c.Snapshot(retEast, s); ok {
			left++
		}
	}
	if left != 1 {
		t.Fatalf("%d snapshots of the deleted image left after one failure, want 1", left)
	}

	p := w.plan()
	var orphans []retRow
	for _, r := range retRows(p) {
		if r.Action == RetainDelete {
			orphans = append(orphans, r)
		}
	}
	if len(orphans) != 1 || !strings.Contains(orphans[0].Reason, "web-000000000002, whose images in us-east-1 are gone") {
		t.Fatalf("Plan() after the interrupted run: deletions %v, want the one orphaned snapshot", orphans)
	}
	w.apply(p)
	for _, s := range append(mapped, extra) {
		if _, ok := w.c.Snapshot(retEast, s); ok {
			t.Errorf("snapshot %s of the deleted image left after the second run", s)
		}
	}
}

// TestRetentionOrphans: an orphaned snapshot is left alone while it is
// young (its image may not be visible yet), and never when kiln did not
// tag it as a recipe's.
func TestRetentionOrphans(t *testing.T) {
	w := newRetWorld(t, RetentionPolicy{})
	young := w.c.AddSnapshot(retEast, w.c.Now().Add(-10*time.Minute), map[string]string{TagBuild: "web-000000000007", TagRecipe: "web"})
	notOurs := w.c.AddSnapshot(retEast, w.c.Now().Add(-100*retDay), map[string]string{TagBuild: "web-000000000008"})
	if p := w.plan(); len(p.Decisions) != 0 {
		t.Errorf("Plan() = %v, want no decisions (young orphan, untagged snapshot)", retRows(p))
	}
	w.c.Advance(time.Hour)
	p := w.plan()
	if got := retRows(p); len(got) != 1 || got[0].Image != young || got[0].Action != RetainDelete {
		t.Errorf("Plan() an hour later = %v, want only %s deleted", got, young)
	}
	w.apply(p)
	if _, ok := w.c.Snapshot(retEast, notOurs); !ok {
		t.Errorf("snapshot %s without kiln:recipe deleted", notOurs)
	}
}

// TestRetentionDeprecation: with deprecate days, an image is deprecated
// that many days before it is deleted; an emulator without
// EnableImageDeprecation gets a warning, AWS an error.
func TestRetentionDeprecation(t *testing.T) {
	w := newRetWorld(t, RetentionPolicy{Keep: 1, MaxAgeDays: 30, DeprecateDays: 10})
	w.image(retEast, "web", "web-000000000001", retDay, nil)
	mid := w.image(retEast, "web", "web-000000000002", 25*retDay, nil)
	young := w.image(retEast, "web", "web-000000000003", 15*retDay, nil)
	p := w.plan()
	got := map[string]retRow{}
	for _, r := range retRows(p) {
		got[r.Image] = r
	}
	if r := got[mid]; r.Action != RetainDeprecate || r.Reason != "older than 20 days: deprecated 10 days before deletion at 30 days" {
		t.Errorf("decision on the 25-retDay-old image = %+v, want deprecate", r)
	}
	if r := got[young]; r.Action != RetainKeep || r.Reason != "younger than 30 days" {
		t.Errorf("decision on the 15-retDay-old image = %+v, want keep", r)
	}
	rep := w.apply(p)
	img, _ := w.c.Image(retEast, mid)
	at, err := time.Parse(time.RFC3339, aws.ToString(img.DeprecationTime))
	if err != nil || !at.After(w.c.Now()) || at.After(w.c.Now().Add(3*time.Minute)) {
		t.Errorf("image %s deprecation time = %q, want within minutes after now (EC2 refuses the past)", mid, aws.ToString(img.DeprecationTime))
	}
	if len(rep.Deprecated) != 1 {
		t.Errorf("Apply().Deprecated = %v, want the one image", rep.Deprecated)
	}

	decision := func() RetentionDecision {
		for _, d := range w.plan().Decisions {
			if d.ImageID == mid {
				return d
			}
		}
		t.Fatalf("Plan() has no decision on %s", mid)
		return RetentionDecision{}
	}
	w.c.Advance(time.Hour)
	if d := decision(); d.Action != RetainKeep || d.Reason != "deprecated; deleted when 30 days old" {
		t.Errorf("decision on the deprecated image = %+v, want keep until 30 days", d)
	}
	w.c.Advance(5 * retDay)
	if d := decision(); d.Action != RetainDelete {
		t.Errorf("decision on the image at 30 days = %+v, want delete", d)
	}

	for _, tc := range []struct {
		name     string
		emulator bool
		wantErr  bool
	}{{"emulator", true, false}, {"aws", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newRetWorld(t, RetentionPolicy{Keep: 1, MaxAgeDays: 30, DeprecateDays: 10})
			w.r.Emulator = tc.emulator
			w.image(retEast, "web", "web-000000000001", retDay, nil)
			w.image(retEast, "web", "web-000000000002", 25*retDay, nil)
			w.c.Fail(fakeFault{Action: "EnableImageDeprecation", Code: "NotImplemented"})
			rep, err := w.r.Apply(w.ctx, w.plan())
			if (err != nil) != tc.wantErr {
				t.Fatalf("Apply() with EnableImageDeprecation not implemented, Emulator=%t = %v, want error %t", tc.emulator, err, tc.wantErr)
			}
			if tc.emulator && len(rep.Warnings) != 1 {
				t.Errorf("Apply().Warnings = %q, want one about the emulator", rep.Warnings)
			}
		})
	}
}

// TestRetentionLaunchTemplateParameters: a launch template naming its
// image by SSM parameter protects the image; one kiln cannot resolve is a
// warning.
func TestRetentionLaunchTemplateParameters(t *testing.T) {
	for _, tc := range []struct {
		name string
		ec2  func(c *fakeCloud, region string) retentionEC2API
	}{
		{"ec2 resolves", func(c *fakeCloud, region string) retentionEC2API { return c.EC2(region) }},
		{"kiln resolves", func(c *fakeCloud, region string) retentionEC2API { return retNoAlias{c.EC2(region)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newRetWorld(t, RetentionPolicy{Keep: 1, MaxAgeDays: 30})
			w.r.Regions = []string{retEast}
			w.r.EC2 = func(region string) retentionEC2API { return tc.ec2(w.c, region) }
			w.image(retEast, "web", "web-000000000001", retDay, nil)
			old := w.image(retEast, "web", "web-000000000002", 40*retDay, nil)
			w.c.PutParam(retEast, "/team/golden", old)
			lt := w.c.AddLaunchTemplate(retEast, "team", "resolve:ssm:/team/golden")
			w.c.AddLaunchTemplate(retEast, "broken", "resolve:ssm:/nowhere")
			p := w.plan()
			rows := retRows(p)
			if len(rows) != 2 || rows[1].Image != old || rows[1].Action != RetainKeep || rows[1].Reason != "in use by launch template "+lt+" (team) $Default version 1" {
				t.Errorf("decisions = %+v, want %s kept for launch template %s", rows, old, lt)
			}
			if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "/nowhere") {
				t.Errorf("Plan().Warnings = %q, want one about /nowhere", p.Warnings)
			}
		})
	}
}

// retNoAlias is an EC2 that leaves resolve:ssm: images unresolved, as an
// emulator does.
type retNoAlias struct{ *fakeEC2 }

func (n retNoAlias) DescribeLaunchTemplateVersions(ctx context.Context, in *ec2.DescribeLaunchTemplateVersionsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplateVersionsOutput, error) {
	c := *in
	c.ResolveAlias = nil
	return n.fakeEC2.DescribeLaunchTemplateVersions(ctx, &c, optFns...)
}

// TestRetentionRecipeTagsInvalid: a recipe tag kiln cannot use is a warning
// and the default applies.
func TestRetentionRecipeTagsInvalid(t *testing.T) {
	w := newRetWorld(t, RetentionPolicy{Keep: 2, MaxAgeDays: 30})
	for i, age := range []time.Duration{retDay, 2 * retDay, 40 * retDay} {
		w.image(retEast, "web", fmt.Sprintf("web-%012d", i), age, map[string]string{TagKeepNewest: "0", TagMaxAgeDays: "soon"})
	}
	p := w.plan()
	if got := p.Recipes["web"]; got != (RetentionPolicy{Keep: 2, MaxAgeDays: 30}) {
		t.Errorf("policy for web = %+v, want the defaults", got)
	}
	if len(p.Warnings) != 2 {
		t.Errorf("Plan().Warnings = %q, want two (keep-newest, max-age-days)", p.Warnings)
	}
	if p.Count(RetainDelete) != 1 {
		t.Errorf("Plan() deletes %d, want 1", p.Count(RetainDelete))
	}
}

// TestRetentionSeveralBuilds: a recipe with several builds keeps each
// build's line separately, and its per-build parameter protects.
func TestRetentionSeveralBuilds(t *testing.T) {
	w := newRetWorld(t, RetentionPolicy{Keep: 1, MaxAgeDays: 30})
	w.r.Regions = []string{retEast}
	app := map[string]string{TagBuildName: "app"}
	worker := map[string]string{TagBuildName: "worker"}
	w.image(retEast, "multi", "multi-000000000001", retDay, app)
	oldApp := w.image(retEast, "multi", "multi-000000000002", 40*retDay, app)
	onlyWorker := w.image(retEast, "multi", "multi-000000000003", 50*retDay, worker)
	oldWorker := w.image(retEast, "multi", "multi-000000000004", 60*retDay, worker)
	w.c.PutParam(retEast, "/kiln/multi/worker/latest", oldWorker)
	got := map[string]retRow{}
	for _, r := range retRows(w.plan()) {
		got[r.Image] = r
	}
	for id, want := range map[string]string{
		oldApp:     "older than 30 days and not among the newest 1",
		onlyWorker: "newest 1 kept",
		oldWorker:  "published in /kiln/multi/worker/latest",
	} {
		if got[id].Reason != want {
			t.Errorf("decision on %s = %+v, want %q", id, got[id], want)
		}
	}
}

func TestRetentionApplyRefusesStalePlan(t *testing.T) {
	w := newRetWorld(t, RetentionPolicy{Keep: 1, MaxAgeDays: 30})
	w.image(retEast, "web", "web-000000000001", retDay, nil)
	w.image(retEast, "web", "web-000000000002", 40*retDay, nil)
	p := w.plan()
	w.c.Advance(2 * time.Hour)
	if _, err := w.r.Apply(w.ctx, p); err == nil || !strings.Contains(err.Error(), "plan again") {
		t.Errorf("Apply(plan made 2h ago) = %v, want a refusal", err)
	}
	if n := w.c.Calls("DeregisterImage"); n != 0 {
		t.Errorf("Apply(stale plan) deregistered %d images", n)
	}
}

// TestRetentionHandle: one run, one event with every decision; a dry run
// changes nothing.
func TestRetentionHandle(t *testing.T) {
	for _, dry := range []bool{true, false} {
		t.Run(fmt.Sprintf("dry_run=%t", dry), func(t *testing.T) {
			h := seedRetHistory(t)
			res, err := h.w.r.Handle(h.w.ctx, RetentionEvent{DryRun: dry})
			if err != nil {
				t.Fatalf("Handle() = %v", err)
			}
			if res.Deleted != 4 || res.Kept != 12 {
				t.Errorf("Handle() = %+v, want 4 deleted and 12 kept", res)
			}
			events := h.w.c.EventsPut()
			if len(events) != 1 || aws.ToString(events[0].DetailType) != EventRetentionDecisions || aws.ToString(events[0].Source) != "kiln" {
				t.Fatalf("events put = %d (%v), want one %s", len(events), events, EventRetentionDecisions)
			}
			var detail RetentionDecisionsDetail
			if err := json.Unmarshal([]byte(aws.ToString(events[0].Detail)), &detail); err != nil {
				t.Fatal(err)
			}
			if len(detail.Decisions) != 16 || detail.DryRun != dry || (detail.Report == nil) != dry {
				t.Errorf("event detail: %d decisions, dry run %t, report %v; want 16, %t, report unless dry", len(detail.Decisions), detail.DryRun, detail.Report, dry)
			}
			if n := h.w.c.Calls("DeregisterImage"); (n == 0) != dry {
				t.Errorf("Handle(dry run %t) deregistered %d images", dry, n)
			}
		})
	}
}

func TestFitDecisions(t *testing.T) {
	var ds []RetentionDecision
	for i := range 3000 {
		a := RetainKeep
		if i%100 == 0 {
			a = RetainDelete
		}
		ds = append(ds, RetentionDecision{Recipe: "web", Region: retEast, ImageID: fmt.Sprintf("ami-%017d", i), Action: a, Reason: strings.Repeat("x", 60)})
	}
	wrap := func(ds []RetentionDecision) any { return RetentionDecisionsDetail{Decisions: ds} }
	kept, omitted := fitDecisions(ds, func(d RetentionDecision) bool { return d.Action == RetainKeep }, wrap)
	b, _ := json.Marshal(wrap(kept))
	if len(b) > maxEventDetail || omitted == 0 || len(kept)+omitted != len(ds) {
		t.Errorf("fitDecisions: %d kept (%d bytes), %d omitted, want within %d bytes", len(kept), len(b), omitted, maxEventDetail)
	}
	deletes := 0
	for _, d := range kept {
		if d.Action == RetainDelete {
			deletes++
		}
	}
	if deletes != 30 {
		t.Errorf("fitDecisions kept %d delete decisions, want all 30", deletes)
	}
}

func TestRetentionPolicyFromEnv(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		want    RetentionPolicy
		wantErr bool
	}{
		{map[string]string{}, RetentionPolicy{Keep: 3, MaxAgeDays: 90}, false},
		{map[string]string{"KILN_RETENTION_KEEP": "5", "KILN_RETENTION_DAYS": "14", "KILN_RETENTION_DEPRECATE_DAYS": "3"}, RetentionPolicy{Keep: 5, MaxAgeDays: 14, DeprecateDays: 3}, false},
		{map[string]string{"KILN_KEEP": "2", "KILN_MAX_AGE_DAYS": "7"}, RetentionPolicy{Keep: 2, MaxAgeDays: 7}, false},
		{map[string]string{"KILN_RETENTION_KEEP": "-1"}, RetentionPolicy{}, true},
		{map[string]string{"KILN_RETENTION_DAYS": "ninety"}, RetentionPolicy{}, true},
	} {
		for _, k := range []string{"KILN_RETENTION_KEEP", "KILN_KEEP", "KILN_RETENTION_DAYS", "KILN_MAX_AGE_DAYS", "KILN_RETENTION_DEPRECATE_DAYS"} {
			t.Setenv(k, tc.env[k])
		}
		got, err := RetentionPolicyFromEnv()
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("RetentionPolicyFromEnv() with %v = %+v, %v; want %+v (error %t)", tc.env, got, err, tc.want, tc.wantErr)
		}
	}
	t.Setenv("KILN_REGIONS", " us-east-1, eu-west-1,us-east-1 ")
	if got := RegionsFromEnv(); !cmp.Equal(got, []string{"us-east-1", "eu-west-1"}) {
		t.Errorf("RegionsFromEnv() = %v", got)
	}
}

// TestRetentionTableGolden pins what `kiln prune --dry-run` prints.
// Rewrite with: go test ./pkg/bake -run RetentionTableGolden -update
func TestRetentionTableGolden(t *testing.T) {
	h := seedRetHistory(t)
	var b strings.Builder
	if err := h.w.plan().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	retGolden(t, filepath.Join("testdata", "retention", "prune.golden"), b.String())
}

// retGolden compares got with the golden file, or rewrites it with
// -update.
func retGolden(t *testing.T, file, got string) {
	t.Helper()
	if updateGolden() {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("read golden file (create it with -update): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; rewrite with -update):\n%s", file, diff)
	}
}

// TestRetentionUnknownAge: an image whose age kiln cannot tell is kept.
func TestRetentionUnknownAge(t *testing.T) {
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	img := func(id, build string, built time.Time) *kilnImage {
		return &kilnImage{Image: ec2types.Image{ImageId: aws.String(id), State: ec2types.ImageStateAvailable},
			region: retEast, recipe: "web", buildID: build, builtAt: built, tags: map[string]string{}}
	}
	inv := map[string]*regionInventory{retEast: {region: retEast, usedBy: map[string][]string{}, published: map[string][]string{}}}
	ds := decideLine(now, RetentionPolicy{Keep: 1, MaxAgeDays: 30}, []*kilnImage{
		img("ami-new", "web-1", now.Add(-retDay)), img("ami-unknown", "web-0", time.Time{}),
	}, inv)
	if ds[1].Action != RetainKeep || !strings.HasPrefix(ds[1].Reason, "age unknown") {
		t.Errorf("decision on an image of unknown age = %+v, want keep", ds[1])
	}
}
