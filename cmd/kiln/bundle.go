package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/kiln-dev/kiln/pkg/bake"
)

func runBundle(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kiln bundle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "output file: NAME.tar.gz or NAME.zip (default: DIR.tar.gz)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: kiln bundle DIR [-o FILE]\n\nPacks a recipe folder and the scripts, files and playbooks it refers to into one archive to upload.")
		fs.PrintDefaults()
	}
	// Accept flags after DIR too (kiln bundle DIR -o FILE).
	var dir string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		dir, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if dir == "" && fs.NArg() == 1 {
		dir = fs.Arg(0)
	}
	if dir == "" {
		fs.Usage()
		return exitError{2}
	}
	if *out == "" {
		*out = filepath.Base(filepath.Clean(dir)) + ".tar.gz"
	}
	format := "tar.gz"
	switch {
	case strings.HasSuffix(*out, ".zip"):
		format = "zip"
	case strings.HasSuffix(*out, ".tar.gz"), strings.HasSuffix(*out, ".tgz"):
	default:
		return fmt.Errorf("output %s: want a .tar.gz, .tgz or .zip name", *out)
	}
	// Check the recipe loads before packing it, so a broken recipe is
	// reported here rather than after upload.
	if _, err := bake.Load(dir, bake.LoadOptions{}); err != nil {
		if !isOnlyMissingVars(err) {
			return reportLoadError(stderr, err)
		}
	}
	f, err := os.CreateTemp(filepath.Dir(*out), ".kiln-bundle-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := bake.WriteBundle(dir, f, format); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), *out); err != nil {
		return err
	}
	fi, err := os.Stat(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote %s (%d bytes).\n", *out, fi.Size())
	return nil
}

// isOnlyMissingVars reports whether a recipe's only problems are required
// variables without values, which a bundle may leave to build time.
func isOnlyMissingVars(err error) bool {
	var re *bake.RecipeError
	if !errors.As(err, &re) {
		return false
	}
	for _, d := range re.Diags {
		if d.Severity == hcl.DiagError && !strings.Contains(strings.ToLower(d.Summary+" "+d.Detail), "required variable") {
			return false
		}
	}
	return true
}
