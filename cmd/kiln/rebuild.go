package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/local"
)

// errNeedsDryRun is kiln rebuild without --dry-run: starting the bakes is
// the rebuild schedule's job, in AWS (functions/rebuild) and locally in
// `kiln serve --local`, which runs the state machine.
var errNeedsDryRun = errors.New("kiln rebuild only shows the decisions (--dry-run): the rebuild schedule starts the bakes, in AWS and in `kiln serve --local`")

func runRebuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kiln rebuild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		dryRun   = fs.Bool("dry-run", false, "print the decisions without starting anything (required)")
		maxAge   = fs.Int("max-age", bake.DefaultRebuildMaxAgeDays, "rebake a recipe whose newest image is `D` days old (0: never by age; a recipe's kiln:rebuild tag overrides)")
		bucket   = fs.String("bucket", local.DefaultBucket, "the kiln `bucket` whose recipes/ to decide on")
		endpoint = fs.String("endpoint", "", "the AWS emulator's `URL` (default $AWS_ENDPOINT_URL)")
	)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: kiln rebuild --dry-run [--max-age D] [--bucket B] [--endpoint URL] [RECIPE ...]")
		fmt.Fprintln(stderr, "\nDecides, for each recipe under recipes/ in the kiln bucket (or the RECIPEs named), whether the")
		fmt.Fprintln(stderr, "rebuild schedule would bake it: its base image now resolves to another AMI, its content changed,")
		fmt.Fprintln(stderr, "or its newest image is too old. A recipe sets its own cadence with the tag kiln:rebuild")
		fmt.Fprintln(stderr, "(\"never\", \"on-change\", or an age such as \"7d\").")
		fmt.Fprintf(stderr, "\n"+emulatorHelp+".\n\nFlags:\n", "rebuild")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if !*dryRun {
		return errNeedsDryRun
	}
	if *maxAge < 0 {
		return fmt.Errorf("--max-age %d: want 0 or more days", *maxAge)
	}
	a, where, err := emulatorAWS(ctx, "rebuild", *endpoint)
	if err != nil {
		return err
	}
	conf := bake.Config{Bucket: *bucket}.WithDefaults()
	job := bake.NewRebuild(a, conf, nil, time.Duration(*maxAge)*24*time.Hour)
	job.Bakes, job.Starter, job.Events = noRunningBakes{}, nil, nil
	ctx = bake.WithLogger(ctx, slog.New(slog.DiscardHandler))
	started := time.Now()
	ds, err := job.Decide(ctx, fs.Args())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "kiln rebuild (dry run) on %s: recipes in s3://%s/%s, max age %s\n\n", where, *bucket, bake.RecipePrefix, maxAgeText(*maxAge))
	if len(ds) == 0 {
		fmt.Fprintln(stdout, "No recipes.")
		return nil
	}
	if err := bake.WriteRebuildTable(stdout, ds, started); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "Dry run: nothing was started. (Outside `kiln serve --local` no bake runs locally, so none counts as running.)")
	return nil
}

func maxAgeText(days int) string {
	if days == 0 {
		return "none"
	}
	return fmt.Sprintf("%d days", days)
}

// noRunningBakes answers that no bake is running: outside `kiln serve
// --local` nothing runs bakes on the emulator between commands.
type noRunningBakes struct{}

func (noRunningBakes) RunningBakes(context.Context, bake.RecipeRef) ([]string, error) {
	return nil, nil
}
