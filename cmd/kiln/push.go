package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/kiln-dev/kiln/pkg/bake"
	"github.com/kiln-dev/kiln/pkg/emulator"
	"github.com/kiln-dev/kiln/pkg/local"
)

// errPushNeedsEmulator is kiln push with nowhere to push to.
const errPushNeedsEmulator = "kiln push uploads to the AWS emulator of `kiln serve --local`, which prints its address: " +
	"pass --endpoint URL or set AWS_ENDPOINT_URL (in AWS, upload to the stack's bucket with `aws s3 cp`)"

func runPush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kiln push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		endpoint = fs.String("endpoint", "", "the AWS emulator's `URL` (default $AWS_ENDPOINT_URL)")
		bucket   = fs.String("bucket", local.DefaultBucket, "the kiln `bucket`")
	)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: kiln push RECIPE [--endpoint URL] [--bucket B]")
		fmt.Fprintln(stderr, "\nUploads a recipe under recipes/ in the local kiln bucket, as `aws s3 cp` would: a template file")
		fmt.Fprintln(stderr, "or a bundle as it is, a folder as a .tar.gz bundle. `kiln serve --local` bakes each version uploaded.")
		fmt.Fprintln(stderr, "The recipe must load as the pipeline loads it: with no -var values and no environment.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	// Accept flags after RECIPE too (kiln push web --endpoint URL).
	var path string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		path, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if path == "" && fs.NArg() == 1 {
		path = fs.Arg(0)
	} else if fs.NArg() > 0 {
		path = "" // more than one recipe
	}
	if path == "" {
		fs.Usage()
		return exitError{2}
	}
	// Check the recipe as the plan step will read it, so that a broken
	// recipe is reported here rather than as a failed bake.
	if _, err := bake.Load(path, bake.LoadOptions{Env: map[string]string{}}); err != nil {
		return reportLoadError(stderr, err)
	}
	where := *endpoint
	if where == "" {
		ep, ok := emulator.ExternalEndpoint()
		if !ok {
			return errors.New(errPushNeedsEmulator)
		}
		where = ep
	}
	cloud, err := local.Start(ctx, local.Options{Endpoint: where, Bucket: *bucket, Log: io.Discard})
	if err != nil {
		return err
	}
	defer cloud.Close()
	ref, err := cloud.Upload(ctx, path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Uploaded %s to s3://%s/%s\n  version %s\n", path, ref.Bucket, ref.Key, ref.Version)
	fmt.Fprintf(stdout, "`kiln serve --local` bakes this version as build %s.\n", bake.NewBuildID(ref, nil, "", ""))
	return nil
}
