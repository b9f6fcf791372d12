package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kiln-dev/kiln/pkg/bake"
)

// recipeFlags are the flags every command that loads a recipe takes.
type recipeFlags struct {
	vars     kvFlag
	varFiles listFlag
}

func (r *recipeFlags) register(fs *flag.FlagSet) {
	r.vars = kvFlag{}
	fs.Var(r.vars, "var", "set a variable: -var name=value (repeatable)")
	fs.Var(&r.varFiles, "var-file", "read variables from a .pkrvars.hcl or JSON file (repeatable)")
}

// options are the load options of a command run on this machine: like
// Packer, env() and PKR_VAR_name see the user's own environment.
func (r *recipeFlags) options() bake.LoadOptions {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return bake.LoadOptions{Vars: r.vars, VarFiles: r.varFiles, Env: env}
}

func parseRecipeArgs(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*recipeFlags, string, error) {
	fs := flag.NewFlagSet("kiln "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rf recipeFlags
	rf.register(fs)
	if extra != nil {
		extra(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kiln %s [flags] RECIPE\n", name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, "", exitError{2}
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return nil, "", exitError{2}
	}
	return &rf, fs.Arg(0), nil
}

func runValidate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	rf, path, err := parseRecipeArgs("validate", args, stderr, nil)
	if err != nil {
		return err
	}
	plan, err := bake.Load(path, rf.options())
	if err != nil {
		return reportLoadError(stderr, err)
	}
	for _, w := range plan.Warnings {
		fmt.Fprintln(stderr, w)
	}
	fmt.Fprintln(stdout, "The configuration is valid.")
	return nil
}

// reportLoadError prints a recipe's problems (all of them, with their
// file:line:column and source lines) and returns exit status 1.
func reportLoadError(stderr io.Writer, err error) error {
	var re *bake.RecipeError
	if errors.As(err, &re) {
		if w := re.Warnings(); w != "" {
			fmt.Fprintln(stderr, w)
		}
		fmt.Fprintln(stderr, re.Error())
		return exitError{1}
	}
	fmt.Fprintln(stderr, "Error:", err)
	return exitError{1}
}
