package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/pkg/bake"
)

func runKiln(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestValidateValid(t *testing.T) {
	code, out, errOut := runKiln(t, "validate", "../../examples/webapp")
	if code != 0 || strings.TrimSpace(out) != "The configuration is valid." {
		t.Fatalf("kiln validate examples/webapp = %d, %q (stderr %q), want 0 and the valid message", code, out, errOut)
	}
}

// TestValidateReportsEveryProblem: every problem at once, each with its
// file:line:column and source line, exit status 1.
func TestValidateReportsEveryProblem(t *testing.T) {
	code, out, errOut := runKiln(t, "validate", "testdata/broken")
	if code != 1 {
		t.Fatalf("kiln validate testdata/broken = %d, want 1\nstdout %s\nstderr %s", code, out, errOut)
	}
	for _, want := range []string{
		"broken.pkr.hcl:3:3", `instance_typo`, // the typo, at its line
		"broken.pkr.hcl:7:3", `spot_price`, // an option kiln does not support
		"broken.pkr.hcl:12", `shell-local`, // a provisioner kiln does not support
		`instance_typo = "t3.micro"`, // the offending source line
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(out, "valid") {
		t.Errorf("stdout claims validity: %q", out)
	}
}

func TestValidateVarFlags(t *testing.T) {
	code, _, errOut := runKiln(t, "validate", "-var", "app_version=not-a-version", "../../examples/webapp")
	if code != 1 || !strings.Contains(errOut, "app_version must look like 1.2.3") {
		t.Errorf("kiln validate -var app_version=bad = %d, stderr %q; want 1 and the validation message", code, errOut)
	}
	dir := t.TempDir()
	vf := filepath.Join(dir, "prod.pkrvars.hcl")
	if err := os.WriteFile(vf, []byte("app_version = \"2.0.0\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runKiln(t, "inspect", "-var-file", vf, "../../examples/webapp")
	if code != 0 || !strings.Contains(out, "webapp-2.0.0-") {
		t.Errorf("kiln inspect -var-file = %d, %q (stderr %q); want the ami_name to use 2.0.0", code, out, errOut)
	}
}

func TestInspectShowsThePlan(t *testing.T) {
	code, out, errOut := runKiln(t, "inspect", "../../examples/webapp")
	if code != 0 {
		t.Fatalf("kiln inspect = %d, stderr %s", code, errOut)
	}
	for _, want := range []string{
		"Build amazon-ebs.webapp", "owned by 099720109477", "SSH as ubuntu", "host key pinned",
		"eu-west-1, us-east-1, us-west-2", "accounts 210987654321", "1. shell \"install packages\"",
		"2. file", "files/webapp.conf -> /tmp/webapp.conf", "/kiln/webapp/latest", "manifest manifest.json",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
}

func TestInspectMasksSensitive(t *testing.T) {
	dir := t.TempDir()
	tmpl := `variable "token" {
  type      = string
  sensitive = true
}
source "amazon-ebs" "x" {
  region        = "us-east-1"
  instance_type = "t3.micro"
  ssh_username  = "ubuntu"
  source_ami    = "ami-12345678"
  ami_name      = "x-image"
}
build {
  sources = ["source.amazon-ebs.x"]
  provisioner "shell" {
    environment_vars = ["TOKEN=${var.token}"]
    inline           = ["echo ok"]
  }
}
`
	if err := os.WriteFile(filepath.Join(dir, "x.pkr.hcl"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"inspect"}, {"inspect", "-json"}} {
		code, out, errOut := runKiln(t, append(args, "-var", "token=hunter2-very-secret", dir)...)
		if code != 0 {
			t.Fatalf("kiln %v = %d: %s", args, code, errOut)
		}
		if strings.Contains(out, "hunter2-very-secret") {
			t.Errorf("kiln %v printed the sensitive value:\n%s", args, out)
		}
		if !strings.Contains(out, "<sensitive>") {
			t.Errorf("kiln %v does not show the variable as <sensitive>:\n%s", args, out)
		}
	}
	_, out, _ := runKiln(t, "inspect", "-json", "-var", "token=hunter2-very-secret", dir)
	var plan bake.Plan
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("inspect -json is not a plan: %v", err)
	}
	if len(plan.Builds) != 1 || plan.Builds[0].Source.AMIName != "x-image" {
		t.Errorf("inspect -json plan = %+v", plan)
	}
}

func TestBundleThenValidate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "webapp.tar.gz")
	code, stdout, errOut := runKiln(t, "bundle", "../../examples/webapp", "-o", out)
	if code != 0 || !strings.Contains(stdout, "Wrote") {
		t.Fatalf("kiln bundle = %d, %q, %q", code, stdout, errOut)
	}
	code, stdout, errOut = runKiln(t, "validate", out)
	if code != 0 {
		t.Fatalf("kiln validate %s = %d: %s", out, code, errOut)
	}
	// The bundle and the folder are the same recipe.
	_, a, _ := runKiln(t, "inspect", "-json", out)
	_, b, _ := runKiln(t, "inspect", "-json", "../../examples/webapp")
	var pa, pb bake.Plan
	if err := json.Unmarshal([]byte(a), &pa); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(b), &pb); err != nil {
		t.Fatal(err)
	}
	if pa.Hash != pb.Hash {
		t.Errorf("bundle hash %s != folder hash %s", pa.Hash, pb.Hash)
	}
}

func TestUnknownCommand(t *testing.T) {
	if code, _, errOut := runKiln(t, "bak"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("kiln bak = %d, %q", code, errOut)
	}
}
