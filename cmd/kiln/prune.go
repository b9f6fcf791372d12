package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/emulator"
	"github.com/kiln-dev/kiln/pkg/local"
)

// The scheduled jobs' commands run against an AWS emulator that is already
// running: local mode keeps its images, parameters and bucket only while an
// emulator runs, so the target is `kiln serve --local` (which keeps one
// running) or a moto the user started, named by --endpoint or
// $AWS_ENDPOINT_URL. In AWS the same jobs run as the stack's scheduled
// Lambdas (functions/retention, functions/rebuild).
const emulatorHelp = "kiln %s works on the AWS emulator that local mode uses, which keeps its state only while it runs: " +
	"start `kiln serve --local` (or moto_server) and pass --endpoint URL or set AWS_ENDPOINT_URL"

// emulatorAWS returns the clients of the emulator at endpoint (or
// $AWS_ENDPOINT_URL) and says where that is.
func emulatorAWS(ctx context.Context, command, endpoint string) (*bake.AWS, string, error) {
	where := "the emulator at " + endpoint
	if endpoint == "" {
		ep, ok := emulator.ExternalEndpoint()
		if !ok {
			return nil, "", fmt.Errorf(emulatorHelp, command)
		}
		endpoint, where = ep, "the emulator at "+ep+" ($AWS_ENDPOINT_URL)"
	}
	cfg, err := emulator.Config(ctx, endpoint, local.DefaultRegion)
	if err != nil {
		return nil, "", err
	}
	return &bake.AWS{Config: cfg, S3Options: []func(*s3.Options){emulator.S3Options}}, where, nil
}

// defaultRegions are the Regions the jobs' commands look in when no
// --region is given: $KILN_REGIONS, else local mode's Region.
func defaultRegions() []string {
	if os.Getenv("KILN_REGIONS") != "" {
		return bake.RegionsFromEnv()
	}
	return []string{local.DefaultRegion}
}

func runPrune(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kiln prune", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		dryRun    = fs.Bool("dry-run", false, "list what would be deleted and why each survivor survives; change nothing")
		keep      = fs.Int("keep", bake.DefaultRetentionKeep, "keep each recipe's newest `N` builds (a recipe's kiln:keep-newest tag overrides)")
		maxAge    = fs.Int("max-age", bake.DefaultRetentionDays, "delete images older than `D` days that are neither among the newest nor in use (kiln:max-age-days overrides)")
		deprecate = fs.Int("deprecate", 0, "deprecate images `D` days before deleting them (kiln:deprecate-days overrides)")
		endpoint  = fs.String("endpoint", "", "the AWS emulator's `URL` (default $AWS_ENDPOINT_URL)")
		prefix    = fs.String("parameter-prefix", "/kiln", "where the published AMI IDs live (<prefix>/<recipe>/latest)")
		regions   listFlag
	)
	fs.Var(&regions, "region", "a `Region` to look in; repeat for several (default $KILN_REGIONS, else "+local.DefaultRegion+")")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: kiln prune [--dry-run] [--keep N] [--max-age D] [--region R ...] [--endpoint URL]")
		fmt.Fprintln(stderr, "\nRetires old images of every recipe in the local emulator: keeps each recipe's newest builds and")
		fmt.Fprintln(stderr, "every image in use (published, run by an instance, named by a launch template, tagged kiln:keep),")
		fmt.Fprintln(stderr, "and deletes the others older than the maximum age with their snapshots.")
		fmt.Fprintf(stderr, "\n"+emulatorHelp+".\n\nFlags:\n", "prune")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitError{2}
	}
	if len(regions) == 0 {
		regions = defaultRegions()
	}
	policy := bake.RetentionPolicy{Keep: *keep, MaxAgeDays: *maxAge, DeprecateDays: *deprecate}
	if err := policy.Validate(); err != nil {
		return err
	}
	a, where, err := emulatorAWS(ctx, "prune", *endpoint)
	if err != nil {
		return err
	}
	conf := bake.Config{ParameterPrefix: *prefix}.WithDefaults()
	job := bake.NewRetention(a, conf, policy, regions)
	// Locally there is no one to tell: no event.
	job.Events = nil
	job.Emulator = true
	// The table and the summary say it all; the job's log lines are for
	// the Lambda's log.
	ctx = bake.WithLogger(ctx, slog.New(slog.DiscardHandler))

	plan, err := job.Plan(ctx, policy, regions)
	if err != nil {
		return err
	}
	mode := "deleting"
	if *dryRun {
		mode = "dry run"
	}
	fmt.Fprintf(stdout, "kiln prune (%s) on %s: keep the newest %d, delete after %d days", mode, where, policy.Keep, policy.MaxAgeDays)
	if policy.DeprecateDays > 0 {
		fmt.Fprintf(stdout, ", deprecate %d days before", policy.DeprecateDays)
	}
	fmt.Fprint(stdout, "\n\n")
	if len(plan.Decisions) == 0 {
		fmt.Fprintf(stdout, "No kiln images in %s.\n", strings.Join(plan.Regions, ", "))
		return nil
	}
	if err := plan.WriteTable(stdout); err != nil {
		return err
	}
	changes := plan.Count(bake.RetainDelete) + plan.Count(bake.RetainDeprecate)
	switch {
	case *dryRun:
		fmt.Fprintln(stdout, "Dry run: nothing was changed. Run without --dry-run to do it.")
		return nil
	case changes == 0:
		fmt.Fprintln(stdout, "Nothing to do.")
		return nil
	}
	rep, err := job.Apply(ctx, plan)
	for _, w := range rep.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	fmt.Fprintf(stdout, "Deprecated %d images; deleted %s.\n", len(rep.Deprecated), describeDeleted(rep.Deleted))
	if err != nil {
		fmt.Fprintln(stderr, "Not everything could be done (run kiln prune again to finish):")
		for _, f := range rep.Failed {
			fmt.Fprintln(stderr, "  "+f)
		}
		return exitError{1}
	}
	return nil
}

// describeDeleted counts "region:ami-…" and "region:snap-…" entries.
func describeDeleted(ids []string) string {
	images, snaps := 0, 0
	for _, id := range ids {
		_, rest, _ := strings.Cut(id, ":")
		if strings.HasPrefix(rest, "ami-") {
			images++
		} else {
			snaps++
		}
	}
	return fmt.Sprintf("%d images and %d snapshots", images, snaps)
}
