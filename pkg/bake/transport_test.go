package bake

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// transportRecipe is a recipe whose source has the given extra lines.
func transportRecipe(lines string) []byte {
	return []byte(`variable "version" {
  type = string
}
source "amazon-ebs" "app" {
  region        = "eu-west-1"
  source_ami    = "ami-12345678"
  instance_type = "t3.micro"
  ami_name      = "app"
` + lines + `
}
build {
  sources = ["source.amazon-ebs.app"]
}
`)
}

// TestPlanTransport: the plan step records the transport a build uses:
// the recipe's ssh_interface, or, when it sets none, the stack's default
// (Config.DefaultTransport), which the loaders no longer hide behind a
// filled-in "private_ip". A build that cannot provision with the resolved
// transport fails before anything is created.
func TestPlanTransport(t *testing.T) {
	for _, c := range []struct {
		name, lines, defaultTransport, profile string
		want                                   string
		wantErr                                string
	}{
		{name: "unset, stack ssh", lines: `ssh_username = "ubuntu"`, defaultTransport: "ssh", want: "ssh"},
		{name: "unset, stack default", lines: `ssh_username = "ubuntu"`, want: "ssh"},
		{name: "unset, stack session_manager", lines: `ssh_username = "ubuntu"`, defaultTransport: "session_manager", profile: "kiln-build", want: "session_manager"},
		{name: "private_ip over a session_manager stack", lines: "ssh_username = \"ubuntu\"\nssh_interface = \"private_ip\"", defaultTransport: "session_manager", want: "ssh"},
		{name: "recipe session_manager", lines: `ssh_interface = "session_manager"`, profile: "kiln-build", want: "session_manager"},
		{name: "recipe session_manager, own profile", lines: "ssh_interface = \"session_manager\"\niam_instance_profile = \"mine\"", want: "session_manager"},
		{name: "communicator none", lines: `communicator = "none"`, defaultTransport: "session_manager", want: "none"},
		{name: "no username over ssh", lines: ``, defaultTransport: "ssh", wantErr: "Missing ssh_username"},
		{name: "no username, stack session_manager", lines: ``, defaultTransport: "session_manager", profile: "kiln-build", want: "session_manager"},
		{name: "no instance profile anywhere", lines: `ssh_interface = "session_manager"`, wantErr: "Missing instance profile"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newStageEnv(t)
			e.cfg.DefaultTransport, e.cfg.InstanceProfile = c.defaultTransport, c.profile
			e.launch.Config = e.cfg
			st0 := e.recipeObject(fmt.Sprintf("recipes/app-%d.pkr.hcl", testBuildSeq.Add(1)), transportRecipe(c.lines))
			st, err := e.launch.Plan(context.Background(), st0)
			if c.wantErr != "" {
				if _, ok := err.(*RecipeError); !ok || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Launch.Plan = %v, want a *RecipeError %q", err, c.wantErr)
				}
				if st.Plan != nil {
					t.Errorf("st.Plan = %+v after a recipe problem", st.Plan)
				}
				return
			}
			if err != nil {
				t.Fatalf("Launch.Plan = %v", err)
			}
			if st.Plan.Transport != c.want {
				t.Errorf("st.Plan.Transport = %q, want %q", st.Plan.Transport, c.want)
			}
		})
	}
}

// TestDecodeSourceTransport: ssh_interface stays empty when unset; an SSH
// interface without ssh_username is an error, an unset one a warning (the
// stack's default may be session_manager), and session_manager needs no
// iam_instance_profile of the recipe's (the stack provides one).
func TestDecodeSourceTransport(t *testing.T) {
	base := "region = \"us-east-1\"\nsource_ami = \"ami-12345678\"\ninstance_type = \"t3.micro\"\nami_name = \"app\"\n"
	for _, c := range []struct {
		name, extra, iface string
		errs, warns        []string
	}{
		{name: "unset", extra: `ssh_username = "u"`},
		{name: "unset without username", warns: []string{"No ssh_username"}},
		{name: "private_ip without username", extra: `ssh_interface = "private_ip"`, iface: "private_ip", errs: []string{"Missing required argument"}},
		{name: "session_manager without profile or username", extra: `ssh_interface = "session_manager"`, iface: "session_manager"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, diags := decodeSource([]hcl.Body{hclBody(t, "a.pkr.hcl", base+c.extra)}, nil, nil, map[string]bool{})
			var errs, warns []string
			for _, d := range diags {
				if d.Severity == hcl.DiagError {
					errs = append(errs, d.Summary)
				} else {
					warns = append(warns, d.Summary)
				}
			}
			if strings.Join(errs, ",") != strings.Join(c.errs, ",") || strings.Join(warns, ",") != strings.Join(c.warns, ",") {
				t.Errorf("decodeSource: errors %v, warnings %v; want %v, %v", errs, warns, c.errs, c.warns)
			}
			if got.SSHInterface != c.iface {
				t.Errorf("SSHInterface = %q, want %q", got.SSHInterface, c.iface)
			}
		})
	}
}
