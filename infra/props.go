package infra

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/constructs-go/constructs/v10"
)

// KilnProps configures a kiln deployment. The zero value is a complete one:
// its own small VPC, builds in any Region, SSH provisioning, S3-managed
// encryption, a daily rebuild at 03:00 UTC and retention at 04:00 UTC.
type KilnProps struct {
	// SourceDir is the root of the kiln module whose functions/<stage> are
	// built into the Lambdas. Empty means the module this package belongs
	// to, found with `go list -m`.
	SourceDir string
	// BuildDir is where the functions' bootstrap zips are written. Empty
	// means <SourceDir>/dist/lambdas.
	BuildDir string

	// VPCID is an existing VPC to provision in. Empty makes the stack
	// create a small NAT-free VPC (see NewKiln).
	VPCID string
	// SubnetIDs are the subnets of VPCID the provisioning Lambda runs in.
	// They must reach Parameter Store and S3 (a NAT gateway, or VPC
	// endpoints for ssm and s3). Required with VPCID.
	SubnetIDs []string
	// BuildSubnetID is the subnet build instances run in when a recipe names
	// none (KILN_SUBNET_ID). It must be in the same VPC as the provisioning
	// Lambda. Empty means the first of SubnetIDs, or the stack's first
	// public subnet when the stack makes the VPC.
	BuildSubnetID string

	// Regions are the Regions builds may run in and copy images to: the
	// EC2 and Parameter Store permissions hold only there
	// (aws:RequestedRegion), and retention looks there. Empty means any
	// Region (and retention looks in the stack's).
	Regions []string
	// ParameterPrefix roots the SSM parameters that publish AMI IDs
	// (<prefix>/<recipe>/latest); default "/kiln".
	ParameterPrefix string
	// KeyPrefix roots the SecureString parameters holding builds' login
	// keys (<prefix>/<build>/ssh-key); default "/kiln/builds".
	KeyPrefix string
	// CommandLogPrefix roots the CloudWatch Logs groups that receive the
	// session_manager transport's command output, one per build
	// (<prefix>/<build>, deleted by cleanup); default "/kiln/commands".
	CommandLogPrefix string
	// EventBus is the name of the bus that receives kiln.image.baked
	// events; default "default".
	EventBus string
	// DefaultTransport is how recipes that do not set ssh_interface are
	// provisioned: "ssh" (default) or "session_manager".
	DefaultTransport string
	// KMSKeyARN is a customer-managed KMS key that encrypts the bucket and
	// that recipes may use for their volumes and images. Only when it is
	// set do kiln's roles get any KMS permission.
	KMSKeyARN string

	// RebuildSchedule and RetentionSchedule are EventBridge Scheduler
	// expressions (cron(...), rate(...)) for the rebuild and retention
	// jobs, in ScheduleTimeZone (default "UTC").
	RebuildSchedule   string
	RetentionSchedule string
	ScheduleTimeZone  string
	// RetentionKeep is how many of each recipe's newest images retention
	// always keeps (default 3); RetentionDays the age past which it deletes
	// the others (default 90); RebuildMaxAgeDays the age at which a rebuild
	// is due whatever changed (default 30).
	RetentionKeep     int
	RetentionDays     int
	RebuildMaxAgeDays int
	// RetentionDeprecateDays, when set, makes retention deprecate an image
	// that many days before deleting it.
	RetentionDeprecateDays int

	// LogRetentionDays is how long every log group keeps its events
	// (default 30; one of the values CloudWatch Logs accepts).
	LogRetentionDays int
}

// Defaults of KilnProps.
const (
	DefaultParameterPrefix   = "/kiln"
	DefaultKeyPrefix         = "/kiln/builds"
	DefaultCommandLogPrefix  = "/kiln/commands"
	DefaultEventBus          = "default"
	DefaultTransport         = "ssh"
	DefaultRebuildSchedule   = "cron(0 3 * * ? *)"
	DefaultRetentionSchedule = "cron(0 4 * * ? *)"
	DefaultScheduleTimeZone  = "UTC"
	DefaultRetentionKeep     = 3
	DefaultRetentionDays     = 90
	DefaultRebuildMaxAgeDays = 30
	DefaultLogRetentionDays  = 30
)

// Context keys that PropsFromContext reads (`cdk deploy -c key=value`, or
// "context" in cdk.json). Lists take JSON arrays or comma-separated values.
const (
	CtxVPCID             = "kiln:vpcId"
	CtxSubnetIDs         = "kiln:subnetIds"
	CtxBuildSubnetID     = "kiln:buildSubnetId"
	CtxRegions           = "kiln:regions"
	CtxParameterPrefix   = "kiln:parameterPrefix"
	CtxKeyPrefix         = "kiln:keyPrefix"
	CtxCommandLogPrefix  = "kiln:commandLogPrefix"
	CtxEventBus          = "kiln:eventBus"
	CtxDefaultTransport  = "kiln:defaultTransport"
	CtxKMSKeyARN         = "kiln:kmsKeyArn"
	CtxRebuildSchedule   = "kiln:rebuildSchedule"
	CtxRetentionSchedule = "kiln:retentionSchedule"
	CtxScheduleTimeZone  = "kiln:scheduleTimeZone"
	CtxRetentionKeep     = "kiln:retentionKeep"
	CtxRetentionDays     = "kiln:retentionDays"
	CtxRebuildMaxAgeDays = "kiln:rebuildMaxAgeDays"
	// CtxRetentionDeprecateDays sets RetentionDeprecateDays.
	CtxRetentionDeprecateDays = "kiln:retentionDeprecateDays"
	CtxLogRetentionDays       = "kiln:logRetentionDays"
)

// PropsFromContext reads KilnProps from the construct tree's context
// (the Ctx* keys). Unset keys stay zero, which NewKiln fills with defaults.
func PropsFromContext(node constructs.Node) (KilnProps, error) {
	var p KilnProps
	var errs []error
	str := func(key string) string {
		v := node.TryGetContext(&key)
		if v == nil {
			return ""
		}
		if s, ok := v.(string); ok {
			return strings.TrimSpace(s)
		}
		errs = append(errs, fmt.Errorf("context %s: want a string, got %v", key, v))
		return ""
	}
	list := func(key string) []string {
		v := node.TryGetContext(&key)
		switch v := v.(type) {
		case nil:
			return nil
		case []any:
			var out []string
			for _, x := range v {
				s, ok := x.(string)
				if !ok {
					errs = append(errs, fmt.Errorf("context %s: want strings, got %v", key, x))
					continue
				}
				out = append(out, strings.TrimSpace(s))
			}
			return out
		case string:
			v = strings.TrimSpace(v)
			if strings.HasPrefix(v, "[") {
				var out []string
				if err := json.Unmarshal([]byte(v), &out); err != nil {
					errs = append(errs, fmt.Errorf("context %s: %w", key, err))
				}
				return out
			}
			var out []string
			for _, s := range strings.Split(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					out = append(out, s)
				}
			}
			return out
		}
		errs = append(errs, fmt.Errorf("context %s: want a list, got %v", key, v))
		return nil
	}
	num := func(key string) int {
		v := node.TryGetContext(&key)
		switch v := v.(type) {
		case nil:
			return 0
		case float64:
			if v == float64(int(v)) && v > 0 {
				return int(v)
			}
		case string:
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
				return n
			}
		}
		errs = append(errs, fmt.Errorf("context %s: want a positive whole number, got %v", key, v))
		return 0
	}
	p.VPCID = str(CtxVPCID)
	p.SubnetIDs = list(CtxSubnetIDs)
	p.BuildSubnetID = str(CtxBuildSubnetID)
	p.Regions = list(CtxRegions)
	p.ParameterPrefix = str(CtxParameterPrefix)
	p.KeyPrefix = str(CtxKeyPrefix)
	p.CommandLogPrefix = str(CtxCommandLogPrefix)
	p.EventBus = str(CtxEventBus)
	p.DefaultTransport = str(CtxDefaultTransport)
	p.KMSKeyARN = str(CtxKMSKeyARN)
	p.RebuildSchedule = str(CtxRebuildSchedule)
	p.RetentionSchedule = str(CtxRetentionSchedule)
	p.ScheduleTimeZone = str(CtxScheduleTimeZone)
	p.RetentionKeep = num(CtxRetentionKeep)
	p.RetentionDays = num(CtxRetentionDays)
	p.RebuildMaxAgeDays = num(CtxRebuildMaxAgeDays)
	p.RetentionDeprecateDays = num(CtxRetentionDeprecateDays)
	p.LogRetentionDays = num(CtxLogRetentionDays)
	return p, errors.Join(errs...)
}

// withDefaults returns p with every unset field at its default.
func (p KilnProps) withDefaults() KilnProps {
	set := func(s *string, def string) {
		if *s == "" {
			*s = def
		}
	}
	setN := func(n *int, def int) {
		if *n == 0 {
			*n = def
		}
	}
	set(&p.ParameterPrefix, DefaultParameterPrefix)
	set(&p.KeyPrefix, DefaultKeyPrefix)
	set(&p.CommandLogPrefix, DefaultCommandLogPrefix)
	set(&p.EventBus, DefaultEventBus)
	set(&p.DefaultTransport, DefaultTransport)
	set(&p.RebuildSchedule, DefaultRebuildSchedule)
	set(&p.RetentionSchedule, DefaultRetentionSchedule)
	set(&p.ScheduleTimeZone, DefaultScheduleTimeZone)
	setN(&p.RetentionKeep, DefaultRetentionKeep)
	setN(&p.RetentionDays, DefaultRetentionDays)
	setN(&p.RebuildMaxAgeDays, DefaultRebuildMaxAgeDays)
	setN(&p.LogRetentionDays, DefaultLogRetentionDays)
	// The stages normalize their prefixes the same way (bake.Config).
	p.ParameterPrefix = "/" + strings.Trim(p.ParameterPrefix, "/")
	p.KeyPrefix = "/" + strings.Trim(p.KeyPrefix, "/")
	p.CommandLogPrefix = "/" + strings.Trim(p.CommandLogPrefix, "/")
	if p.BuildSubnetID == "" && len(p.SubnetIDs) > 0 {
		p.BuildSubnetID = p.SubnetIDs[0]
	}
	return p
}

var (
	regionRE     = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d$`)
	scheduleRE   = regexp.MustCompile(`^(cron|rate|at)\(.+\)$`)
	kmsKeyARNRE  = regexp.MustCompile(`^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$`)
	resourceIDRE = regexp.MustCompile(`^(vpc|subnet)-[0-9a-f]+$`)
	paramPathRE  = regexp.MustCompile(`^(/[A-Za-z0-9_.-]+)+$`)
	eventBusRE   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,256}$`)
)

// validate reports every problem of p (after withDefaults) at once.
func (p KilnProps) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if p.VPCID != "" && !resourceIDRE.MatchString(p.VPCID) {
		bad("vpc %q: want a VPC ID (vpc-...)", p.VPCID)
	}
	if p.VPCID != "" && len(p.SubnetIDs) == 0 {
		bad("vpc %s: name the provisioner's subnets in it (%s)", p.VPCID, CtxSubnetIDs)
	}
	if p.VPCID == "" && len(p.SubnetIDs) > 0 {
		bad("subnets %v: name their VPC too (%s)", p.SubnetIDs, CtxVPCID)
	}
	for _, s := range append(slices.Clone(p.SubnetIDs), p.BuildSubnetID) {
		if s != "" && !resourceIDRE.MatchString(s) {
			bad("subnet %q: want a subnet ID (subnet-...)", s)
		}
	}
	for _, r := range p.Regions {
		if !regionRE.MatchString(r) {
			bad("region %q: want a Region name such as us-east-1", r)
		}
	}
	for _, pp := range []string{p.ParameterPrefix, p.KeyPrefix, p.CommandLogPrefix} {
		if !paramPathRE.MatchString(pp) {
			bad("parameter prefix %q: want a path such as /kiln", pp)
		}
	}
	if p.KeyPrefix == p.ParameterPrefix {
		bad("key prefix %s: must differ from the parameter prefix, so that publishing AMI IDs cannot reach the login keys", p.KeyPrefix)
	}
	if !eventBusRE.MatchString(p.EventBus) {
		bad("event bus %q: want a bus name", p.EventBus)
	}
	if p.DefaultTransport != "ssh" && p.DefaultTransport != "session_manager" {
		bad("default transport %q: want ssh or session_manager", p.DefaultTransport)
	}
	if p.KMSKeyARN != "" && !kmsKeyARNRE.MatchString(p.KMSKeyARN) {
		bad("kms key %q: want a key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)", p.KMSKeyARN)
	}
	for _, s := range []string{p.RebuildSchedule, p.RetentionSchedule} {
		if !scheduleRE.MatchString(s) {
			bad("schedule %q: want cron(...), rate(...) or at(...)", s)
		}
	}
	if p.RetentionDeprecateDays >= p.RetentionDays {
		bad("deprecating %d days before deleting at %d days: want fewer days", p.RetentionDeprecateDays, p.RetentionDays)
	}
	if _, ok := retentionDays[p.LogRetentionDays]; !ok {
		bad("log retention %d days: want one of %v", p.LogRetentionDays, slices.Sorted(maps.Keys(retentionDays)))
	}
	return errors.Join(errs...)
}
