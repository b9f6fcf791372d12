package bake

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Tag keys kiln puts on everything it creates. Cleanup, retention and the
// stack's IAM conditions all rely on them.
const (
	// TagBuild carries the build's identity (State.BuildID) on every resource
	// a bake creates: instance, volumes, security group, key pair, stored
	// key, AMIs, snapshots and copies.
	TagBuild = "kiln:build"
	// TagRecipe carries the recipe's name.
	TagRecipe = "kiln:recipe"
	// TagRecipeHash carries the plan's content hash on images.
	TagRecipeHash = "kiln:recipe-hash"
	// TagSourceAMI carries the base image an AMI was baked from.
	TagSourceAMI = "kiln:source-ami"
	// TagKeep on an image protects it from retention.
	TagKeep = "kiln:keep"
)

// State is the build state that flows through the state machine from stage
// to stage. Each stage fills in only its own part. State never holds a
// secret: Step Functions shows every state's input and output to anyone who
// may read the execution, so private keys live in Parameter Store and the plan
// (which may hold sensitive variable values) in the kiln bucket, and State
// holds only their names.
type State struct {
	// Recipe is where the recipe was read from: the execution's input.
	Recipe RecipeRef `json:"recipe"`
	// Vars are variable values given to the build (-var). They are visible
	// in the execution history: pass secrets in a var file inside the bundle.
	Vars map[string]string `json:"vars,omitempty"`
	// Only selects one build of a recipe that defines several (by its name
	// or "amazon-ebs.<name>"); empty means the recipe's only build.
	Only string `json:"only,omitempty"`
	// Trigger distinguishes deliberate rebuilds of the same recipe version
	// (a schedule's run); empty for uploads, so that a repeated upload event
	// maps to the same build.
	Trigger string `json:"trigger,omitempty"`

	// BuildID identifies the bake (see NewBuildID). Set by the plan step.
	BuildID string `json:"build_id,omitempty"`
	// DuplicateOf is set by the plan step when another execution already
	// owns this build (a repeated event): the state machine then ends.
	DuplicateOf string `json:"duplicate_of,omitempty"`
	// StartedAt is when the bake started; the recipe's timestamp() is this.
	StartedAt time.Time `json:"started_at,omitzero"`
	// Plan says where the evaluated plan is stored and what of it the state
	// machine's Choice states need.
	Plan *PlanRef `json:"plan,omitempty"`

	Launch    *Launched    `json:"launch,omitempty"`
	Provision *Provisioned `json:"provision,omitempty"`
	Image     *Image       `json:"image,omitempty"`
	Copies    []Copy       `json:"copies,omitempty"`
	Published *Published   `json:"published,omitempty"`

	// Expect are the timings this build's waits poll around, learned from
	// the recipe build's earlier bakes (see LearnedTimings); nil: the
	// deployment's defaults. Took is how long this bake's waits took, which
	// publish keeps for the next bake.
	Expect *Timings `json:"expect,omitempty"`
	Took   *Timings `json:"took,omitempty"`

	// Wait is the answer of the last readiness check, which the state
	// machine's wait loops read: ready or not, and how long to wait before
	// checking again.
	Wait *Wait `json:"wait,omitempty"`
	// Error is what a Catch recorded when a stage failed; cleanup then also
	// removes the half-made outputs.
	Error *Failure `json:"error,omitempty"`
	// Cleanup is cleanup's report.
	Cleanup *CleanupReport `json:"cleanup,omitempty"`
}

// RecipeRef locates a recipe object.
type RecipeRef struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	// Version is the S3 object version; builds always read that version.
	Version string `json:"version,omitempty"`
}

// PlanRef points at a stored plan and carries the few facts of it that
// the state machine routes on.
type PlanRef struct {
	// Bucket and Key locate the plan's JSON.
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	// Recipe is the recipe's name, Build the build's name.
	Recipe string `json:"recipe"`
	Build  string `json:"build"`
	// Hash is the plan's content hash.
	Hash string `json:"hash"`
	// Region is where the instance runs; Regions are the extra Regions
	// (ami_regions without Region) the image is copied to.
	Region  string   `json:"region"`
	Regions []string `json:"regions"`
	// Transport is "ssh", "session_manager" or "none".
	Transport string `json:"transport"`
	// Encrypt says whether snapshot makes an encrypted copy of the image.
	Encrypt bool `json:"encrypt,omitempty"`
	// Several says the recipe defines several builds, so their images are
	// told apart by a kiln:build-name tag and their own parameters.
	Several bool `json:"several,omitempty"`
}

// Launched is what launch created and learned.
type Launched struct {
	Region    string `json:"region"`
	SourceAMI string `json:"source_ami"`
	VPCID     string `json:"vpc_id,omitempty"`
	SubnetID  string `json:"subnet_id,omitempty"`
	// SecurityGroupID is the build's temporary security group, if it has
	// one; SharedSecurityGroup the stack's group it uses instead.
	SecurityGroupID     string `json:"security_group_id,omitempty"`
	SharedSecurityGroup string `json:"shared_security_group,omitempty"`
	// KeyPairName is the EC2 key pair holding the login public key.
	KeyPairName string `json:"key_pair_name,omitempty"`
	// KeyParameter is the Parameter Store name of the login private key
	// (a SecureString); only its name is in the state.
	KeyParameter string `json:"key_parameter,omitempty"`
	// HostKey is the instance's SSH host public key (authorized_keys
	// format), generated at launch and installed by cloud-init, which
	// provisioning pins.
	HostKey string `json:"host_key,omitempty"`
	// HostKeyParameter is the Parameter Store name of the host private
	// key (a SecureString), kept so that a rerun of launch sends the same
	// user data; cleanup deletes it.
	HostKeyParameter string `json:"host_key_parameter,omitempty"`
	InstanceID       string `json:"instance_id,omitempty"`
	PrivateIP        string `json:"private_ip,omitempty"`
	PublicIP         string `json:"public_ip,omitempty"`
	// PrivateDNS and PublicDNS are the instance's DNS names, for the
	// private_dns and public_dns ssh_interface.
	PrivateDNS string    `json:"private_dns,omitempty"`
	PublicDNS  string    `json:"public_dns,omitempty"`
	LaunchedAt time.Time `json:"launched_at,omitzero"`
}

// Provisioned is provisioning's progress, so that provisioning can span
// several invocations.
type Provisioned struct {
	// Next is the index of the next provisioner to run.
	Next int `json:"next"`
	// Attempt counts tries of provisioner Next (for max_retries).
	Attempt int `json:"attempt,omitempty"`
	// Step is the next step of provisioner Next: its scripts (inline,
	// then script and scripts), or Ansible's staging, galaxy install and
	// playbook.
	Step int `json:"step,omitempty"`
	// StartedAt is when the current attempt of provisioner Next started,
	// for its timeout.
	StartedAt time.Time `json:"started_at,omitzero"`
	// PauseUntil is when the pause_before of provisioner Next ends, once
	// it has begun.
	PauseUntil time.Time `json:"pause_until,omitzero"`
	// Running is a provisioner command still running detached on the
	// instance, whose output and exit status a later invocation collects.
	Running *Command `json:"running,omitempty"`
	// Done is set when every provisioner has finished.
	Done bool `json:"done"`
	// SSHSince is when the current wait for SSH began (the first attempt
	// to reach the instance, or a lost connection or expected reboot), for
	// ssh_timeout; it is cleared once SSH answers.
	SSHSince time.Time `json:"ssh_since,omitzero"`
	// ErrorCleanupRan records that error-cleanup-provisioner has run.
	ErrorCleanupRan bool `json:"error_cleanup_ran,omitempty"`
	// AgentOnline records that the instance's SSM agent was seen online
	// (session_manager transport), so commands may be sent to it.
	AgentOnline bool `json:"agent_online,omitempty"`
	// AgentSince is when the current wait for the SSM agent began, for its
	// bound; it is cleared once the agent is online.
	AgentSince time.Time `json:"agent_since,omitzero"`
}

// Command is a provisioner command running detached on the instance.
type Command struct {
	// ID names the command on the instance (its working directory, or the
	// SSM command ID).
	ID string `json:"id"`
	// Provisioner is the index of the provisioner it belongs to.
	Provisioner int       `json:"provisioner"`
	StartedAt   time.Time `json:"started_at"`
	// Offset is how much of its output has been shown already.
	Offset int64 `json:"offset,omitempty"`
	// Cursor is where reading its output resumes when a byte offset
	// cannot say: the CloudWatch Logs forward token of an SSM command's
	// output stream.
	Cursor string `json:"cursor,omitempty"`
	// EndedAt is when the command was first seen finished while its output
	// was still arriving (SSM); output that has not arrived some time
	// after is given up on.
	EndedAt time.Time `json:"ended_at,omitzero"`
	// Complete records that its output has been read to its end (SSM: the
	// end marker kiln's command prints last); Failure is the failure kiln's
	// own part of the command reported (a file it could not fetch).
	Complete bool   `json:"complete,omitempty"`
	Failure  string `json:"failure,omitempty"`
}

// Image is the AMI snapshot made in the build Region.
type Image struct {
	Name string `json:"name"`
	// ID is the final image; Intermediate the unencrypted image an
	// encrypted copy is made from (deregistered once the copy is ready).
	ID           string    `json:"id,omitempty"`
	Intermediate string    `json:"intermediate,omitempty"`
	Snapshots    []string  `json:"snapshots,omitempty"`
	State        string    `json:"state,omitempty"`
	StopAt       time.Time `json:"stop_at,omitzero"`
	CreatedAt    time.Time `json:"created_at,omitzero"`
}

// Copy is the image copied to one extra Region.
type Copy struct {
	Region    string    `json:"region"`
	ImageID   string    `json:"image_id,omitempty"`
	Snapshots []string  `json:"snapshots,omitempty"`
	State     string    `json:"state,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
}

// Published records the build's outputs.
type Published struct {
	// Images maps each Region to its AMI ID.
	Images map[string]string `json:"images"`
	// Parameters are the SSM parameters holding the AMI IDs, by Region.
	Parameters map[string]string `json:"parameters,omitempty"`
	// Manifest is the S3 key of the Packer-format manifest.
	Manifest string `json:"manifest,omitempty"`
	// ManifestPath is where the manifest was written locally (local mode).
	ManifestPath string `json:"manifest_path,omitempty"`
	// Event is the ID of the EventBridge event announcing the images.
	Event string `json:"event,omitempty"`
}

// Wait is the answer of a readiness check.
type Wait struct {
	Ready bool `json:"ready"`
	// Seconds is how long the state machine waits before checking again.
	Seconds int `json:"seconds"`
	// For says what is awaited, for people ("image ami-0abc available").
	For string `json:"for"`
	// Polls counts the checks so far.
	Polls int `json:"polls"`
}

// Failure is what a Catch records: the error name and its cause.
type Failure struct {
	Error string `json:"Error"`
	Cause string `json:"Cause"`
}

// Message is the failure's message: a Lambda error's errorMessage (its
// Cause is the JSON {"errorMessage": ..., "errorType": ...}), else the
// Cause as it is.
func (f Failure) Message() string {
	var c struct {
		ErrorMessage string `json:"errorMessage"`
	}
	if json.Unmarshal([]byte(f.Cause), &c) == nil && c.ErrorMessage != "" {
		return c.ErrorMessage
	}
	return f.Cause
}

// CleanupReport says what cleanup removed and what it could not.
type CleanupReport struct {
	Deleted []string `json:"deleted,omitempty"`
	Failed  []string `json:"failed,omitempty"`
	// StartedAt is when cleanup first ran, which bounds its wait for the
	// instance to terminate.
	StartedAt time.Time `json:"started_at,omitzero"`
}

// NewBuildID derives a build's identity from what defines it: the recipe's
// object version, the variables, the selected build and the trigger. The same
// inputs give the same ID, so a repeated S3 event for one recipe version
// maps to the same build (and Step Functions' execution-name uniqueness and
// EC2 client tokens keep it from baking twice). The ID is readable
// ("<recipe>-<12 hex>"), at most 48 characters, and valid as an execution
// name, a tag value and part of a resource name.
func NewBuildID(ref RecipeRef, vars map[string]string, only, trigger string) string {
	h := sha256.New()
	write := func(s string) { h.Write([]byte(s)); h.Write([]byte{0}) }
	write(ref.Bucket)
	write(ref.Key)
	write(ref.Version)
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		write(k)
		write(vars[k])
	}
	write(only)
	write(trigger)
	name := buildIDUnsafe.ReplaceAllString(strings.ToLower(RecipeName(ref.Key)), "-")
	name = strings.Trim(name, "-")
	if len(name) > 34 {
		name = strings.Trim(name[:34], "-")
	}
	if name == "" {
		name = "recipe"
	}
	return name + "-" + hex.EncodeToString(h.Sum(nil))[:12]
}

var buildIDUnsafe = regexp.MustCompile(`[^a-z0-9-]+`)

// Size returns the state's JSON size in bytes, which must stay far below
// Step Functions' 256 KiB payload limit.
func (s State) Size() int {
	b, _ := json.Marshal(s)
	return len(b)
}
