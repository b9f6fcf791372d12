package bake

import (
	"os"
	"strings"
	"time"
)

// Config is the deployment's settings that every stage reads: what the
// stack created for builds to use. In Lambda it comes from environment
// variables that the stack sets (ConfigFromEnv); local mode builds it
// directly.
type Config struct {
	// Bucket holds recipes, stored plans, manifests and staged files.
	Bucket string
	// ProvisionerSecurityGroup is the security group of the provisioning
	// Lambda: the only source a build instance's temporary group admits.
	ProvisionerSecurityGroup string
	// InstanceSecurityGroup is the group the stack gives SSH builds: it
	// admits SSH from ProvisionerSecurityGroup and nothing else.
	// IsolatedSecurityGroup admits nothing (session_manager and
	// communicator "none"). A build whose recipe names no security group
	// uses the one for its transport when it runs in that group's VPC, and
	// otherwise gets a temporary group of its own, as in Packer. Shared
	// groups make no calls and need no wait at the end: cleanup has no
	// group to delete once the instance is gone.
	InstanceSecurityGroup string
	IsolatedSecurityGroup string
	// SubnetID is the subnet builds use when the recipe names none.
	SubnetID string
	// InstanceProfile is the build instances' profile when the recipe names
	// none (needed by the session_manager transport).
	InstanceProfile string
	// ParameterPrefix roots the SSM parameters that publish AMI IDs
	// ("/kiln" gives /kiln/<recipe>/latest).
	ParameterPrefix string
	// KeyPrefix roots the SecureString parameters holding login keys
	// ("/kiln/builds" gives /kiln/builds/<build>/ssh-key).
	KeyPrefix string
	// EventBus receives the "kiln" events announcing baked images.
	EventBus string
	// DefaultTransport is "ssh" or "session_manager": the transport of
	// recipes that do not set ssh_interface.
	DefaultTransport string
	// CommandLogPrefix roots the CloudWatch Logs groups that receive the
	// full output of the session_manager transport's commands: one group
	// per build, <CommandLogPrefix>/<build>, which cleanup deletes
	// ("/kiln/commands" by default).
	CommandLogPrefix string
	// Expect are the expected durations of AWS's asynchronous work, which
	// set when the wait loops poll.
	Expect Timings
}

// Timings are how long AWS usually takes for each asynchronous step. Waits
// sleep until just before the expected time and then poll briskly, so a bake
// notices readiness within seconds without paying for a tight poll loop.
type Timings struct {
	Running time.Duration `json:"running"`
	Stopped time.Duration `json:"stopped"`
	Image   time.Duration `json:"image"`
	Copy    time.Duration `json:"copy"`
	SSH     time.Duration `json:"ssh"`
	// Agent is how long after launch the SSM agent usually comes online
	// (session_manager transport).
	Agent time.Duration `json:"agent"`
}

// AWSTimings are typical AWS timings for a small Linux image (FACTS.md:
// Packer PR 4704 and AWS samples).
var AWSTimings = Timings{
	Running: 30 * time.Second,
	Stopped: 45 * time.Second,
	Image:   120 * time.Second,
	Copy:    300 * time.Second,
	SSH:     25 * time.Second,
	Agent:   60 * time.Second,
}

// ConfigFromEnv reads the Config that the stack passes to the Lambdas as
// KILN_* environment variables, with defaults.
func ConfigFromEnv() Config {
	return Config{
		Bucket:                   os.Getenv("KILN_BUCKET"),
		ProvisionerSecurityGroup: os.Getenv("KILN_PROVISIONER_SECURITY_GROUP"),
		InstanceSecurityGroup:    os.Getenv("KILN_INSTANCE_SECURITY_GROUP"),
		IsolatedSecurityGroup:    os.Getenv("KILN_ISOLATED_SECURITY_GROUP"),
		SubnetID:                 os.Getenv("KILN_SUBNET_ID"),
		InstanceProfile:          os.Getenv("KILN_INSTANCE_PROFILE"),
		ParameterPrefix:          envOr("KILN_PARAMETER_PREFIX", "/kiln"),
		KeyPrefix:                envOr("KILN_KEY_PREFIX", "/kiln/builds"),
		EventBus:                 envOr("KILN_EVENT_BUS", "default"),
		DefaultTransport:         envOr("KILN_DEFAULT_TRANSPORT", "ssh"),
		CommandLogPrefix:         envOr("KILN_COMMAND_LOG_PREFIX", "/kiln/commands"),
		Expect:                   AWSTimings,
	}.withDefaults()
}

// WithDefaults fills the settings left empty with their defaults.
func (c Config) WithDefaults() Config { return c.withDefaults() }

func (c Config) withDefaults() Config {
	if c.ParameterPrefix == "" {
		c.ParameterPrefix = "/kiln"
	}
	c.ParameterPrefix = "/" + strings.Trim(c.ParameterPrefix, "/")
	if c.KeyPrefix == "" {
		c.KeyPrefix = "/kiln/builds"
	}
	c.KeyPrefix = "/" + strings.Trim(c.KeyPrefix, "/")
	if c.EventBus == "" {
		c.EventBus = "default"
	}
	if c.DefaultTransport == "" {
		c.DefaultTransport = "ssh"
	}
	if c.CommandLogPrefix == "" {
		c.CommandLogPrefix = "/kiln/commands"
	}
	c.CommandLogPrefix = "/" + strings.Trim(c.CommandLogPrefix, "/")
	return c
}

// CommandLogGroup is the CloudWatch Logs group that receives the full
// output of a session_manager build's commands.
func CommandLogGroup(conf Config, buildID string) string {
	return conf.withDefaults().CommandLogPrefix + "/" + buildID
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
