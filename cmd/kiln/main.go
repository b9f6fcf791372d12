// Command kiln bakes machine images from Packer templates.
//
//	kiln validate [-var k=v] [-var-file F] RECIPE   check a recipe
//	kiln inspect  [-var k=v] [-var-file F] RECIPE   summarise its build plan
//	kiln bundle   DIR -o FILE                        pack a recipe folder
//	kiln bake --local [-var k=v] [-var-file F] RECIPE
//	                                                 bake it on this machine
//	kiln prune [--dry-run]                           retire old images
//	kiln rebuild --dry-run                           show what the schedule rebakes
//	kiln serve --local [--fire-now JOB]              bake uploads, run the schedules
//	kiln push RECIPE                                 upload a recipe for kiln serve
//
// RECIPE is a template file (*.pkr.hcl, *.pkr.json, legacy *.json), a
// folder of HCL2 templates, or a bundle (.tar.gz, .zip).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// command is one kiln subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"validate", "check a recipe and report every problem at once", runValidate},
		{"inspect", "summarise a recipe's build plan", runInspect},
		{"bundle", "pack a recipe folder with its files into a .tar.gz or .zip", runBundle},
		{"bake", "bake a recipe (--local: on this machine, against an AWS emulator)", runBake},
		{"prune", "retire old images (--dry-run: show what would go and why the rest stays)", runPrune},
		{"rebuild", "show which recipes the rebuild schedule would bake (--dry-run)", runRebuild},
		{"serve", "run the stack on this machine (--local): bake uploads, run the schedules", runServe},
		{"push", "upload a recipe to the local bucket, as aws s3 cp would, for kiln serve", runPush},
	}
}

// exitError carries an exit status without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		var ee exitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			return ee.code
		}
		fmt.Fprintf(stderr, "kiln %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(stderr, "kiln: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "kiln bakes machine images from Packer templates.\n\nUsage: kiln COMMAND [flags] RECIPE\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun `kiln COMMAND -h` for a command's flags.")
}

// kvFlag collects repeated -var name=value flags.
type kvFlag map[string]string

func (f kvFlag) String() string { return "" }

func (f kvFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want name=value, got %q", s)
	}
	f[k] = v
	return nil
}

// listFlag collects repeated flags such as -var-file.
type listFlag []string

func (f *listFlag) String() string { return strings.Join(*f, ",") }

func (f *listFlag) Set(s string) error { *f = append(*f, s); return nil }
