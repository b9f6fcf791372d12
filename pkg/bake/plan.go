package bake

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Plan is a loaded recipe: the normalised, JSON-serialisable description of
// everything a bake does. HCL2 templates, legacy JSON templates, folders and
// bundles all load to a Plan, and the stages take it (by reference) as their
// input. A Plan holds resolved values only: variables, locals and template
// functions have been evaluated, except for data-source lookups, which happen
// at launch.
type Plan struct {
	// Name identifies the recipe: the template file's name without its
	// extensions, or the folder's or bundle's name.
	Name string `json:"name"`
	// Format is "hcl2" or "json" (a legacy JSON template).
	Format string `json:"format"`
	// Hash is a content hash ("sha256:<hex>") over the template files, the
	// files they refer to and the variable values given to the build, so an
	// unchanged recipe is recognisable later.
	Hash string `json:"hash"`
	// Files lists, sorted, the recipe-relative paths of every file the plan
	// was made from or refers to (the inputs of Hash).
	Files []string `json:"files"`
	// Variables are the recipe's input variables and their values; the
	// value of a sensitive variable is masked.
	Variables []Variable `json:"variables,omitempty"`
	// RequiredPlugins lists the packer { required_plugins { ... } } entries,
	// kept for information: kiln has the amazon plugin built in.
	RequiredPlugins []RequiredPlugin `json:"required_plugins,omitempty"`
	// Data are the data sources the recipe declares, keyed by
	// "<type>.<name>" (for example "amazon-ami.ubuntu"). Launch looks them up.
	Data map[string]DataSource `json:"data,omitempty"`
	// Builds are the builds the recipe defines, one per source in each
	// build block, in template order.
	Builds []Build `json:"builds"`
	// Warnings are non-fatal remarks from loading (for example credentials in
	// a template, which kiln ignores in favour of its own role).
	Warnings []string `json:"warnings,omitempty"`

	// Sensitive holds the values of sensitive variables so that logs and
	// outputs can redact them. It travels with the plan (the plan is stored
	// encrypted, like the recipe), never in the state machine's state.
	Sensitive []string `json:"sensitive,omitempty"`
}

// Variable is one input variable of a recipe.
type Variable struct {
	Name        string `json:"name"`
	Type        string `json:"type,omitempty"`
	Description string `json:"description,omitempty"`
	Sensitive   bool   `json:"sensitive,omitempty"`
	// Value is the variable's value as JSON; "<sensitive>" when Sensitive.
	Value json.RawMessage `json:"value"`
	// From says where the value came from: "default", "var", "var-file",
	// "env" (PKR_VAR_name) or "auto-var-file".
	From string `json:"from"`
}

// RequiredPlugin is an entry of packer.required_plugins.
type RequiredPlugin struct {
	Name    string `json:"name"`
	Source  string `json:"source,omitempty"`
	Version string `json:"version,omitempty"`
}

// DataSource is a data "amazon-ami" or data "amazon-parameterstore" block.
// Its lookup happens at launch, in the build's Region.
type DataSource struct {
	// Type is "amazon-ami" or "amazon-parameterstore".
	Type string `json:"type"`
	// Region to look in; empty means the build's Region.
	Region string `json:"region,omitempty"`
	// Filter selects an image (amazon-ami).
	Filter *AMIFilter `json:"filter,omitempty"`
	// Parameter is the SSM parameter name (amazon-parameterstore).
	Parameter string `json:"parameter,omitempty"`
	// WithDecryption asks for a SecureString's value (amazon-parameterstore).
	WithDecryption bool `json:"with_decryption,omitempty"`
}

// Build is one image a recipe bakes: an amazon-ebs source and the steps a
// build block applies to it.
type Build struct {
	// Name is the source's name ("app" for source "amazon-ebs" "app"), the
	// build's name in the manifest, as in Packer.
	Name string `json:"name"`
	// BuildName is the build block's name attribute, if any.
	BuildName string `json:"build_name,omitempty"`
	// Type is the builder type; always "amazon-ebs".
	Type string `json:"type"`
	// Source is the amazon-ebs configuration, after build-level overrides.
	Source AmazonEBS `json:"source"`
	// Provisioners run in order on the build instance.
	Provisioners []Provisioner `json:"provisioners,omitempty"`
	// ErrorCleanup runs on the instance when a provisioner fails, before
	// cleanup (Packer's error-cleanup-provisioner).
	ErrorCleanup *Provisioner `json:"error_cleanup,omitempty"`
	// PostProcessors run after the image exists; kiln supports manifest.
	PostProcessors []PostProcessor `json:"post_processors,omitempty"`
}

// FullName is the build's Packer-style name "amazon-ebs.<name>" used by
// provisioners' only and except lists.
func (b Build) FullName() string { return b.Type + "." + b.Name }

// AmazonEBS is the configuration of Packer's amazon-ebs builder that kiln
// supports. Field names follow Packer's option names.
type AmazonEBS struct {
	Region string `json:"region"`

	// Base image: exactly one of SourceAMI, SourceAMIFilter or SourceAMIData.
	SourceAMI       string     `json:"source_ami,omitempty"`
	SourceAMIFilter *AMIFilter `json:"source_ami_filter,omitempty"`
	// SourceAMIData names the data source ("amazon-ami.ubuntu" or
	// "amazon-parameterstore.base") whose result is the base image.
	SourceAMIData string `json:"source_ami_data,omitempty"`

	InstanceType string `json:"instance_type"`

	AMIName        string            `json:"ami_name"`
	AMIDescription string            `json:"ami_description,omitempty"`
	AMIRegions     []string          `json:"ami_regions,omitempty"`
	AMIUsers       []string          `json:"ami_users,omitempty"`
	AMIGroups      []string          `json:"ami_groups,omitempty"`
	AMIOrgARNs     []string          `json:"ami_org_arns,omitempty"`
	AMIOUARNs      []string          `json:"ami_ou_arns,omitempty"`
	SnapshotUsers  []string          `json:"snapshot_users,omitempty"`
	SnapshotGroups []string          `json:"snapshot_groups,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	RunTags        map[string]string `json:"run_tags,omitempty"`
	RunVolumeTags  map[string]string `json:"run_volume_tags,omitempty"`
	SnapshotTags   map[string]string `json:"snapshot_tags,omitempty"`

	// Communicator is "ssh" (the default) or "none".
	Communicator string `json:"communicator"`
	// SSHInterface is how provisioning reaches the instance: "private_ip"
	// (from the provisioning Lambda inside the VPC), "public_ip",
	// "private_dns", "public_dns", or "session_manager" (SSM Run Command,
	// no inbound port). Empty means the recipe did not say: the stack's
	// default transport applies (ResolveTransport), and over SSH empty
	// means "private_ip".
	SSHInterface string   `json:"ssh_interface"`
	SSHUsername  string   `json:"ssh_username"`
	SSHTimeout   Duration `json:"ssh_timeout"`

	SubnetID                 string        `json:"subnet_id,omitempty"`
	SubnetFilter             *SubnetFilter `json:"subnet_filter,omitempty"`
	VPCID                    string        `json:"vpc_id,omitempty"`
	VPCFilter                *VPCFilter    `json:"vpc_filter,omitempty"`
	SecurityGroupIDs         []string      `json:"security_group_ids,omitempty"`
	AssociatePublicIPAddress *bool         `json:"associate_public_ip_address,omitempty"`
	IAMInstanceProfile       string        `json:"iam_instance_profile,omitempty"`

	// UserData is the recipe's user data (user_data, or the content of
	// user_data_file); launch merges kiln's own cloud-init into it.
	UserData string `json:"user_data,omitempty"`

	LaunchBlockDeviceMappings []BlockDevice `json:"launch_block_device_mappings,omitempty"`
	AMIBlockDeviceMappings    []BlockDevice `json:"ami_block_device_mappings,omitempty"`

	EncryptBoot     *bool             `json:"encrypt_boot,omitempty"`
	KMSKeyID        string            `json:"kms_key_id,omitempty"`
	RegionKMSKeyIDs map[string]string `json:"region_kms_key_ids,omitempty"`

	// IMDSSupport is the AMI's imds_support ("v2.0" makes IMDSv2 the
	// default for instances launched from it).
	IMDSSupport     string          `json:"imds_support,omitempty"`
	MetadataOptions MetadataOptions `json:"metadata_options"`

	// DeprecateAt is the RFC 3339 time at which the AMI is deprecated.
	DeprecateAt         string `json:"deprecate_at,omitempty"`
	ForceDeregister     bool   `json:"force_deregister,omitempty"`
	ForceDeleteSnapshot bool   `json:"force_delete_snapshot,omitempty"`

	// TemporaryKeyPairType is "ed25519" (kiln's default) or "rsa".
	TemporaryKeyPairType string `json:"temporary_key_pair_type"`
	// ShutdownBehavior is "stop" (the default) or "terminate".
	ShutdownBehavior string `json:"shutdown_behavior"`
	ENASupport       *bool  `json:"ena_support,omitempty"`
	SRIOVSupport     bool   `json:"sriov_support,omitempty"`
}

// Transport returns how provisioning reaches the instance as the recipe
// says: "ssh", "session_manager" or "none". A recipe that leaves
// ssh_interface unset reads as "ssh" here; ResolveTransport applies the
// stack's default to it.
func (a AmazonEBS) Transport() string {
	switch {
	case a.Communicator == "none":
		return "none"
	case a.SSHInterface == "session_manager":
		return "session_manager"
	}
	return "ssh"
}

// ResolveTransport is how provisioning reaches the instance of a source in
// a deployment: the recipe's choice, or for a source that leaves
// ssh_interface unset, the deployment's DefaultTransport. The plan step
// records it in PlanRef.Transport, which the stages then follow.
func ResolveTransport(src AmazonEBS, conf Config) string {
	if src.Communicator != "none" && src.SSHInterface == "" && conf.DefaultTransport == "session_manager" {
		return "session_manager"
	}
	return src.Transport()
}

// AMIFilter selects a base image: the filters of DescribeImages, the owners
// to trust, and whether to take the newest match (more than one match without
// most_recent is an error at launch, as in Packer).
type AMIFilter struct {
	Filters    map[string]string `json:"filters,omitempty"`
	Owners     []string          `json:"owners"`
	MostRecent bool              `json:"most_recent,omitempty"`
	// IncludeDeprecated also matches deprecated images.
	IncludeDeprecated bool `json:"include_deprecated,omitempty"`
}

// SubnetFilter selects a subnet by DescribeSubnets filters.
type SubnetFilter struct {
	Filters  map[string]string `json:"filters,omitempty"`
	MostFree bool              `json:"most_free,omitempty"`
	Random   bool              `json:"random,omitempty"`
}

// VPCFilter selects a VPC by DescribeVpcs filters.
type VPCFilter struct {
	Filters map[string]string `json:"filters,omitempty"`
}

// BlockDevice is one entry of launch_block_device_mappings or
// ami_block_device_mappings.
type BlockDevice struct {
	DeviceName          string `json:"device_name"`
	VolumeType          string `json:"volume_type,omitempty"`
	VolumeSize          int64  `json:"volume_size,omitempty"`
	IOPS                int64  `json:"iops,omitempty"`
	Throughput          int64  `json:"throughput,omitempty"`
	DeleteOnTermination *bool  `json:"delete_on_termination,omitempty"`
	Encrypted           *bool  `json:"encrypted,omitempty"`
	KMSKeyID            string `json:"kms_key_id,omitempty"`
	SnapshotID          string `json:"snapshot_id,omitempty"`
	VirtualName         string `json:"virtual_name,omitempty"`
	NoDevice            bool   `json:"no_device,omitempty"`
}

// MetadataOptions are the build instance's instance-metadata settings.
// kiln requires IMDSv2 tokens unless the recipe explicitly says otherwise.
type MetadataOptions struct {
	HTTPEndpoint            string `json:"http_endpoint"`
	HTTPTokens              string `json:"http_tokens"`
	HTTPPutResponseHopLimit int64  `json:"http_put_response_hop_limit"`
	InstanceMetadataTags    string `json:"instance_metadata_tags,omitempty"`
}

// Provisioner is one step run on the build instance. Exactly one of Shell,
// File or Ansible is set, matching Type.
type Provisioner struct {
	// Type is "shell", "file", "ansible" or "ansible-local".
	Type string `json:"type"`
	// Name is the provisioner's optional label (provisioner "shell" { name = "x" }).
	Name string `json:"name,omitempty"`
	// Pos is where the provisioner is declared ("build.pkr.hcl:14"), used to
	// name it in errors.
	Pos string `json:"pos"`

	PauseBefore Duration `json:"pause_before,omitempty"`
	MaxRetries  int      `json:"max_retries,omitempty"`
	Timeout     Duration `json:"timeout,omitempty"`

	Shell   *Shell   `json:"shell,omitempty"`
	File    *File    `json:"file,omitempty"`
	Ansible *Ansible `json:"ansible,omitempty"`
}

// Label names the provisioner for people: its type, its name if it has one,
// and where it is declared, e.g. `shell "install" (build.pkr.hcl:14)`.
func (p Provisioner) Label() string {
	if p.Name != "" {
		return fmt.Sprintf("%s %q (%s)", p.Type, p.Name, p.Pos)
	}
	return fmt.Sprintf("%s (%s)", p.Type, p.Pos)
}

// Shell is a shell provisioner.
type Shell struct {
	Inline []string `json:"inline,omitempty"`
	// Scripts are recipe-relative paths (script and scripts), in order.
	Scripts         []string          `json:"scripts,omitempty"`
	EnvironmentVars []string          `json:"environment_vars,omitempty"`
	Env             map[string]string `json:"env,omitempty"`
	// ExecuteCommand runs each uploaded script; {{.Vars}} and {{.Path}} are
	// substituted as in Packer. Default: chmod +x {{.Path}}; {{.Vars}} {{.Path}}.
	ExecuteCommand   string `json:"execute_command"`
	InlineShebang    string `json:"inline_shebang"`
	ExpectDisconnect bool   `json:"expect_disconnect,omitempty"`
	ValidExitCodes   []int  `json:"valid_exit_codes"`
	RemoteFolder     string `json:"remote_folder"`
	SkipClean        bool   `json:"skip_clean,omitempty"`
}

// File is a file provisioner (uploads only).
type File struct {
	// Sources are recipe-relative paths of files or folders (source and
	// sources). A folder without a trailing slash is uploaded as a folder; with
	// one, its contents are, as in Packer.
	Sources []string `json:"sources,omitempty"`
	// Content is literal content to write to Destination.
	Content     string `json:"content,omitempty"`
	Destination string `json:"destination"`
}

// Ansible is an ansible or ansible-local provisioner. kiln always runs
// Ansible on the instance itself, as Packer's ansible-local does.
type Ansible struct {
	PlaybookFile   string   `json:"playbook_file"`
	PlaybookDir    string   `json:"playbook_dir,omitempty"`
	RolesPath      string   `json:"roles_path,omitempty"`
	GalaxyFile     string   `json:"galaxy_file,omitempty"`
	ExtraArguments []string `json:"extra_arguments,omitempty"`
}

// PostProcessor is a post-processor; kiln supports Packer's manifest.
type PostProcessor struct {
	Type     string    `json:"type"`
	Pos      string    `json:"pos"`
	Manifest *Manifest `json:"manifest,omitempty"`
}

// Manifest is the manifest post-processor: a JSON file in Packer's format
// listing the AMIs a build made.
type Manifest struct {
	// Output is the manifest's path (default "packer-manifest.json").
	Output     string            `json:"output"`
	StripPath  bool              `json:"strip_path,omitempty"`
	StripTime  bool              `json:"strip_time,omitempty"`
	CustomData map[string]string `json:"custom_data,omitempty"`
}

// Duration is a time.Duration that reads and writes as a Go duration string
// ("5m0s") in JSON, as durations appear in recipes.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string such as "90s" or "1h5m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Redact replaces every sensitive value of the plan in s with "<sensitive>".
func (p *Plan) Redact(s string) string {
	return redact(s, p.Sensitive)
}

// redact replaces every non-empty secret in s with "<sensitive>", longest
// first so that a secret containing another is masked whole.
func redact(s string, secrets []string) string {
	sorted := append([]string(nil), secrets...)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i]) > len(sorted[j]) })
	for _, v := range sorted {
		if v != "" {
			s = strings.ReplaceAll(s, v, "<sensitive>")
		}
	}
	return s
}
