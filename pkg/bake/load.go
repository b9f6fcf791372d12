package bake

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// LoadOptions are the inputs a recipe is evaluated with besides its files.
type LoadOptions struct {
	// Vars are -var name=value assignments, applied after var files.
	Vars map[string]string
	// VarFiles are -var-file paths, in order. Paths on disk are read as
	// given; LoadFS reads them from the recipe's root.
	VarFiles []string
	// Env is the environment the recipe may see through env(),
	// {{env `X`}} and PKR_VAR_name. It is empty in the pipeline, so a recipe
	// never sees the Lambda's own environment (where its AWS credentials
	// live); local mode passes the user's environment, as Packer does.
	Env map[string]string
	// Now is the time timestamp() and {{timestamp}} see; time.Now if nil.
	Now func() time.Time
	// NewUUID makes uuidv4() and {{uuid}} values; random if nil.
	NewUUID func() string
}

func (o LoadOptions) now() time.Time {
	if o.Now != nil {
		return o.Now().UTC()
	}
	return time.Now().UTC()
}

func (o LoadOptions) newUUID() string {
	if o.NewUUID != nil {
		return o.NewUUID()
	}
	return uuid.NewString()
}

// RecipeError reports every problem found in a recipe, each with its
// file:line:column. Error renders them with the offending source lines.
type RecipeError struct {
	Diags hcl.Diagnostics
	Files map[string]*hcl.File
}

// Error renders every error diagnostic as
//
//	build.pkr.hcl:3:3: Error: Unsupported argument
//	    3 |   instance_typo = "t3.micro"
//	      |   ^^^^^^^^^^^^^
//	  An argument named "instance_typo" is not expected here. ...
func (e *RecipeError) Error() string { return renderDiags(e.Diags, e.Files, hcl.DiagError) }

// Warnings renders the warning diagnostics, if any.
func (e *RecipeError) Warnings() string { return renderDiags(e.Diags, e.Files, hcl.DiagWarning) }

func renderDiags(diags hcl.Diagnostics, files map[string]*hcl.File, sev hcl.DiagnosticSeverity) string {
	var b strings.Builder
	for _, d := range diags {
		if d.Severity != sev {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		writeDiag(&b, d, files)
	}
	return strings.TrimRight(b.String(), "\n")
}

// writeDiag writes one diagnostic: its position as file:line:column (the
// form editors jump to), the source line with the range underlined, and the
// detail.
func writeDiag(b *strings.Builder, d *hcl.Diagnostic, files map[string]*hcl.File) {
	level := "Error"
	if d.Severity == hcl.DiagWarning {
		level = "Warning"
	}
	if d.Subject == nil {
		fmt.Fprintf(b, "%s: %s\n", level, d.Summary)
	} else {
		r := *d.Subject
		fmt.Fprintf(b, "%s:%d:%d: %s: %s\n", r.Filename, r.Start.Line, r.Start.Column, level, d.Summary)
		if f := files[r.Filename]; f != nil {
			if line, ok := sourceLine(f.Bytes, r.Start.Line); ok {
				fmt.Fprintf(b, "%5d | %s\n", r.Start.Line, line)
				width := 1
				if r.End.Line == r.Start.Line && r.End.Column > r.Start.Column {
					width = r.End.Column - r.Start.Column
				}
				pad := []rune(line)
				if n := r.Start.Column - 1; n < len(pad) {
					pad = pad[:n]
				}
				for i, c := range pad {
					if c != '\t' {
						pad[i] = ' '
					}
				}
				fmt.Fprintf(b, "      | %s%s\n", string(pad), strings.Repeat("^", width))
			}
		}
	}
	if d.Detail != "" {
		fmt.Fprintf(b, "  %s\n", strings.ReplaceAll(strings.TrimSpace(d.Detail), "\n", "\n  "))
	}
}

// sourceLine returns line n (1-based) of src without its line ending.
func sourceLine(src []byte, n int) (string, bool) {
	for i := 1; i < n; i++ {
		j := bytes.IndexByte(src, '\n')
		if j < 0 {
			return "", false
		}
		src = src[j+1:]
	}
	if j := bytes.IndexByte(src, '\n'); j >= 0 {
		src = src[:j]
	}
	return strings.TrimRight(string(src), "\r"), true
}

// loader carries what one Load needs: the recipe's files, the options and
// the parser that remembers every file read (for source snippets in
// diagnostics).
type loader struct {
	fsys   fs.FS
	name   string
	opts   LoadOptions
	parser *hclparse.Parser
	// read records every recipe file read, for the content hash.
	read map[string]bool
}

// Load loads the recipe at path: a template file (*.pkr.hcl, *.pkr.json, or
// a legacy *.json), a folder of HCL2 templates, or a bundle (.tar.gz, .tgz,
// .zip). On failure the error is a *RecipeError listing every problem.
func Load(p string, opts LoadOptions) (*Plan, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("load recipe: %w", err)
	}
	var fsys *RecipeFS
	entry := "."
	name := RecipeName(p)
	switch {
	case fi.IsDir():
		fsys, err = OpenRecipeDir(p)
	case IsBundleName(p):
		fsys, err = openBundleFile(p)
	default:
		fsys, err = OpenRecipeDir(filepath.Dir(p))
		entry = filepath.Base(p)
	}
	if err != nil {
		return nil, fmt.Errorf("load recipe %s: %w", p, err)
	}
	defer fsys.Close()
	// -var-file paths given on the command line live on disk, not
	// necessarily inside the recipe: read them here.
	varFiles := map[string][]byte{}
	for _, vf := range opts.VarFiles {
		b, err := os.ReadFile(vf)
		if err != nil {
			return nil, fmt.Errorf("read var file: %w", err)
		}
		varFiles[vf] = b
	}
	return loadFS(fsys, entry, name, opts, varFiles)
}

// openBundleFile opens the bundle archive at p as a recipe root, with the
// default limits.
func openBundleFile(p string) (*RecipeFS, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return OpenRecipeBundle(f, fi.Size(), filepath.Base(p), DefaultBundleLimits())
}

// LoadFS loads a recipe from fsys, which is the recipe's root: entry is "."
// for the whole folder or the name of one template file in it. Var files
// named in opts are read from fsys.
func LoadFS(fsys fs.FS, entry, name string, opts LoadOptions) (*Plan, error) {
	varFiles := map[string][]byte{}
	for _, vf := range opts.VarFiles {
		clean, err := ResolvePath(vf)
		if err != nil {
			return nil, fmt.Errorf("var file: %w", err)
		}
		b, err := fs.ReadFile(fsys, clean)
		if err != nil {
			return nil, fmt.Errorf("read var file %s: %w", vf, err)
		}
		varFiles[vf] = b
	}
	return loadFS(fsys, entry, name, opts, varFiles)
}

func loadFS(fsys fs.FS, entry, name string, opts LoadOptions, varFiles map[string][]byte) (*Plan, error) {
	l := &loader{fsys: fsys, name: name, opts: opts, parser: hclparse.NewParser(), read: map[string]bool{}}
	var (
		plan  *Plan
		diags hcl.Diagnostics
	)
	switch kind, files, err := classify(fsys, entry); {
	case err != nil:
		return nil, fmt.Errorf("load recipe %s: %w", name, err)
	case kind == "json":
		plan, diags = l.loadLegacy(files[0], varFiles)
	default:
		plan, diags = l.loadHCL(files, varFiles)
	}
	if diags.HasErrors() {
		return nil, &RecipeError{Diags: diags, Files: l.parser.Files()}
	}
	for _, d := range diags {
		if d.Severity == hcl.DiagWarning {
			plan.Warnings = append(plan.Warnings, renderDiags(hcl.Diagnostics{d}, l.parser.Files(), hcl.DiagWarning))
		}
	}
	return plan, nil
}

// classify decides whether entry is a legacy JSON template or HCL2 and
// returns the template files to load, sorted.
func classify(fsys fs.FS, entry string) (kind string, files []string, err error) {
	if entry != "." {
		switch {
		case strings.HasSuffix(entry, ".pkr.hcl"), strings.HasSuffix(entry, ".pkr.json"):
			return "hcl2", []string{entry}, nil
		case strings.HasSuffix(entry, ".json"):
			return "json", []string{entry}, nil
		}
		return "", nil, fmt.Errorf("%s: not a recipe: want *.pkr.hcl, *.pkr.json, a legacy *.json template, a folder or a bundle", entry)
	}
	ents, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return "", nil, err
	}
	var hclFiles, jsonFiles []string
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() {
			continue
		}
		switch {
		case strings.HasSuffix(n, ".pkr.hcl"), strings.HasSuffix(n, ".pkr.json"),
			strings.HasSuffix(n, ".auto.pkrvars.hcl"), strings.HasSuffix(n, ".auto.pkrvars.json"):
			hclFiles = append(hclFiles, n)
		case strings.HasSuffix(n, ".json") && !strings.HasSuffix(n, ".pkrvars.json"):
			jsonFiles = append(jsonFiles, n)
		}
	}
	sort.Strings(hclFiles)
	if len(hclFiles) > 0 {
		return "hcl2", hclFiles, nil
	}
	// A folder without HCL2 files may hold one legacy JSON template.
	var legacy []string
	for _, n := range jsonFiles {
		if b, err := fs.ReadFile(fsys, n); err == nil && bytes.Contains(b, []byte(`"builders"`)) {
			legacy = append(legacy, n)
		}
	}
	switch len(legacy) {
	case 1:
		return "json", legacy, nil
	case 0:
		return "", nil, fmt.Errorf("no templates found: want *.pkr.hcl or *.pkr.json files, or one legacy JSON template")
	}
	return "", nil, fmt.Errorf("several legacy JSON templates (%s): bundle one recipe per folder", strings.Join(legacy, ", "))
}

// RecipeName derives a recipe's name from its path: the file name without
// its template or archive extensions, or the folder's name.
func RecipeName(p string) string {
	base := path.Base(filepath.ToSlash(filepath.Clean(p)))
	for _, ext := range []string{".pkr.hcl", ".pkr.json", ".tar.gz", ".tgz", ".zip", ".json"} {
		if strings.HasSuffix(base, ext) && len(base) > len(ext) {
			return strings.TrimSuffix(base, ext)
		}
	}
	return base
}

// IsBundleName reports whether p names a bundle archive.
func IsBundleName(p string) bool {
	for _, ext := range []string{".tar.gz", ".tgz", ".zip"} {
		if strings.HasSuffix(p, ext) {
			return true
		}
	}
	return false
}
