package bake

import (
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
)

// This file is the schema kiln shares between its two recipe formats: the
// amazon-ebs source, the provisioners and the manifest post-processor. The
// HCL2 loader hands it the bodies of HCL blocks; the legacy JSON loader hands
// it the objects of a JSON template parsed with hcl/v2/json (with a nil
// EvalContext, so strings stay literal). Either way an option is read under
// Packer's name, checked, given kiln's default, and never silently dropped:
// an option kiln does not support is an error that names it, credentials are
// a warning (kiln always acts with its own role), and a typo gets HCL's
// "Did you mean" at its line.
//
// The gohcl-tagged structs below decode to *hcl.Attribute rather than to Go
// values so that each value is evaluated here, with its range at hand for
// precise diagnostics and with data-source references recognised.

// Kiln's defaults, applied where a recipe leaves an option unset.
const (
	// defaultCommunicator: kiln provisions over SSH unless told "none".
	defaultCommunicator = "ssh"
	// defaultSSHTimeout is Packer's ssh_timeout default.
	defaultSSHTimeout = 5 * time.Minute
	// defaultKeyPairType: newer OpenSSH releases reject ssh-rsa (SHA-1)
	// signatures, so kiln's temporary key is ed25519 (Packer's is rsa).
	defaultKeyPairType = "ed25519"
	// defaultShutdownBehavior is Packer's: stop, so that the AMI is made from
	// a stopped instance.
	defaultShutdownBehavior = "stop"
	// IMDS: the endpoint is on and tokens (IMDSv2) are required unless the
	// recipe says http_tokens = "optional"; Packer defaults tokens to
	// optional. A hop limit of 1 keeps containers on the build instance away
	// from its role credentials.
	defaultHTTPEndpoint = "enabled"
	defaultHTTPTokens   = "required"
	defaultHopLimit     = 1

	// defaultManifestOutput is Packer's manifest post-processor default.
	defaultManifestOutput = "packer-manifest.json"

	// The shell provisioner's defaults (defaultInlineShebang,
	// defaultExecuteCommand, defaultRemoteFolder) are Packer's, shared with
	// provisioners.go, as is maxUserData (cloudinit.go).
)

// ebsSource is the amazon-ebs source body. Field comments are the user
// documentation of each option; options are Packer's.
type ebsSource struct {
	// region is the Region the build instance runs in and the AMI is made in.
	Region *hcl.Attribute `hcl:"region,optional"`
	// source_ami is the base image's ID, or a reference to a data source
	// (data.amazon-ami.x.id, data.amazon-parameterstore.x.value) that launch
	// resolves.
	SourceAMI *hcl.Attribute `hcl:"source_ami,optional"`
	// instance_type of the build instance.
	InstanceType *hcl.Attribute `hcl:"instance_type,optional"`
	// ami_name: 3-128 characters of AWS's set; {{timestamp}}, {{isotime}},
	// {{uuid}} and clean_resource_name are rendered as in Packer.
	AMIName        *hcl.Attribute `hcl:"ami_name,optional"`
	AMIDescription *hcl.Attribute `hcl:"ami_description,optional"`
	// ami_regions are further Regions the AMI is copied to.
	AMIRegions *hcl.Attribute `hcl:"ami_regions,optional"`
	// Sharing of the AMI (and, with snapshot_*, its snapshots).
	AMIUsers       *hcl.Attribute `hcl:"ami_users,optional"`
	AMIGroups      *hcl.Attribute `hcl:"ami_groups,optional"`
	AMIOrgARNs     *hcl.Attribute `hcl:"ami_org_arns,optional"`
	AMIOUARNs      *hcl.Attribute `hcl:"ami_ou_arns,optional"`
	SnapshotUsers  *hcl.Attribute `hcl:"snapshot_users,optional"`
	SnapshotGroups *hcl.Attribute `hcl:"snapshot_groups,optional"`
	// Tags of the AMI (tags), the build instance (run_tags), its volumes
	// (run_volume_tags) and the AMI's snapshots (snapshot_tags).
	Tags          *hcl.Attribute `hcl:"tags,optional"`
	RunTags       *hcl.Attribute `hcl:"run_tags,optional"`
	RunVolumeTags *hcl.Attribute `hcl:"run_volume_tags,optional"`
	SnapshotTags  *hcl.Attribute `hcl:"snapshot_tags,optional"`
	// communicator is "ssh" (default) or "none".
	Communicator *hcl.Attribute `hcl:"communicator,optional"`
	// ssh_interface: private_ip, public_ip, private_dns, public_dns or
	// session_manager. Unset, the stack's default transport applies: SSH to
	// the private IP (the provisioning Lambda runs inside the VPC, so no
	// public IP and no 0.0.0.0/0 rule are needed), or session_manager.
	SSHInterface *hcl.Attribute `hcl:"ssh_interface,optional"`
	SSHUsername  *hcl.Attribute `hcl:"ssh_username,optional"`
	// ssh_timeout (and its older name ssh_wait_timeout): default 5m.
	SSHTimeout     *hcl.Attribute `hcl:"ssh_timeout,optional"`
	SSHWaitTimeout *hcl.Attribute `hcl:"ssh_wait_timeout,optional"`
	// Network placement.
	SubnetID                 *hcl.Attribute `hcl:"subnet_id,optional"`
	VPCID                    *hcl.Attribute `hcl:"vpc_id,optional"`
	SecurityGroupID          *hcl.Attribute `hcl:"security_group_id,optional"`
	SecurityGroupIDs         *hcl.Attribute `hcl:"security_group_ids,optional"`
	AssociatePublicIPAddress *hcl.Attribute `hcl:"associate_public_ip_address,optional"`
	IAMInstanceProfile       *hcl.Attribute `hcl:"iam_instance_profile,optional"`
	// user_data or user_data_file (a recipe-relative path), not both.
	UserData     *hcl.Attribute `hcl:"user_data,optional"`
	UserDataFile *hcl.Attribute `hcl:"user_data_file,optional"`
	// Encryption of the AMI's volumes.
	EncryptBoot     *hcl.Attribute `hcl:"encrypt_boot,optional"`
	KMSKeyID        *hcl.Attribute `hcl:"kms_key_id,optional"`
	RegionKMSKeyIDs *hcl.Attribute `hcl:"region_kms_key_ids,optional"`
	// imds_support: only "v2.0".
	IMDSSupport *hcl.Attribute `hcl:"imds_support,optional"`
	// deprecate_at: an RFC 3339 time.
	DeprecateAt         *hcl.Attribute `hcl:"deprecate_at,optional"`
	ForceDeregister     *hcl.Attribute `hcl:"force_deregister,optional"`
	ForceDeleteSnapshot *hcl.Attribute `hcl:"force_delete_snapshot,optional"`
	// temporary_key_pair_type: ed25519 (default) or rsa.
	TemporaryKeyPairType *hcl.Attribute `hcl:"temporary_key_pair_type,optional"`
	// shutdown_behavior: stop (default) or terminate.
	ShutdownBehavior *hcl.Attribute `hcl:"shutdown_behavior,optional"`
	ENASupport       *hcl.Attribute `hcl:"ena_support,optional"`
	SRIOVSupport     *hcl.Attribute `hcl:"sriov_support,optional"`

	SourceAMIFilter           *amiFilterBlock       `hcl:"source_ami_filter,block"`
	SubnetFilter              *subnetFilterBlock    `hcl:"subnet_filter,block"`
	VPCFilter                 *vpcFilterBlock       `hcl:"vpc_filter,block"`
	LaunchBlockDeviceMappings []blockDeviceBlock    `hcl:"launch_block_device_mappings,block"`
	AMIBlockDeviceMappings    []blockDeviceBlock    `hcl:"ami_block_device_mappings,block"`
	MetadataOptions           *metadataOptionsBlock `hcl:"metadata_options,block"`
	// tag, run_tag and snapshot_tag { key, value } and run_volume_tag
	// { name, value } blocks add to the maps above, as in Packer.
	Tag          []keyValueBlock  `hcl:"tag,block"`
	RunTag       []keyValueBlock  `hcl:"run_tag,block"`
	SnapshotTag  []keyValueBlock  `hcl:"snapshot_tag,block"`
	RunVolumeTag []nameValueBlock `hcl:"run_volume_tag,block"`

	// Rest holds credentials and the options kiln ignores or rejects.
	Rest hcl.Body `hcl:",remain"`
}

// amiFilterBlock is source_ami_filter (and the body of data "amazon-ami").
type amiFilterBlock struct {
	Filters           *hcl.Attribute `hcl:"filters,optional"`
	Owners            *hcl.Attribute `hcl:"owners,optional"`
	MostRecent        *hcl.Attribute `hcl:"most_recent,optional"`
	IncludeDeprecated *hcl.Attribute `hcl:"include_deprecated,optional"`
	DefRange          hcl.Range      `hcl:",def_range"`
}

type subnetFilterBlock struct {
	Filters  *hcl.Attribute   `hcl:"filters,optional"`
	Filter   []nameValueBlock `hcl:"filter,block"`
	MostFree *hcl.Attribute   `hcl:"most_free,optional"`
	Random   *hcl.Attribute   `hcl:"random,optional"`
	DefRange hcl.Range        `hcl:",def_range"`
}

type vpcFilterBlock struct {
	Filters  *hcl.Attribute   `hcl:"filters,optional"`
	Filter   []nameValueBlock `hcl:"filter,block"`
	DefRange hcl.Range        `hcl:",def_range"`
}

type blockDeviceBlock struct {
	DeviceName          *hcl.Attribute `hcl:"device_name,optional"`
	VolumeType          *hcl.Attribute `hcl:"volume_type,optional"`
	VolumeSize          *hcl.Attribute `hcl:"volume_size,optional"`
	IOPS                *hcl.Attribute `hcl:"iops,optional"`
	Throughput          *hcl.Attribute `hcl:"throughput,optional"`
	DeleteOnTermination *hcl.Attribute `hcl:"delete_on_termination,optional"`
	Encrypted           *hcl.Attribute `hcl:"encrypted,optional"`
	KMSKeyID            *hcl.Attribute `hcl:"kms_key_id,optional"`
	SnapshotID          *hcl.Attribute `hcl:"snapshot_id,optional"`
	VirtualName         *hcl.Attribute `hcl:"virtual_name,optional"`
	NoDevice            *hcl.Attribute `hcl:"no_device,optional"`
	DefRange            hcl.Range      `hcl:",def_range"`
}

type metadataOptionsBlock struct {
	HTTPEndpoint            *hcl.Attribute `hcl:"http_endpoint,optional"`
	HTTPTokens              *hcl.Attribute `hcl:"http_tokens,optional"`
	HTTPPutResponseHopLimit *hcl.Attribute `hcl:"http_put_response_hop_limit,optional"`
	InstanceMetadataTags    *hcl.Attribute `hcl:"instance_metadata_tags,optional"`
}

type keyValueBlock struct {
	Key      *hcl.Attribute `hcl:"key,optional"`
	Value    *hcl.Attribute `hcl:"value,optional"`
	DefRange hcl.Range      `hcl:",def_range"`
}

type nameValueBlock struct {
	Name     *hcl.Attribute `hcl:"name,optional"`
	Value    *hcl.Attribute `hcl:"value,optional"`
	DefRange hcl.Range      `hcl:",def_range"`
}

// extraKind says what kiln does with an option it does not decode.
type extraKind int

const (
	// extraCredential options are accepted with a warning: kiln acts with
	// its own role.
	extraCredential extraKind = iota
	// extraIgnored options are accepted with a warning saying why they have
	// no effect in kiln.
	extraIgnored
	// extraUnsupported options are errors.
	extraUnsupported
)

// extraOption is a Packer option that kiln recognises but does not decode.
type extraOption struct {
	name  string
	block bool
	kind  extraKind
	// why completes the diagnostic: what kiln does instead.
	why string
}

// credentialOptions are the AWS access options of Packer's amazon plugin
// (builders and data sources alike).
var credentialOptions = []extraOption{
	{name: "access_key"}, {name: "secret_key"}, {name: "token"}, {name: "profile"},
	{name: "shared_credentials_file"}, {name: "mfa_code"},
	{name: "skip_credential_validation"}, {name: "skip_metadata_api_check"},
	{name: "assume_role", block: true}, {name: "vault_aws_engine", block: true},
}

const (
	whySSHOnly     = "kiln connects with a temporary key pair it creates for each build (temporary_key_pair_type), over ssh_interface, or through Session Manager."
	whyNoBastion   = "kiln provisions from inside the VPC (ssh_interface = \"private_ip\") or through Session Manager (ssh_interface = \"session_manager\"), so no bastion or proxy is needed."
	whyNoWinRM     = "kiln bakes Linux images over SSH or Session Manager."
	whyOnDemand    = "kiln launches one on-demand build instance."
	whyNoSGControl = "kiln creates a temporary security group that admits only its provisioning Lambda; use security_group_ids to supply your own."
)

// ebsExtras are the amazon-ebs options of Packer's builder that kiln does not
// decode (packer-plugin-amazon builder/ebs).
var ebsExtras = append(append([]extraOption(nil), credentialOptions...), []extraOption{
	{name: "aws_polling", block: true, kind: extraIgnored, why: "kiln waits for images in its state machine, without Packer's time limit."},
	{name: "max_retries", kind: extraIgnored, why: "kiln's AWS clients retry throttled calls themselves."},
	{name: "decode_authorization_messages", kind: extraIgnored, why: "kiln reports AWS errors as AWS returns them."},

	{name: "custom_endpoint_ec2", kind: extraUnsupported, why: "kiln uses the Region's EC2 endpoint."},
	{name: "insecure_skip_tls_verify", kind: extraUnsupported},
	{name: "ami_virtualization_type", kind: extraUnsupported, why: "kiln registers hvm images."},
	{name: "ami_product_codes", kind: extraUnsupported},
	{name: "skip_region_validation", kind: extraUnsupported},
	{name: "snapshot_copy_duration_minutes", kind: extraUnsupported},
	{name: "skip_save_build_region", kind: extraUnsupported, why: "kiln keeps the AMI in the build Region."},
	{name: "deregistration_protection", block: true, kind: extraUnsupported},
	{name: "elastic_ip_allocation_id", kind: extraUnsupported},
	{name: "availability_zone", kind: extraUnsupported, why: "choose the zone with subnet_id or subnet_filter."},
	{name: "block_duration_minutes", kind: extraUnsupported, why: whyOnDemand},
	{name: "capacity_reservation_preference", kind: extraUnsupported},
	{name: "capacity_reservation_id", kind: extraUnsupported},
	{name: "capacity_reservation_group_arn", kind: extraUnsupported},
	{name: "disable_stop_instance", kind: extraUnsupported, why: "kiln stops the instance itself before making the image."},
	{name: "ebs_optimized", kind: extraUnsupported, why: "current instance types are EBS-optimized by default."},
	{name: "enable_nitro_enclave", kind: extraUnsupported},
	{name: "enable_t2_unlimited", kind: extraUnsupported},
	{name: "enable_unlimited_credits", kind: extraUnsupported},
	{name: "fleet_tags", kind: extraUnsupported, why: whyOnDemand},
	{name: "fleet_tag", block: true, kind: extraUnsupported, why: whyOnDemand},
	{name: "skip_profile_validation", kind: extraUnsupported},
	{name: "temporary_iam_instance_profile_policy_document", block: true, kind: extraUnsupported, why: "give an existing profile in iam_instance_profile."},
	{name: "security_group_filter", block: true, kind: extraUnsupported, why: whyNoSGControl},
	{name: "temporary_security_group_source_cidrs", kind: extraUnsupported, why: whyNoSGControl},
	{name: "temporary_security_group_source_public_ip", kind: extraUnsupported, why: whyNoSGControl},
	{name: "spot_allocation_strategy", kind: extraUnsupported, why: whyOnDemand},
	{name: "spot_instance_types", kind: extraUnsupported, why: whyOnDemand},
	{name: "spot_price", kind: extraUnsupported, why: whyOnDemand},
	{name: "spot_price_auto_product", kind: extraUnsupported, why: whyOnDemand},
	{name: "spot_tags", kind: extraUnsupported, why: whyOnDemand},
	{name: "spot_tag", block: true, kind: extraUnsupported, why: whyOnDemand},
	{name: "license_specifications", block: true, kind: extraUnsupported},
	{name: "placement", block: true, kind: extraUnsupported},
	{name: "tenancy", kind: extraUnsupported},
	{name: "windows_password_timeout", kind: extraUnsupported, why: whyNoWinRM},
	{name: "pause_before_connecting", kind: extraUnsupported},
	{name: "ssh_host", kind: extraUnsupported, why: whyBastionOrSSH("ssh_interface")},
	{name: "ssh_port", kind: extraUnsupported, why: "kiln connects to port 22."},
	{name: "ssh_password", kind: extraUnsupported, why: whySSHOnly},
	{name: "ssh_keypair_name", kind: extraUnsupported, why: whySSHOnly},
	{name: "temporary_key_pair_name", kind: extraUnsupported, why: "kiln names its temporary key pair after the build."},
	{name: "temporary_key_pair_bits", kind: extraUnsupported, why: whySSHOnly},
	{name: "ssh_private_key_file", kind: extraUnsupported, why: whySSHOnly},
	{name: "ssh_certificate_file", kind: extraUnsupported, why: whySSHOnly},
	{name: "ssh_private_key", kind: extraUnsupported, why: whySSHOnly},
	{name: "ssh_public_key", kind: extraUnsupported, why: whySSHOnly},
	{name: "ssh_agent_auth", kind: extraUnsupported, why: whySSHOnly},
	{name: "ssh_ciphers", kind: extraUnsupported},
	{name: "ssh_key_exchange_algorithms", kind: extraUnsupported},
	{name: "ssh_clear_authorized_keys", kind: extraUnsupported},
	{name: "ssh_pty", kind: extraUnsupported},
	{name: "ssh_disable_agent_forwarding", kind: extraUnsupported},
	{name: "ssh_handshake_attempts", kind: extraUnsupported},
	{name: "ssh_file_transfer_method", kind: extraUnsupported},
	{name: "ssh_keep_alive_interval", kind: extraUnsupported},
	{name: "ssh_read_write_timeout", kind: extraUnsupported},
	{name: "ssh_remote_tunnels", kind: extraUnsupported},
	{name: "ssh_local_tunnels", kind: extraUnsupported},
	{name: "ssh_bastion_host", kind: extraUnsupported, why: whyNoBastion},
	{name: "ssh_bastion_port", kind: extraUnsupported, why: whyNoBastion},
	{name: "ssh_bastion_agent_auth", kind: extraUnsupported, why: whyNoBastion},
	{name: "ssh_bastion_username", kind: extraUnsupported, why: whyNoBastion},
	{name: "ssh_bastion_password", kind: extraUnsupported, why: whyNoBastion},
	{name: "ssh_bastion_interactive", kind: extraUnsupported, why: whyNoBastion},
	{name: "ssh_bastion_private_key_file", kind: extraUnsupported, why: whyNoBastion},
	{name: "ssh_bastion_certificate_file", kind: extraUnsupported, why: whyNoBastion},
	{name: "ssh_proxy_host", kind: extraUnsupported, why: whyNoBastion},
	{name: "ssh_proxy_port", kind: extraUnsupported, why: whyNoBastion},
	{name: "ssh_proxy_username", kind: extraUnsupported, why: whyNoBastion},
	{name: "ssh_proxy_password", kind: extraUnsupported, why: whyNoBastion},
	{name: "winrm_username", kind: extraUnsupported, why: whyNoWinRM},
	{name: "winrm_password", kind: extraUnsupported, why: whyNoWinRM},
	{name: "winrm_host", kind: extraUnsupported, why: whyNoWinRM},
	{name: "winrm_no_proxy", kind: extraUnsupported, why: whyNoWinRM},
	{name: "winrm_port", kind: extraUnsupported, why: whyNoWinRM},
	{name: "winrm_timeout", kind: extraUnsupported, why: whyNoWinRM},
	{name: "winrm_use_ssl", kind: extraUnsupported, why: whyNoWinRM},
	{name: "winrm_insecure", kind: extraUnsupported, why: whyNoWinRM},
	{name: "winrm_use_ntlm", kind: extraUnsupported, why: whyNoWinRM},
	{name: "pause_before_ssm", kind: extraUnsupported},
	{name: "session_manager_port", kind: extraUnsupported, why: "kiln's session_manager mode runs commands with SSM Run Command, without a port forward."},
	{name: "skip_create_ami", kind: extraUnsupported, why: "a kiln build always makes an AMI."},
	{name: "skip_ami_run_tags", kind: extraUnsupported},
	{name: "no_ephemeral", kind: extraUnsupported},
	{name: "fast_launch", block: true, kind: extraUnsupported, why: "fast launch is for Windows images."},
}...)

func whyBastionOrSSH(opt string) string {
	return "kiln finds the instance's address itself; choose which with " + opt + "."
}

// decodeSource decodes an amazon-ebs source into AmazonEBS, with kiln's
// defaults applied and every option validated.
//
// bodies are the source block's body followed by any build-level override
// bodies (build { source "source.amazon-ebs.x" { ... } }, without its name);
// they are merged as Packer merges them, so an override may set options the
// source leaves unset and setting one twice is a "Duplicate argument" error.
// ctx evaluates expressions; it may be nil (the legacy JSON loader, whose
// strings are then literal). In ctx, data sources evaluate to unknown values:
// source_ami may take one's value as it is (data.amazon-ami.x.id,
// data.amazon-parameterstore.x.value, or a local set to one of them), and the
// data source is then recorded in SourceAMIData; anywhere else a value that
// depends on a data source is an error.
//
// fsys is the recipe's root: user_data_file is read from it and recorded in
// read. A legacy JSON builder object must be passed without its "type" and
// "name" keys (strip them with PartialContent).
//
// Defaults: communicator "ssh", ssh_timeout 5m,
// temporary_key_pair_type "ed25519", shutdown_behavior "stop",
// metadata_options { http_endpoint = "enabled", http_tokens = "required",
// http_put_response_hop_limit = 1 }. ami_name may still hold Packer's
// {{timestamp}}-style placeholders, which the HCL2 loader renders and then
// checks with checkAMIName. ssh_interface stays empty when unset, so that
// the stack's default transport (Config.DefaultTransport) can apply at
// plan time; over SSH, empty means "private_ip".
func decodeSource(bodies []hcl.Body, ctx *hcl.EvalContext, fsys fs.FS, read map[string]bool) (AmazonEBS, hcl.Diagnostics) {
	var out AmazonEBS
	if len(bodies) == 0 {
		return out, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Missing amazon-ebs source body"}}
	}
	body := hcl.MergeBodies(bodies)
	var cfg ebsSource
	_, diags := decodeStrict(body, ctx, "amazon-ebs", ebsExtras, &cfg)
	d := &valueDecoder{ctx: ctx, diags: diags}
	missing := body.MissingItemRange()

	out.Region = d.str(cfg.Region)
	out.InstanceType = d.str(cfg.InstanceType)
	out.AMIName = d.str(cfg.AMIName)
	for _, req := range []struct {
		attr *hcl.Attribute
		name string
	}{{cfg.Region, "region"}, {cfg.InstanceType, "instance_type"}, {cfg.AMIName, "ami_name"}} {
		if req.attr == nil {
			d.errorf(missing, "Missing required argument", "The amazon-ebs argument %q is required.", req.name)
		}
	}
	if cfg.AMIName != nil && out.AMIName != "" {
		if msg := checkAMIName(out.AMIName, true); msg != "" {
			d.errorf(cfg.AMIName.Expr.Range(), "Invalid ami_name", "%s", msg)
		}
	}

	// Base image: exactly one of source_ami (an ID or a data source) and
	// source_ami_filter.
	out.SourceAMI, out.SourceAMIData = d.sourceAMI(cfg.SourceAMI)
	if cfg.SourceAMIFilter != nil {
		out.SourceAMIFilter = d.amiFilter(cfg.SourceAMIFilter)
	}
	switch {
	case cfg.SourceAMI != nil && cfg.SourceAMIFilter != nil:
		d.errorf(cfg.SourceAMIFilter.DefRange, "Conflicting base image",
			"Set source_ami or source_ami_filter, not both: source_ami is set at %s.", cfg.SourceAMI.NameRange)
	case cfg.SourceAMI == nil && cfg.SourceAMIFilter == nil:
		d.errorf(missing, "Missing base image",
			"An amazon-ebs source needs source_ami (an AMI ID, or a data source such as data.amazon-ami.x.id) or a source_ami_filter block.")
	case cfg.SourceAMI != nil && out.SourceAMI != "" && !amiIDPattern.MatchString(out.SourceAMI):
		d.errorf(cfg.SourceAMI.Expr.Range(), "Invalid source_ami", "%q is not an AMI ID (ami- and 8 or 17 hex digits).", out.SourceAMI)
	}

	out.AMIDescription = d.str(cfg.AMIDescription)
	out.AMIRegions = d.strs(cfg.AMIRegions)
	out.AMIUsers = d.strs(cfg.AMIUsers)
	out.AMIGroups = d.strs(cfg.AMIGroups)
	out.AMIOrgARNs = d.strs(cfg.AMIOrgARNs)
	out.AMIOUARNs = d.strs(cfg.AMIOUARNs)
	out.SnapshotUsers = d.strs(cfg.SnapshotUsers)
	out.SnapshotGroups = d.strs(cfg.SnapshotGroups)
	for _, g := range []struct {
		attr *hcl.Attribute
		vals []string
	}{{cfg.AMIGroups, out.AMIGroups}, {cfg.SnapshotGroups, out.SnapshotGroups}} {
		for _, v := range g.vals {
			if v != "all" {
				d.errorf(g.attr.Expr.Range(), "Invalid group", "%s: the only group EC2 knows is \"all\" (public), not %q.", g.attr.Name, v)
			}
		}
	}
	for _, r := range out.AMIRegions {
		if !regionPattern.MatchString(r) {
			d.errorf(cfg.AMIRegions.Expr.Range(), "Invalid Region", "ami_regions: %q is not an AWS Region name.", r)
		}
	}
	if cfg.Region != nil && out.Region != "" && !regionPattern.MatchString(out.Region) {
		d.errorf(cfg.Region.Expr.Range(), "Invalid Region", "%q is not an AWS Region name.", out.Region)
	}

	out.Tags = d.tags(cfg.Tags, cfg.Tag)
	out.RunTags = d.tags(cfg.RunTags, cfg.RunTag)
	out.SnapshotTags = d.tags(cfg.SnapshotTags, cfg.SnapshotTag)
	out.RunVolumeTags = d.strMap(cfg.RunVolumeTags)
	for _, b := range cfg.RunVolumeTag {
		out.RunVolumeTags = d.addTag(out.RunVolumeTags, "run_volume_tag", b.Name, b.Value, b.DefRange)
	}

	// Communicator.
	out.Communicator = defaultCommunicator
	switch c := d.str(cfg.Communicator); c {
	case "":
	case "ssh", "none":
		out.Communicator = c
	case "winrm":
		d.errorf(cfg.Communicator.Expr.Range(), `kiln does not support the "winrm" communicator`, "%s", whyNoWinRM)
	default:
		d.errorf(cfg.Communicator.Expr.Range(), "Invalid communicator", `communicator must be "ssh" or "none", not %q.`, c)
	}
	out.SSHInterface = d.oneOf(cfg.SSHInterface, "", "private_ip", "public_ip", "private_dns", "public_dns", "session_manager")
	out.SSHUsername = d.str(cfg.SSHUsername)
	out.SSHTimeout = Duration(defaultSSHTimeout)
	switch {
	case cfg.SSHTimeout != nil && cfg.SSHWaitTimeout != nil:
		d.errorf(cfg.SSHWaitTimeout.NameRange, "Conflicting arguments", "ssh_wait_timeout is the older name of ssh_timeout: set one of them.")
	case cfg.SSHTimeout != nil:
		out.SSHTimeout = d.duration(cfg.SSHTimeout, out.SSHTimeout)
	case cfg.SSHWaitTimeout != nil:
		out.SSHTimeout = d.duration(cfg.SSHWaitTimeout, out.SSHTimeout)
	}
	switch {
	case out.Communicator != "ssh" || cfg.SSHUsername != nil || out.SSHInterface == "session_manager":
	case out.SSHInterface != "":
		d.errorf(missing, "Missing required argument",
			`The amazon-ebs argument "ssh_username" is required with communicator "ssh" (the default), unless ssh_interface is "session_manager".`)
	default:
		// Whether SSH needs it depends on the stack's default transport,
		// which the plan step applies (and checks) at bake time.
		d.diags = append(d.diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "No ssh_username",
			Detail:   `ssh_username is not set, so this source bakes only where session_manager is the stack's default transport. Set ssh_username for SSH, or ssh_interface = "session_manager".`,
			Subject:  missing.Ptr(),
		})
	}
	// Without iam_instance_profile, a session_manager build gets the
	// stack's build instance profile (Config.InstanceProfile).
	out.IAMInstanceProfile = d.str(cfg.IAMInstanceProfile)

	// Network.
	out.SubnetID = d.str(cfg.SubnetID)
	out.VPCID = d.str(cfg.VPCID)
	if cfg.SubnetFilter != nil {
		out.SubnetFilter = d.subnetFilter(cfg.SubnetFilter)
		if cfg.SubnetID != nil {
			d.errorf(cfg.SubnetFilter.DefRange, "Conflicting arguments", "Set subnet_id or subnet_filter, not both: subnet_id is set at %s.", cfg.SubnetID.NameRange)
		}
	}
	if cfg.VPCFilter != nil {
		out.VPCFilter = &VPCFilter{Filters: d.filters(cfg.VPCFilter.Filters, cfg.VPCFilter.Filter, cfg.VPCFilter.DefRange, "vpc_filter")}
		if cfg.VPCID != nil {
			d.errorf(cfg.VPCFilter.DefRange, "Conflicting arguments", "Set vpc_id or vpc_filter, not both: vpc_id is set at %s.", cfg.VPCID.NameRange)
		}
	}
	out.SecurityGroupIDs = d.strs(cfg.SecurityGroupIDs)
	if sg := d.str(cfg.SecurityGroupID); sg != "" {
		out.SecurityGroupIDs = append([]string{sg}, out.SecurityGroupIDs...)
	}
	out.AssociatePublicIPAddress = d.boolPtr(cfg.AssociatePublicIPAddress)

	// User data.
	out.UserData = d.str(cfg.UserData)
	if cfg.UserDataFile != nil {
		if cfg.UserData != nil {
			d.errorf(cfg.UserDataFile.NameRange, "Conflicting arguments", "Set user_data or user_data_file, not both: user_data is set at %s.", cfg.UserData.NameRange)
		}
		if p := d.str(cfg.UserDataFile); p != "" {
			if clean, ok := d.recipeFile(fsys, read, p, cfg.UserDataFile, false); ok {
				b, err := fs.ReadFile(fsys, clean)
				if err != nil {
					d.errorf(cfg.UserDataFile.Expr.Range(), "Cannot read user_data_file", "%s", err)
				}
				out.UserData = string(b)
			}
		}
	}
	if len(out.UserData) > maxUserData {
		at := cfg.UserData
		if at == nil {
			at = cfg.UserDataFile
		}
		d.errorf(at.Expr.Range(), "User data too long", "User data is %d bytes; EC2 allows %d.", len(out.UserData), maxUserData)
	}

	// Block devices.
	for i := range cfg.LaunchBlockDeviceMappings {
		out.LaunchBlockDeviceMappings = append(out.LaunchBlockDeviceMappings, d.blockDevice(&cfg.LaunchBlockDeviceMappings[i]))
	}
	for i := range cfg.AMIBlockDeviceMappings {
		out.AMIBlockDeviceMappings = append(out.AMIBlockDeviceMappings, d.blockDevice(&cfg.AMIBlockDeviceMappings[i]))
	}
	checkDuplicateDevices(d, "launch_block_device_mappings", cfg.LaunchBlockDeviceMappings, out.LaunchBlockDeviceMappings)
	checkDuplicateDevices(d, "ami_block_device_mappings", cfg.AMIBlockDeviceMappings, out.AMIBlockDeviceMappings)

	// Encryption.
	out.EncryptBoot = d.boolPtr(cfg.EncryptBoot)
	out.KMSKeyID = d.str(cfg.KMSKeyID)
	out.RegionKMSKeyIDs = d.strMap(cfg.RegionKMSKeyIDs)
	encrypted := out.EncryptBoot != nil && *out.EncryptBoot
	if cfg.KMSKeyID != nil && !encrypted {
		d.errorf(cfg.KMSKeyID.NameRange, "kms_key_id needs encrypt_boot", "kms_key_id encrypts the AMI's boot volume: set encrypt_boot = true too.")
	}
	if cfg.RegionKMSKeyIDs != nil {
		if !encrypted {
			d.errorf(cfg.RegionKMSKeyIDs.NameRange, "region_kms_key_ids needs encrypt_boot", "region_kms_key_ids encrypts the AMI's copies: set encrypt_boot = true too.")
		}
		regions := map[string]bool{out.Region: true}
		for _, r := range out.AMIRegions {
			regions[r] = true
		}
		for _, r := range sortedKeys(out.RegionKMSKeyIDs) {
			if !regions[r] {
				d.errorf(cfg.RegionKMSKeyIDs.Expr.Range(), "Unknown Region in region_kms_key_ids",
					"region_kms_key_ids names %q, which is neither region nor one of ami_regions.", r)
			}
		}
	}

	// Instance metadata.
	if cfg.IMDSSupport != nil {
		out.IMDSSupport = d.str(cfg.IMDSSupport)
		if out.IMDSSupport != "v2.0" && !d.failed(cfg.IMDSSupport) {
			d.errorf(cfg.IMDSSupport.Expr.Range(), "Invalid imds_support", `imds_support can only be "v2.0", not %q.`, out.IMDSSupport)
		}
	}
	out.MetadataOptions = MetadataOptions{HTTPEndpoint: defaultHTTPEndpoint, HTTPTokens: defaultHTTPTokens, HTTPPutResponseHopLimit: defaultHopLimit}
	if m := cfg.MetadataOptions; m != nil {
		out.MetadataOptions.HTTPEndpoint = d.oneOf(m.HTTPEndpoint, defaultHTTPEndpoint, "enabled", "disabled")
		out.MetadataOptions.HTTPTokens = d.oneOf(m.HTTPTokens, defaultHTTPTokens, "required", "optional")
		if m.HTTPPutResponseHopLimit != nil {
			out.MetadataOptions.HTTPPutResponseHopLimit = d.int64(m.HTTPPutResponseHopLimit)
			if n := out.MetadataOptions.HTTPPutResponseHopLimit; n < 1 || n > 64 {
				d.errorf(m.HTTPPutResponseHopLimit.Expr.Range(), "Invalid http_put_response_hop_limit", "The hop limit is 1 to 64, not %d.", n)
			}
		}
		if m.InstanceMetadataTags != nil {
			out.MetadataOptions.InstanceMetadataTags = d.oneOf(m.InstanceMetadataTags, "", "enabled", "disabled")
		}
		if out.IMDSSupport == "v2.0" && out.MetadataOptions.HTTPTokens == "optional" {
			d.errorf(m.HTTPTokens.Expr.Range(), "Conflicting IMDS settings", `imds_support = "v2.0" makes the AMI require IMDSv2; the build instance cannot then use http_tokens = "optional".`)
		}
	}

	// Lifecycle and instance.
	if cfg.DeprecateAt != nil {
		out.DeprecateAt = d.str(cfg.DeprecateAt)
		if _, err := time.Parse(time.RFC3339, out.DeprecateAt); err != nil && !d.failed(cfg.DeprecateAt) {
			d.errorf(cfg.DeprecateAt.Expr.Range(), "Invalid deprecate_at", "deprecate_at must be an RFC 3339 time such as 2030-01-02T15:04:05Z, not %q.", out.DeprecateAt)
		}
	}
	out.ForceDeregister = d.boolean(cfg.ForceDeregister)
	out.ForceDeleteSnapshot = d.boolean(cfg.ForceDeleteSnapshot)
	out.TemporaryKeyPairType = d.oneOf(cfg.TemporaryKeyPairType, defaultKeyPairType, "ed25519", "rsa")
	out.ShutdownBehavior = d.oneOf(cfg.ShutdownBehavior, defaultShutdownBehavior, "stop", "terminate")
	out.ENASupport = d.boolPtr(cfg.ENASupport)
	out.SRIOVSupport = d.boolean(cfg.SRIOVSupport)

	return out, dedupe(d.diags)
}

var (
	amiIDPattern  = regexp.MustCompile(`^ami-([0-9a-f]{8}|[0-9a-f]{17})$`)
	regionPattern = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d$`)
	// amiNameChars are the characters AWS allows in an AMI name.
	amiNameChars = regexp.MustCompile(`^[A-Za-z0-9()\[\] ./\-'@_]*$`)
	// goTemplate matches one {{ ... }} placeholder of a Go template.
	goTemplate = regexp.MustCompile(`\{\{.*?\}\}`)
)

// checkAMIName returns what is wrong with an AMI name, or "". With
// placeholders true, Packer's {{...}} placeholders (rendered later) are
// allowed and only the rest is checked.
func checkAMIName(name string, placeholders bool) string {
	rest := name
	if placeholders && goTemplate.MatchString(name) {
		rest = goTemplate.ReplaceAllString(name, "")
		if !amiNameChars.MatchString(rest) {
			return fmt.Sprintf("AMI names may contain only letters, digits, spaces and ( ) [ ] . / - ' @ _ (%q).", name)
		}
		return ""
	}
	if n := len(name); n < 3 || n > 128 {
		return fmt.Sprintf("AMI names are 3 to 128 characters long; %q has %d.", name, n)
	}
	if !amiNameChars.MatchString(rest) {
		return fmt.Sprintf("AMI names may contain only letters, digits, spaces and ( ) [ ] . / - ' @ _ (%q); use clean_resource_name to replace the others.", name)
	}
	return ""
}

func (d *valueDecoder) amiFilter(b *amiFilterBlock) *AMIFilter {
	f := &AMIFilter{
		Filters:           d.strMap(b.Filters),
		Owners:            d.strs(b.Owners),
		MostRecent:        d.boolean(b.MostRecent),
		IncludeDeprecated: d.boolean(b.IncludeDeprecated),
	}
	if b.Owners == nil {
		// Packer insists on owners too: without them anyone's image matches.
		d.errorf(b.DefRange, "Missing owners", "An image filter must list owners (account IDs, or aliases such as \"amazon\" or \"self\"): without them an image anyone published could match.")
	} else if len(f.Owners) == 0 && !d.failed(b.Owners) {
		d.errorf(b.Owners.Expr.Range(), "Missing owners", "owners must not be empty.")
	}
	return f
}

func (d *valueDecoder) subnetFilter(b *subnetFilterBlock) *SubnetFilter {
	f := &SubnetFilter{
		Filters:  d.filters(b.Filters, b.Filter, b.DefRange, "subnet_filter"),
		MostFree: d.boolean(b.MostFree),
		Random:   d.boolean(b.Random),
	}
	if f.MostFree && f.Random {
		d.errorf(b.Random.NameRange, "Conflicting arguments", "Set most_free or random in subnet_filter, not both.")
	}
	return f
}

// filters decodes a filters map plus filter { name, value } blocks.
func (d *valueDecoder) filters(m *hcl.Attribute, blocks []nameValueBlock, rng hcl.Range, what string) map[string]string {
	out := d.strMap(m)
	for _, b := range blocks {
		out = d.addTag(out, what+" filter", b.Name, b.Value, b.DefRange)
	}
	if len(out) == 0 {
		d.errorf(rng, "Empty "+what, "%s needs at least one filter (filters = { ... } or filter { name, value }).", what)
	}
	return out
}

// tags decodes a tags map plus tag { key, value } blocks.
func (d *valueDecoder) tags(m *hcl.Attribute, blocks []keyValueBlock) map[string]string {
	out := d.strMap(m)
	for _, b := range blocks {
		out = d.addTag(out, "tag", b.Key, b.Value, b.DefRange)
	}
	return out
}

func (d *valueDecoder) addTag(m map[string]string, what string, key, value *hcl.Attribute, rng hcl.Range) map[string]string {
	if key == nil || value == nil {
		d.errorf(rng, "Incomplete "+what, "A %s block needs both its key (or name) and value.", what)
		return m
	}
	k, v := d.str(key), d.str(value)
	if m == nil {
		m = map[string]string{}
	}
	if _, dup := m[k]; dup {
		d.errorf(key.Expr.Range(), "Duplicate "+what, "%q is already set.", k)
	}
	m[k] = v
	return m
}

var volumeTypes = []string{"gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"}

func (d *valueDecoder) blockDevice(b *blockDeviceBlock) BlockDevice {
	bd := BlockDevice{
		DeviceName:          d.str(b.DeviceName),
		VolumeType:          d.oneOf(b.VolumeType, "", volumeTypes...),
		VolumeSize:          d.int64(b.VolumeSize),
		IOPS:                d.int64(b.IOPS),
		Throughput:          d.int64(b.Throughput),
		DeleteOnTermination: d.boolPtr(b.DeleteOnTermination),
		Encrypted:           d.boolPtr(b.Encrypted),
		KMSKeyID:            d.str(b.KMSKeyID),
		SnapshotID:          d.str(b.SnapshotID),
		VirtualName:         d.str(b.VirtualName),
		NoDevice:            d.boolean(b.NoDevice),
	}
	if b.DeviceName == nil {
		d.errorf(b.DefRange, "Missing required argument", `A block device mapping needs "device_name" (for example "/dev/xvda").`)
	}
	for _, n := range []struct {
		attr *hcl.Attribute
		v    int64
	}{{b.VolumeSize, bd.VolumeSize}, {b.IOPS, bd.IOPS}, {b.Throughput, bd.Throughput}} {
		if n.attr != nil && n.v <= 0 && !d.failed(n.attr) {
			d.errorf(n.attr.Expr.Range(), "Invalid "+n.attr.Name, "%s must be positive.", n.attr.Name)
		}
	}
	if b.IOPS != nil && bd.VolumeType != "io1" && bd.VolumeType != "io2" && bd.VolumeType != "gp3" {
		d.errorf(b.IOPS.NameRange, "iops needs an io1, io2 or gp3 volume", "iops applies to volume_type io1, io2 or gp3, not %q.", bd.VolumeType)
	}
	if (bd.VolumeType == "io1" || bd.VolumeType == "io2") && b.IOPS == nil {
		d.errorf(b.VolumeType.Expr.Range(), "Missing iops", "An %s volume needs iops.", bd.VolumeType)
	}
	if b.Throughput != nil && bd.VolumeType != "gp3" {
		d.errorf(b.Throughput.NameRange, "throughput needs a gp3 volume", "throughput applies to volume_type gp3 only, not %q.", bd.VolumeType)
	}
	if b.KMSKeyID != nil && (bd.Encrypted == nil || !*bd.Encrypted) {
		d.errorf(b.KMSKeyID.NameRange, "kms_key_id needs encrypted", "A block device's kms_key_id takes effect only with encrypted = true.")
	}
	if bd.NoDevice {
		for _, a := range []*hcl.Attribute{b.VolumeType, b.VolumeSize, b.IOPS, b.Throughput, b.Encrypted, b.KMSKeyID, b.SnapshotID, b.VirtualName} {
			if a != nil {
				d.errorf(a.NameRange, "Conflicting arguments", "no_device = true removes the device; %s does not apply.", a.Name)
			}
		}
	}
	if bd.VirtualName != "" && !strings.HasPrefix(bd.VirtualName, "ephemeral") {
		d.errorf(b.VirtualName.Expr.Range(), "Invalid virtual_name", "virtual_name names an instance store volume (ephemeral0 to ephemeral23), not %q.", bd.VirtualName)
	}
	return bd
}

func checkDuplicateDevices(d *valueDecoder, what string, blocks []blockDeviceBlock, devs []BlockDevice) {
	seen := map[string]bool{}
	for i, bd := range devs {
		if bd.DeviceName != "" && seen[bd.DeviceName] {
			d.errorf(blocks[i].DeviceName.Expr.Range(), "Duplicate device", "%s maps %q twice.", what, bd.DeviceName)
		}
		seen[bd.DeviceName] = true
	}
}

// Provisioners.

// provisionerCommon are the options every provisioner block has in Packer.
type provisionerCommon struct {
	// name labels the provisioner in logs.
	Name *hcl.Attribute `hcl:"name,optional"`
	// pause_before waits before the provisioner runs (a duration).
	PauseBefore *hcl.Attribute `hcl:"pause_before,optional"`
	// max_retries retries a failing provisioner up to this many times.
	MaxRetries *hcl.Attribute `hcl:"max_retries,optional"`
	// timeout fails the provisioner when it runs longer (a duration).
	Timeout *hcl.Attribute `hcl:"timeout,optional"`
	// only and except select builds by name ("amazon-ebs.app" or "app").
	Only   *hcl.Attribute `hcl:"only,optional"`
	Except *hcl.Attribute `hcl:"except,optional"`
	Rest   hcl.Body       `hcl:",remain"`
}

var provisionerCommonExtras = []extraOption{
	{name: "override", kind: extraUnsupported, why: "give each source its own build block, or select provisioners with only and except."},
	{name: "continue_on_error", kind: extraUnsupported, why: "a failing provisioner fails the build; use valid_exit_codes to accept an exit code."},
}

// shellProvisioner is provisioner "shell".
type shellProvisioner struct {
	// inline commands, run as one script with inline_shebang.
	Inline *hcl.Attribute `hcl:"inline,optional"`
	// script or scripts: recipe-relative paths, uploaded and run in order.
	Script  *hcl.Attribute `hcl:"script,optional"`
	Scripts *hcl.Attribute `hcl:"scripts,optional"`
	// environment_vars are "KEY=value" strings; env is a map.
	EnvironmentVars *hcl.Attribute `hcl:"environment_vars,optional"`
	Env             *hcl.Attribute `hcl:"env,optional"`
	// execute_command: default "chmod +x {{.Path}}; {{.Vars}} {{.Path}}".
	ExecuteCommand *hcl.Attribute `hcl:"execute_command,optional"`
	// inline_shebang: default "/bin/sh -e".
	InlineShebang *hcl.Attribute `hcl:"inline_shebang,optional"`
	// expect_disconnect: a dropped connection (a reboot) is not a failure.
	ExpectDisconnect *hcl.Attribute `hcl:"expect_disconnect,optional"`
	// valid_exit_codes: default [0].
	ValidExitCodes *hcl.Attribute `hcl:"valid_exit_codes,optional"`
	// remote_folder receives the scripts: default "/tmp".
	RemoteFolder *hcl.Attribute `hcl:"remote_folder,optional"`
	// skip_clean leaves the scripts on the instance.
	SkipClean *hcl.Attribute `hcl:"skip_clean,optional"`
	Rest      hcl.Body       `hcl:",remain"`
}

var shellExtras = []extraOption{
	{name: "env_var_format", kind: extraUnsupported},
	{name: "binary", kind: extraUnsupported},
	{name: "remote_path", kind: extraUnsupported, why: "scripts go to remote_folder under names kiln chooses."},
	{name: "remote_file", kind: extraUnsupported, why: "scripts go to remote_folder under names kiln chooses."},
	{name: "pause_after", kind: extraUnsupported, why: "use pause_before on the next provisioner."},
	{name: "use_env_var_file", kind: extraUnsupported},
	{name: "start_retry_timeout", kind: extraUnsupported, why: "use max_retries."},
}

// fileProvisioner is provisioner "file" (uploads only).
type fileProvisioner struct {
	// source or sources: recipe-relative files or folders; or content.
	Source  *hcl.Attribute `hcl:"source,optional"`
	Sources *hcl.Attribute `hcl:"sources,optional"`
	Content *hcl.Attribute `hcl:"content,optional"`
	// destination on the instance (required).
	Destination *hcl.Attribute `hcl:"destination,optional"`
	// direction: "upload" only.
	Direction *hcl.Attribute `hcl:"direction,optional"`
	Rest      hcl.Body       `hcl:",remain"`
}

var fileExtras = []extraOption{
	{name: "generated", kind: extraUnsupported, why: "kiln uploads only files that are in the recipe when it is loaded."},
}

// ansibleProvisioner is provisioner "ansible" or "ansible-local"; kiln runs
// Ansible on the instance in both cases, as Packer's ansible-local does.
type ansibleProvisioner struct {
	// playbook_file: a recipe-relative path (required).
	PlaybookFile *hcl.Attribute `hcl:"playbook_file,optional"`
	// galaxy_file: a requirements file installed with ansible-galaxy.
	GalaxyFile     *hcl.Attribute `hcl:"galaxy_file,optional"`
	ExtraArguments *hcl.Attribute `hcl:"extra_arguments,optional"`
	Rest           hcl.Body       `hcl:",remain"`
}

// ansibleRemoteOptions are the options only provisioner "ansible" has.
type ansibleRemoteOptions struct {
	// roles_path: a folder of roles (ANSIBLE_ROLES_PATH; ":"-separated).
	RolesPath *hcl.Attribute `hcl:"roles_path,optional"`
	Rest      hcl.Body       `hcl:",remain"`
}

// ansibleLocalOptions are the options only provisioner "ansible-local" has.
type ansibleLocalOptions struct {
	// playbook_dir: a folder uploaded alongside the playbook.
	PlaybookDir *hcl.Attribute `hcl:"playbook_dir,optional"`
	// role_paths: folders of roles, uploaded.
	RolePaths *hcl.Attribute `hcl:"role_paths,optional"`
	Rest      hcl.Body       `hcl:",remain"`
}

var ansibleExtras = []extraOption{
	{name: "command", kind: extraUnsupported, why: "kiln runs ansible-playbook on the instance."},
	{name: "ansible_env_vars", kind: extraUnsupported},
	{name: "ansible_ssh_extra_args", kind: extraUnsupported, why: "kiln runs Ansible on the instance, as ansible-local does, so Ansible does not connect over SSH."},
	{name: "groups", kind: extraUnsupported},
	{name: "empty_groups", kind: extraUnsupported},
	{name: "host_alias", kind: extraUnsupported},
	{name: "user", kind: extraUnsupported, why: "Ansible runs on the instance as ssh_username."},
	{name: "local_port", kind: extraUnsupported},
	{name: "ssh_host_key_file", kind: extraUnsupported},
	{name: "ssh_authorized_key_file", kind: extraUnsupported},
	{name: "ansible_proxy_key_type", kind: extraUnsupported},
	{name: "sftp_command", kind: extraUnsupported},
	{name: "skip_version_check", kind: extraUnsupported},
	{name: "use_sftp", kind: extraUnsupported},
	{name: "inventory_directory", kind: extraUnsupported},
	{name: "inventory_file_template", kind: extraUnsupported},
	{name: "inventory_file", kind: extraUnsupported},
	{name: "keep_inventory_file", kind: extraUnsupported},
	{name: "galaxy_command", kind: extraUnsupported},
	{name: "galaxy_force_install", kind: extraUnsupported},
	{name: "galaxy_force_with_deps", kind: extraUnsupported},
	{name: "collections_path", kind: extraUnsupported},
	{name: "use_proxy", kind: extraUnsupported, why: "kiln runs Ansible on the instance, as ansible-local does."},
	{name: "ansible_winrm_use_http", kind: extraUnsupported, why: whyNoWinRM},
}

var ansibleLocalExtras = []extraOption{
	{name: "command", kind: extraUnsupported, why: "kiln runs ansible-playbook on the instance."},
	{name: "group_vars", kind: extraUnsupported},
	{name: "host_vars", kind: extraUnsupported},
	{name: "playbook_files", kind: extraUnsupported, why: "use one provisioner per playbook."},
	{name: "playbook_paths", kind: extraUnsupported},
	{name: "collection_paths", kind: extraUnsupported},
	{name: "staging_directory", kind: extraUnsupported},
	{name: "clean_staging_directory", kind: extraUnsupported},
	{name: "inventory_file", kind: extraUnsupported},
	{name: "inventory_groups", kind: extraUnsupported},
	{name: "galaxy_command", kind: extraUnsupported},
	{name: "galaxy_force_install", kind: extraUnsupported},
	{name: "galaxy_roles_path", kind: extraUnsupported},
	{name: "galaxy_collections_path", kind: extraUnsupported},
}

// decodeProvisioner decodes one provisioner body of type typ ("shell",
// "file", "ansible" or "ansible-local"); decl is the block's declaration
// range, which becomes the provisioner's Pos ("build.pkr.hcl:14") and the
// range of errors about missing options.
//
// The common options are handled here too: name, pause_before, max_retries,
// timeout, and only and except, which are returned for the caller to apply
// (they select builds, which only the caller knows). Files the provisioner
// refers to (scripts, file sources, playbooks, playbook_dir, role paths,
// galaxy files) must exist inside fsys and are recorded in read; a folder is
// recorded file by file. A legacy JSON provisioner object must be passed
// without its "type" key.
//
// Defaults (shell): inline_shebang "/bin/sh -e", execute_command
// "chmod +x {{.Path}}; {{.Vars}} {{.Path}}", valid_exit_codes [0],
// remote_folder "/tmp". Any other type, including shell-local and
// breakpoint, is an error here; the HCL2 loader words those two itself.
func decodeProvisioner(typ string, decl hcl.Range, body hcl.Body, ctx *hcl.EvalContext, fsys fs.FS, read map[string]bool) (p Provisioner, only, except []string, diags hcl.Diagnostics) {
	p = Provisioner{Type: typ, Pos: rangePos(decl)}
	var (
		common  provisionerCommon
		targets = []any{&common}
		extras  = provisionerCommonExtras
		shell   shellProvisioner
		file    fileProvisioner
		ans     ansibleProvisioner
		remote  ansibleRemoteOptions
		local   ansibleLocalOptions
	)
	switch typ {
	case "shell":
		targets, extras = append(targets, &shell), append(extras, shellExtras...)
	case "file":
		targets, extras = append(targets, &file), append(extras, fileExtras...)
	case "ansible":
		targets, extras = append(targets, &ans, &remote), append(extras, ansibleExtras...)
	case "ansible-local":
		targets, extras = append(targets, &ans, &local), append(extras, ansibleLocalExtras...)
	default:
		return p, nil, nil, hcl.Diagnostics{unsupportedProvisioner(typ, decl)}
	}
	_, diags = decodeStrict(body, ctx, typ+" provisioner", extras, targets...)
	d := &valueDecoder{ctx: ctx, diags: diags}

	p.Name = d.str(common.Name)
	p.PauseBefore = d.duration(common.PauseBefore, 0)
	p.Timeout = d.duration(common.Timeout, 0)
	p.MaxRetries = int(d.int64(common.MaxRetries))
	if p.MaxRetries < 0 {
		d.errorf(common.MaxRetries.Expr.Range(), "Invalid max_retries", "max_retries must not be negative.")
	}
	only, except = d.strs(common.Only), d.strs(common.Except)
	if common.Only != nil && common.Except != nil {
		d.errorf(common.Except.NameRange, "Conflicting arguments", "Set only or except, not both.")
	}

	switch typ {
	case "shell":
		p.Shell = d.shell(&shell, decl, fsys, read)
	case "file":
		p.File = d.file(&file, decl, fsys, read)
	case "ansible", "ansible-local":
		p.Ansible = d.ansible(&ans, decl, fsys, read)
		if typ == "ansible" {
			p.Ansible.RolesPath = strings.Join(d.recipePaths(fsys, read, remote.RolesPath, d.rolesPath(remote.RolesPath)), ":")
			d.diags = append(d.diags, &hcl.Diagnostic{
				Severity: hcl.DiagWarning,
				Summary:  "Ansible runs on the instance",
				Detail:   `kiln runs the "ansible" provisioner the way Packer's "ansible-local" does: the playbook and its files are uploaded and ansible-playbook runs on the build instance, which must have Ansible installed (an earlier shell provisioner can install it).`,
				Subject:  decl.Ptr(),
			})
		} else {
			if local.PlaybookDir != nil {
				p.Ansible.PlaybookDir = d.recipePath(fsys, read, local.PlaybookDir, d.str(local.PlaybookDir), true)
			}
			p.Ansible.RolesPath = strings.Join(d.recipePaths(fsys, read, local.RolePaths, d.strs(local.RolePaths)), ":")
		}
	}
	return p, only, except, dedupe(d.diags)
}

func (d *valueDecoder) shell(s *shellProvisioner, decl hcl.Range, fsys fs.FS, read map[string]bool) *Shell {
	out := &Shell{
		Inline:           d.strs(s.Inline),
		EnvironmentVars:  d.strs(s.EnvironmentVars),
		Env:              d.strMap(s.Env),
		ExecuteCommand:   d.str(s.ExecuteCommand),
		InlineShebang:    d.str(s.InlineShebang),
		ExpectDisconnect: d.boolean(s.ExpectDisconnect),
		ValidExitCodes:   d.ints(s.ValidExitCodes),
		RemoteFolder:     d.str(s.RemoteFolder),
		SkipClean:        d.boolean(s.SkipClean),
	}
	set := setAttrs(s.Inline, s.Script, s.Scripts)
	switch len(set) {
	case 0:
		d.errorf(decl, "Missing shell commands", "A shell provisioner needs one of inline, script or scripts.")
	case 1:
	default:
		d.errorf(set[1].NameRange, "Conflicting arguments", "A shell provisioner takes one of inline, script or scripts: %s is set at %s.", set[0].Name, set[0].NameRange)
	}
	if s.Script != nil {
		out.Scripts = append(out.Scripts, d.recipePath(fsys, read, s.Script, d.str(s.Script), false))
	}
	if s.Scripts != nil {
		out.Scripts = append(out.Scripts, d.recipePaths(fsys, read, s.Scripts, d.strs(s.Scripts))...)
		if len(out.Scripts) == 0 && !d.failed(s.Scripts) {
			d.errorf(s.Scripts.Expr.Range(), "Empty scripts", "scripts must list at least one script.")
		}
	}
	for _, kv := range out.EnvironmentVars {
		if k, _, ok := strings.Cut(kv, "="); !ok || !envNamePattern.MatchString(k) {
			d.errorf(s.EnvironmentVars.Expr.Range(), "Invalid environment_vars", "Each environment variable is KEY=value with a shell variable name as KEY, not %q.", kv)
		}
	}
	for _, k := range sortedKeys(out.Env) {
		if !envNamePattern.MatchString(k) {
			d.errorf(s.Env.Expr.Range(), "Invalid env", "%q is not a shell variable name.", k)
		}
	}
	if s.ExecuteCommand == nil {
		out.ExecuteCommand = defaultExecuteCommand
	} else if !strings.Contains(out.ExecuteCommand, "{{.Path}}") && !strings.Contains(out.ExecuteCommand, "{{ .Path }}") && !d.failed(s.ExecuteCommand) {
		d.errorf(s.ExecuteCommand.Expr.Range(), "Invalid execute_command", "execute_command must run the script: include {{.Path}}.")
	}
	if s.InlineShebang == nil {
		out.InlineShebang = defaultInlineShebang
	}
	if s.ValidExitCodes == nil {
		out.ValidExitCodes = []int{0}
	}
	if s.RemoteFolder == nil {
		out.RemoteFolder = defaultRemoteFolder
	} else if !strings.HasPrefix(out.RemoteFolder, "/") && !d.failed(s.RemoteFolder) {
		d.errorf(s.RemoteFolder.Expr.Range(), "Invalid remote_folder", "remote_folder must be an absolute path on the instance, not %q.", out.RemoteFolder)
	}
	return out
}

var envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (d *valueDecoder) file(f *fileProvisioner, decl hcl.Range, fsys fs.FS, read map[string]bool) *File {
	out := &File{Content: d.str(f.Content), Destination: d.str(f.Destination)}
	if f.Direction != nil {
		switch dir := d.str(f.Direction); dir {
		case "upload", "":
		case "download":
			d.errorf(f.Direction.Expr.Range(), "kiln does not support downloads",
				"kiln's file provisioner only uploads: the build runs in kiln's account, with no machine of yours to download to. Write what you need to S3 from a shell provisioner instead.")
		default:
			if !d.failed(f.Direction) {
				d.errorf(f.Direction.Expr.Range(), "Invalid direction", `direction is "upload" (the default), not %q.`, dir)
			}
		}
	}
	if f.Destination == nil {
		d.errorf(decl, "Missing required argument", `A file provisioner needs "destination".`)
	}
	set := setAttrs(f.Source, f.Sources, f.Content)
	switch len(set) {
	case 0:
		d.errorf(decl, "Missing file source", "A file provisioner needs one of source, sources or content.")
	case 1:
	default:
		d.errorf(set[1].NameRange, "Conflicting arguments", "A file provisioner takes one of source, sources or content: %s is set at %s.", set[0].Name, set[0].NameRange)
	}
	if f.Source != nil {
		out.Sources = append(out.Sources, d.recipePath(fsys, read, f.Source, d.str(f.Source), true))
	}
	if f.Sources != nil {
		out.Sources = append(out.Sources, d.recipePaths(fsys, read, f.Sources, d.strs(f.Sources))...)
		if len(out.Sources) == 0 && !d.failed(f.Sources) {
			d.errorf(f.Sources.Expr.Range(), "Empty sources", "sources must list at least one file.")
		}
	}
	return out
}

func (d *valueDecoder) ansible(a *ansibleProvisioner, decl hcl.Range, fsys fs.FS, read map[string]bool) *Ansible {
	out := &Ansible{ExtraArguments: d.strs(a.ExtraArguments)}
	if a.PlaybookFile == nil {
		d.errorf(decl, "Missing required argument", `An Ansible provisioner needs "playbook_file".`)
	} else {
		out.PlaybookFile = d.recipePath(fsys, read, a.PlaybookFile, d.str(a.PlaybookFile), false)
	}
	if a.GalaxyFile != nil {
		out.GalaxyFile = d.recipePath(fsys, read, a.GalaxyFile, d.str(a.GalaxyFile), false)
	}
	return out
}

// rolesPath splits an ANSIBLE_ROLES_PATH-style value.
func (d *valueDecoder) rolesPath(a *hcl.Attribute) []string {
	if a == nil {
		return nil
	}
	var out []string
	for _, p := range strings.Split(d.str(a), ":") {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// unsupportedProvisioner is the error for a provisioner type kiln lacks.
func unsupportedProvisioner(typ string, rng hcl.Range) *hcl.Diagnostic {
	detail := "kiln runs shell, file, ansible and ansible-local provisioners."
	switch typ {
	case "shell-local":
		detail = "shell-local runs commands on the machine running Packer; kiln has no such machine. " +
			"Its usual jobs are done by kiln's outputs: after each build kiln writes the AMI ID to an SSM parameter in every Region it lands in, " +
			"and publishes an EventBridge event with the build's AMIs, which can trigger whatever shell-local used to do."
	case "breakpoint":
		detail = "kiln builds run unattended in a state machine; there is no one to resume a breakpoint."
	case "powershell", "windows-shell", "windows-restart":
		detail = whyNoWinRM
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("kiln does not support the %q provisioner", typ),
		Detail:   detail,
		Subject:  rng.Ptr(),
	}
}

// Post-processors.

// manifestPostProcessor is post-processor "manifest".
type manifestPostProcessor struct {
	// output: where the manifest is written (default "packer-manifest.json").
	Output     *hcl.Attribute `hcl:"output,optional"`
	StripPath  *hcl.Attribute `hcl:"strip_path,optional"`
	StripTime  *hcl.Attribute `hcl:"strip_time,optional"`
	CustomData *hcl.Attribute `hcl:"custom_data,optional"`
	// name labels the post-processor.
	Name *hcl.Attribute `hcl:"name,optional"`
	// keep_input_artifact has no effect on manifest in Packer either: the
	// AMI is always kept.
	KeepInputArtifact *hcl.Attribute `hcl:"keep_input_artifact,optional"`
	Rest              hcl.Body       `hcl:",remain"`
}

// decodePostProcessor decodes a post-processor body of type typ. kiln
// supports manifest only; any other type is an error that names it. decl is
// the block's declaration range (Pos).
//
// A post-processor's only and except select builds, which only the caller
// knows: strip them from body first with decodeOnlyExcept. Left in body,
// they are reported as unexpected arguments. A legacy JSON post-processor
// object must likewise be passed without its "type" key.
//
// Default: output "packer-manifest.json".
func decodePostProcessor(typ string, decl hcl.Range, body hcl.Body, ctx *hcl.EvalContext) (PostProcessor, hcl.Diagnostics) {
	pp := PostProcessor{Type: typ, Pos: rangePos(decl)}
	if typ != "manifest" {
		return pp, hcl.Diagnostics{unsupportedPostProcessor(typ, decl)}
	}
	var m manifestPostProcessor
	_, diags := decodeStrict(body, ctx, "manifest post-processor", nil, &m)
	d := &valueDecoder{ctx: ctx, diags: diags}
	pp.Manifest = &Manifest{
		Output:     d.str(m.Output),
		StripPath:  d.boolean(m.StripPath),
		StripTime:  d.boolean(m.StripTime),
		CustomData: d.strMap(m.CustomData),
	}
	_ = d.str(m.Name) // a label for Packer's logs; the plan has no place for it
	_ = d.boolean(m.KeepInputArtifact)
	if m.Output == nil {
		pp.Manifest.Output = defaultManifestOutput
	} else if !d.failed(m.Output) {
		if _, err := ResolvePath(pp.Manifest.Output); err != nil || pp.Manifest.Output == "" {
			d.errorf(m.Output.Expr.Range(), "Invalid manifest output", "output is a relative path such as \"manifest.json\", where kiln stores the manifest with the build's outputs; %q is not.", pp.Manifest.Output)
		}
	}
	return pp, dedupe(d.diags)
}

func unsupportedPostProcessor(typ string, rng hcl.Range) *hcl.Diagnostic {
	detail := `kiln supports the "manifest" post-processor.`
	switch typ {
	case "amazon-ami-management":
		detail += " kiln keeps deregistering old images out of the build; use an EC2 lifecycle policy (Amazon Data Lifecycle Manager) or deprecate_at."
	case "shell-local":
		detail += " kiln publishes an SSM parameter per Region and an EventBridge event after each build, which replace shell-local's usual job."
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("kiln does not support the %q post-processor", typ),
		Detail:   detail,
		Subject:  rng.Ptr(),
	}
}

// decodeOnlyExcept reads the only and except lists of a provisioner or
// post-processor body and returns the rest of the body.
func decodeOnlyExcept(body hcl.Body, ctx *hcl.EvalContext) (only, except []string, rest hcl.Body, diags hcl.Diagnostics) {
	content, rest, diags := body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "only"}, {Name: "except"}}})
	d := &valueDecoder{ctx: ctx, diags: diags}
	o, e := content.Attributes["only"], content.Attributes["except"]
	only, except = d.strs(o), d.strs(e)
	if o != nil && e != nil {
		d.errorf(e.NameRange, "Conflicting arguments", "Set only or except, not both.")
	}
	return only, except, rest, d.diags
}

// Shared decoding.

// decodeStrict decodes body into targets (gohcl-tagged structs, each with a
// remain field) while letting nothing through unseen: it first checks body
// against the union of the targets' schemas and extras, so that a typo gets
// HCL's "Unsupported argument ... Did you mean" at its line, then reports
// each extra option that is set (credentials and ignored options as
// warnings, unsupported ones as errors naming the option). what names the
// body in messages ("amazon-ebs", "shell provisioner").
func decodeStrict(body hcl.Body, ctx *hcl.EvalContext, what string, extras []extraOption, targets ...any) (*hcl.BodyContent, hcl.Diagnostics) {
	schema := &hcl.BodySchema{}
	for _, t := range targets {
		s, _ := gohcl.ImpliedBodySchema(t)
		schema.Attributes = append(schema.Attributes, s.Attributes...)
		schema.Blocks = append(schema.Blocks, s.Blocks...)
	}
	for _, x := range extras {
		if x.block {
			schema.Blocks = append(schema.Blocks, hcl.BlockHeaderSchema{Type: x.name})
		} else {
			schema.Attributes = append(schema.Attributes, hcl.AttributeSchema{Name: x.name})
		}
	}
	content, diags := body.Content(schema)
	for _, t := range targets {
		diags = append(diags, gohcl.DecodeBody(body, ctx, t)...)
	}
	if content == nil {
		return &hcl.BodyContent{}, diags
	}
	for _, x := range extras {
		var rng hcl.Range
		if x.block {
			blocks := content.Blocks.OfType(x.name)
			if len(blocks) == 0 {
				continue
			}
			rng = blocks[0].TypeRange
		} else {
			a := content.Attributes[x.name]
			if a == nil {
				continue
			}
			rng = a.NameRange
		}
		diags = append(diags, extraDiag(what, x, rng))
	}
	return content, diags
}

func extraDiag(what string, x extraOption, rng hcl.Range) *hcl.Diagnostic {
	switch x.kind {
	case extraCredential:
		return &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  fmt.Sprintf("kiln ignores the credential option %q", x.name),
			Detail:   "kiln calls AWS with its own role, never with credentials from a recipe. Remove the option, and keep credentials out of recipes.",
			Subject:  rng.Ptr(),
		}
	case extraIgnored:
		return &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  fmt.Sprintf("kiln ignores the %s option %q", what, x.name),
			Detail:   x.why,
			Subject:  rng.Ptr(),
		}
	}
	detail := x.why
	if detail == "" {
		detail = "Remove it to build with kiln."
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("kiln does not support the %s option %q", what, x.name),
		Detail:   detail,
		Subject:  rng.Ptr(),
	}
}

// valueDecoder evaluates attributes into Go values, collecting diagnostics.
// A null value counts as unset, as in Packer.
type valueDecoder struct {
	ctx   *hcl.EvalContext
	diags hcl.Diagnostics
	// bad records attributes whose value could not be decoded, so that
	// checks on the value do not pile a second error on the first.
	bad map[*hcl.Attribute]bool
}

func (d *valueDecoder) errorf(rng hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  rng.Ptr(),
	})
}

func (d *valueDecoder) failed(a *hcl.Attribute) bool { return d.bad[a] }

func (d *valueDecoder) fail(a *hcl.Attribute) {
	if d.bad == nil {
		d.bad = map[*hcl.Attribute]bool{}
	}
	d.bad[a] = true
}

// decode evaluates a and stores it in target (a pointer to a Go value of a
// type gocty understands). It reports false when a is unset, null or wrong.
func (d *valueDecoder) decode(a *hcl.Attribute, target any) bool {
	if a == nil {
		return false
	}
	v, diags := a.Expr.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		d.fail(a)
		return false
	}
	v, marks := v.UnmarkDeep()
	if _, ok := marks[poisonMark{}]; ok {
		d.fail(a) // already reported where the value failed
		return false
	}
	if v.IsNull() {
		return false
	}
	if !v.IsWhollyKnown() {
		d.fail(a)
		what := "a data source"
		if refs := dataRefs(marks); len(refs) > 0 {
			what = refs[0].String()
		}
		d.errorf(a.Expr.Range(), "Value not known when loading",
			"%s depends on %s, whose value is looked up at launch. kiln supports data source values only in source_ami.", a.Name, what)
		return false
	}
	ty, err := gocty.ImpliedType(target)
	if err != nil {
		panic(fmt.Sprintf("bake: decode %s: %v", a.Name, err)) // a programming error in this file
	}
	conv, err := convert.Convert(v, ty)
	if err == nil {
		err = gocty.FromCtyValue(conv, target)
	}
	if err != nil {
		d.fail(a)
		d.diags = append(d.diags, &hcl.Diagnostic{
			Severity:    hcl.DiagError,
			Summary:     "Incorrect attribute value type",
			Detail:      fmt.Sprintf("Inappropriate value for attribute %q: %s.", a.Name, convertError(err)),
			Subject:     a.Expr.Range().Ptr(),
			Expression:  a.Expr,
			EvalContext: d.ctx,
		})
		return false
	}
	return true
}

func convertError(err error) string {
	var pe cty.PathError
	if e, ok := err.(cty.PathError); ok {
		pe = e
		if len(pe.Path) > 0 {
			return fmt.Sprintf("element %s: %s", formatPath(pe.Path), pe.Error())
		}
	}
	return err.Error()
}

func formatPath(p cty.Path) string {
	var b strings.Builder
	for _, s := range p {
		switch s := s.(type) {
		case cty.IndexStep:
			switch s.Key.Type() {
			case cty.String:
				fmt.Fprintf(&b, "[%q]", s.Key.AsString())
			case cty.Number:
				fmt.Fprintf(&b, "[%s]", s.Key.AsBigFloat().Text('f', -1))
			}
		case cty.GetAttrStep:
			fmt.Fprintf(&b, ".%s", s.Name)
		}
	}
	return b.String()
}

func (d *valueDecoder) str(a *hcl.Attribute) string {
	var s string
	d.decode(a, &s)
	return s
}

func (d *valueDecoder) strs(a *hcl.Attribute) []string {
	var s []string
	d.decode(a, &s)
	return s
}

func (d *valueDecoder) ints(a *hcl.Attribute) []int {
	var s []int
	d.decode(a, &s)
	return s
}

func (d *valueDecoder) strMap(a *hcl.Attribute) map[string]string {
	var m map[string]string
	d.decode(a, &m)
	return m
}

func (d *valueDecoder) boolean(a *hcl.Attribute) bool {
	var b bool
	d.decode(a, &b)
	return b
}

func (d *valueDecoder) boolPtr(a *hcl.Attribute) *bool {
	var b bool
	if !d.decode(a, &b) {
		return nil
	}
	return &b
}

func (d *valueDecoder) int64(a *hcl.Attribute) int64 {
	var n int64
	d.decode(a, &n)
	return n
}

// duration decodes a Go duration string ("90s", "5m"); def when unset.
func (d *valueDecoder) duration(a *hcl.Attribute, def Duration) Duration {
	var s string
	if !d.decode(a, &s) {
		return def
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		d.fail(a)
		d.errorf(a.Expr.Range(), "Invalid duration", "%s must be a duration such as \"90s\", \"5m\" or \"1h30m\", not %q.", a.Name, s)
		return def
	}
	return Duration(v)
}

// oneOf decodes a string that must be one of allowed; def when unset.
func (d *valueDecoder) oneOf(a *hcl.Attribute, def string, allowed ...string) string {
	var s string
	if !d.decode(a, &s) {
		return def
	}
	for _, v := range allowed {
		if s == v {
			return s
		}
	}
	d.fail(a)
	d.errorf(a.Expr.Range(), "Invalid "+a.Name, "%s must be %s, not %q.", a.Name, quotedList(allowed), s)
	return s
}

func quotedList(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = fmt.Sprintf("%q", v)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// sourceAMI decodes source_ami: an AMI ID, or a data source's value
// (data.amazon-ami.NAME.id, data.amazon-parameterstore.NAME.value, or a
// local set to one of them), which launch looks up; the data source is then
// returned as data, "amazon-ami.NAME".
func (d *valueDecoder) sourceAMI(a *hcl.Attribute) (id, data string) {
	if a == nil {
		return "", ""
	}
	v, diags := a.Expr.Value(d.ctx)
	if diags.HasErrors() || v.IsWhollyKnown() {
		return d.str(a), "" // decode reports the errors once more, deduplicated
	}
	v, marks := v.UnmarkDeep()
	if _, ok := marks[poisonMark{}]; ok {
		return "", ""
	}
	refs := dataRefs(marks)
	_, derived := marks[derivedMark{}]
	switch {
	case len(refs) == 0:
		d.errorf(a.Expr.Range(), "Value not known when loading", "source_ami has no value yet when the recipe is loaded.")
		return "", ""
	case len(refs) > 1 || derived || !isBareReference(a.Expr) || !v.Type().Equals(cty.String):
		d.errorf(a.Expr.Range(), "Unsupported source_ami expression",
			"source_ami can take a data source's value as it is (data.amazon-ami.NAME.id, data.amazon-parameterstore.NAME.value, or a local set to one of them), not a value computed from it.")
		return "", ""
	}
	ref := refs[0]
	if want := dataOutput[ref.typ]; ref.attr != want {
		d.errorf(a.Expr.Range(), "Unsupported source_ami expression", "source_ami takes the image ID a data source finds: data.%s.%s.%s, not %s.", ref.typ, ref.name, want, ref)
		return "", ""
	}
	return "", ref.typ + "." + ref.name
}

// dataOutput is the attribute of each data source type that holds an image ID.
var dataOutput = map[string]string{"amazon-ami": "id", "amazon-parameterstore": "value"}

// dataRef is a reference to a data source: data.TYPE.NAME.ATTR.
type dataRef struct{ typ, name, attr string }

func (r dataRef) String() string {
	s := "data." + r.typ + "." + r.name
	if r.attr != "" {
		s += "." + r.attr
	}
	return s
}

// recipePath checks that p (from attribute a) names a file, or with dirOK a
// folder, inside fsys, records what it names in read and returns the clean
// recipe-relative path. A trailing slash on a folder is kept: it means "the
// folder's contents" to the file provisioner, as in Packer.
func (d *valueDecoder) recipePath(fsys fs.FS, read map[string]bool, a *hcl.Attribute, p string, dirOK bool) string {
	if d.failed(a) || p == "" {
		if p == "" && !d.failed(a) {
			d.errorf(a.Expr.Range(), "Empty path", "%s must name a file in the recipe.", a.Name)
		}
		return p
	}
	clean, ok := d.recipeFile(fsys, read, p, a, dirOK)
	if !ok {
		return p
	}
	if strings.HasSuffix(p, "/") && clean != "." {
		return clean + "/"
	}
	return clean
}

func (d *valueDecoder) recipePaths(fsys fs.FS, read map[string]bool, a *hcl.Attribute, ps []string) []string {
	var out []string
	for _, p := range ps {
		out = append(out, d.recipePath(fsys, read, a, p, true))
	}
	return out
}

// recipeFile resolves p inside fsys and records the file (or each file of
// the folder) in read.
func (d *valueDecoder) recipeFile(fsys fs.FS, read map[string]bool, p string, a *hcl.Attribute, dirOK bool) (string, bool) {
	clean, err := ResolvePath(p)
	if err != nil {
		d.errorf(a.Expr.Range(), "File outside the recipe", "%s: %q: %s. Files a recipe uses must be inside its folder or bundle, named by relative paths.", a.Name, p, err)
		return "", false
	}
	if fsys == nil {
		d.errorf(a.Expr.Range(), "File not found", "%s: %q is not in the recipe.", a.Name, p)
		return "", false
	}
	fi, err := fs.Stat(fsys, clean)
	if err != nil {
		d.errorf(a.Expr.Range(), "File not found", "%s: %q is not in the recipe: %s.", a.Name, p, unwrapPathError(err))
		return "", false
	}
	if !fi.IsDir() {
		if !fi.Mode().IsRegular() {
			d.errorf(a.Expr.Range(), "Not a regular file", "%s: %q is not a regular file.", a.Name, p)
			return "", false
		}
		read[clean] = true
		return clean, true
	}
	if !dirOK {
		d.errorf(a.Expr.Range(), "Not a file", "%s: %q is a folder; a file is needed here.", a.Name, p)
		return "", false
	}
	err = fs.WalkDir(fsys, clean, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			read[p] = true
		}
		return nil
	})
	if err != nil {
		d.errorf(a.Expr.Range(), "Cannot read folder", "%s: %q: %s.", a.Name, p, unwrapPathError(err))
		return "", false
	}
	return clean, true
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Err
	}
	return err
}

// setAttrs returns the attributes that are set, in order.
func setAttrs(attrs ...*hcl.Attribute) []*hcl.Attribute {
	var out []*hcl.Attribute
	for _, a := range attrs {
		if a != nil {
			out = append(out, a)
		}
	}
	return out
}

// rangePos is a range's "file:line", for Provisioner.Pos.
func rangePos(r hcl.Range) string {
	return fmt.Sprintf("%s:%d", path.Clean(r.Filename), r.Start.Line)
}

// dedupe drops repeated diagnostics (merged bodies report a duplicate
// argument both when checked and when decoded).
func dedupe(diags hcl.Diagnostics) hcl.Diagnostics {
	type key struct {
		sev             hcl.DiagnosticSeverity
		summary, detail string
		rng             hcl.Range
	}
	seen := map[key]bool{}
	var out hcl.Diagnostics
	for _, d := range diags {
		k := key{sev: d.Severity, summary: d.Summary, detail: d.Detail}
		if d.Subject != nil {
			k.rng = *d.Subject
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, d)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
