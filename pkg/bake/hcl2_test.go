package bake

import (
	"bytes"
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
	"github.com/hashicorp/hcl/v2"
)

// hcl2Now is the clock of the HCL2 tests: 2024-01-02T03:04:05Z.
var hcl2Now = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// hcl2Opts are the options of the HCL2 tests: a fixed clock, numbered
// UUIDs, and an environment that is not the process's.
func hcl2Opts() LoadOptions {
	n := 0
	return LoadOptions{
		Now: func() time.Time { return hcl2Now },
		NewUUID: func() string {
			n++
			return fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
		},
		Env: map[string]string{},
	}
}

// loadHCL2 loads a recipe from files (paths relative to the recipe root).
func loadHCL2(files map[string]string, opts LoadOptions) (*Plan, error) {
	fsys := fstest.MapFS{}
	for name, src := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(src), Mode: 0o644}
	}
	return LoadFS(fsys, ".", "test", opts)
}

// recipeDiags returns the diagnostics of a load error.
func recipeDiags(t *testing.T, err error) hcl.Diagnostics {
	t.Helper()
	var re *RecipeError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v (%T), want a *RecipeError", err, err)
	}
	return re.Diags
}

// diagAt renders a diagnostic as "file:line,col: summary".
func diagAt(d *hcl.Diagnostic) string {
	if d.Subject == nil {
		return "-: " + d.Summary
	}
	return fmt.Sprintf("%s:%d,%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary)
}

func TestLoadHCL2Golden(t *testing.T) {
	tests := []struct {
		dir  string
		opts func(*LoadOptions)
	}{
		{dir: "docs-folder", opts: func(o *LoadOptions) { o.Env["PKR_VAR_db_password"] = "hunter2" }},
		{dir: "every-option", opts: func(o *LoadOptions) {
			o.Env["KILN_ENV"] = "prod"
			o.Env["PKR_VAR_from_env"] = "env-value"
			o.Vars = map[string]string{"owner": "alice"}
			o.VarFiles = []string{"test.pkrvars.hcl"}
		}},
		{dir: "json-syntax"},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			opts := hcl2Opts()
			if tt.opts != nil {
				tt.opts(&opts)
			}
			fsys, err := OpenRecipeDir(path.Join("testdata/hcl2", tt.dir))
			if err != nil {
				t.Fatal(err)
			}
			defer fsys.Close()
			plan, err := LoadFS(fsys, ".", tt.dir, opts)
			if err != nil {
				t.Fatalf("LoadFS(%q) error:\n%v", tt.dir, err)
			}
			if plan.Format != "hcl2" || !strings.HasPrefix(plan.Hash, "sha256:") {
				t.Errorf("LoadFS(%q) = format %q, hash %q; want hcl2 and a sha256 hash", tt.dir, plan.Format, plan.Hash)
			}
			checkHCL2Golden(t, path.Join("testdata/plans", "hcl2-"+tt.dir+".json"), plan)
		})
	}
}

// checkHCL2Golden compares got with the plan in golden (through JSON, as
// plans travel), or rewrites golden with -update.
func checkHCL2Golden(t *testing.T, golden string, got *Plan) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(got); err != nil {
		t.Fatalf("encode plan: %v", err)
	}
	if updateGolden() {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden plan (run with -update to create it): %v", err)
	}
	var wantPlan, gotPlan Plan
	if err := json.Unmarshal(want, &wantPlan); err != nil {
		t.Fatalf("golden plan %s: %v", golden, err)
	}
	if err := json.Unmarshal(buf.Bytes(), &gotPlan); err != nil {
		t.Fatalf("plan JSON: %v", err)
	}
	if diff := cmp.Diff(wantPlan, gotPlan); diff != "" {
		t.Errorf("plan differs from %s (-want +got; -update rewrites it):\n%s", golden, diff)
	}
}

// TestLoadHCL2PackerDocsFolder loads a folder split the way Packer's
// documentation splits one (variables, sources and build files, an auto var
// file, scripts/): it loads as one recipe with the auto var file applied.
func TestLoadHCL2PackerDocsFolder(t *testing.T) {
	opts := hcl2Opts()
	opts.Env["PKR_VAR_db_password"] = "hunter2"
	plan, err := Load("testdata/hcl2/docs-folder", opts)
	if err != nil {
		t.Fatalf("Load(docs-folder) error:\n%v", err)
	}
	wantFiles := []string{"build.pkr.hcl", "prod.auto.pkrvars.hcl", "scripts/configure.sh", "scripts/install.sh", "sources.pkr.hcl", "variables.pkr.hcl"}
	if diff := cmp.Diff(wantFiles, plan.Files); diff != "" {
		t.Errorf("Files (-want +got):\n%s", diff)
	}
	if len(plan.Builds) != 1 {
		t.Fatalf("Builds = %d, want 1", len(plan.Builds))
	}
	b := plan.Builds[0]
	if b.Name != "app" || b.FullName() != "amazon-ebs.app" || b.BuildName != "app" {
		t.Errorf("build names = %q, %q, %q; want app, amazon-ebs.app, app", b.Name, b.FullName(), b.BuildName)
	}
	if got, want := b.Source.AMIName, "app-1.4.2-20240102030405"; got != want {
		t.Errorf("ami_name = %q, want %q (app_version from prod.auto.pkrvars.hcl)", got, want)
	}
	if diff := cmp.Diff([]string{"scripts/install.sh", "scripts/configure.sh"}, b.Provisioners[0].Shell.Scripts); diff != "" {
		t.Errorf("scripts (-want +got):\n%s", diff)
	}
	if got := plan.Redact("password is hunter2"); got != "password is <sensitive>" {
		t.Errorf("Redact = %q, want the sensitive variable masked", got)
	}
	for _, v := range plan.Variables {
		if v.Name == "db_password" && string(v.Value) != `"<sensitive>"` {
			t.Errorf("db_password value in plan = %s, want masked", v.Value)
		}
	}
}

// TestLoadHCL2Precedence checks Packer's order: default < PKR_VAR_ < auto
// var files (in name order) < -var-file (in order) < -var.
func TestLoadHCL2Precedence(t *testing.T) {
	template := `
variable "a" { default = "default" }
variable "b" { default = "default" }
variable "c" { default = "default" }
variable "d" { default = "default" }
variable "e" { default = "default" }
variable "f" { default = "default" }
source "amazon-ebs" "x" {
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  instance_type = "t3.micro"
  ami_name      = "name-${var.a}"
  ssh_username  = "u"
}
build { sources = ["source.amazon-ebs.x"] }
`
	files := map[string]string{
		"t.pkr.hcl":             template,
		"1.auto.pkrvars.hcl":    "c = \"auto1\"\nd = \"auto1\"\ne = \"auto1\"\nf = \"auto1\"\n",
		"2.auto.pkrvars.hcl":    "d = \"auto2\"\ne = \"auto2\"\nf = \"auto2\"\n",
		"one.pkrvars.hcl":       "e = \"file1\"\nf = \"file1\"\n",
		"two.pkrvars.hcl":       "e = \"file2\"\n",
		"ignored.pkrvars.hcl":   "a = \"not loaded\"\n",
		"scripts/unrelated.txt": "x",
	}
	opts := hcl2Opts()
	opts.Env = map[string]string{"PKR_VAR_b": "env", "PKR_VAR_c": "env", "PKR_VAR_undeclared": "ignored"}
	opts.VarFiles = []string{"one.pkrvars.hcl", "two.pkrvars.hcl"}
	opts.Vars = map[string]string{"f": "var"}
	plan, err := loadHCL2(files, opts)
	if err != nil {
		t.Fatalf("LoadFS error:\n%v", err)
	}
	got := map[string]string{}
	for _, v := range plan.Variables {
		var s string
		_ = json.Unmarshal(v.Value, &s)
		got[v.Name] = s + " (" + v.From + ")"
	}
	want := map[string]string{
		"a": "default (default)",
		"b": "env (env)",
		"c": "auto1 (auto-var-file)",
		"d": "auto2 (auto-var-file)",
		"e": "file2 (var-file)",
		"f": "var (var)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("variable values (-want +got):\n%s", diff)
	}
}

// TestLoadHCL2VariableParsing checks how -var and PKR_VAR_ strings become
// values: literal for strings, numbers and untyped variables, HCL for the
// rest, then converted to the variable's type.
func TestLoadHCL2VariableParsing(t *testing.T) {
	template := `
variable "s" { type = string }
variable "n" { type = number }
variable "b" { type = bool }
variable "l" { type = list(string) }
variable "m" { type = map(number) }
variable "any" {}
variable "obj" {
  type    = object({ a = string, b = optional(number, 7) })
  default = { a = "x" }
}
source "amazon-ebs" "x" {
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  instance_type = "t3.micro"
  ami_name      = "n-${var.n}"
  ssh_username  = "u"
}
build { sources = ["source.amazon-ebs.x"] }
`
	opts := hcl2Opts()
	opts.Vars = map[string]string{"s": "[not a list]", "n": "42", "b": "true", "l": `["a", "b"]`, "m": `{ x = 1 }`, "any": "{ x = 1 }"}
	plan, err := loadHCL2(map[string]string{"t.pkr.hcl": template}, opts)
	if err != nil {
		t.Fatalf("LoadFS error:\n%v", err)
	}
	got := map[string]string{}
	for _, v := range plan.Variables {
		got[v.Name] = string(v.Value)
	}
	want := map[string]string{
		"s": `"[not a list]"`, "n": `42`, "b": `true`, "l": `["a","b"]`, "m": `{"x":1}`, "any": `"{ x = 1 }"`, "obj": `{"a":"x","b":7}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("variable values (-want +got):\n%s", diff)
	}
	if got := plan.Builds[0].Source.AMIName; got != "n-42" {
		t.Errorf("ami_name = %q, want n-42", got)
	}
}

// TestLoadHCL2EnvIsolated proves that a recipe cannot read kiln's own
// environment or files outside its root.
func TestLoadHCL2EnvIsolated(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "real-secret-from-the-process")
	t.Setenv("PKR_VAR_leak", "real-secret-from-the-process")
	template := `
variable "secret" { default = env("AWS_SECRET_ACCESS_KEY") }
variable "given" { default = env("GIVEN") }
variable "leak" { default = "" }
source "amazon-ebs" "x" {
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  instance_type = "t3.micro"
  ami_name      = "name-${length(var.secret)}-${var.given}${var.leak}"
  ssh_username  = "u"
  user_data     = "${var.secret}"
}
build { sources = ["source.amazon-ebs.x"] }
`
	opts := hcl2Opts()
	opts.Env = map[string]string{"GIVEN": "given"}
	plan, err := loadHCL2(map[string]string{"t.pkr.hcl": template}, opts)
	if err != nil {
		t.Fatalf("LoadFS error:\n%v", err)
	}
	if got := plan.Builds[0].Source.AMIName; got != "name-0-given" {
		t.Errorf("ami_name = %q, want name-0-given: env() must read only LoadOptions.Env", got)
	}
	b, _ := json.Marshal(plan)
	if bytes.Contains(b, []byte("real-secret")) {
		t.Errorf("plan holds the process environment:\n%s", b)
	}
}

// TestLoadHCL2FilesConfined proves that file functions read only inside the
// recipe root.
func TestLoadHCL2FilesConfined(t *testing.T) {
	dir := t.TempDir()
	outside := path.Join(dir, "outside.txt")
	if err := os.WriteFile(outside, []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := path.Join(dir, "recipe")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, path.Join(root, "link.txt")); err != nil {
		t.Fatal(err)
	}
	for _, expr := range []string{
		`file("/proc/self/environ")`,
		`file("../../etc/passwd")`,
		`file("../outside.txt")`,
		`file("link.txt")`,
		`filebase64("/etc/passwd")`,
		`templatefile("../outside.txt", {})`,
		`fileexists("/etc/passwd")`,
		`join(",", fileset("..", "*"))`,
		`abspath("..")`,
		`pathexpand("~/.aws/credentials")`,
		`env("AWS_SECRET_ACCESS_KEY")`,
		`aws_secretsmanager("prod/db", "password")`,
		`vault("secret/data/x", "y")`,
		`consul_key("x")`,
	} {
		t.Run(expr, func(t *testing.T) {
			template := `
source "amazon-ebs" "x" {
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  instance_type = "t3.micro"
  ami_name      = "name"
  ssh_username  = "u"
  user_data     = ` + expr + `
}
build { sources = ["source.amazon-ebs.x"] }
`
			if err := os.WriteFile(path.Join(root, "t.pkr.hcl"), []byte(template), 0o644); err != nil {
				t.Fatal(err)
			}
			plan, err := Load(root, hcl2Opts())
			if err == nil {
				t.Fatalf("Load(user_data = %s) = user_data %q, want an error", expr, plan.Builds[0].Source.UserData)
			}
			diags := recipeDiags(t, err)
			if got := diagAt(diags[0]); !strings.HasPrefix(got, "t.pkr.hcl:8,") {
				t.Errorf("Load(user_data = %s) error at %s, want t.pkr.hcl:8", expr, got)
			}
			if strings.Contains(err.Error(), dir) {
				t.Errorf("Load(user_data = %s) error shows the host path %s:\n%v", expr, dir, err)
			}
		})
	}
}

// TestHCL2Functions evaluates the functions a recipe can call.
func TestHCL2Functions(t *testing.T) {
	files := map[string]string{
		"files/a.txt":      "hello\n",
		"files/b.conf":     "b",
		"files/sub/c.conf": "c",
		"files/t.tpl":      "Hi ${name}%{ for x in xs }, ${x}%{ endfor }",
	}
	tests := []struct{ expr, want string }{
		{`timestamp()`, "2024-01-02T03:04:05Z"},
		{`formatdate("YYYY-MM-DD", timestamp())`, "2024-01-02"},
		{`uuidv4()`, "00000000-0000-4000-8000-000000000001"},
		{`uuidv5("dns", "kiln.dev")`, "a0f1165f-edc0-54db-b58d-13206f1b8662"},
		{`file("files/a.txt")`, "hello\n"},
		{`file("${path.root}/files/a.txt")`, "hello\n"},
		{`filebase64("files/a.txt")`, "aGVsbG8K"},
		{`filesha256("files/a.txt")`, "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"},
		{`filemd5("files/a.txt")`, "b1946ac92492d2347c6235b4d2611184"},
		{`format("%t", fileexists("files/a.txt"))`, "true"},
		{`format("%t", fileexists("files/none.txt"))`, "false"},
		{`join(",", fileset("files", "**/*.conf"))`, "b.conf,sub/c.conf"},
		{`templatefile("files/t.tpl", { name = "kiln", xs = ["a", "b"] })`, "Hi kiln, a, b"},
		{`abspath("./files/../files/a.txt")`, "files/a.txt"},
		{`abspath(path.root)`, "."},
		{`basename("files/sub/c.conf")`, "c.conf"},
		{`dirname("files/sub/c.conf")`, "files/sub"},
		{`sha256("kiln")`, "cdfe9ad58b46226d63eb322dacd35f4f7ac38096180c87258c142e4bca9a3cf5"},
		{`md5("kiln")`, "9e8287435ae73a052c9459e215e46a28"},
		{`base64encode("kiln")`, "a2lsbg=="},
		{`base64decode("a2lsbg==")`, "kiln"},
		{`base64sha256("kiln")`, "zf6a1YtGIm1j6zItrNNfT3rDgJYYDIcljBQuS8qaPPU="},
		{`format("%d", length("kiln"))`, "4"},
		{`format("%d", length(["a", "b"]))`, "2"},
		{`format("%d", sum([1, 2, 3]))`, "6"},
		{`format("%t", alltrue([true, true]))`, "true"},
		{`format("%t", anytrue([false]))`, "false"},
		{`format("%t", startswith("kiln", "ki"))`, "true"},
		{`format("%t", endswith("kiln", "ki"))`, "false"},
		{`format("%t", strcontains("kiln", "il"))`, "true"},
		{`try(file("files/none"), "fallback")`, "fallback"},
		{`format("%t", can(file("/etc/passwd")))`, "false"},
		{`convert(5, string)`, "5"},
		{`format("%d", index(["a", "b"], "b"))`, "1"},
		{`join(",", concat(["a"], ["b"]))`, "a,b"},
		{`upper(trimspace(" kiln "))`, "KILN"},
		{`regex_replace("a-b-c", "-", "_")`, "a_b_c"},
		{`legacy_isotime(timestamp(), "2006")`, "2024"},
		{`urlencode("a b&c")`, "a+b%26c"},
		{`jsonencode({ a = 1 })`, `{"a":1}`},
		{`lookup({ a = "x" }, "b", "dflt")`, "dflt"},
		{`element(split(",", "a,b,c"), 1)`, "b"},
		{`title("kiln bakes")`, "Kiln Bakes"},
		{`strrev("kiln")`, "nlik"},
		{`substr("kiln", 0, 2)`, "ki"},
		{`formatlist("%s!", ["a"])[0]`, "a!"},
		{`join(",", sort(distinct(["b", "a", "b"])))`, "a,b"},
		{`join(",", keys(merge({ a = 1 }, { b = 2 })))`, "a,b"},
		{`format("%d", max(1, 5, 3))`, "5"},
		{`chomp("x\n")`, "x"},
		{`join(",", compact(["a", "", "b"]))`, "a,b"},
		{`join(",", flatten([["a"], ["b"]]))`, "a,b"},
		{`join(",", reverse(["a", "b"]))`, "b,a"},
		{`format("%d", parseint("ff", 16))`, "255"},
		{`timeadd(timestamp(), "1h")`, "2024-01-02T04:04:05Z"},
		{`indent(2, "a\nb")`, "a\n  b"},
		{`join(",", values(zipmap(["a"], ["x"])))`, "x"},
		{`coalesce("", "y")`, "y"},
		{`join(",", setunion(["a"], ["b"]))`, "a,b"},
		{`csvdecode("a,b\n1,2")[0].b`, "2"},
		{`jsondecode("{\"a\": \"z\"}").a`, "z"},
		{`format("%d", abs(-3) + ceil(1.2) + floor(1.8))`, "6"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			fs := map[string]string{"t.pkr.hcl": `
locals { v = ` + tt.expr + ` }
source "amazon-ebs" "x" {
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  instance_type = "t3.micro"
  ami_name      = "name"
  ssh_username  = "u"
  user_data     = local.v
}
build { sources = ["source.amazon-ebs.x"] }
`}
			for k, v := range files {
				fs[k] = v
			}
			plan, err := loadHCL2(fs, hcl2Opts())
			if err != nil {
				t.Fatalf("%s: error:\n%v", tt.expr, err)
			}
			if got := plan.Builds[0].Source.UserData; got != tt.want {
				t.Errorf("%s = %q, want %q", tt.expr, got, tt.want)
			}
		})
	}
}

// hcl2Source is a valid amazon-ebs source body, to build error cases on.
const hcl2Source = `  region        = "us-east-1"
  source_ami    = "ami-12345678"
  instance_type = "t3.micro"
  ami_name      = "app"
  ssh_username  = "ubuntu"
`

// TestLoadHCL2Errors loads broken recipes and checks that each problem is
// reported at its file:line,column with the right summary.
func TestLoadHCL2Errors(t *testing.T) {
	build := "\nbuild {\n  sources = [\"source.amazon-ebs.app\"]\n}\n"
	src := func(extra string) string {
		return "source \"amazon-ebs\" \"app\" {\n" + hcl2Source + extra + "}\n" + build
	}
	prov := func(p string) string {
		return "source \"amazon-ebs\" \"app\" {\n" + hcl2Source + "}\n\nbuild {\n  sources = [\"source.amazon-ebs.app\"]\n" + p + "}\n"
	}
	tests := []struct {
		name  string
		files map[string]string
		opts  func(*LoadOptions)
		// want lists "file:line,col: summary" of every error, in order; a
		// trailing "~" matches a summary prefix.
		want []string
		// detail, if set, must appear in some error's detail.
		detail string
	}{
		{
			name:   "unsupported amazon-ebs option",
			files:  map[string]string{"a.pkr.hcl": src("  spot_price    = \"auto\"\n")},
			want:   []string{`a.pkr.hcl:7,3: kiln does not support the amazon-ebs option "spot_price"`},
			detail: "on-demand",
		},
		{
			name:  "unsupported amazon-ebs options of each kind",
			files: map[string]string{"a.pkr.hcl": src("  ssh_password = \"x\"\n  winrm_username = \"x\"\n  ssh_bastion_host = \"h\"\n  temporary_security_group_source_cidrs = [\"0.0.0.0/0\"]\n  skip_create_ami = true\n  spot_instance_types = [\"t3.micro\"]\n  security_group_filter {\n    filters = {}\n  }\n  placement {\n    tenancy = \"dedicated\"\n  }\n")},
			want: []string{
				`a.pkr.hcl:7,3: kiln does not support the amazon-ebs option "ssh_password"`,
				`a.pkr.hcl:8,3: kiln does not support the amazon-ebs option "winrm_username"`,
				`a.pkr.hcl:9,3: kiln does not support the amazon-ebs option "ssh_bastion_host"`,
				`a.pkr.hcl:10,3: kiln does not support the amazon-ebs option "temporary_security_group_source_cidrs"`,
				`a.pkr.hcl:11,3: kiln does not support the amazon-ebs option "skip_create_ami"`,
				`a.pkr.hcl:12,3: kiln does not support the amazon-ebs option "spot_instance_types"`,
				`a.pkr.hcl:13,3: kiln does not support the amazon-ebs option "security_group_filter"`,
				`a.pkr.hcl:16,3: kiln does not support the amazon-ebs option "placement"`,
			},
		},
		{
			name:   "typo in an amazon-ebs option",
			files:  map[string]string{"a.pkr.hcl": src("  ami_descripton = \"x\"\n")},
			want:   []string{`a.pkr.hcl:7,3: Unsupported argument`},
			detail: `Did you mean "ami_description"?`,
		},
		{
			name:   "typo in a block device option",
			files:  map[string]string{"a.pkr.hcl": src("  launch_block_device_mappings {\n    device_name = \"/dev/xvda\"\n    volme_size = 8\n  }\n")},
			want:   []string{`a.pkr.hcl:9,5: Unsupported argument`},
			detail: `Did you mean "volume_size"?`,
		},
		{
			name:   "typo in a provisioner option",
			files:  map[string]string{"a.pkr.hcl": prov("  provisioner \"shell\" {\n    inlne = [\"x\"]\n  }\n")},
			want:   []string{`a.pkr.hcl:11,3: Missing shell commands`, `a.pkr.hcl:12,5: Unsupported argument`},
			detail: `Did you mean "inline"?`,
		},
		{
			name:   "unsupported shell option",
			files:  map[string]string{"a.pkr.hcl": prov("  provisioner \"shell\" {\n    inline = [\"x\"]\n    start_retry_timeout = \"5m\"\n  }\n")},
			want:   []string{`a.pkr.hcl:13,5: kiln does not support the shell provisioner option "start_retry_timeout"`},
			detail: "max_retries",
		},
		{
			name:  "typo in a top-level block",
			files: map[string]string{"a.pkr.hcl": src("") + "\nvariabel \"x\" {}\n"},
			want:  []string{`a.pkr.hcl:13,1: Unsupported block type`},
		},
		{
			name:   "another builder",
			files:  map[string]string{"a.pkr.hcl": src("") + "\nsource \"docker\" \"d\" {\n  image = \"ubuntu\"\n}\n"},
			want:   []string{`a.pkr.hcl:13,8: kiln does not support the "docker" builder`},
			detail: "amazon-ebs",
		},
		{
			name:  "amazon-chroot builder",
			files: map[string]string{"a.pkr.hcl": "source \"amazon-chroot\" \"c\" {\n  source_ami = \"ami-12345678\"\n}\nbuild {\n  sources = [\"source.amazon-chroot.c\"]\n}\n"},
			want:  []string{`a.pkr.hcl:1,8: kiln does not support the "amazon-chroot" builder`, `a.pkr.hcl:5,14: kiln does not support the "amazon-chroot" builder`},
		},
		{
			name:  "hcp_packer_registry",
			files: map[string]string{"a.pkr.hcl": prov("  hcp_packer_registry {\n    bucket_name = \"b\"\n  }\n")},
			want:  []string{`a.pkr.hcl:11,3: kiln does not support "hcp_packer_registry"`},
		},
		{
			name:   "shell-local provisioner",
			files:  map[string]string{"a.pkr.hcl": prov("  provisioner \"shell-local\" {\n    inline = [\"echo done\"]\n  }\n")},
			want:   []string{`a.pkr.hcl:11,3: kiln does not support the "shell-local" provisioner`},
			detail: "SSM parameter in every Region",
		},
		{
			name:  "breakpoint provisioner",
			files: map[string]string{"a.pkr.hcl": prov("  provisioner \"breakpoint\" {}\n")},
			want:  []string{`a.pkr.hcl:11,3: kiln does not support the "breakpoint" provisioner`},
		},
		{
			name:  "another post-processor",
			files: map[string]string{"a.pkr.hcl": prov("  post-processors {\n    post-processor \"amazon-ami-management\" {\n      keep_releases = 3\n    }\n  }\n")},
			want:  []string{`a.pkr.hcl:12,5: kiln does not support the "amazon-ami-management" post-processor`},
		},
		{
			name:  "another data source",
			files: map[string]string{"a.pkr.hcl": src("") + "\ndata \"amazon-secretsmanager\" \"s\" {\n  name = \"x\"\n}\n"},
			want:  []string{`a.pkr.hcl:13,6: kiln does not support the "amazon-secretsmanager" data source`},
		},
		{
			name:   "missing required variable",
			files:  map[string]string{"a.pkr.hcl": "variable \"app_version\" {\n  type = string\n}\n" + src("")},
			want:   []string{`a.pkr.hcl:1,1: Unset variable "app_version"`},
			detail: "PKR_VAR_app_version",
		},
		{
			name:   "failing validation",
			files:  map[string]string{"a.pkr.hcl": "variable \"size\" {\n  type    = number\n  default = 3\n  validation {\n    condition     = var.size >= 8\n    error_message = \"The size must be at least 8 GiB.\"\n  }\n}\n" + src("")},
			want:   []string{`a.pkr.hcl:5,21: Invalid value for variable`},
			detail: "The size must be at least 8 GiB.",
		},
		{
			name:  "bad variable type from -var",
			files: map[string]string{"a.pkr.hcl": "variable \"n\" {\n  type = list(number)\n}\n" + src("")},
			opts:  func(o *LoadOptions) { o.Vars = map[string]string{"n": `["x"]`} },
			want:  []string{`a.pkr.hcl:1,1: Invalid value for variable`},
		},
		{
			name:  "bad default type",
			files: map[string]string{"a.pkr.hcl": "variable \"n\" {\n  type    = number\n  default = \"many\"\n}\n" + src("")},
			want:  []string{`a.pkr.hcl:3,13: Invalid value for variable`},
		},
		{
			name:  "bad attribute type",
			files: map[string]string{"a.pkr.hcl": src("  ami_regions = \"eu-west-1\"\n  encrypt_boot = \"maybe\"\n")},
			want:  []string{`a.pkr.hcl:7,17: Incorrect attribute value type`, `a.pkr.hcl:8,18: Incorrect attribute value type`},
		},
		{
			name:  "undeclared -var",
			files: map[string]string{"a.pkr.hcl": src("")},
			opts:  func(o *LoadOptions) { o.Vars = map[string]string{"nope": "x"} },
			want:  []string{`-: Undefined -var variable`},
		},
		{
			name:  "missing script file",
			files: map[string]string{"a.pkr.hcl": prov("  provisioner \"shell\" {\n    scripts = [\"scripts/there.sh\", \"scripts/missing.sh\"]\n  }\n"), "scripts/there.sh": "x"},
			want:  []string{`a.pkr.hcl:12,15: File not found`},
		},
		{
			name:  "file() escaping the root",
			files: map[string]string{"a.pkr.hcl": src("  user_data = file(\"../../etc/passwd\")\n")},
			want:  []string{`a.pkr.hcl:7,15: Error in function call`},
		},
		{
			name:  "script path escaping the root",
			files: map[string]string{"a.pkr.hcl": prov("  provisioner \"shell\" {\n    script = \"/etc/passwd\"\n  }\n")},
			want:  []string{`a.pkr.hcl:12,14: File outside the recipe`},
		},
		{
			name:  "two sources with one name",
			files: map[string]string{"a.pkr.hcl": src(""), "b.pkr.hcl": "source \"amazon-ebs\" \"app\" {\n" + hcl2Source + "}\n"},
			want:  []string{`b.pkr.hcl:1,1: Duplicate source`},
		},
		{
			name:  "build override setting what the source sets",
			files: map[string]string{"a.pkr.hcl": "source \"amazon-ebs\" \"app\" {\n" + hcl2Source + "}\nbuild {\n  source \"source.amazon-ebs.app\" {\n    instance_type = \"t3.large\"\n  }\n}\n"},
			want:  []string{`a.pkr.hcl:10,5: Duplicate argument`},
		},
		{
			name:  "source_ami and source_ami_filter",
			files: map[string]string{"a.pkr.hcl": src("  source_ami_filter {\n    owners = [\"self\"]\n  }\n")},
			want:  []string{`a.pkr.hcl:7,3: Conflicting base image`},
		},
		{
			name:  "two builds of one source",
			files: map[string]string{"a.pkr.hcl": src("") + build},
			want:  []string{`a.pkr.hcl:13,1: Duplicate build`},
		},
		{
			name:  "unknown source",
			files: map[string]string{"a.pkr.hcl": "build {\n  sources = [\"source.amazon-ebs.nope\"]\n}\n"},
			want:  []string{`a.pkr.hcl:2,14: Unknown source`},
		},
		{
			name:  "cycle in locals",
			files: map[string]string{"a.pkr.hcl": "locals {\n  a = local.b\n  b = local.a\n}\n" + src("")},
			want:  []string{`a.pkr.hcl:2,3: Cycle in local values`},
		},
		{
			name:   "file download",
			files:  map[string]string{"a.pkr.hcl": prov("  provisioner \"file\" {\n    source      = \"app.log\"\n    destination = \"/var/log/app.log\"\n    direction   = \"download\"\n  }\n"), "app.log": "x"},
			want:   []string{`a.pkr.hcl:14,19: kiln does not support downloads`},
			detail: "only uploads",
		},
		{
			name:  "file without destination, with two sources",
			files: map[string]string{"a.pkr.hcl": prov("  provisioner \"file\" {\n    source  = \"a\"\n    content = \"x\"\n  }\n"), "a": "x"},
			want:  []string{`a.pkr.hcl:11,3: Missing required argument`, `a.pkr.hcl:13,5: Conflicting arguments`},
		},
		{
			name:  "shell with inline and script",
			files: map[string]string{"a.pkr.hcl": prov("  provisioner \"shell\" {\n    inline = [\"x\"]\n    script = \"s.sh\"\n  }\n"), "s.sh": "x"},
			want:  []string{`a.pkr.hcl:13,5: Conflicting arguments`},
		},
		{
			name:   "data source value outside source_ami",
			files:  map[string]string{"a.pkr.hcl": "data \"amazon-ami\" \"u\" {\n  owners = [\"self\"]\n}\n" + src("  ami_description = \"from ${data.amazon-ami.u.name}\"\n")},
			want:   []string{`a.pkr.hcl:10,21: Value not known when loading`},
			detail: "data.amazon-ami.u.name",
		},
		{
			name:  "data source attribute other than the ID in source_ami",
			files: map[string]string{"a.pkr.hcl": "data \"amazon-ami\" \"u\" {\n  owners = [\"self\"]\n}\nsource \"amazon-ebs\" \"app\" {\n  region = \"us-east-1\"\n  source_ami = data.amazon-ami.u.name\n  instance_type = \"t3.micro\"\n  ami_name = \"app\"\n  ssh_username = \"u\"\n}\n" + build},
			want:  []string{`a.pkr.hcl:6,16: Unsupported source_ami expression`},
		},
		{
			name:  "undeclared data source",
			files: map[string]string{"a.pkr.hcl": "source \"amazon-ebs\" \"app\" {\n  region = \"us-east-1\"\n  source_ami = data.amazon-ami.nope.id\n  instance_type = \"t3.micro\"\n  ami_name = \"app\"\n  ssh_username = \"u\"\n}\n" + build},
			want:  []string{`a.pkr.hcl:3,20: Unsupported attribute`},
		},
		{
			name:  "data source without owners",
			files: map[string]string{"a.pkr.hcl": "data \"amazon-ami\" \"u\" {\n  filters = { name = \"x\" }\n  access_key = \"AKIA\"\n}\n" + src("")},
			want:  []string{`a.pkr.hcl:1,1: Missing owners`},
		},
		{
			name:  "missing required amazon-ebs options",
			files: map[string]string{"a.pkr.hcl": "source \"amazon-ebs\" \"app\" {\n}\n" + build},
			want: []string{
				`a.pkr.hcl:1,27: Missing required argument`, `a.pkr.hcl:1,27: Missing required argument`, `a.pkr.hcl:1,27: Missing required argument`,
				`a.pkr.hcl:1,27: Missing base image`,
			},
		},
		{
			name: "bad values",
			files: map[string]string{"a.pkr.hcl": src(`  communicator = "winrm"
  imds_support = "v1.0"
  kms_key_id = "alias/x"
  ssh_timeout = "5 minutes"
  shutdown_behavior = "hibernate"
  deprecate_at = "2030-01-01"
  ami_groups = ["everyone"]
  launch_block_device_mappings {
    device_name = "/dev/xvda"
    volume_type = "gp2"
    iops = 3000
  }
`)},
			want: []string{
				`a.pkr.hcl:7,18: kiln does not support the "winrm" communicator`,
				`a.pkr.hcl:8,18: Invalid imds_support`,
				`a.pkr.hcl:9,3: kms_key_id needs encrypt_boot`,
				`a.pkr.hcl:10,17: Invalid duration`,
				`a.pkr.hcl:11,23: Invalid shutdown_behavior`,
				`a.pkr.hcl:12,18: Invalid deprecate_at`,
				`a.pkr.hcl:13,16: Invalid group`,
				`a.pkr.hcl:17,5: iops needs an io1, io2 or gp3 volume`,
			},
		},
		{
			name:  "bad ami_name",
			files: map[string]string{"a.pkr.hcl": "source \"amazon-ebs\" \"app\" {\n  region = \"us-east-1\"\n  source_ami = \"ami-12345678\"\n  instance_type = \"t3.micro\"\n  ami_name = \"my app: {{timestamp}}\"\n  ssh_username = \"u\"\n}\n" + build},
			want:  []string{`a.pkr.hcl:5,14: Invalid ami_name`},
		},
		{
			name:  "user_data and user_data_file",
			files: map[string]string{"a.pkr.hcl": src("  user_data = \"x\"\n  user_data_file = \"u.sh\"\n"), "u.sh": "y"},
			want:  []string{`a.pkr.hcl:8,3: Conflicting arguments`},
		},
		{
			name:  "provisioners without a communicator",
			files: map[string]string{"a.pkr.hcl": "source \"amazon-ebs\" \"app\" {\n" + hcl2Source + "  communicator = \"none\"\n}\n\nbuild {\n  sources = [\"source.amazon-ebs.app\"]\n  provisioner \"shell\" {\n    inline = [\"x\"]\n  }\n}\n"},
			want:  []string{`a.pkr.hcl:12,3: Provisioners need a communicator`},
		},
		{
			name:  "only naming no source",
			files: map[string]string{"a.pkr.hcl": prov("  provisioner \"shell\" {\n    inline = [\"x\"]\n    only   = [\"amazon-ebs.nope\"]\n  }\n")},
			want:  []string{`a.pkr.hcl:13,14: Unknown build in only`},
		},
		{
			name:  "broken syntax",
			files: map[string]string{"a.pkr.hcl": "source \"amazon-ebs\" \"app\" {\n  region = \n}\n"},
			want:  []string{`a.pkr.hcl:2,12: Invalid expression`},
		},
		{
			name:  "broken JSON syntax",
			files: map[string]string{"a.pkr.json": "{\n  \"source\": {\n    \"amazon-ebs\": {,}\n  }\n}\n"},
			want:  []string{`a.pkr.json:3,20: Invalid start of value`, `a.pkr.json:3,20: Invalid object property name`, `a.pkr.json:3,20: Trailing comma in object`},
		},
		{
			name:   "typo in JSON syntax",
			files:  map[string]string{"a.pkr.json": "{\n  \"source\": {\"amazon-ebs\": {\"app\": {\n    \"region\": \"us-east-1\", \"source_ami\": \"ami-12345678\", \"instance_type\": \"t3.micro\",\n    \"ami_name\": \"app\", \"ssh_usrname\": \"u\"\n  }}},\n  \"build\": {\"sources\": [\"source.amazon-ebs.app\"]}\n}\n"},
			want:   []string{`a.pkr.json:4,24: Extraneous JSON object property`},
			detail: `Did you mean "ssh_username"?`,
		},
		{
			name:  "variable declared in a var file",
			files: map[string]string{"a.pkr.hcl": src(""), "x.auto.pkrvars.hcl": "variable \"x\" {}\n"},
			want:  []string{`x.auto.pkrvars.hcl:1,1: Variable declaration in a var file`},
		},
		{
			name:  "no build block",
			files: map[string]string{"a.pkr.hcl": "source \"amazon-ebs\" \"app\" {\n" + hcl2Source + "}\n"},
			want:  []string{`-: No build block`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := hcl2Opts()
			if tt.opts != nil {
				tt.opts(&opts)
			}
			plan, err := loadHCL2(tt.files, opts)
			if err == nil {
				b, _ := json.MarshalIndent(plan, "", "  ")
				t.Fatalf("LoadFS succeeded, want errors %q; plan:\n%s", tt.want, b)
			}
			var got []string
			details := ""
			for _, d := range recipeDiags(t, err) {
				if d.Severity == hcl.DiagError {
					got = append(got, diagAt(d))
					details += d.Detail + "\n"
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("LoadFS errors:\n  %s\nwant:\n  %s\nrendered:\n%v", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "), err)
			}
			for i := range got {
				if w, prefix := strings.CutSuffix(tt.want[i], "~"); prefix && strings.HasPrefix(got[i], w) {
					continue
				}
				if got[i] != tt.want[i] {
					t.Errorf("error %d = %s, want %s", i, got[i], tt.want[i])
				}
			}
			if tt.detail != "" && !strings.Contains(details, tt.detail) {
				t.Errorf("error details do not mention %q:\n%s", tt.detail, details)
			}
		})
	}
}

// TestLoadHCL2ReportsAll checks that a template with several mistakes in
// several places reports all of them at once, in order.
func TestLoadHCL2ReportsAll(t *testing.T) {
	files := map[string]string{
		"variables.pkr.hcl": `variable "version" {
  type = string
}
`,
		"sources.pkr.hcl": `source "amazon-ebs" "app" {
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  instnce_type  = "t3.micro"
  ami_name      = "app-${var.version}"
  ssh_username  = "ubuntu"
  spot_price    = "auto"
  access_key    = "AKIAIOSFODNN7EXAMPLE"
}
`,
		"build.pkr.hcl": `build {
  sources = ["source.amazon-ebs.app"]
  provisioner "shell" {
    script = "scripts/missing.sh"
  }
  provisioner "shell-local" {
    inline = ["echo hi"]
  }
  post-processor "manifest" {
    output = "m.json"
    strip  = true
  }
}
`,
	}
	_, err := loadHCL2(files, hcl2Opts())
	if err == nil {
		t.Fatal("LoadFS succeeded, want errors")
	}
	var got []string
	warnings := 0
	for _, d := range recipeDiags(t, err) {
		if d.Severity == hcl.DiagWarning {
			warnings++
			continue
		}
		got = append(got, diagAt(d))
	}
	want := []string{
		`build.pkr.hcl:4,14: File not found`,
		`build.pkr.hcl:6,3: kiln does not support the "shell-local" provisioner`,
		`build.pkr.hcl:11,5: Unsupported argument`,
		`sources.pkr.hcl:1,27: Missing required argument`,
		`sources.pkr.hcl:4,3: Unsupported argument`,
		`sources.pkr.hcl:7,3: kiln does not support the amazon-ebs option "spot_price"`,
		`variables.pkr.hcl:1,1: Unset variable "version"`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors (-want +got):\n%s\nrendered:\n%v", diff, err)
	}
	if warnings != 1 {
		t.Errorf("warnings = %d, want 1 (access_key)", warnings)
	}
	// The rendered error reads like Packer's: file, line, and the line itself.
	msg := err.Error()
	for _, s := range []string{
		`sources.pkr.hcl:7:3: Error: kiln does not support the amazon-ebs option "spot_price"`,
		`    7 |   spot_price    = "auto"`,
		`      |   ^^^^^^^^^^`,
		`Error: Unset variable "version"`,
	} {
		if !strings.Contains(msg, s) {
			t.Errorf("RecipeError.Error() lacks %q:\n%s", s, msg)
		}
	}
}

// TestLoadHCL2Warnings checks that credentials and the ansible provisioner
// load with warnings.
func TestLoadHCL2Warnings(t *testing.T) {
	files := map[string]string{
		"a.pkr.hcl": "source \"amazon-ebs\" \"app\" {\n" + hcl2Source + `  access_key = "AKIA"
  secret_key = "s"
  profile    = "prod"
  aws_polling {
    delay_seconds = 30
  }
}
build {
  sources = ["source.amazon-ebs.app"]
  provisioner "ansible" {
    playbook_file = "site.yml"
  }
}
`,
		"site.yml": "- hosts: all\n",
	}
	plan, err := loadHCL2(files, hcl2Opts())
	if err != nil {
		t.Fatalf("LoadFS error:\n%v", err)
	}
	var got []string
	for _, w := range plan.Warnings {
		first, _, _ := strings.Cut(w, "\n")
		got = append(got, first)
	}
	want := []string{
		`a.pkr.hcl:7:3: Warning: kiln ignores the credential option "access_key"`,
		`a.pkr.hcl:8:3: Warning: kiln ignores the credential option "secret_key"`,
		`a.pkr.hcl:9:3: Warning: kiln ignores the credential option "profile"`,
		`a.pkr.hcl:10:3: Warning: kiln ignores the amazon-ebs option "aws_polling"`,
		`a.pkr.hcl:16:3: Warning: Ansible runs on the instance`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

// TestLoadHCL2OnlyExcept checks that only and except pick provisioners and
// post-processors per build, by source name or full name.
func TestLoadHCL2OnlyExcept(t *testing.T) {
	files := map[string]string{"a.pkr.hcl": "source \"amazon-ebs\" \"a\" {\n" + hcl2Source + "}\nsource \"amazon-ebs\" \"b\" {\n" + hcl2Source + `}
build {
  name    = "pair"
  sources = ["source.amazon-ebs.a", "source.amazon-ebs.b"]
  source "source.amazon-ebs.a" {
    name = "c"
  }
  provisioner "shell" {
    name   = "all"
    inline = ["x"]
  }
  provisioner "shell" {
    name   = "only-a"
    inline = ["x"]
    only   = ["amazon-ebs.a"]
  }
  provisioner "shell" {
    name   = "not-b"
    inline = ["x"]
    except = ["b"]
  }
  provisioner "shell" {
    name   = "only-c"
    inline = ["x"]
    only   = ["pair.amazon-ebs.c"]
  }
  post-processor "manifest" {
    except = ["amazon-ebs.a", "amazon-ebs.c"]
  }
}
`}
	plan, err := loadHCL2(files, hcl2Opts())
	if err != nil {
		t.Fatalf("LoadFS error:\n%v", err)
	}
	got := map[string][]string{}
	for _, b := range plan.Builds {
		steps := []string{}
		for _, p := range b.Provisioners {
			steps = append(steps, p.Name)
		}
		for _, p := range b.PostProcessors {
			steps = append(steps, p.Type)
		}
		got[b.Name] = steps
	}
	want := map[string][]string{
		"a": {"all", "only-a", "not-b"},
		"b": {"all", "manifest"},
		"c": {"all", "not-b", "only-c"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("steps per build (-want +got):\n%s", diff)
	}
}

// TestLoadHCL2Hash checks that the hash follows the files and the given
// variable values, and nothing else.
func TestLoadHCL2Hash(t *testing.T) {
	base := map[string]string{
		"a.pkr.hcl": "variable \"v\" {\n  default = \"d\"\n}\nsource \"amazon-ebs\" \"app\" {\n" + hcl2Source + "}\nbuild {\n  sources = [\"source.amazon-ebs.app\"]\n  provisioner \"shell\" {\n    script = \"s.sh\"\n  }\n}\n",
		"s.sh":      "echo 1\n",
		"other.txt": "not part of the recipe",
	}
	hash := func(change func(files map[string]string, o *LoadOptions)) string {
		t.Helper()
		files := map[string]string{}
		for k, v := range base {
			files[k] = v
		}
		opts := hcl2Opts()
		if change != nil {
			change(files, &opts)
		}
		plan, err := loadHCL2(files, opts)
		if err != nil {
			t.Fatalf("LoadFS error:\n%v", err)
		}
		return plan.Hash
	}
	h := hash(nil)
	if again := hash(func(_ map[string]string, o *LoadOptions) { o.Now = func() time.Time { return hcl2Now.Add(time.Hour) } }); again != h {
		t.Errorf("hash changed with the clock: %s, %s", h, again)
	}
	if other := hash(func(f map[string]string, _ *LoadOptions) { f["other.txt"] = "changed" }); other != h {
		t.Errorf("hash changed with a file the recipe does not use")
	}
	for name, change := range map[string]func(map[string]string, *LoadOptions){
		"script":   func(f map[string]string, _ *LoadOptions) { f["s.sh"] = "echo 2\n" },
		"-var":     func(_ map[string]string, o *LoadOptions) { o.Vars = map[string]string{"v": "x"} },
		"PKR_VAR_": func(_ map[string]string, o *LoadOptions) { o.Env = map[string]string{"PKR_VAR_v": "x"} },
		"var file": func(f map[string]string, o *LoadOptions) {
			f["x.pkrvars.hcl"] = "v = \"y\"\n"
			o.VarFiles = []string{"x.pkrvars.hcl"}
		},
		"auto var file": func(f map[string]string, _ *LoadOptions) { f["x.auto.pkrvars.hcl"] = "v = \"y\"\n" },
	} {
		if got := hash(change); got == h {
			t.Errorf("hash unchanged after changing the %s", name)
		}
	}
}

// TestLoadHCL2SingleFile loads one template of a folder: the folder's other
// templates and auto var files are not part of it, as in Packer.
func TestLoadHCL2SingleFile(t *testing.T) {
	files := map[string]string{
		"a.pkr.hcl":          "variable \"v\" {\n  default = \"d\"\n}\nsource \"amazon-ebs\" \"app\" {\n" + hcl2Source + "}\nbuild {\n  sources = [\"source.amazon-ebs.app\"]\n}\n",
		"b.pkr.hcl":          "this is not HCL {",
		"x.auto.pkrvars.hcl": "v = \"auto\"\n",
	}
	fsys := fstest.MapFS{}
	for k, v := range files {
		fsys[k] = &fstest.MapFile{Data: []byte(v)}
	}
	plan, err := LoadFS(fsys, "a.pkr.hcl", "a", hcl2Opts())
	if err != nil {
		t.Fatalf("LoadFS(a.pkr.hcl) error:\n%v", err)
	}
	if !slices.Equal(plan.Files, []string{"a.pkr.hcl"}) || string(plan.Variables[0].Value) != `"d"` {
		t.Errorf("LoadFS(a.pkr.hcl) = files %q, v = %s; want only a.pkr.hcl and the default", plan.Files, plan.Variables[0].Value)
	}
}

// TestLoadHCL2SensitiveNotInErrors checks that errors about expressions
// involving a sensitive value do not print the value.
func TestLoadHCL2SensitiveNotInErrors(t *testing.T) {
	files := map[string]string{"a.pkr.hcl": `variable "pw" {
  type      = string
  default   = "hunter2"
  sensitive = true
  validation {
    condition     = length(var.pw) > 10
    error_message = "The password is too short."
  }
}
source "amazon-ebs" "app" {
` + hcl2Source + `  ami_regions = var.pw
  user_data   = upper(var.pw) + 1
}
build {
  sources = ["source.amazon-ebs.app"]
}
`}
	_, err := loadHCL2(files, hcl2Opts())
	if err == nil {
		t.Fatal("LoadFS succeeded, want errors")
	}
	if got := len(recipeDiags(t, err)); got != 3 {
		t.Errorf("LoadFS reported %d problems, want 3:\n%v", got, err)
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "HUNTER2") {
		t.Errorf("error shows the sensitive value:\n%v", err)
	}
}
