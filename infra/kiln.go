// Package infra is kiln's AWS CDK app: the Kiln construct that deploys the
// bakery (recipe bucket, stage Lambdas, state machine, provisioning network,
// schedules) and NewStack, which puts it alone in a stack configured from
// CDK context.
//
// The lifecycle is not built here: the state machine is
// statemachine/kiln.asl.json, deployed as it is with the stage functions'
// ARNs substituted.
package infra

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsscheduler"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/kiln-dev/kiln/infra/lambdabuild"
	"github.com/kiln-dev/kiln/statemachine"
)

// Stage is one of kiln's functions (a stage the state machine calls, or a
// scheduled job) and how it runs.
type Stage struct {
	// Name is the function's directory under functions/ and the name the
	// definition's placeholder is derived from (statemachine.Functions).
	Name string
	// TimeoutSeconds is the Lambda timeout: the longest TimeoutSeconds of
	// the definition's tasks that call this function.
	TimeoutSeconds int
	// MemoryMB is the Lambda memory size.
	MemoryMB int
	// InVPC puts the function in the provisioning network.
	InVPC bool
}

// Stages are the stage functions in lifecycle order, as
// statemachine.Functions lists them. launch also runs the plan step, and
// launch and provision hold whole recipe bundles (up to 64 MiB compressed)
// in memory; provision is the only one that reaches build instances, over
// SSH, so the only one in the VPC.
var Stages = []Stage{
	{Name: "launch", TimeoutSeconds: 300, MemoryMB: 1024},
	{Name: "provision", TimeoutSeconds: 900, MemoryMB: 1024, InVPC: true},
	{Name: "snapshot", TimeoutSeconds: 120, MemoryMB: 256},
	{Name: "distribute", TimeoutSeconds: 300, MemoryMB: 256},
	{Name: "cleanup", TimeoutSeconds: 300, MemoryMB: 256},
}

// Jobs are the scheduled functions, deployed with their schedules only
// where functions/<name> exists. rebuild evaluates every recipe (bundles
// in memory, as launch does); retention only reads and deletes.
var Jobs = []Stage{
	{Name: "rebuild", TimeoutSeconds: 900, MemoryMB: 1024},
	{Name: "retention", TimeoutSeconds: 900, MemoryMB: 256},
}

// Environment variables the functions read (bake.ConfigFromEnv, and the
// jobs' settings).
const (
	EnvBucket                   = "KILN_BUCKET"
	EnvProvisionerSecurityGroup = "KILN_PROVISIONER_SECURITY_GROUP"
	EnvSubnetID                 = "KILN_SUBNET_ID"
	EnvInstanceSecurityGroup    = "KILN_INSTANCE_SECURITY_GROUP"
	EnvIsolatedSecurityGroup    = "KILN_ISOLATED_SECURITY_GROUP"
	EnvInstanceProfile          = "KILN_INSTANCE_PROFILE"
	EnvParameterPrefix          = "KILN_PARAMETER_PREFIX"
	EnvKeyPrefix                = "KILN_KEY_PREFIX"
	EnvCommandLogPrefix         = "KILN_COMMAND_LOG_PREFIX"
	EnvEventBus                 = "KILN_EVENT_BUS"
	EnvDefaultTransport         = "KILN_DEFAULT_TRANSPORT"
	EnvStateMachineARN          = "KILN_STATE_MACHINE_ARN"
	EnvRetentionKeep            = "KILN_RETENTION_KEEP"
	EnvRetentionDays            = "KILN_RETENTION_DAYS"
	EnvRebuildMaxAgeDays        = "KILN_REBUILD_MAX_AGE_DAYS"
	EnvRetentionDeprecateDays   = "KILN_RETENTION_DEPRECATE_DAYS"
	EnvRegions                  = "KILN_REGIONS"
)

// RecipePrefix is where recipes are uploaded in the bucket; an upload
// there starts a bake.
const RecipePrefix = "recipes/"

// TagStage names the stage (or job) on each function.
const TagStage = "kiln:stage"

// What the stages put on resources and events, as pkg/bake defines them
// (TagBuild, EventSource, EventImageBaked; a test checks they agree).
// infra does not import pkg/bake: that would tie this module's go.sum to
// every dependency the stages add.
const (
	// TagBuild is on everything a bake creates; the IAM conditions rely
	// on it.
	TagBuild = "kiln:build"
	// EventSource and EventImageBaked are the source and detail type of
	// the event announcing a bake's AMIs.
	EventSource     = "kiln"
	EventImageBaked = "kiln.image.baked"
	// EventRebuildDecisions and EventRetentionDecisions are the detail
	// types of the scheduled jobs' reports.
	EventRebuildDecisions   = "kiln.rebuild.decisions"
	EventRetentionDecisions = "kiln.retention.decisions"
)

// Kiln is a deployed kiln: upload a recipe (a template or a bundle) under
// recipes/ in Bucket and the state machine bakes that object version into
// an AMI.
//
// S3 sends "Object Created" to EventBridge, whose rule starts the state
// machine directly with {"recipe":{"bucket","key","version"}}. EventBridge
// delivers at least once, so a repeated event can start a second execution
// for the same object version; the definition handles that itself: its
// Plan step derives the build ID from the recipe version, claims
// builds/<build ID>/claim with a conditional put (If-None-Match), and a
// second execution that finds the claim taken ends in the AlreadyBaking
// Succeed state before creating anything. No queue or deduplicating
// function is needed in between.
type Kiln struct {
	constructs.Construct

	// Bucket holds recipes (recipes/), plans, claims, manifests and staged
	// files (builds/<build ID>/).
	Bucket awss3.Bucket
	// StateMachine runs a bake; StateMachineLogs is its log group.
	StateMachine     awsstepfunctions.StateMachine
	StateMachineLogs awslogs.LogGroup
	// Functions and LogGroups are the stage (and job) functions by name.
	Functions map[string]awslambda.Function
	LogGroups map[string]awslogs.LogGroup
	// Roles are the functions' execution roles by name.
	Roles map[string]awsiam.Role
	// RecipeRule starts a bake for each recipe uploaded; RecipeDeadLetters
	// keeps the events it could not deliver.
	RecipeRule        awsevents.Rule
	RecipeDeadLetters awssqs.Queue
	// Network is where provisioning and builds run.
	Network *Network
	// BuildRole and BuildInstanceProfile are the build instances' (with
	// the session_manager transport).
	BuildRole            awsiam.Role
	BuildInstanceProfile awsiam.InstanceProfile
	// Schedules are the rebuild and retention schedules by job name; empty
	// until functions/rebuild and functions/retention exist.
	Schedules map[string]awsscheduler.CfnSchedule
	// Artifacts are the functions' deployment packages.
	Artifacts []lambdabuild.Artifact
	// Props are the settings in effect, defaults filled in.
	Props KilnProps
}

// NewKiln builds the functions from source and defines kiln's resources
// under scope. props may be nil for the defaults. It panics, as CDK
// constructs do, on invalid props and when a function does not build (for
// instance because functions/<stage> has no source yet), with an error
// naming the problem.
func NewKiln(scope constructs.Construct, id string, props *KilnProps) *Kiln {
	var p KilnProps
	if props != nil {
		p = *props
	}
	p = p.withDefaults()
	if err := p.validate(); err != nil {
		panic(fmt.Errorf("kiln: %w", err))
	}
	if p.SourceDir == "" {
		dir, err := findSourceDir()
		if err != nil {
			panic(fmt.Errorf("kiln: %w", err))
		}
		p.SourceDir = dir
	}
	if p.BuildDir == "" {
		p.BuildDir = filepath.Join(p.SourceDir, "dist", "lambdas")
	}

	names := make([]string, 0, len(Stages)+len(Jobs))
	for _, s := range Stages {
		names = append(names, s.Name)
	}
	var jobs []Stage
	for _, j := range Jobs {
		if lambdabuild.Has(p.SourceDir, j.Name) {
			jobs = append(jobs, j)
			names = append(names, j.Name)
		}
	}
	artifacts, err := lambdabuild.Build(p.SourceDir, p.BuildDir, names)
	if err != nil {
		panic(fmt.Errorf("kiln: %w", err))
	}
	zips := map[string]string{}
	for _, a := range artifacts {
		zips[a.Name] = a.Zip
	}

	k := &Kiln{
		Construct: constructs.NewConstruct(scope, jsii.String(id)),
		Functions: map[string]awslambda.Function{},
		LogGroups: map[string]awslogs.LogGroup{},
		Roles:     map[string]awsiam.Role{},
		Schedules: map[string]awsscheduler.CfnSchedule{},
		Artifacts: artifacts,
		Props:     p,
	}
	stack := awscdk.Stack_Of(k.Construct)

	var key awskms.IKey
	if p.KMSKeyARN != "" {
		key = awskms.Key_FromKeyArn(k.Construct, jsii.String("Key"), jsii.String(p.KMSKeyARN))
	}
	k.Bucket = newBucket(k.Construct, key)
	k.Network = newNetwork(k.Construct, p)

	res := resources{
		props:    p,
		bucket:   *k.Bucket.BucketArn(),
		eventBus: *stack.FormatArn(&awscdk.ArnComponents{Service: jsii.String("events"), Resource: jsii.String("event-bus"), ResourceName: jsii.String(p.EventBus)}),
		kmsKey:   p.KMSKeyARN,
	}
	k.BuildRole = awsiam.NewRole(k.Construct, jsii.String("BuildInstanceRole"), &awsiam.RoleProps{
		AssumedBy:      awsiam.NewServicePrincipal(jsii.String("ec2.amazonaws.com"), nil),
		Description:    jsii.String("kiln build instances (session_manager transport): SSM Run Command and its output"),
		InlinePolicies: &map[string]awsiam.PolicyDocument{"build-instance": policyDocument(res.inRegions(res.buildInstancePolicy()))},
	})
	k.BuildInstanceProfile = awsiam.NewInstanceProfile(k.Construct, jsii.String("BuildInstanceProfile"), &awsiam.InstanceProfileProps{Role: k.BuildRole})
	res.buildRole = *k.BuildRole.RoleArn()

	env := map[string]*string{
		EnvBucket:                   k.Bucket.BucketName(),
		EnvProvisionerSecurityGroup: k.Network.ProvisionerSecurityGroup.SecurityGroupId(),
		EnvSubnetID:                 k.Network.BuildSubnetID,
		EnvInstanceSecurityGroup:    k.Network.InstanceSecurityGroup.SecurityGroupId(),
		EnvIsolatedSecurityGroup:    k.Network.IsolatedSecurityGroup.SecurityGroupId(),
		EnvInstanceProfile:          k.BuildInstanceProfile.InstanceProfileArn(),
		EnvParameterPrefix:          jsii.String(p.ParameterPrefix),
		EnvKeyPrefix:                jsii.String(p.KeyPrefix),
		EnvCommandLogPrefix:         jsii.String(p.CommandLogPrefix),
		EnvEventBus:                 jsii.String(p.EventBus),
		EnvDefaultTransport:         jsii.String(p.DefaultTransport),
	}
	policies := map[string][]statement{
		"launch":     res.launchPolicy(),
		"provision":  append(res.provisionPolicy(), res.provisionNetworkPolicy()...),
		"snapshot":   res.snapshotPolicy(),
		"distribute": res.distributePolicy(),
		"cleanup":    res.cleanupPolicy(),
	}
	subs := map[string]*string{}
	for _, s := range Stages {
		fn := k.newFunction(s, zips[s.Name], env, res.inRegions(policies[s.Name]))
		subs[statemachine.PlaceholderName(s.Name)] = fn.FunctionArn()
	}
	k.newStateMachine(subs)
	k.newRecipeRule()

	if len(jobs) > 0 {
		jobEnv := map[string]*string{
			EnvStateMachineARN:   k.StateMachine.StateMachineArn(),
			EnvRetentionKeep:     jsii.String(fmt.Sprint(p.RetentionKeep)),
			EnvRetentionDays:     jsii.String(fmt.Sprint(p.RetentionDays)),
			EnvRebuildMaxAgeDays: jsii.String(fmt.Sprint(p.RebuildMaxAgeDays)),
		}
		if p.RetentionDeprecateDays > 0 {
			jobEnv[EnvRetentionDeprecateDays] = jsii.String(fmt.Sprint(p.RetentionDeprecateDays))
		}
		// Retention looks for images in these Regions; without them, in
		// its own Region only.
		if len(p.Regions) > 0 {
			jobEnv[EnvRegions] = jsii.String(strings.Join(p.Regions, ","))
		}
		for name, v := range env {
			jobEnv[name] = v
		}
		executions := stack.FormatArn(&awscdk.ArnComponents{
			Service: jsii.String("states"), Resource: jsii.String("execution"),
			ResourceName: jsii.String(*k.StateMachine.StateMachineName() + ":*"), ArnFormat: awscdk.ArnFormat_COLON_RESOURCE_NAME,
		})
		jobPolicies := map[string][]statement{
			"rebuild":   res.rebuildPolicy(*k.StateMachine.StateMachineArn(), *executions),
			"retention": res.retentionPolicy(),
		}
		expressions := map[string]string{"rebuild": p.RebuildSchedule, "retention": p.RetentionSchedule}
		for _, j := range jobs {
			fn := k.newFunction(j, zips[j.Name], jobEnv, res.inRegions(jobPolicies[j.Name]))
			k.newSchedule(j.Name, expressions[j.Name], fn)
		}
	}
	k.addOutputs(id)
	return k
}

// newBucket makes the recipe bucket: versioned (a build reads the exact
// object version it was started for), encrypted, private, TLS only, and
// sending its events to EventBridge.
func newBucket(scope constructs.Construct, key awskms.IKey) awss3.Bucket {
	props := &awss3.BucketProps{
		Versioned:         jsii.Bool(true),
		Encryption:        awss3.BucketEncryption_S3_MANAGED,
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		EnforceSSL:        jsii.Bool(true),
		ObjectOwnership:   awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
		RemovalPolicy:     awscdk.RemovalPolicy_RETAIN,
		LifecycleRules: &[]*awss3.LifecycleRule{{
			Id:                                  jsii.String("expire-old-versions"),
			NoncurrentVersionExpiration:         awscdk.Duration_Days(jsii.Number(90)),
			AbortIncompleteMultipartUploadAfter: awscdk.Duration_Days(jsii.Number(7)),
		}},
	}
	if key != nil {
		props.Encryption = awss3.BucketEncryption_KMS
		props.EncryptionKey = key
		props.BucketKeyEnabled = jsii.Bool(true)
	}
	b := awss3.NewBucket(scope, jsii.String("Bucket"), props)
	// CloudFormation turns EventBridge notifications on natively; the
	// CDK's eventBridgeEnabled would add a custom resource (a Lambda with
	// s3:PutBucketNotification on every bucket) to do the same.
	b.Node().DefaultChild().(awss3.CfnBucket).AddPropertyOverride(
		jsii.String("NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled"), jsii.Bool(true))
	return b
}

// newFunction makes a function with its own role (allowing only stmts and
// writing its own log group) and log group.
func (k *Kiln) newFunction(s Stage, zip string, env map[string]*string, stmts []statement) awslambda.Function {
	id := titled(s.Name)
	logs := awslogs.NewLogGroup(k.Construct, jsii.String(id+"Logs"), &awslogs.LogGroupProps{
		Retention:     retentionDays[k.Props.LogRetentionDays],
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	role := awsiam.NewRole(k.Construct, jsii.String(id+"Role"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
		Description: jsii.String("kiln " + s.Name + ": only the calls the " + s.Name + " stage makes"),
		InlinePolicies: &map[string]awsiam.PolicyDocument{
			s.Name: policyDocument(append(stmts, writeLogs(*logs.LogGroupArn()))),
		},
	})
	props := &awslambda.FunctionProps{
		Description:           jsii.String("kiln " + s.Name),
		Runtime:               awslambda.Runtime_PROVIDED_AL2023(),
		Architecture:          awslambda.Architecture_ARM_64(),
		Handler:               jsii.String("bootstrap"),
		Code:                  awslambda.Code_FromAsset(jsii.String(zip), nil),
		Timeout:               awscdk.Duration_Seconds(jsii.Number(s.TimeoutSeconds)),
		MemorySize:            jsii.Number(s.MemoryMB),
		Role:                  role,
		Environment:           &env,
		LogGroup:              logs,
		LoggingFormat:         awslambda.LoggingFormat_JSON,
		ApplicationLogLevelV2: awslambda.ApplicationLogLevel_INFO,
		SystemLogLevelV2:      awslambda.SystemLogLevel_INFO,
	}
	if s.InVPC {
		props.Vpc = k.Network.Vpc
		props.VpcSubnets = k.Network.ProvisionerSubnets
		props.SecurityGroups = &[]awsec2.ISecurityGroup{k.Network.ProvisionerSecurityGroup}
	}
	fn := awslambda.NewFunction(k.Construct, jsii.String(id+"Function"), props)
	awscdk.Tags_Of(fn).Add(jsii.String(TagStage), jsii.String(s.Name), nil)
	k.Functions[s.Name] = fn
	k.LogGroups[s.Name] = logs
	k.Roles[s.Name] = role
	return fn
}

// newStateMachine deploys statemachine/kiln.asl.json as it is, with the
// stage functions' ARNs as its definition substitutions, logging every
// state to CloudWatch Logs and tracing with X-Ray.
func (k *Kiln) newStateMachine(subs map[string]*string) {
	k.StateMachineLogs = awslogs.NewLogGroup(k.Construct, jsii.String("StateMachineLogs"), &awslogs.LogGroupProps{
		// Under /aws/vendedlogs/ the log delivery needs no per-group
		// resource policy (which is limited in size).
		LogGroupName:  awscdk.Fn_Sub(jsii.String("/aws/vendedlogs/states/${AWS::StackName}-"+*k.Node().Id()), nil),
		Retention:     retentionDays[k.Props.LogRetentionDays],
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	k.StateMachine = awsstepfunctions.NewStateMachine(k.Construct, jsii.String("StateMachine"), &awsstepfunctions.StateMachineProps{
		Comment:                 jsii.String("kiln: bake an AMI from a Packer recipe"),
		StateMachineType:        awsstepfunctions.StateMachineType_STANDARD,
		DefinitionBody:          awsstepfunctions.DefinitionBody_FromString(jsii.String(string(statemachine.Definition()))),
		DefinitionSubstitutions: &subs,
		TracingEnabled:          jsii.Bool(true),
		Logs: &awsstepfunctions.LogOptions{
			Destination:          k.StateMachineLogs,
			Level:                awsstepfunctions.LogLevel_ALL,
			IncludeExecutionData: jsii.Bool(true),
		},
	})
	for _, s := range Stages {
		k.StateMachine.AddToRolePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
			Sid:       jsii.String("Invoke" + titled(s.Name)),
			Actions:   jsii.Strings("lambda:InvokeFunction"),
			Resources: jsii.Strings(*k.Functions[s.Name].FunctionArn()),
		}))
	}
}

// newRecipeRule starts the state machine for every object created under
// recipes/, with that object's version (see Kiln on repeated events).
func (k *Kiln) newRecipeRule() {
	k.RecipeDeadLetters = awssqs.NewQueue(k.Construct, jsii.String("RecipeDeadLetters"), &awssqs.QueueProps{
		Encryption:      awssqs.QueueEncryption_SQS_MANAGED,
		EnforceSSL:      jsii.Bool(true),
		RetentionPeriod: awscdk.Duration_Days(jsii.Number(14)),
	})
	field := func(path string) *string { return awsevents.EventField_FromPath(jsii.String(path)) }
	k.RecipeRule = awsevents.NewRule(k.Construct, jsii.String("RecipeUploaded"), &awsevents.RuleProps{
		Description: jsii.String("kiln: bake each recipe uploaded under " + RecipePrefix),
		EventPattern: &awsevents.EventPattern{
			Source:     jsii.Strings("aws.s3"),
			DetailType: jsii.Strings("Object Created"),
			Detail: &map[string]any{
				"bucket": map[string]any{"name": []any{k.Bucket.BucketName()}},
				"object": map[string]any{"key": []any{map[string]any{"prefix": RecipePrefix}}},
			},
		},
		Targets: &[]awsevents.IRuleTarget{awseventstargets.NewSfnStateMachine(k.StateMachine, &awseventstargets.SfnStateMachineProps{
			Input: awsevents.RuleTargetInput_FromObject(map[string]any{
				"recipe": map[string]any{
					"bucket":  field("$.detail.bucket.name"),
					"key":     field("$.detail.object.key"),
					"version": field("$.detail.object.version-id"),
				},
			}),
			DeadLetterQueue: k.RecipeDeadLetters,
		})},
	})
}

// newSchedule starts fn on expression (EventBridge Scheduler) with
// {"job": name}.
func (k *Kiln) newSchedule(name, expression string, fn awslambda.Function) {
	id := titled(name)
	role := awsiam.NewRole(k.Construct, jsii.String(id+"ScheduleRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("scheduler.amazonaws.com"), &awsiam.ServicePrincipalOpts{
			Conditions: &map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()}},
		}),
		Description: jsii.String("kiln: the " + name + " schedule invokes its function"),
		InlinePolicies: &map[string]awsiam.PolicyDocument{"invoke": policyDocument([]statement{{
			sid: "Invoke" + id, actions: []string{"lambda:InvokeFunction"}, resources: []*string{fn.FunctionArn()},
		}})},
	})
	input, _ := json.Marshal(map[string]string{"job": name})
	k.Schedules[name] = awsscheduler.NewCfnSchedule(k.Construct, jsii.String(id+"Schedule"), &awsscheduler.CfnScheduleProps{
		Description:                jsii.String("kiln: " + name),
		ScheduleExpression:         jsii.String(expression),
		ScheduleExpressionTimezone: jsii.String(k.Props.ScheduleTimeZone),
		FlexibleTimeWindow:         &awsscheduler.CfnSchedule_FlexibleTimeWindowProperty{Mode: jsii.String("OFF")},
		State:                      jsii.String("ENABLED"),
		Target: &awsscheduler.CfnSchedule_TargetProperty{
			Arn:         fn.FunctionArn(),
			RoleArn:     role.RoleArn(),
			Input:       jsii.String(string(input)),
			RetryPolicy: &awsscheduler.CfnSchedule_RetryPolicyProperty{MaximumRetryAttempts: jsii.Number(2)},
		},
	})
}

// addOutputs names, as stack outputs, what users of the deployment need:
// where to upload, what runs the bakes, where to read their logs, and where
// the AMI IDs are published.
func (k *Kiln) addOutputs(id string) {
	out := func(name, description string, value *string) {
		o := awscdk.NewCfnOutput(k.Construct, jsii.String(name+"Output"), &awscdk.CfnOutputProps{Value: value, Description: jsii.String(description)})
		o.OverrideLogicalId(jsii.String(id + name))
	}
	p := k.Props
	out("BucketName", "Upload recipes to s3://<bucket>/"+RecipePrefix+" to bake them", k.Bucket.BucketName())
	out("StateMachineArn", "The state machine that runs each bake", k.StateMachine.StateMachineArn())
	out("StateMachineLogGroup", "Every bake's state transitions", k.StateMachineLogs.LogGroupName())
	for _, name := range k.functionNames() {
		out(titled(name)+"LogGroup", "The "+name+" function's JSON logs", k.LogGroups[name].LogGroupName())
	}
	out("ParameterPrefix", "Each recipe's newest AMI ID is the SSM parameter <prefix>/<recipe>/latest in each of its Regions", jsii.String(p.ParameterPrefix))
	out("EventBus", "The bus that receives an event for every bake", jsii.String(p.EventBus))
	out("EventSource", "The source of kiln's events", jsii.String(EventSource))
	out("EventDetailType", "The detail type of the event announcing a bake's AMIs", jsii.String(EventImageBaked))
	if _, ok := k.Functions["rebuild"]; ok {
		out("RebuildEventDetailType", "The detail type of the rebuild job's report", jsii.String(EventRebuildDecisions))
	}
	if _, ok := k.Functions["retention"]; ok {
		out("RetentionEventDetailType", "The detail type of the retention job's report", jsii.String(EventRetentionDecisions))
	}
	out("ProvisionerSecurityGroup", "The only source build instances admit SSH from", k.Network.ProvisionerSecurityGroup.SecurityGroupId())
	out("InstanceSecurityGroup", "Build instances' group (SSH transport): SSH from the provisioner only", k.Network.InstanceSecurityGroup.SecurityGroupId())
	out("IsolatedSecurityGroup", "Build instances' group (session_manager, none): no inbound traffic", k.Network.IsolatedSecurityGroup.SecurityGroupId())
	out("BuildSubnet", "Where build instances run when a recipe names no subnet", k.Network.BuildSubnetID)
	out("BuildInstanceProfile", "The build instances' profile (session_manager transport)", k.BuildInstanceProfile.InstanceProfileArn())
}

// functionNames are the names of the deployed functions, stages first.
func (k *Kiln) functionNames() []string {
	var names []string
	for _, s := range append(append([]Stage(nil), Stages...), Jobs...) {
		if _, ok := k.Functions[s.Name]; ok {
			names = append(names, s.Name)
		}
	}
	return names
}

// retentionDays maps the log retention periods CloudWatch Logs accepts to
// the CDK's names for them.
var retentionDays = map[int]awslogs.RetentionDays{
	1: awslogs.RetentionDays_ONE_DAY, 3: awslogs.RetentionDays_THREE_DAYS, 5: awslogs.RetentionDays_FIVE_DAYS,
	7: awslogs.RetentionDays_ONE_WEEK, 14: awslogs.RetentionDays_TWO_WEEKS, 30: awslogs.RetentionDays_ONE_MONTH,
	60: awslogs.RetentionDays_TWO_MONTHS, 90: awslogs.RetentionDays_THREE_MONTHS, 120: awslogs.RetentionDays_FOUR_MONTHS,
	150: awslogs.RetentionDays_FIVE_MONTHS, 180: awslogs.RetentionDays_SIX_MONTHS, 365: awslogs.RetentionDays_ONE_YEAR,
	400: awslogs.RetentionDays_THIRTEEN_MONTHS, 545: awslogs.RetentionDays_EIGHTEEN_MONTHS, 731: awslogs.RetentionDays_TWO_YEARS,
	1096: awslogs.RetentionDays_THREE_YEARS, 1827: awslogs.RetentionDays_FIVE_YEARS, 2192: awslogs.RetentionDays_SIX_YEARS,
	2557: awslogs.RetentionDays_SEVEN_YEARS, 2922: awslogs.RetentionDays_EIGHT_YEARS, 3288: awslogs.RetentionDays_NINE_YEARS,
	3653: awslogs.RetentionDays_TEN_YEARS,
}

// kilnModule is the module whose functions/ the stack builds.
const kilnModule = "github.com/kiln-dev/kiln"

// findSourceDir finds the kiln module's directory: the main module's
// dependency (or replacement) as `go list -m` sees it from here, else the
// nearest enclosing directory whose go.mod declares kilnModule.
func findSourceDir() (string, error) {
	cmd := exec.Command(lambdabuild.GoTool(), "list", "-m", "-f", "{{.Dir}}", kilnModule)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err == nil {
		if dir := strings.TrimSpace(out.String()); dir != "" {
			return dir, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find kiln's source: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(b) == kilnModule {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	return "", fmt.Errorf("find kiln's source: %s is not a dependency here (go list -m: %s) and no enclosing directory of %s is its module; set KilnProps.SourceDir",
		kilnModule, strings.TrimSpace(stderr.String()), wd)
}

// modulePath returns the module path a go.mod declares.
func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}
