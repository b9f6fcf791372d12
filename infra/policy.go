package infra

import (
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/jsii-runtime-go"
)

// Each stage's role allows exactly the calls that its unexported API
// interface in pkg/bake lists (launchAPI, provisionSSM, snapshotAPI,
// distributeEC2API, cleanupAPI and their S3, SSM and EventBridge
// companions), on the narrowest resources those calls take:
//
//   - Describe* calls do not support resource-level permissions and take
//     Resource "*" (ResourceStarActions lists every such action kiln uses).
//   - Calls that destroy or change an existing resource (terminate, stop,
//     delete, deregister, modify, and tagging outside creation) are
//     allowed only on resources carrying kiln:build, which kiln puts on
//     everything it creates at creation. The condition is on the tag's
//     presence: a role serves every build, and IAM cannot know which
//     build a call is for.
//   - Calls that create a resource are allowed only when the request tags
//     it with kiln:build (TagSpecifications), and CreateTags only as part of
//     such a creation (ec2:CreateAction) or on a resource already tagged.
//   - The login and host keys (SecureStrings under KeyPrefix) are written
//     and read by launch and deleted by cleanup; provision reads the login
//     keys only; no other role can read them, and cleanup, which lists
//     them, cannot decrypt them.
//
// See https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html
// and https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html.

// ResourceStarActions are the actions kiln's policies allow on Resource
// "*" because AWS does not support resource-level permissions for them.
// Every other action names its resources.
var ResourceStarActions = []string{
	// EC2 Describe* calls: "*" only (Service Authorization Reference).
	"ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeKeyPairs",
	"ec2:DescribeSecurityGroups", "ec2:DescribeSnapshots", "ec2:DescribeSubnets",
	"ec2:DescribeVpcs", "ec2:DescribeNetworkInterfaces", "ec2:DescribeLaunchTemplateVersions",
	"ec2:DescribeVolumes",
	// SSM Run Command's reads and CancelCommand (session_manager): no
	// resource types (Service Authorization Reference).
	"ssm:DescribeInstanceInformation", "ssm:ListCommands", "ssm:GetCommandInvocation", "ssm:CancelCommand",
	// The channels SSM Agent polls on a build instance (session_manager).
	"ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage",
	"ec2messages:GetEndpoint", "ec2messages:GetMessages", "ec2messages:SendReply",
	"ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
	"ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel",
	// Step Functions' X-Ray tracing and CloudWatch Logs delivery, which the
	// CDK's StateMachine adds (vended logs are set up account-wide).
	"xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
	"logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
	"logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
}

// RunCommandDocument is the only SSM document kiln's provisioning sends.
const RunCommandDocument = "AWS-RunShellScript"

// DestructiveEC2Actions are the EC2 actions that destroy or change
// existing resources; kiln allows each only on resources tagged kiln:build.
var DestructiveEC2Actions = []string{
	"ec2:TerminateInstances", "ec2:StopInstances", "ec2:ModifyInstanceAttribute",
	"ec2:DeleteSecurityGroup", "ec2:AuthorizeSecurityGroupIngress", "ec2:DeleteKeyPair",
	"ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:ModifyImageAttribute",
	"ec2:ModifySnapshotAttribute", "ec2:EnableImageDeprecation", "ec2:DeleteVolume",
}

// CreatingEC2Actions map the EC2 actions that create resources to the
// resource types they create; on those, kiln requires kiln:build in the
// request's tags.
var CreatingEC2Actions = map[string][]string{
	"ec2:RunInstances":        {"instance", "volume"},
	"ec2:CreateSecurityGroup": {"security-group"},
	"ec2:ImportKeyPair":       {"key-pair"},
	"ec2:CreateImage":         {"image", "snapshot"},
	"ec2:CopyImage":           {"image", "snapshot"},
}

// statement is one IAM policy statement, before it becomes a CDK one.
type statement struct {
	sid        string
	deny       bool
	actions    []string
	resources  []*string
	conditions map[string]any
	// stackRegion marks calls made only in the stack's Region.
	stackRegion bool
}

func (s statement) policyStatement() awsiam.PolicyStatement {
	effect := awsiam.Effect_ALLOW
	if s.deny {
		effect = awsiam.Effect_DENY
	}
	props := &awsiam.PolicyStatementProps{
		Sid:       jsii.String(s.sid),
		Effect:    effect,
		Actions:   jsii.Strings(s.actions...),
		Resources: &s.resources,
	}
	if s.conditions != nil {
		props.Conditions = &s.conditions
	}
	return awsiam.NewPolicyStatement(props)
}

// policyDocument builds a policy document from statements.
func policyDocument(stmts []statement) awsiam.PolicyDocument {
	var ps []awsiam.PolicyStatement
	for _, s := range stmts {
		ps = append(ps, s.policyStatement())
	}
	return awsiam.NewPolicyDocument(&awsiam.PolicyDocumentProps{Statements: &ps})
}

// Conditions shared by the statements.
var (
	// onKilnResource: the resource carries kiln:build.
	onKilnResource = map[string]any{"Null": map[string]any{"aws:ResourceTag/" + TagBuild: "false"}}
	// taggedAtCreation: the request tags what it creates with kiln:build.
	taggedAtCreation = map[string]any{"Null": map[string]any{"aws:RequestTag/" + TagBuild: "false"}}
)

// whileCreating allows CreateTags only as part of the given creating calls.
func whileCreating(actions ...string) map[string]any {
	return map[string]any{"StringEquals": map[string]any{"ec2:CreateAction": actions}}
}

// resources names the ARNs of the deployment's resources for the policies.
type resources struct {
	props  KilnProps
	bucket string // the bucket's ARN (a token)
	// buildRole is the build instances' role ARN; eventBus the bus ARN.
	buildRole, eventBus string
	// kmsKey is KilnProps.KMSKeyARN: "" for no KMS permission at all.
	kmsKey string
}

// inRegions limits the statements that call EC2 and Parameter Store in
// any Region to the configured Regions (aws:RequestedRegion); without
// configured Regions it returns stmts as they are.
func (r resources) inRegions(stmts []statement) []statement {
	if len(r.props.Regions) == 0 {
		return stmts
	}
	out := make([]statement, 0, len(stmts))
	for _, s := range stmts {
		if s.deny || !s.anyRegion() {
			out = append(out, s)
			continue
		}
		conds := map[string]any{}
		for op, body := range s.conditions {
			conds[op] = body
		}
		eq := map[string]any{}
		if prev, ok := conds["StringEquals"].(map[string]any); ok {
			for k, v := range prev {
				eq[k] = v
			}
		}
		eq["aws:RequestedRegion"] = r.props.Regions
		conds["StringEquals"] = eq
		s.conditions = conds
		out = append(out, s)
	}
	return out
}

// anyRegion reports whether s calls EC2 or Parameter Store in whatever
// Region a build uses.
func (s statement) anyRegion() bool {
	if s.stackRegion {
		return false
	}
	for _, a := range s.actions {
		if !strings.HasPrefix(a, "ec2:") && !strings.HasPrefix(a, "ssm:") {
			return false
		}
	}
	return true
}

// sub is a Fn::Sub string, which keeps the ARN readable in the template.
func sub(s string) *string { return awscdk.Fn_Sub(jsii.String(s), nil) }

// Regional ARNs name every Region ("*"): the configured Regions narrow
// the statements with a condition instead (inRegions), which keeps the
// policies' size the same however many Regions there are (a role's inline
// policies may total 10,240 characters).

// ec2 returns the ARNs of EC2 resources of the given types. Images and
// snapshots have no account in their ARNs.
func (r resources) ec2(types ...string) []*string {
	var out []*string
	for _, t := range types {
		account := "${AWS::AccountId}"
		if t == "image" || t == "snapshot" {
			account = ""
		}
		out = append(out, sub(fmt.Sprintf("arn:${AWS::Partition}:ec2:*:%s:%s/*", account, t)))
	}
	return out
}

// parameters returns the ARNs of the SSM parameters matching path (which
// starts with "/").
func (r resources) parameters(path string) []*string {
	return []*string{sub("arn:${AWS::Partition}:ssm:*:${AWS::AccountId}:parameter" + path)}
}

// publicParameters are AWS's public parameters (such as the latest Amazon
// Linux AMI), which recipes' amazon-parameterstore data sources read.
func (r resources) publicParameters() []*string {
	return []*string{sub("arn:${AWS::Partition}:ssm:*::parameter/aws/service/*")}
}

// keyParameters are the parameters of the builds' login and host keys.
func (r resources) keyParameters() []*string { return r.parameters(r.props.KeyPrefix + "/*") }

// loginKeyParameters are the login keys alone (<KeyPrefix>/<build>/ssh-key),
// which provisioning reads; the host keys next to them are launch's, kept
// only so that a rerun of launch sends the same user data.
func (r resources) loginKeyParameters() []*string {
	return r.parameters(r.props.KeyPrefix + "/*/ssh-key")
}

// amiParameters are the parameters that publish AMI IDs:
// <prefix>/<recipe>/latest, or <prefix>/<recipe>/<build>/latest.
func (r resources) amiParameters() []*string {
	return r.parameters(r.props.ParameterPrefix + "/*/latest")
}

// commandLogs are the ARNs of the builds' command output log groups
// (<CommandLogPrefix>/<build>) and their streams.
func (r resources) commandLogs() []*string {
	return []*string{sub("arn:${AWS::Partition}:logs:*:${AWS::AccountId}:log-group:" + r.props.CommandLogPrefix + "/*")}
}

// objects returns the ARNs of the bucket's objects matching the patterns.
func (r resources) objects(patterns ...string) []*string {
	var out []*string
	for _, p := range patterns {
		out = append(out, jsii.String(r.bucket+"/"+p))
	}
	return out
}

func star() []*string { return []*string{jsii.String("*")} }

func one(s string) []*string { return []*string{jsii.String(s)} }

// Objects in the bucket, by who reads and writes them.
const (
	recipeObjects   = "recipes/*"
	planObjects     = "builds/*/plan.json"
	claimObjects    = "builds/*/claim"
	manifestObjects = "builds/*/manifest.json"
	stagedObjects   = "builds/*/staged/*"
	// timingsObjects are what each recipe build's bakes took (written by
	// publish, read by the next plan: bake.TimingsKey).
	timingsObjects = "timings/*"
)

// listBucket lets a stage tell a missing object from a forbidden one: S3
// answers 403 rather than 404 for a missing key to a caller without
// s3:ListBucket, and the stages treat "not found" as "not yet"
// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html).
func (r resources) listBucket() statement {
	return statement{sid: "ListBucketForNotFound", actions: []string{"s3:ListBucket"}, resources: one(r.bucket)}
}

// readPlan lets a stage read stored plans.
func (r resources) readPlan() statement {
	return statement{sid: "ReadPlans", actions: []string{"s3:GetObject"}, resources: r.objects(planObjects)}
}

// readRecipes lets a stage read recipe objects at their versions.
func (r resources) readRecipes() statement {
	return statement{sid: "ReadRecipes", actions: []string{"s3:GetObject", "s3:GetObjectVersion"}, resources: r.objects(recipeObjects)}
}

// kmsForBucket lets a stage use the bucket's key through S3; nil without a
// key.
func (r resources) kmsForBucket(write bool) []statement {
	if r.kmsKey == "" {
		return nil
	}
	actions := []string{"kms:Decrypt"}
	if write {
		actions = append(actions, "kms:GenerateDataKey")
	}
	return []statement{{
		sid: "UseKeyThroughS3", actions: actions, resources: one(r.kmsKey),
		conditions: map[string]any{"StringLike": map[string]any{"kms:ViaService": "s3.*.amazonaws.com"}},
	}}
}

// kmsForEBS lets a stage use the key for volumes and images through EC2
// (encrypted launches, encrypt_boot, copies); nil without a key.
func (r resources) kmsForEBS() []statement {
	if r.kmsKey == "" {
		return nil
	}
	via := map[string]any{"StringLike": map[string]any{"kms:ViaService": "ec2.*.amazonaws.com"}}
	return []statement{
		{sid: "UseKeyThroughEC2", actions: []string{"kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"}, resources: one(r.kmsKey), conditions: via},
		{sid: "GrantKeyToEBS", actions: []string{"kms:CreateGrant"}, resources: one(r.kmsKey), conditions: map[string]any{
			"StringLike": map[string]any{"kms:ViaService": "ec2.*.amazonaws.com"},
			"Bool":       map[string]any{"kms:GrantIsForAWSResource": "true"},
		}},
	}
}

// imageCopy is CopyImage as snapshot (encrypt_boot's copy) and distribute
// (copies to other Regions) call it: from a kiln image and its snapshots to
// a new image and snapshots tagged in the request. Both statements name
// images and snapshots, since IAM sees the source and the copy under the
// same ARN pattern: the source passes the first, the copy the second.
func (r resources) imageCopy() []statement {
	return []statement{
		{sid: "CopyFromKilnImages", actions: []string{"ec2:CopyImage"}, resources: r.ec2("image", "snapshot"), conditions: onKilnResource},
		{sid: "CopyToTaggedImages", actions: []string{"ec2:CopyImage"}, resources: r.ec2("image", "snapshot"), conditions: taggedAtCreation},
	}
}

// tagImages lets a stage tag images and snapshots as it creates them, and
// tag those already kiln's (their snapshots, copies).
func (r resources) tagImages(creating ...string) []statement {
	return []statement{
		{sid: "TagImagesAtCreation", actions: []string{"ec2:CreateTags"}, resources: r.ec2("image", "snapshot"), conditions: whileCreating(creating...)},
		{sid: "TagKilnImages", actions: []string{"ec2:CreateTags"}, resources: r.ec2("image", "snapshot"), conditions: onKilnResource},
	}
}

// removeImages lets a stage deregister kiln's images and delete their
// snapshots.
func (r resources) removeImages() []statement {
	return []statement{
		{sid: "DeregisterKilnImages", actions: []string{"ec2:DeregisterImage"}, resources: r.ec2("image"), conditions: onKilnResource},
		{sid: "DeleteKilnSnapshots", actions: []string{"ec2:DeleteSnapshot"}, resources: r.ec2("snapshot"), conditions: onKilnResource},
	}
}

// launchPolicy: plan (read the recipe version, store the plan and the
// claim) and run (security group, login key, instance) and check.
func (r resources) launchPolicy() []statement {
	s := []statement{
		{sid: "Describe", actions: []string{"ec2:DescribeImages", "ec2:DescribeSubnets", "ec2:DescribeVpcs", "ec2:DescribeSecurityGroups", "ec2:DescribeKeyPairs", "ec2:DescribeInstances"}, resources: star()},
		{sid: "CreateSecurityGroupInVpc", actions: []string{"ec2:CreateSecurityGroup"}, resources: r.ec2("vpc")},
		{sid: "CreateTaggedSecurityGroup", actions: []string{"ec2:CreateSecurityGroup"}, resources: r.ec2("security-group"), conditions: taggedAtCreation},
		{sid: "AllowSSHIntoKilnGroups", actions: []string{"ec2:AuthorizeSecurityGroupIngress"}, resources: r.ec2("security-group"), conditions: onKilnResource},
		{sid: "ImportTaggedKeyPair", actions: []string{"ec2:ImportKeyPair"}, resources: r.ec2("key-pair"), conditions: taggedAtCreation},
		{sid: "DeleteKilnKeyPair", actions: []string{"ec2:DeleteKeyPair"}, resources: r.ec2("key-pair"), conditions: onKilnResource},
		// RunInstances touches existing resources (image, subnet, groups,
		// key pair) and creates others (instance, volumes, and the network
		// interface, which it does not tag): the tag is required of what
		// it creates and tags.
		{sid: "RunInstancesFrom", actions: []string{"ec2:RunInstances"}, resources: r.ec2("image", "subnet", "security-group", "key-pair", "network-interface")},
		{sid: "RunTaggedInstances", actions: []string{"ec2:RunInstances"}, resources: r.ec2("instance", "volume"), conditions: taggedAtCreation},
		{sid: "TagAtCreation", actions: []string{"ec2:CreateTags"}, resources: r.ec2("instance", "volume", "security-group", "key-pair"),
			conditions: whileCreating("RunInstances", "CreateSecurityGroup", "ImportKeyPair")},
		{sid: "PassBuildRole", actions: []string{"iam:PassRole"}, resources: one(r.buildRole),
			conditions: map[string]any{"StringEquals": map[string]any{"iam:PassedToService": "ec2.amazonaws.com"}}},
		// The login key: written once, read back by a rerun, tagged.
		{sid: "LoginKeys", actions: []string{"ssm:PutParameter", "ssm:GetParameter", "ssm:AddTagsToResource"}, resources: r.keyParameters()},
		// amazon-parameterstore data sources: AWS's public parameters and
		// kiln's own published AMIs.
		{sid: "ReadBaseImageParameters", actions: []string{"ssm:GetParameter"}, resources: append(r.publicParameters(), r.amiParameters()...)},
		r.readRecipes(),
		{sid: "StorePlanAndClaim", actions: []string{"s3:GetObject", "s3:PutObject"}, resources: r.objects(planObjects, claimObjects)},
		{sid: "ReadTimings", actions: []string{"s3:GetObject"}, resources: r.objects(timingsObjects)},
		r.listBucket(),
	}
	s = append(s, r.kmsForBucket(true)...)
	return append(s, r.kmsForEBS()...)
}

// provisionPolicy: read the plan, the recipe's files and the login key
// (ssh); run the provisioners through SSM Run Command, staging their files
// in the bucket for presigned fetches and reading their output from the
// build's command log group (session_manager). Its network interface
// permissions are added by provisionNetworkPolicy.
func (r resources) provisionPolicy() []statement {
	s := []statement{
		r.readPlan(),
		r.readRecipes(),
		{sid: "ReadLoginKeys", actions: []string{"ssm:GetParameter"}, resources: r.loginKeyParameters()},
		{sid: "Describe", actions: []string{"ec2:DescribeInstances"}, resources: star()},
		// SendCommand names a document and instances: only the shell
		// document, only on kiln's instances.
		{sid: "RunShellScript", actions: []string{"ssm:SendCommand"},
			resources: []*string{sub("arn:${AWS::Partition}:ssm:*::document/" + RunCommandDocument)}},
		{sid: "RunCommandsOnKilnInstances", actions: []string{"ssm:SendCommand"}, resources: r.ec2("instance"),
			conditions: map[string]any{"StringLike": map[string]any{"ssm:resourceTag/" + TagBuild: "*"}}},
		{sid: "FollowCommands", actions: []string{"ssm:DescribeInstanceInformation", "ssm:ListCommands", "ssm:GetCommandInvocation", "ssm:CancelCommand"}, resources: star()},
		// The build's command output group, created tagged (so that the
		// instance needs no logs:CreateLogGroup), then read.
		{sid: "CreateTaggedCommandLogs", actions: []string{"logs:CreateLogGroup", "logs:TagResource"}, resources: r.commandLogs(), conditions: taggedAtCreation},
		{sid: "ReadCommandLogs", actions: []string{"logs:PutRetentionPolicy", "logs:GetLogEvents"}, resources: r.commandLogs()},
		// Staged files: written here, fetched by the instance through URLs
		// this role presigns.
		{sid: "StageFiles", actions: []string{"s3:PutObject", "s3:GetObject"}, resources: r.objects(stagedObjects)},
	}
	return append(s, r.kmsForBucket(true)...)
}

// provisionNetworkPolicy lets Lambda manage the provisioning function's
// network interfaces in its VPC, in the stack's Region
// (https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html#configuration-vpc-permissions).
func (r resources) provisionNetworkPolicy() []statement {
	return []statement{
		{sid: "DescribeNetworkInterfaces", actions: []string{"ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"}, resources: star(), stackRegion: true},
		{sid: "ManageNetworkInterfaces", actions: []string{"ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"},
			resources: []*string{sub("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:*/*")}, stackRegion: true},
	}
}

// snapshotPolicy: stop the instance, make the image (and encrypt_boot's
// encrypted copy), tag, finish and, for name conflicts under
// force_deregister, remove kiln's older images.
func (r resources) snapshotPolicy() []statement {
	s := []statement{
		r.readPlan(),
		{sid: "Describe", actions: []string{"ec2:DescribeInstances", "ec2:DescribeImages"}, resources: star()},
		{sid: "StopKilnInstances", actions: []string{"ec2:StopInstances", "ec2:ModifyInstanceAttribute"}, resources: r.ec2("instance"), conditions: onKilnResource},
		{sid: "ImageFromKilnInstance", actions: []string{"ec2:CreateImage"}, resources: r.ec2("instance"), conditions: onKilnResource},
		{sid: "CreateTaggedImage", actions: []string{"ec2:CreateImage"}, resources: r.ec2("image", "snapshot"), conditions: taggedAtCreation},
		{sid: "FinishKilnImages", actions: []string{"ec2:ModifyImageAttribute", "ec2:EnableImageDeprecation"}, resources: r.ec2("image"), conditions: onKilnResource},
	}
	s = append(s, r.imageCopy()...)
	s = append(s, r.tagImages("CreateImage", "CopyImage")...)
	s = append(s, r.removeImages()...)
	s = append(s, r.kmsForBucket(false)...)
	return append(s, r.kmsForEBS()...)
}

// distributePolicy: copy to the other Regions, share and finish the
// images, publish the parameters, the manifest and the event.
func (r resources) distributePolicy() []statement {
	s := []statement{
		r.readPlan(),
		{sid: "Describe", actions: []string{"ec2:DescribeImages"}, resources: star()},
		{sid: "ShareKilnImages", actions: []string{"ec2:ModifyImageAttribute", "ec2:EnableImageDeprecation"}, resources: r.ec2("image"), conditions: onKilnResource},
		{sid: "ShareKilnSnapshots", actions: []string{"ec2:ModifySnapshotAttribute"}, resources: r.ec2("snapshot"), conditions: onKilnResource},
		{sid: "PublishAMIParameters", actions: []string{"ssm:PutParameter"}, resources: r.amiParameters()},
		{sid: "WriteManifest", actions: []string{"s3:GetObject", "s3:PutObject"}, resources: r.objects(manifestObjects)},
		{sid: "KeepTimings", actions: []string{"s3:GetObject", "s3:PutObject"}, resources: r.objects(timingsObjects)},
		r.listBucket(),
		{sid: "AnnounceImages", actions: []string{"events:PutEvents"}, resources: one(r.eventBus)},
	}
	s = append(s, r.imageCopy()...)
	s = append(s, r.tagImages("CopyImage")...)
	s = append(s, r.removeImages()...)
	s = append(s, r.kmsForBucket(true)...)
	return append(s, r.kmsForEBS()...)
}

// cleanupPolicy: remove the build's temporaries always and its images when
// it failed, in every Region, only where kiln's tag is.
func (r resources) cleanupPolicy() []statement {
	s := []statement{
		{sid: "Describe", actions: []string{"ec2:DescribeInstances", "ec2:DescribeSecurityGroups", "ec2:DescribeKeyPairs", "ec2:DescribeImages", "ec2:DescribeSnapshots", "ec2:DescribeVolumes"}, resources: star()},
		{sid: "TerminateKilnInstances", actions: []string{"ec2:TerminateInstances"}, resources: r.ec2("instance"), conditions: onKilnResource},
		// Volumes a recipe keeps on termination (delete_on_termination =
		// false) outlive the instance; RunInstances tagged them.
		{sid: "DeleteKilnVolumes", actions: []string{"ec2:DeleteVolume"}, resources: r.ec2("volume"), conditions: onKilnResource},
		{sid: "DeleteKilnSecurityGroups", actions: []string{"ec2:DeleteSecurityGroup"}, resources: r.ec2("security-group"), conditions: onKilnResource},
		{sid: "DeleteKilnKeyPairs", actions: []string{"ec2:DeleteKeyPair"}, resources: r.ec2("key-pair"), conditions: onKilnResource},
		{sid: "TagKilnSnapshotsBeforeDeleting", actions: []string{"ec2:CreateTags"}, resources: r.ec2("snapshot"), conditions: onKilnResource},
		{sid: "DeleteLoginKeys", actions: []string{"ssm:GetParametersByPath", "ssm:DeleteParameter"}, resources: r.keyParameters()},
		// GetParametersByPath could ask for decrypted values; cleanup only
		// needs the names. Parameter Store decrypts with the caller's
		// permissions, so this denial keeps the keys unreadable here
		// (https://docs.aws.amazon.com/systems-manager/latest/userguide/sysman-paramstore-access.html).
		{sid: "NeverDecryptParameters", deny: true, actions: []string{"kms:Decrypt"}, resources: star(),
			conditions: map[string]any{"StringLike": map[string]any{"kms:ViaService": "ssm.*.amazonaws.com"}}},
		// A failed build's parameter goes back to the image before it.
		{sid: "UnpublishAMIParameters", actions: []string{"ssm:GetParameter", "ssm:GetParameterHistory", "ssm:PutParameter", "ssm:DeleteParameter"}, resources: r.amiParameters()},
		{sid: "CancelCommands", actions: []string{"ssm:ListCommands", "ssm:CancelCommand"}, resources: star()},
		{sid: "DeleteKilnCommandLogs", actions: []string{"logs:DeleteLogGroup"}, resources: r.commandLogs(), conditions: onKilnResource},
		r.readPlan(),
		r.listBucket(),
		{sid: "DeleteStagedFiles", actions: []string{"s3:DeleteObject"}, resources: r.objects(stagedObjects)},
	}
	s = append(s, r.removeImages()...)
	return append(s, r.kmsForBucket(false)...)
}

// buildInstancePolicy is what a build instance needs for the
// session_manager transport: the Run Command part of
// AmazonSSMManagedInstanceCore, and streaming command output to the
// build's log group (which provision creates). Staged files come through
// presigned URLs, so it needs no S3 permission. With the ssh transport
// launch attaches no profile at all.
func (r resources) buildInstancePolicy() []statement {
	return []statement{
		{sid: "RegisterWithSSM", actions: []string{"ssm:UpdateInstanceInformation"}, resources: r.ec2("instance")},
		{sid: "RunCommandChannels", actions: []string{
			"ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage",
			"ec2messages:GetEndpoint", "ec2messages:GetMessages", "ec2messages:SendReply",
			"ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
			"ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel",
		}, resources: star()},
		{sid: "FindLogGroups", actions: []string{"logs:DescribeLogGroups"}, resources: star()},
		{sid: "WriteCommandOutput", actions: []string{"logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"}, resources: r.commandLogs()},
	}
}

// rebuildPolicy is what the rebuild job (pkg/bake's Rebuild:
// rebuildObjectAPI, stepFunctionsAPI, DescribeImages, GetParameter,
// PutEvents) does: list the recipes and read their current versions,
// resolve base images as launch does, look at running bakes, start bakes
// and report its decisions.
func (r resources) rebuildPolicy(stateMachine, executions string) []statement {
	s := []statement{
		{sid: "ListRecipes", actions: []string{"s3:ListBucket"}, resources: one(r.bucket),
			conditions: map[string]any{"StringLike": map[string]any{"s3:prefix": RecipePrefix + "*"}}},
		r.readRecipes(),
		{sid: "Describe", actions: []string{"ec2:DescribeImages"}, resources: star()},
		{sid: "ReadBaseImageParameters", actions: []string{"ssm:GetParameter"}, resources: append(r.publicParameters(), r.amiParameters()...)},
		{sid: "StartBakes", actions: []string{"states:StartExecution", "states:ListExecutions"}, resources: one(stateMachine)},
		{sid: "ReadBakes", actions: []string{"states:DescribeExecution"}, resources: one(executions)},
		{sid: "ReportDecisions", actions: []string{"events:PutEvents"}, resources: one(r.eventBus)},
	}
	return append(s, r.kmsForBucket(false)...)
}

// retentionPolicy is what the retention job (pkg/bake's Retention:
// retentionEC2API, GetParameter, PutEvents) does: find kiln's images and
// what uses them (instances, launch templates, the published parameters),
// deprecate and delete the old ones, and report.
func (r resources) retentionPolicy() []statement {
	s := []statement{
		{sid: "Describe", actions: []string{"ec2:DescribeImages", "ec2:DescribeSnapshots", "ec2:DescribeInstances", "ec2:DescribeLaunchTemplateVersions"}, resources: star()},
		{sid: "ReadPublishedAMIs", actions: []string{"ssm:GetParameter"}, resources: r.amiParameters()},
		{sid: "DeprecateKilnImages", actions: []string{"ec2:EnableImageDeprecation"}, resources: r.ec2("image"), conditions: onKilnResource},
		{sid: "ReportDecisions", actions: []string{"events:PutEvents"}, resources: one(r.eventBus)},
	}
	return append(s, r.removeImages()...)
}

// writeLogs lets a function write to its own log group.
func writeLogs(logGroupARN string) statement {
	return statement{sid: "WriteOwnLogs", actions: []string{"logs:CreateLogStream", "logs:PutLogEvents"}, resources: one(logGroupARN)}
}

// titled is "launch" → "Launch", for construct IDs and Sids.
func titled(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
