package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/emulator"
	"github.com/kiln-dev/kiln/pkg/local"
)

// syncBuffer is a bytes.Buffer that kiln serve writes to while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// useTestMoto points the commands at the test binary's moto (emptied for
// this test) through $AWS_ENDPOINT_URL, as a user points them at the moto
// kiln serve started, and returns its config.
func useTestMoto(t *testing.T) aws.Config {
	t.Helper()
	cfg := emulator.ForTest(t)
	t.Setenv(emulator.EndpointEnv, aws.ToString(cfg.BaseEndpoint))
	return cfg
}

func TestServeNeedsLocal(t *testing.T) {
	code, _, errOut := runKiln(t, "serve")
	if code != 1 || !strings.Contains(errOut, "needs --local") {
		t.Errorf("kiln serve = %d, %q; want 1 and a word about --local", code, errOut)
	}
}

// TestServeReportsBadFlagsAtOnce: every bad flag is reported before
// anything starts.
func TestServeReportsBadFlagsAtOnce(t *testing.T) {
	code, out, errOut := runKiln(t, "serve", "--local",
		"--rebuild-schedule", "cron(0 3 * * * *)", "--retention-schedule", "rate(1 minutes)",
		"--fire-now", "weekly", "--time-zone", "Mars/Olympus", "--keep", "0")
	if code != 1 {
		t.Fatalf("kiln serve with bad flags = %d, want 1\nstdout %s\nstderr %s", code, out, errOut)
	}
	for _, want := range []string{"--rebuild-schedule", "--retention-schedule", "rate(1 minute)", `--fire-now "weekly"`, "--time-zone", "keep 0"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if out != "" {
		t.Errorf("kiln serve started something:\n%s", out)
	}
}

// TestServeFireNowRetention: kiln serve --local --fire-now retention runs
// the retention job at once, prints its decision and summary, and stops
// cleanly when interrupted.
func TestServeFireNowRetention(t *testing.T) {
	cfg := useTestMoto(t)
	old := seedKilnImage(t, cfg, "tidy", "tidy-old", time.Now().AddDate(0, 0, -200))
	seedKilnImage(t, cfg, "tidy", "tidy-new", time.Now().AddDate(0, 0, -1))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--local", "--fire-now", "retention", "--keep", "1", "--max-age", "30",
			"--rebuild-schedule", "off", "--poll", "100ms"}, &out, &errOut)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "deleted (with their snapshots)") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no retention summary within 30s\nstdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel() // Ctrl-C
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("kiln serve = %d after Ctrl-C, want 0\nstderr:\n%s", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("kiln serve did not stop within 30s of Ctrl-C\nstdout:\n%s", out.String())
	}
	text := out.String()
	for _, want := range []string{
		"the emulator at " + aws.ToString(cfg.BaseEndpoint),
		"aws s3 cp recipe.pkr.hcl s3://kiln-local/recipes/",
		"Schedule rebuild   off",
		"Schedule retention cron(0 4 * * ? *), next",
		"event: schedule retention fired (--fire-now)",
		"retention delete " + old + " (tidy, us-east-1, build tidy-old)",
		"retention 1 image kept, 0 deprecated, 1 deleted",
		"stopping: no bake is running",
		"stopped: nothing kiln serve started is running",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("kiln serve output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "stopping the sandboxes and moto") {
		t.Errorf("kiln serve claims to stop a moto it did not start:\n%s", text)
	}
}

// seedKilnImage makes an image as a bake of recipe would have, built at.
func seedKilnImage(t *testing.T, cfg aws.Config, recipe, build string, builtAt time.Time) string {
	t.Helper()
	ctx := context.Background()
	e := ec2.NewFromConfig(cfg)
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

// TestPush: kiln push uploads a template file as it is and a folder as a
// bundle, under recipes/, and names the version and the build serve bakes.
func TestPush(t *testing.T) {
	cfg := useTestMoto(t)
	s3c := s3.NewFromConfig(cfg, emulator.S3Options)
	for _, tc := range []struct {
		recipe, key string
	}{
		{"../../pkg/local/testdata/serve/hello.pkr.hcl", "recipes/hello.pkr.hcl"},
		{"../../pkg/local/testdata/app", "recipes/app.tar.gz"},
	} {
		code, out, errOut := runKiln(t, "push", tc.recipe)
		if code != 0 {
			t.Fatalf("kiln push %s = %d: %s", tc.recipe, code, errOut)
		}
		if !strings.Contains(out, "s3://"+local.DefaultBucket+"/"+tc.key) {
			t.Errorf("kiln push %s printed %q, want the key %s", tc.recipe, out, tc.key)
		}
		head, err := s3c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(local.DefaultBucket), Key: aws.String(tc.key)})
		if err != nil {
			t.Fatalf("HeadObject(%s) after kiln push: %v", tc.key, err)
		}
		version := aws.ToString(head.VersionId)
		ref := bake.RecipeRef{Bucket: local.DefaultBucket, Key: tc.key, Version: version}
		for _, want := range []string{"version " + version, "as build " + bake.NewBuildID(ref, nil, "", "")} {
			if !strings.Contains(out, want) {
				t.Errorf("kiln push %s printed %q, want %q", tc.recipe, out, want)
			}
		}
	}
	// Flags after the recipe, as with kiln bundle.
	if code, _, errOut := runKiln(t, "push", "../../pkg/local/testdata/serve/hello.pkr.hcl", "--endpoint", aws.ToString(cfg.BaseEndpoint)); code != 0 {
		t.Errorf("kiln push RECIPE --endpoint URL = %d: %s", code, errOut)
	}
}

// TestPushRefusesBrokenRecipe: a recipe that would fail its bake's plan
// step is reported with every problem, and nothing is uploaded.
func TestPushRefusesBrokenRecipe(t *testing.T) {
	cfg := useTestMoto(t)
	code, _, errOut := runKiln(t, "push", "testdata/broken")
	if code != 1 || !strings.Contains(errOut, "broken.pkr.hcl:3:3") {
		t.Errorf("kiln push testdata/broken = %d, %q; want 1 and the problems", code, errOut)
	}
	out, err := s3.NewFromConfig(cfg, emulator.S3Options).ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(local.DefaultBucket)})
	if err == nil && len(out.Contents) > 0 {
		t.Errorf("kiln push uploaded a broken recipe: %v", out.Contents)
	}
}

func TestPushNeedsAnEmulator(t *testing.T) {
	t.Setenv(emulator.EndpointEnv, "")
	code, _, errOut := runKiln(t, "push", "../../pkg/local/testdata/serve/hello.pkr.hcl")
	if code != 1 || !strings.Contains(errOut, "kiln serve --local") || !strings.Contains(errOut, "--endpoint") {
		t.Errorf("kiln push without an emulator = %d, %q; want 1 and where to find one", code, errOut)
	}
}
