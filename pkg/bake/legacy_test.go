package bake

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/hcl/v2"
)

const testUUID = "00000000-0000-4000-8000-000000000001"

// legacyTestOpts are the load options of the legacy tests: a fixed clock
// and UUID, and an environment that is not the process's.
func legacyTestOpts() LoadOptions {
	return LoadOptions{
		Env: map[string]string{
			"HOME_REGION":           "eu-west-1",
			"DB_PASSWORD":           "hunter2",
			"AWS_ACCESS_KEY_ID":     "AKIAIOSFODNN7EXAMPLE",
			"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		},
		Now:     func() time.Time { return testNow },
		NewUUID: func() string { return testUUID },
	}
}

// roundTrip passes a plan through its JSON form, as plans travel, so that
// a golden file and a fresh plan compare alike.
func roundTrip(t *testing.T, p *Plan) *Plan {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatalf("json.Marshal(plan): %v", err)
	}
	var out Plan
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("json.Unmarshal(plan): %v", err)
	}
	return &out
}

// checkGolden compares got with the plan in golden, or rewrites golden
// with -update.
func checkGolden(t *testing.T, golden string, got *Plan) {
	t.Helper()
	if updateGolden() {
		b, err := json.MarshalIndent(got, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden plan (run with -update to create it): %v", err)
	}
	var want Plan
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("golden plan %s: %v", golden, err)
	}
	if diff := cmp.Diff(&want, roundTrip(t, got)); diff != "" {
		t.Errorf("plan differs from %s (-want +got; -update rewrites it):\n%s", golden, diff)
	}
}

func TestLoadLegacyGolden(t *testing.T) {
	tests := []struct {
		file string
		opts func(*LoadOptions)
	}{
		{file: "full.json", opts: func(o *LoadOptions) {
			o.VarFiles = []string{"full.vars.json"}
			o.Vars = map[string]string{"app_name": "shop"}
		}},
		{file: "packer-docs.json"},
		{file: "twin.json"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			opts := legacyTestOpts()
			if tt.opts != nil {
				tt.opts(&opts)
			}
			plan, err := LoadFS(os.DirFS("testdata/legacy"), tt.file, RecipeName(tt.file), opts)
			if err != nil {
				t.Fatalf("LoadFS(%q) error:\n%v", tt.file, err)
			}
			if plan.Format != "json" || !strings.HasPrefix(plan.Hash, "sha256:") {
				t.Errorf("LoadFS(%q) = format %q, hash %q; want json and a sha256 hash", tt.file, plan.Format, plan.Hash)
			}
			checkGolden(t, path.Join("testdata/legacy", strings.TrimSuffix(tt.file, ".json")+".plan.json"), plan)
		})
	}
}

// TestLoadLegacyPackerDocs loads a template written the way Packer's
// documentation writes them, with credentials from {{env}}: it validates,
// with kiln's warning that it uses its own role.
func TestLoadLegacyPackerDocs(t *testing.T) {
	plan, err := LoadFS(os.DirFS("testdata/legacy"), "packer-docs.json", "packer-docs", legacyTestOpts())
	if err != nil {
		t.Fatalf("LoadFS(packer-docs.json) error:\n%v", err)
	}
	var creds []string
	for _, w := range plan.Warnings {
		if strings.Contains(w, "own role") {
			creds = append(creds, w)
		}
	}
	if len(creds) != 2 || !strings.Contains(creds[0], `"access_key"`) || !strings.Contains(creds[1], `"secret_key"`) {
		t.Errorf("LoadFS(packer-docs.json) warnings = %q, want one own-role warning each for access_key and secret_key", plan.Warnings)
	}
	if got, want := plan.Sensitive, []string{"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}; !cmp.Equal(got, want) {
		t.Errorf("LoadFS(packer-docs.json).Sensitive = %q, want %q", got, want)
	}
	b, _ := json.Marshal(plan.Variables)
	if strings.Contains(string(b), "wJalrXUtnFEMI") {
		t.Errorf("LoadFS(packer-docs.json).Variables = %s, show the sensitive secret key", b)
	}
	if got := plan.Builds[0].Source.AMIName; got != "packer-linux-aws-demo-1700000000" {
		t.Errorf("LoadFS(packer-docs.json) ami_name = %q, want packer-linux-aws-demo-1700000000", got)
	}
}

// TestLoadLegacyEnvIsolated proves that a recipe asking for kiln's own
// credentials through {{env}} gets nothing: only LoadOptions.Env is read.
func TestLoadLegacyEnvIsolated(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "process-secret")
	t.Setenv("AWS_ACCESS_KEY_ID", "process-key")
	opts := legacyTestOpts()
	opts.Env = nil
	plan, err := LoadFS(os.DirFS("testdata/legacy"), "packer-docs.json", "packer-docs", opts)
	if err != nil {
		t.Fatalf("LoadFS(packer-docs.json) error:\n%v", err)
	}
	b, _ := json.Marshal(plan)
	if strings.Contains(string(b), "process-") {
		t.Errorf("LoadFS(packer-docs.json) plan holds the process environment: %s", b)
	}
	for _, v := range plan.Variables {
		if v.Name == "aws_access_key" && string(v.Value) != `""` {
			t.Errorf("variable aws_access_key = %s, want \"\"", v.Value)
		}
	}
	if len(plan.Sensitive) != 0 {
		t.Errorf("Sensitive = %q, want none (the secret key is empty)", plan.Sensitive)
	}
}

// wantDiag is a diagnostic a test expects: its text contains text and it
// starts at line:col of file.
type wantDiag struct {
	line, col int
	text      string
}

func TestLoadLegacyErrors(t *testing.T) {
	tests := []struct {
		file string
		opts func(*LoadOptions)
		want []wantDiag
	}{
		{file: "broken.json", want: []wantDiag{{6, 7, "line 6, column 7: invalid character '\"' after object key:value pair. Is a comma missing"}}},
		{file: "trailing-comma.json", want: []wantDiag{{3, 50, "no comma after the last member"}}},
		// The typos come after rendered strings on the same line, which are
		// longer than what the template says: positions must still be the
		// template's.
		{file: "typo.json", want: []wantDiag{
			{8, 52, `"instnce_type". Did you mean "instance_type"?`},
			{11, 80, `"volme_size". Did you mean "volume_size"?`},
			{11, 53, `volume_type must be`},
			{13, 5, `"instance_type" is required`},
		}},
		{file: "docker.json", want: []wantDiag{{4, 15, `builder type "docker" is not supported`}}},
		{file: "shell-local.json", want: []wantDiag{{14, 15, "SSM parameter"}}},
		{file: "unknown-func.json", want: []wantDiag{{8, 24, `no template function named "nope"`}}},
		{file: "missing-var.json", want: []wantDiag{{4, 5, `required variable "subnet" is not set`}}},
		{file: "missing-var.json", opts: func(o *LoadOptions) { o.Vars = map[string]string{"region": "us-west-2"} },
			want: []wantDiag{{4, 5, `required variable "subnet" is not set`}}},
		{file: "env-in-builder.json", want: []wantDiag{{10, 22, "{{env}} may only be used in the variables section"}}},
		{file: "proc-environ.json", want: []wantDiag{
			{10, 25, `"/proc/self/environ": unsafe path`},
			{14, 32, `".." climbs above the recipe root`},
		}},
		{file: "sections.json", want: []wantDiag{
			{3, 3, `"pushh" is not one of them`},
			{7, 36, `already named "one"`},
			{10, 52, `"two" names no builder`},
			{11, 5, `needs a "type"`},
			{12, 56, `"three" names no builder`},
			{15, 5, `"compress" post-processor`},
			{16, 6, "cannot hold another sequence"},
			{17, 37, `"four" names no builder`},
		}},
		{file: "vars.json", want: []wantDiag{
			{3, 11, "depends on \"a\" in turn"},
			{4, 11, "depends on \"b\" in turn"},
			{5, 13, "legacy template variables are strings"},
			{6, 11, "{{user `nobody`}} names a variable"},
			{7, 11, "build_name is not available in variables"},
			{9, 32, `"ghost" is listed`},
			{18, 27, "{{user `undeclared`}} names a variable"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			opts := legacyTestOpts()
			if tt.opts != nil {
				tt.opts(&opts)
			}
			_, err := LoadFS(os.DirFS("testdata/legacy/errors"), tt.file, "x", opts)
			var re *RecipeError
			if !errors.As(err, &re) {
				t.Fatalf("LoadFS(%q) error = %v, want a *RecipeError", tt.file, err)
			}
			checkDiags(t, tt.file, re, tt.want)
		})
	}
}

// checkDiags checks that every wanted error is in re, at its place, and
// that re has no error it does not want.
func checkDiags(t *testing.T, file string, re *RecipeError, want []wantDiag) {
	t.Helper()
	found := make([]bool, len(want))
	for _, d := range re.Diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		matched := false
		for i, w := range want {
			if d.Subject != nil && d.Subject.Filename == file && d.Subject.Start.Line == w.line && d.Subject.Start.Column == w.col &&
				strings.Contains(d.Summary+": "+d.Detail, w.text) {
				found[i], matched = true, true
			}
		}
		if !matched {
			t.Errorf("LoadFS(%q): unexpected diagnostic %v", file, d)
		}
	}
	for i, w := range want {
		if !found[i] {
			t.Errorf("LoadFS(%q): no error at %s:%d,%d containing %q; got:\n%v", file, file, w.line, w.col, w.text, re.Diags)
		}
	}
	// The rendered error shows the template's own line, not the rendered
	// copy the decoders saw.
	src, err := os.ReadFile(path.Join("testdata/legacy/errors", file))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(src), "\n")
	msg := re.Error()
	for _, w := range want {
		if line := lines[w.line-1]; !strings.Contains(msg, line) {
			t.Errorf("LoadFS(%q) error text lacks the source line %d %q:\n%s", file, w.line, line, msg)
		}
	}
}

// minimalBuilder is an amazon-ebs builder with just the required options.
const minimalBuilder = `{"type": "amazon-ebs", "region": "us-east-1", "source_ami": "ami-0123456789abcdef0",
  "instance_type": "t3.micro", "ami_name": "{{user ` + "`name`" + `}}", "ssh_username": "ubuntu"}`

func TestLoadLegacyVariables(t *testing.T) {
	tmpl := `{
  "variables": {"name": "from-default", "who": null, "secret": "{{env ` + "`SECRET`" + `}}", "n": 3, "b": true, "chain": "{{user ` + "`name`" + `}}-{{user ` + "`who`" + `}}"},
  "sensitive-variables": ["secret"],
  "builders": [` + minimalBuilder + `]
}`
	fsys := fstest.MapFS{
		"t.json":           {Data: []byte(tmpl)},
		"a.json":           {Data: []byte(`{"name": "from-json-file", "who": "json"}`)},
		"b.pkrvars.hcl":    {Data: []byte("name = \"from-hcl-file\"\nwho = \"hcl\"\n")},
		"list.pkrvars.hcl": {Data: []byte("who = [\"x\"]\n")},
		"expr.pkrvars.hcl": {Data: []byte("who = var.name\n")},
		"broken.json":      {Data: []byte("{\"who\": \"x\",\n \"name\" \"y\"}")},
	}
	type want struct {
		values    map[string]string
		from      map[string]string
		sensitive []string
		err       string
	}
	tests := []struct {
		name string
		opts LoadOptions
		want want
	}{
		{name: "required unset", want: want{err: `required variable "who" is not set`}},
		{name: "var file json", opts: LoadOptions{VarFiles: []string{"a.json"}}, want: want{
			values: map[string]string{"name": "from-json-file", "who": "json", "chain": "from-json-file-json", "n": "3", "b": "true"},
			from:   map[string]string{"name": "var-file", "who": "var-file", "chain": "default"},
		}},
		{name: "var file hcl after json", opts: LoadOptions{VarFiles: []string{"a.json", "b.pkrvars.hcl"}}, want: want{
			values: map[string]string{"name": "from-hcl-file", "who": "hcl", "chain": "from-hcl-file-hcl"},
		}},
		{name: "var wins over var file", opts: LoadOptions{VarFiles: []string{"a.json"}, Vars: map[string]string{"name": "from-var", "who": "{{timestamp}}"}}, want: want{
			values: map[string]string{"name": "from-var", "who": "1700000000", "chain": "from-var-1700000000"},
			from:   map[string]string{"name": "var", "who": "var"},
		}},
		{name: "sensitive from env", opts: LoadOptions{Vars: map[string]string{"who": "w"}, Env: map[string]string{"SECRET": "s3cr3t"}}, want: want{
			values:    map[string]string{"secret": "<sensitive>"},
			sensitive: []string{"s3cr3t"},
		}},
		{name: "var file with a list", opts: LoadOptions{VarFiles: []string{"list.pkrvars.hcl"}}, want: want{err: "legacy template variables are strings"}},
		{name: "var file with an expression", opts: LoadOptions{VarFiles: []string{"expr.pkrvars.hcl"}}, want: want{err: "Variables not allowed"}},
		{name: "broken json var file", opts: LoadOptions{VarFiles: []string{"broken.json"}}, want: want{err: "The var file is not valid JSON at line 2, column 9"}},
		{name: "bad -var template", opts: LoadOptions{Vars: map[string]string{"who": "{{nope}}"}}, want: want{err: `The -var value of "who"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.Now = func() time.Time { return testNow }
			plan, err := LoadFS(fsys, "t.json", "t", opts)
			if tt.want.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want.err) {
					t.Fatalf("LoadFS(t.json) error = %v, want one containing %q", err, tt.want.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadFS(t.json) error:\n%v", err)
			}
			got := map[string]Variable{}
			for _, v := range plan.Variables {
				got[v.Name] = v
			}
			for n, w := range tt.want.values {
				var s string
				if err := json.Unmarshal(got[n].Value, &s); err != nil || s != w {
					t.Errorf("variable %s = %s, want %q", n, got[n].Value, w)
				}
			}
			for n, w := range tt.want.from {
				if got[n].From != w {
					t.Errorf("variable %s comes from %q, want %q", n, got[n].From, w)
				}
			}
			if !cmp.Equal(plan.Sensitive, tt.want.sensitive) {
				t.Errorf("Sensitive = %q, want %q", plan.Sensitive, tt.want.sensitive)
			}
			if want := got["name"]; plan.Builds[0].Source.AMIName != mustString(t, want.Value) {
				t.Errorf("ami_name = %q, want variable name's value %s", plan.Builds[0].Source.AMIName, want.Value)
			}
		})
	}
}

func mustString(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("value %s is not a string: %v", raw, err)
	}
	return s
}

// TestLoadLegacyUndeclaredVar: a -var the template does not declare is
// usable, as in Packer, with a warning.
func TestLoadLegacyUndeclaredVar(t *testing.T) {
	fsys := fstest.MapFS{"t.json": {Data: []byte(`{"builders": [` + minimalBuilder + `]}`)}}
	plan, err := LoadFS(fsys, "t.json", "t", LoadOptions{Vars: map[string]string{"name": "given"}})
	if err != nil {
		t.Fatalf("LoadFS error:\n%v", err)
	}
	if got := plan.Builds[0].Source.AMIName; got != "given" {
		t.Errorf("ami_name = %q, want %q", got, "given")
	}
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], `"name" is given (var) but`) {
		t.Errorf("Warnings = %q, want one about the undeclared variable", plan.Warnings)
	}
}

// TestLoadLegacyBuildNames checks that builds are named by "name" or by
// type, and that only/except select them by that name.
func TestLoadLegacyBuildNames(t *testing.T) {
	tmpl := `{
  "variables": {"name": "img"},
  "builders": [` + minimalBuilder + `, ` + strings.Replace(minimalBuilder, `"type": "amazon-ebs",`, `"type": "amazon-ebs", "name": "second",`, 1) + `],
  "provisioners": [
    {"type": "shell", "inline": ["{{build_name}} {{build_type}}"]},
    {"type": "shell", "inline": ["only first"], "only": ["amazon-ebs"]},
    {"type": "shell", "inline": ["not second"], "except": ["second"]},
    {"type": "shell", "inline": ["base"], "override": {"second": {"inline": ["overridden"]}}}
  ],
  "post-processors": [{"type": "manifest", "only": ["second"], "output": "{{build_name}}.json"}]
}`
	plan, err := LoadFS(fstest.MapFS{"t.json": {Data: []byte(tmpl)}}, "t.json", "t", LoadOptions{})
	if err != nil {
		t.Fatalf("LoadFS error:\n%v", err)
	}
	type build struct {
		Name   string
		Inline [][]string
		PP     []string
	}
	var got []build
	for _, b := range plan.Builds {
		g := build{Name: b.Name}
		for _, p := range b.Provisioners {
			g.Inline = append(g.Inline, p.Shell.Inline)
		}
		for _, pp := range b.PostProcessors {
			g.PP = append(g.PP, pp.Manifest.Output)
		}
		got = append(got, g)
	}
	want := []build{
		{Name: "amazon-ebs", Inline: [][]string{{"amazon-ebs amazon-ebs"}, {"only first"}, {"not second"}, {"base"}}},
		{Name: "second", Inline: [][]string{{"second amazon-ebs"}, {"overridden"}}, PP: []string{"second.json"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LoadFS builds (-want +got):\n%s", diff)
	}
}

// TestRenderedDocPositions checks the position map between a template and
// its rendered copy, on a line where literals grow and shrink.
func TestRenderedDocPositions(t *testing.T) {
	src := []byte("{\"a\": \"{{x}}\", \"b\": \"yyyyyyyy\", \"c\": 1}\n{\"d\": 2}")
	lit := func(start, end int) hcl.Range {
		return hcl.Range{Filename: "f", Start: hcl.Pos{Line: 1, Column: start + 1, Byte: start}, End: hcl.Pos{Line: 1, Column: end + 1, Byte: end}}
	}
	doc := newRenderedDoc("f", src, []splice{
		{orig: lit(20, 30), lit: `"z"`},                  // "yyyyyyyy" -> "z": 7 shorter
		{orig: lit(6, 13), lit: `"a much longer value"`}, // "{{x}}" -> 14 longer
	})
	want := "{\"a\": \"a much longer value\", \"b\": \"z\", \"c\": 1}\n{\"d\": 2}"
	if string(doc.src) != want {
		t.Fatalf("rendered = %q, want %q", doc.src, want)
	}
	for _, tt := range []struct {
		orig hcl.Pos
	}{
		{hcl.Pos{Line: 1, Column: 1, Byte: 0}},   // before everything
		{hcl.Pos{Line: 1, Column: 16, Byte: 15}}, // "b" key, after a longer literal
		{hcl.Pos{Line: 1, Column: 33, Byte: 32}}, // "c" key, after both
		{hcl.Pos{Line: 2, Column: 2, Byte: 41}},  // next line: only bytes move
	} {
		r := doc.toRendered(tt.orig)
		if back := doc.toOrig(r, false); back != tt.orig {
			t.Errorf("toOrig(toRendered(%v)) = %v via %v", tt.orig, back, r)
		}
		if r.Line != tt.orig.Line {
			t.Errorf("toRendered(%v) = %v: line moved", tt.orig, r)
		}
		if string(doc.src[r.Byte:r.Byte+1]) != string(src[tt.orig.Byte:tt.orig.Byte+1]) {
			t.Errorf("toRendered(%v) = %v points at %q, want %q", tt.orig, r, doc.src[r.Byte:r.Byte+1], src[tt.orig.Byte:tt.orig.Byte+1])
		}
	}
	// Inside a replaced literal: the literal's start, or its end.
	in := doc.toRendered(hcl.Pos{Line: 1, Column: 7, Byte: 6})
	in.Byte += 5
	in.Column += 5
	if got := doc.toOrig(in, false); got.Byte != 6 {
		t.Errorf("toOrig(inside literal) = %v, want byte 6", got)
	}
	if got := doc.toOrig(in, true); got.Byte != 13 {
		t.Errorf("toOrig(inside literal, end) = %v, want byte 13", got)
	}
}

// TestLoadLegacyTwin loads twin.json and twin.pkr.hcl, which describe the
// same builds in the two formats, and wants the same plan from both, except
// for what names the template itself.
func TestLoadLegacyTwin(t *testing.T) {
	fsys := os.DirFS("testdata/legacy")
	legacy, err := LoadFS(fsys, "twin.json", "twin", legacyTestOpts())
	if err != nil {
		t.Fatalf("LoadFS(twin.json) error:\n%v", err)
	}
	hcl2, err := LoadFS(fsys, "twin.pkr.hcl", "twin", legacyTestOpts())
	if err != nil {
		t.Fatalf("LoadFS(twin.pkr.hcl) error:\n%v", err)
	}
	if legacy.Format != "json" || hcl2.Format != "hcl2" {
		t.Errorf("formats = %q and %q, want json and hcl2", legacy.Format, hcl2.Format)
	}
	ignore := cmp.Options{
		cmpopts.IgnoreFields(Plan{}, "Format", "Files", "Hash", "Warnings"),
		cmpopts.IgnoreFields(Provisioner{}, "Pos"),
		cmpopts.IgnoreFields(PostProcessor{}, "Pos"),
	}
	if diff := cmp.Diff(hcl2, legacy, ignore); diff != "" {
		t.Errorf("twin plans differ (-twin.pkr.hcl +twin.json):\n%s", diff)
	}

	// Files: the same, but for the template itself.
	others := func(files []string, template string) []string {
		var out []string
		for _, f := range files {
			if f != template {
				out = append(out, f)
			}
		}
		return out
	}
	if diff := cmp.Diff(others(hcl2.Files, "twin.pkr.hcl"), others(legacy.Files, "twin.json")); diff != "" {
		t.Errorf("twin plans refer to different files (-hcl2 +legacy):\n%s", diff)
	}
	if !slices.Contains(legacy.Files, "twin.json") {
		t.Errorf("legacy Files = %q, want twin.json among them", legacy.Files)
	}
	// Warnings: the same ones, each pointing at its own template.
	summaries := func(ws []string) []string {
		var out []string
		for _, w := range ws {
			first, _, _ := strings.Cut(w, "\n")
			if _, summary, ok := strings.Cut(first, ": Warning: "); ok {
				first = summary // drop the file:line:column, which differs by template
			}
			out = append(out, first)
		}
		return out
	}
	if diff := cmp.Diff(summaries(hcl2.Warnings), summaries(legacy.Warnings)); diff != "" {
		t.Errorf("twin warnings differ (-hcl2 +legacy):\n%s", diff)
	}
	// Pos: each step points at its own template, in the same order.
	var hclPos, jsonPos []string
	for i := range legacy.Builds {
		for _, p := range legacy.Builds[i].Provisioners {
			jsonPos = append(jsonPos, p.Pos)
		}
		for _, p := range legacy.Builds[i].PostProcessors {
			jsonPos = append(jsonPos, p.Pos)
		}
	}
	for i := range hcl2.Builds {
		for _, p := range hcl2.Builds[i].Provisioners {
			hclPos = append(hclPos, p.Pos)
		}
		for _, p := range hcl2.Builds[i].PostProcessors {
			hclPos = append(hclPos, p.Pos)
		}
	}
	if len(jsonPos) != len(hclPos) {
		t.Fatalf("twin plans have %d and %d steps", len(jsonPos), len(hclPos))
	}
	for i := range jsonPos {
		if !strings.HasPrefix(jsonPos[i], "twin.json:") || !strings.HasPrefix(hclPos[i], "twin.pkr.hcl:") {
			t.Errorf("step %d: Pos = %q and %q, want twin.json:LINE and twin.pkr.hcl:LINE", i, jsonPos[i], hclPos[i])
		}
	}
	// The first provisioner's Pos is its "type" line in the JSON template.
	if got := legacy.Builds[0].Provisioners[0].Pos; got != "twin.json:116" {
		t.Errorf("first provisioner Pos = %q, want twin.json:116", got)
	}
}

// TestLoadLegacyExpansionLimits: variables that double at each step, or
// many strings that each render a large value, stop at kiln's limits
// instead of exhausting memory.
func TestLoadLegacyExpansionLimits(t *testing.T) {
	doubling := func(levels int) map[string]any {
		vars := map[string]any{"v0": "0123456789abcdef"}
		for i := 1; i < levels; i++ {
			vars[fmt.Sprintf("v%d", i)] = fmt.Sprintf("{{user `v%d`}}{{user `v%d`}}", i-1, i-1)
		}
		return vars
	}
	manyCopies := []string{}
	for i := 0; i < 100; i++ {
		manyCopies = append(manyCopies, "{{user `v15`}}")
	}
	tests := []struct {
		name string
		tmpl map[string]any
		want string
	}{
		{"doubling", map[string]any{"variables": doubling(40), "builders": []any{map[string]any{"type": "amazon-ebs"}}}, "renders to more than 1048576 bytes"},
		{"many copies", map[string]any{"variables": doubling(16), "builders": []any{map[string]any{"type": "amazon-ebs", "run_tags": map[string]any{"a": manyCopies}}}}, "more than 33554432 bytes in all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.tmpl)
			if err != nil {
				t.Fatal(err)
			}
			_, err = LoadFS(fstest.MapFS{"t.json": {Data: b}}, "t.json", "t", LoadOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadFS error = %.300v, want one containing %q", err, tt.want)
			}
		})
	}
}
