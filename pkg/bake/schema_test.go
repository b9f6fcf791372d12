package bake

import (
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// The shared decoders are also called by the legacy JSON loader, with
// bodies parsed by hcl/v2/json and a nil EvalContext; these tests call them
// that way.

// jsonBody parses src as an HCL JSON body named file.
func jsonBody(t *testing.T, file, src string) hcl.Body {
	t.Helper()
	f, diags := hclparse.NewParser().ParseJSON([]byte(src), file)
	if diags.HasErrors() {
		t.Fatalf("ParseJSON(%s): %v", file, diags)
	}
	return f.Body
}

// hclBody parses src as an HCL native-syntax body named file.
func hclBody(t *testing.T, file, src string) hcl.Body {
	t.Helper()
	f, diags := hclparse.NewParser().ParseHCL([]byte(src), file)
	if diags.HasErrors() {
		t.Fatalf("ParseHCL(%s): %v", file, diags)
	}
	return f.Body
}

func diagList(diags hcl.Diagnostics, sev hcl.DiagnosticSeverity) []string {
	var out []string
	for _, d := range sortDiags(diags) {
		if d.Severity == sev {
			out = append(out, diagAt(d))
		}
	}
	return out
}

func TestDecodeSourceDefaults(t *testing.T) {
	body := jsonBody(t, "t.json", `{
  "region": "us-east-1",
  "source_ami": "ami-12345678",
  "instance_type": "t3.micro",
  "ami_name": "app {{timestamp}}",
  "ssh_username": "ubuntu"
}`)
	got, diags := decodeSource([]hcl.Body{body}, nil, nil, map[string]bool{})
	if diags.HasErrors() {
		t.Fatalf("decodeSource: %v", diags)
	}
	want := AmazonEBS{
		Region: "us-east-1", SourceAMI: "ami-12345678", InstanceType: "t3.micro", AMIName: "app {{timestamp}}",
		// ssh_interface stays unset: the stack's default transport applies.
		Communicator: "ssh", SSHInterface: "", SSHUsername: "ubuntu", SSHTimeout: Duration(5 * time.Minute),
		MetadataOptions:      MetadataOptions{HTTPEndpoint: "enabled", HTTPTokens: "required", HTTPPutResponseHopLimit: 1},
		TemporaryKeyPairType: "ed25519", ShutdownBehavior: "stop",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decodeSource (-want +got):\n%s", diff)
	}
}

// TestDecodeSourceOptionalTokens checks that a recipe may still ask for
// optional IMDS tokens, and that the hop limit keeps kiln's default.
func TestDecodeSourceOptionalTokens(t *testing.T) {
	body := hclBody(t, "t.pkr.hcl", hcl2Source+`  metadata_options {
    http_tokens = "optional"
  }
`)
	got, diags := decodeSource([]hcl.Body{body}, nil, nil, map[string]bool{})
	if diags.HasErrors() {
		t.Fatalf("decodeSource: %v", diags)
	}
	want := MetadataOptions{HTTPEndpoint: "enabled", HTTPTokens: "optional", HTTPPutResponseHopLimit: 1}
	if got.MetadataOptions != want {
		t.Errorf("metadata options = %+v, want %+v", got.MetadataOptions, want)
	}
}

func TestDecodeSourceJSONDiagnostics(t *testing.T) {
	body := jsonBody(t, "legacy.json", `{
  "region": "us-east-1",
  "source_ami": "ami-12345678",
  "instance_typ": "t3.micro",
  "ami_name": "app",
  "ssh_username": "ubuntu",
  "spot_price": "auto",
  "access_key": "AKIA",
  "vault_aws_engine": {"name": "x"},
  "aws_polling": {"delay_seconds": 5}
}`)
	_, diags := decodeSource([]hcl.Body{body}, nil, nil, map[string]bool{})
	wantErrs := []string{
		`legacy.json:4,3: Extraneous JSON object property`,
		`legacy.json:7,3: kiln does not support the amazon-ebs option "spot_price"`,
		`legacy.json:11,1: Missing required argument`,
	}
	if diff := cmp.Diff(wantErrs, diagList(diags, hcl.DiagError)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	wantWarns := []string{
		`legacy.json:8,3: kiln ignores the credential option "access_key"`,
		`legacy.json:9,3: kiln ignores the credential option "vault_aws_engine"`,
		`legacy.json:10,3: kiln ignores the amazon-ebs option "aws_polling"`,
	}
	if diff := cmp.Diff(wantWarns, diagList(diags, hcl.DiagWarning)); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	if !strings.Contains(diags.Error(), `Did you mean "instance_type"?`) {
		t.Errorf("typo diagnostic lacks a suggestion: %v", diags)
	}
}

// TestDecodeSourceOverride merges a build-level override body onto a
// source, as Packer does: unset options may be added, set ones not
// changed.
func TestDecodeSourceOverride(t *testing.T) {
	src := hclBody(t, "s.pkr.hcl", `region = "us-east-1"
source_ami = "ami-12345678"
instance_type = "t3.micro"
ami_name = "app"
`)
	got, diags := decodeSource([]hcl.Body{src, hclBody(t, "b.pkr.hcl", `ssh_username = "ec2-user"`)}, nil, nil, map[string]bool{})
	if diags.HasErrors() || got.SSHUsername != "ec2-user" {
		t.Errorf("decodeSource with override = ssh_username %q, %v; want ec2-user", got.SSHUsername, diags)
	}
	_, diags = decodeSource([]hcl.Body{src, hclBody(t, "b.pkr.hcl", "ssh_username = \"u\"\ninstance_type = \"t3.large\"\n")}, nil, nil, map[string]bool{})
	if diff := cmp.Diff([]string{`b.pkr.hcl:2,1: Duplicate argument`}, diagList(diags, hcl.DiagError)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

func TestDecodeSourceUserDataFile(t *testing.T) {
	fsys := fstest.MapFS{"boot/ud.sh": {Data: []byte("#!/bin/sh\necho hi\n")}}
	read := map[string]bool{}
	body := hclBody(t, "t.pkr.hcl", hcl2Source+`  user_data_file = "./boot/../boot/ud.sh"`+"\n")
	got, diags := decodeSource([]hcl.Body{body}, nil, fsys, read)
	if diags.HasErrors() {
		t.Fatalf("decodeSource: %v", diags)
	}
	if got.UserData != "#!/bin/sh\necho hi\n" || !read["boot/ud.sh"] {
		t.Errorf("user data = %q, read = %v; want the file's content, recorded as boot/ud.sh", got.UserData, read)
	}
}

// TestEveryPackerEBSOptionKnown checks that each option of Packer's
// amazon-ebs builder (packer-plugin-amazon's builder/ebs FlatConfig, less
// Packer's internal packer_* keys) is decoded, warned about or rejected by
// name: never an anonymous "Unsupported argument", never silently dropped.
func TestEveryPackerEBSOptionKnown(t *testing.T) {
	packerOptions := strings.Fields(`access_key assume_role custom_endpoint_ec2 shared_credentials_file
decode_authorization_messages insecure_skip_tls_verify max_retries mfa_code profile region secret_key
skip_metadata_api_check skip_credential_validation token vault_aws_engine aws_polling ami_name
ami_description ami_virtualization_type ami_users ami_groups ami_org_arns ami_ou_arns ami_product_codes
ami_regions skip_region_validation snapshot_copy_duration_minutes tags tag ena_support sriov_support
force_deregister force_delete_snapshot encrypt_boot kms_key_id region_kms_key_ids skip_save_build_region
imds_support deprecate_at snapshot_tags snapshot_tag snapshot_users snapshot_groups deregistration_protection
associate_public_ip_address elastic_ip_allocation_id availability_zone block_duration_minutes
capacity_reservation_preference capacity_reservation_id capacity_reservation_group_arn disable_stop_instance
ebs_optimized enable_nitro_enclave enable_t2_unlimited enable_unlimited_credits iam_instance_profile
fleet_tags fleet_tag skip_profile_validation temporary_iam_instance_profile_policy_document shutdown_behavior
instance_type security_group_filter run_tags run_tag security_group_id security_group_ids source_ami
source_ami_filter spot_allocation_strategy spot_instance_types spot_price spot_price_auto_product spot_tags
spot_tag subnet_filter subnet_id license_specifications placement tenancy temporary_security_group_source_cidrs
temporary_security_group_source_public_ip user_data user_data_file vpc_filter vpc_id windows_password_timeout
metadata_options communicator pause_before_connecting ssh_host ssh_port ssh_username ssh_password
ssh_keypair_name temporary_key_pair_name temporary_key_pair_type temporary_key_pair_bits ssh_ciphers
ssh_clear_authorized_keys ssh_key_exchange_algorithms ssh_private_key_file ssh_certificate_file ssh_pty
ssh_timeout ssh_wait_timeout ssh_agent_auth ssh_disable_agent_forwarding ssh_handshake_attempts
ssh_bastion_host ssh_bastion_port ssh_bastion_agent_auth ssh_bastion_username ssh_bastion_password
ssh_bastion_interactive ssh_bastion_private_key_file ssh_bastion_certificate_file ssh_file_transfer_method
ssh_proxy_host ssh_proxy_port ssh_proxy_username ssh_proxy_password ssh_keep_alive_interval
ssh_read_write_timeout ssh_remote_tunnels ssh_local_tunnels ssh_public_key ssh_private_key winrm_username
winrm_password winrm_host winrm_no_proxy winrm_port winrm_timeout winrm_use_ssl winrm_insecure winrm_use_ntlm
ssh_interface pause_before_ssm session_manager_port skip_create_ami skip_ami_run_tags
ami_block_device_mappings launch_block_device_mappings run_volume_tags run_volume_tag no_ephemeral fast_launch`)
	schema, _ := gohcl.ImpliedBodySchema(&ebsSource{})
	known := map[string]bool{}
	for _, a := range schema.Attributes {
		known[a.Name] = true
	}
	for _, b := range schema.Blocks {
		known[b.Type] = true
	}
	for _, x := range ebsExtras {
		if known[x.name] {
			t.Errorf("option %q is both decoded and an extra", x.name)
		}
		known[x.name] = true
	}
	for _, opt := range packerOptions {
		if !known[opt] {
			t.Errorf("Packer's amazon-ebs option %q is neither decoded nor named by kiln", opt)
		}
	}
	// Each unsupported option is reported by name at its line.
	for _, x := range ebsExtras {
		if x.kind != extraUnsupported {
			continue
		}
		set := x.name + " = \"x\"\n"
		if x.block {
			set = x.name + " {\n}\n"
		}
		_, diags := decodeSource([]hcl.Body{hclBody(t, "t.pkr.hcl", hcl2Source+set)}, nil, nil, map[string]bool{})
		want := `t.pkr.hcl:6,1: kiln does not support the amazon-ebs option "` + x.name + `"`
		if got := diagList(diags, hcl.DiagError); len(got) != 1 || got[0] != want {
			t.Errorf("decodeSource with %s: errors %q, want [%s]", x.name, got, want)
		}
	}
}

func TestDecodeProvisioner(t *testing.T) {
	fsys := fstest.MapFS{"s.sh": {Data: []byte("x")}, "dir/a": {Data: []byte("a")}, "dir/b/c": {Data: []byte("c")}}
	decl := hcl.Range{Filename: "legacy.json", Start: hcl.Pos{Line: 40, Column: 5}}
	tests := []struct {
		typ, src string
		want     Provisioner
		only     []string
		read     []string
	}{
		{
			typ: "shell", src: `{"script": "s.sh", "pause_before": "5s", "max_retries": 2, "timeout": "1h", "only": ["amazon-ebs.x"]}`,
			want: Provisioner{Type: "shell", Pos: "legacy.json:40", PauseBefore: Duration(5 * time.Second), MaxRetries: 2, Timeout: Duration(time.Hour),
				Shell: &Shell{Scripts: []string{"s.sh"}, ExecuteCommand: "chmod +x {{.Path}}; {{.Vars}} {{.Path}}", InlineShebang: "/bin/sh -e", ValidExitCodes: []int{0}, RemoteFolder: "/tmp"}},
			only: []string{"amazon-ebs.x"},
			read: []string{"s.sh"},
		},
		{
			typ: "file", src: `{"source": "dir/", "destination": "/opt/"}`,
			want: Provisioner{Type: "file", Pos: "legacy.json:40", File: &File{Sources: []string{"dir/"}, Destination: "/opt/"}},
			read: []string{"dir/a", "dir/b/c"},
		},
	}
	for _, tt := range tests {
		read := map[string]bool{}
		got, only, _, diags := decodeProvisioner(tt.typ, decl, jsonBody(t, "legacy.json", tt.src), nil, fsys, read)
		if diags.HasErrors() {
			t.Errorf("decodeProvisioner(%s, %s): %v", tt.typ, tt.src, diags)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("decodeProvisioner(%s, %s) (-want +got):\n%s", tt.typ, tt.src, diff)
		}
		if diff := cmp.Diff(tt.only, only); diff != "" {
			t.Errorf("decodeProvisioner(%s) only (-want +got):\n%s", tt.typ, diff)
		}
		if diff := cmp.Diff(tt.read, sortedKeys(read)); diff != "" {
			t.Errorf("decodeProvisioner(%s) read (-want +got):\n%s", tt.typ, diff)
		}
	}
}

func TestDecodeProvisionerUnsupported(t *testing.T) {
	decl := hcl.Range{Filename: "b.pkr.hcl", Start: hcl.Pos{Line: 3, Column: 3}}
	for typ, detail := range map[string]string{
		"shell-local":       "EventBridge event",
		"breakpoint":        "unattended",
		"powershell":        "Linux",
		"puppet-masterless": "shell, file, ansible and ansible-local",
	} {
		_, _, _, diags := decodeProvisioner(typ, decl, hcl.EmptyBody(), nil, nil, map[string]bool{})
		if len(diags) != 1 || diags[0].Summary != `kiln does not support the "`+typ+`" provisioner` || !strings.Contains(diags[0].Detail, detail) {
			t.Errorf("decodeProvisioner(%q) = %v, want one error naming it, mentioning %q", typ, diags, detail)
		}
	}
}

func TestDecodePostProcessor(t *testing.T) {
	decl := hcl.Range{Filename: "t.json", Start: hcl.Pos{Line: 9, Column: 1}}
	only, except, rest, diags := decodeOnlyExcept(jsonBody(t, "t.json", `{"only": ["a"], "custom_data": {"k": "v"}}`), nil)
	if diags.HasErrors() || !cmp.Equal(only, []string{"a"}) || except != nil {
		t.Fatalf("decodeOnlyExcept = %q, %q, %v", only, except, diags)
	}
	got, diags := decodePostProcessor("manifest", decl, rest, nil)
	want := PostProcessor{Type: "manifest", Pos: "t.json:9", Manifest: &Manifest{Output: "packer-manifest.json", CustomData: map[string]string{"k": "v"}}}
	if diags.HasErrors() || !cmp.Equal(want, got) {
		t.Errorf("decodePostProcessor(manifest) = %+v, %v; want %+v", got, diags, want)
	}

	_, diags = decodePostProcessor("manifest", decl, jsonBody(t, "t.json", `{"only": ["a"]}`), nil)
	if got := diagList(diags, hcl.DiagError); len(got) != 1 || !strings.Contains(got[0], "Extraneous JSON object property") {
		t.Errorf("decodePostProcessor with only left in = %q, want one error", got)
	}
	_, diags = decodePostProcessor("manifest", decl, jsonBody(t, "t.json", `{"output": "../../etc/x"}`), nil)
	if got := diagList(diags, hcl.DiagError); len(got) != 1 || !strings.Contains(got[0], "Invalid manifest output") {
		t.Errorf("decodePostProcessor with output outside = %q, want one error", got)
	}
	_, diags = decodePostProcessor("docker-push", decl, hcl.EmptyBody(), nil)
	if len(diags) != 1 || diags[0].Summary != `kiln does not support the "docker-push" post-processor` {
		t.Errorf("decodePostProcessor(docker-push) = %v, want an error naming it", diags)
	}
}

func TestCheckAMIName(t *testing.T) {
	for name, ok := range map[string]bool{
		"app":                         true,
		"ab":                          false,
		strings.Repeat("a", 128):      true,
		strings.Repeat("a", 129):      false,
		"app (x) [y] ./-'@_ 1":        true,
		"app:1":                       false,
		"app-{{timestamp}}":           false,
		"app-{{isotime \"2006-01\"}}": false,
	} {
		if got := checkAMIName(name, false) == ""; got != ok {
			t.Errorf("checkAMIName(%q, false) ok = %v, want %v", name, got, ok)
		}
	}
	if msg := checkAMIName("app-{{timestamp}}", true); msg != "" {
		t.Errorf("checkAMIName(placeholders) = %q, want ok", msg)
	}
}
