package infra

import (
	"archive/zip"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
	"github.com/google/go-cmp/cmp"
	"github.com/kiln-dev/kiln/infra/lambdabuild"
	"github.com/kiln-dev/kiln/statemachine"
)

// like is a CDK assertion pattern matching objects that have m's keys.
func like(m obj) assertions.Matcher { return assertions.Match_ObjectLike(&m) }

// TestFunctionZips checks each stage's deployment package: a zip holding
// just an arm64 Linux executable named bootstrap, built from kiln's
// functions/, and reports its size.
func TestFunctionZips(t *testing.T) {
	s := defaultStack.get(t)
	var names []string
	for _, a := range s.kiln.Artifacts {
		names = append(names, a.Name)
		zr, err := zip.OpenReader(a.Zip)
		if err != nil {
			t.Errorf("open %s: %v", a.Zip, err)
			continue
		}
		if len(zr.File) != 1 || zr.File[0].Name != "bootstrap" || zr.File[0].Mode().Perm()&0o111 == 0 {
			var files []string
			for _, f := range zr.File {
				files = append(files, f.Name+" "+f.Mode().String())
			}
			t.Errorf("%s holds %v, want one executable bootstrap", a.Zip, files)
			zr.Close()
			continue
		}
		rc, _ := zr.File[0].Open()
		bin, _ := io.ReadAll(rc)
		rc.Close()
		zr.Close()
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Errorf("%s: bootstrap is not an ELF executable: %v", a.Name, err)
			continue
		}
		if f.Machine != elf.EM_AARCH64 || f.Type != elf.ET_EXEC {
			t.Errorf("%s: bootstrap is %v %v, want an arm64 executable", a.Name, f.Machine, f.Type)
		}
		fi, err := os.Stat(a.Zip)
		if err != nil || fi.Size() != a.Size {
			t.Errorf("%s: Artifact.Size %d, file %v (%v)", a.Name, a.Size, fi, err)
		}
		t.Logf("lambda zip %-10s %8d bytes (%.1f MiB; bootstrap %.1f MiB)", a.Name, a.Size, float64(a.Size)/(1<<20), float64(len(bin))/(1<<20))
	}
	var want []string
	for _, f := range deployed(s) {
		want = append(want, f.Name)
	}
	if !slices.Equal(names, want) {
		t.Errorf("built %v, want %v", names, want)
	}
}

// TestBuildFailsWithoutFunctionSource: a stage whose functions/<stage> has
// no source stops the synthesis with an error naming it (lambdabuild's
// tests cover the build itself).
func TestBuildFailsWithoutFunctionSource(t *testing.T) {
	src, err := stubModule(filepath.Join(testRoot, "partial"), []string{"launch", "provision", "distribute"})
	if err != nil {
		t.Fatal(err)
	}
	err = catch(func() {
		app := awscdk.NewApp(nil)
		NewKiln(awscdk.NewStack(app, jsii.String("Partial"), nil), "Kiln", &KilnProps{SourceDir: src, BuildDir: filepath.Join(testRoot, "partial-out")})
	})
	if err == nil || !strings.Contains(err.Error(), "functions/snapshot, functions/cleanup") {
		t.Errorf("NewKiln(without snapshot and cleanup) = %v, want an error naming both", err)
	}
}

// TestStageFunctions checks the five stage functions: Go on
// provided.al2023, arm64, per-stage timeouts and memory, JSON logs into
// their own log group with retention, the settings the stages read, and
// only provision in the VPC.
func TestStageFunctions(t *testing.T) {
	s := defaultStack.get(t)
	fnList := deployed(s)
	cdkAssert(t, "the functions", func() {
		s.template.ResourceCountIs(jsii.String("AWS::Lambda::Function"), jsii.Number(len(fnList)))
	})
	byStage := functionsByStage(t, s)
	wantNames := map[string]bool{}
	for _, f := range fnList {
		wantNames[f.Name] = true
	}
	if got := sortedKeys(byStage); !cmp.Equal(got, sortedKeys(wantNames)) {
		t.Fatalf("functions tagged %s: %v, want %v", TagStage, got, sortedKeys(wantNames))
	}
	sm := onlyID(t, s, "AWS::StepFunctions::StateMachine", nil)
	fns := resourcesOf(s, "AWS::Lambda::Function")
	sg := onlyID(t, s, "AWS::EC2::SecurityGroup", func(p obj) bool { return strings.HasPrefix(resolve(p["GroupDescription"]), "kiln provisioner:") })
	profile := onlyID(t, s, "AWS::IAM::InstanceProfile", nil)
	for _, st := range fnList {
		t.Run(st.Name, func(t *testing.T) {
			id := byStage[st.Name]
			p := props(fns[id])
			cdkAssert(t, "function properties", func() {
				s.template.HasResourceProperties(jsii.String("AWS::Lambda::Function"), like(obj{
					"Runtime":       "provided.al2023",
					"Architectures": []any{"arm64"},
					"Handler":       "bootstrap",
					"Timeout":       st.TimeoutSeconds,
					"MemorySize":    st.MemoryMB,
					"LoggingConfig": obj{"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO", "LogGroup": assertions.Match_AnyValue()},
					"Tags":          assertions.Match_ArrayWith(&[]any{obj{"Key": TagStage, "Value": st.Name}}),
				}))
			})
			want := obj{
				"Runtime": "provided.al2023", "Architectures": []any{"arm64"}, "Handler": "bootstrap",
				"Timeout": float64(st.TimeoutSeconds), "MemorySize": float64(st.MemoryMB),
			}
			got := obj{}
			for k := range want {
				got[k] = p[k]
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("%s (-want +got):\n%s", id, d)
			}
			lg, ok := logicalIDOf(at(p, "LoggingConfig", "LogGroup"))
			if !ok || at(s.json, "Resources", lg, "Type") != "AWS::Logs::LogGroup" {
				t.Errorf("%s logs to %v, want its own log group", id, at(p, "LoggingConfig", "LogGroup"))
			} else if r := at(s.json, "Resources", lg, "Properties", "RetentionInDays"); r != float64(DefaultLogRetentionDays) {
				t.Errorf("log group %s keeps events %v days, want %d", lg, r, DefaultLogRetentionDays)
			}
			env, _ := at(p, "Environment", "Variables").(obj)
			wantEnv := obj{
				EnvBucket:                   ref(onlyID(t, s, "AWS::S3::Bucket", nil)),
				EnvProvisionerSecurityGroup: getAtt(sg, "GroupId"),
				EnvSubnetID:                 ref(buildSubnet(t, s)),
				EnvInstanceSecurityGroup:    getAtt(instanceGroup(t, s, "kiln build instances: SSH"), "GroupId"),
				EnvIsolatedSecurityGroup:    getAtt(instanceGroup(t, s, "kiln build instances without SSH"), "GroupId"),
				EnvInstanceProfile:          getAtt(profile, "Arn"),
				EnvParameterPrefix:          DefaultParameterPrefix,
				EnvKeyPrefix:                DefaultKeyPrefix,
				EnvCommandLogPrefix:         DefaultCommandLogPrefix,
				EnvEventBus:                 DefaultEventBus,
				EnvDefaultTransport:         DefaultTransport,
			}
			if slices.ContainsFunc(Jobs, func(j Stage) bool { return j.Name == st.Name }) {
				wantEnv[EnvStateMachineARN] = ref(sm)
				wantEnv[EnvRetentionKeep] = "3"
				wantEnv[EnvRetentionDays] = "90"
				wantEnv[EnvRebuildMaxAgeDays] = "30"
			}
			if d := cmp.Diff(wantEnv, env); d != "" {
				t.Errorf("%s environment (-want +got):\n%s", id, d)
			}
			vpc := p["VpcConfig"]
			if !st.InVPC {
				if vpc != nil {
					t.Errorf("%s is in a VPC (%v); only provision needs one", id, vpc)
				}
				return
			}
			if d := cmp.Diff([]any{getAtt(sg, "GroupId")}, at(vpc, "SecurityGroupIds")); d != "" {
				t.Errorf("%s security groups (-want +got):\n%s", id, d)
			}
			var subnets []string
			for _, sn := range asList(at(vpc, "SubnetIds")) {
				sid, _ := logicalIDOf(sn)
				subnets = append(subnets, sid)
			}
			if want := subnetsOfGroup(s, ProvisionerSubnetGroup); !cmp.Equal(subnets, want) || len(want) != 2 {
				t.Errorf("%s subnets %v, want the provisioner subnets %v", id, subnets, want)
			}
		})
	}
}

// onlyID returns the logical ID of the one resource of type typ that keep
// accepts (nil accepts all).
func onlyID(t *testing.T, s *synthesis, typ string, keep func(obj) bool) string {
	t.Helper()
	var ids []string
	for id, r := range resourcesOf(s, typ) {
		if keep == nil || keep(props(r)) {
			ids = append(ids, id)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("%d resources of type %s (%v), want 1", len(ids), typ, ids)
	}
	return ids[0]
}

// subnetsOfGroup lists the logical IDs of the created VPC's subnets of a
// subnet group, in order.
func subnetsOfGroup(s *synthesis, group string) []string {
	var out []string
	for id, r := range resourcesOf(s, "AWS::EC2::Subnet") {
		for _, tag := range asList(props(r)["Tags"]) {
			if at(tag, "Key") == "aws-cdk:subnet-name" && at(tag, "Value") == group {
				out = append(out, id)
			}
		}
	}
	slices.Sort(out)
	return out
}

// buildSubnet is the subnet KILN_SUBNET_ID names: the first "builds" one.
func buildSubnet(t *testing.T, s *synthesis) string {
	t.Helper()
	subnets := subnetsOfGroup(s, BuildSubnetGroup)
	if len(subnets) == 0 {
		t.Fatalf("no %s subnets", BuildSubnetGroup)
	}
	id, _ := logicalIDOf(at(s.json, "Outputs", "KilnBuildSubnet", "Value"))
	if !slices.Contains(subnets, id) {
		t.Fatalf("build subnet output %v is not one of the %s subnets %v", id, BuildSubnetGroup, subnets)
	}
	return id
}

// TestTimeoutsMatchDefinition: each function's timeout is the longest
// TimeoutSeconds of the definition's tasks that call it, so that Step
// Functions, not Lambda, times a task out, and no task may outlive its
// function.
func TestTimeoutsMatchDefinition(t *testing.T) {
	var def obj
	if err := json.Unmarshal(statemachine.Definition(), &def); err != nil {
		t.Fatal(err)
	}
	longest := map[string]int{}
	var walk func(states obj)
	walk = func(states obj) {
		for _, st := range states {
			st := st.(obj)
			if r, ok := st["Resource"].(string); ok {
				for _, fn := range statemachine.Functions {
					if r == statemachine.Placeholder(fn) {
						longest[fn] = max(longest[fn], int(st["TimeoutSeconds"].(float64)))
					}
				}
			}
			if sub, ok := at(st, "ItemProcessor", "States").(obj); ok {
				walk(sub)
			}
		}
	}
	walk(def["States"].(obj))
	want := map[string]int{}
	for _, s := range Stages {
		want[s.Name] = s.TimeoutSeconds
	}
	if d := cmp.Diff(want, longest); d != "" {
		t.Errorf("function timeouts vs the definition's longest task timeouts (-Stages +definition):\n%s", d)
	}
	if !slices.Equal(stageNames(), statemachine.Functions) {
		t.Errorf("Stages %v, want statemachine.Functions %v", stageNames(), statemachine.Functions)
	}
}

// TestStateMachine: the deployed definition is statemachine/kiln.asl.json
// itself, and substituting its placeholders as CloudFormation does gives
// exactly what statemachine.Substitute gives for the functions' ARNs.
func TestStateMachine(t *testing.T) {
	s := defaultStack.get(t)
	smID := onlyID(t, s, "AWS::StepFunctions::StateMachine", nil)
	p := props(resourcesOf(s, "AWS::StepFunctions::StateMachine")[smID])
	def, ok := p["DefinitionString"].(string)
	if !ok {
		t.Fatalf("DefinitionString is %T, want the definition as a plain string", p["DefinitionString"])
	}
	if def != string(statemachine.Definition()) {
		t.Errorf("DefinitionString differs from statemachine.Definition():\n%s", cmp.Diff(string(statemachine.Definition()), def))
	}

	byStage := functionsByStage(t, s)
	subs, _ := p["DefinitionSubstitutions"].(obj)
	wantSubs := obj{}
	arns := map[string]string{} // what ${X} stands for, as CloudFormation fills it in
	for _, fn := range statemachine.Functions {
		wantSubs[statemachine.PlaceholderName(fn)] = getAtt(byStage[fn], "Arn")
		arns[statemachine.PlaceholderName(fn)] = "arn:aws:lambda:us-east-1:111122223333:function:" + byStage[fn]
	}
	if d := cmp.Diff(wantSubs, subs); d != "" {
		t.Errorf("DefinitionSubstitutions (-want +got):\n%s", d)
	}
	deployed := subRE.ReplaceAllStringFunc(def, func(m string) string {
		id, _ := logicalIDOf(subs[m[2:len(m)-1]])
		return "arn:aws:lambda:us-east-1:111122223333:function:" + id
	})
	want, err := statemachine.Substitute(arns)
	if err != nil {
		t.Fatalf("Substitute: %v", err)
	}
	var gotJSON, wantJSON any
	if err := json.Unmarshal([]byte(deployed), &gotJSON); err != nil {
		t.Fatalf("the deployed definition is not JSON: %v", err)
	}
	json.Unmarshal(want, &wantJSON)
	if d := cmp.Diff(wantJSON, gotJSON); d != "" {
		t.Errorf("deployed definition vs statemachine.Substitute (-want +got):\n%s", d)
	}

	cdkAssert(t, "state machine", func() {
		s.template.HasResourceProperties(jsii.String("AWS::StepFunctions::StateMachine"), like(obj{
			"StateMachineType":     "STANDARD",
			"TracingConfiguration": obj{"Enabled": true},
			"LoggingConfiguration": obj{"Level": "ALL", "IncludeExecutionData": true, "Destinations": assertions.Match_AnyValue()},
		}))
	})
	lg, _ := logicalIDOf(at(p, "LoggingConfiguration", "Destinations", 0, "CloudWatchLogsLogGroup", "LogGroupArn"))
	if r := at(s.json, "Resources", lg, "Properties", "RetentionInDays"); r != float64(DefaultLogRetentionDays) {
		t.Errorf("state machine log group %s keeps events %v days, want %d", lg, r, DefaultLogRetentionDays)
	}
	if name := resolve(at(s.json, "Resources", lg, "Properties", "LogGroupName")); !strings.HasPrefix(name, "/aws/vendedlogs/states/") {
		t.Errorf("state machine log group name %q, want one under /aws/vendedlogs/states/", name)
	}

	// The state machine may invoke the five functions, and nothing else.
	role, _ := logicalIDOf(p["RoleArn"])
	v := viewPolicies(s.json, s.kiln.Props)
	var invoked []string
	for _, st := range v.statements {
		if st.owner == role && st.allows("lambda:InvokeFunction") {
			invoked = append(invoked, st.resources...)
		}
	}
	var wantInvoked []string
	for _, fn := range statemachine.Functions {
		wantInvoked = append(wantInvoked, "{"+byStage[fn]+".Arn}")
	}
	slices.Sort(invoked)
	slices.Sort(wantInvoked)
	if d := cmp.Diff(wantInvoked, invoked); d != "" {
		t.Errorf("state machine may invoke (-want +got):\n%s", d)
	}
}

// TestRecipeBucket: versioned, encrypted, private, TLS only, events to
// EventBridge, kept when the stack goes.
func TestRecipeBucket(t *testing.T) {
	s := defaultStack.get(t)
	id := onlyID(t, s, "AWS::S3::Bucket", nil)
	cdkAssert(t, "bucket", func() {
		s.template.HasResource(jsii.String("AWS::S3::Bucket"), like(obj{
			"DeletionPolicy": "Retain",
			"Properties": like(obj{
				"VersioningConfiguration":        obj{"Status": "Enabled"},
				"BucketEncryption":               obj{"ServerSideEncryptionConfiguration": []any{obj{"ServerSideEncryptionByDefault": obj{"SSEAlgorithm": "AES256"}}}},
				"PublicAccessBlockConfiguration": obj{"BlockPublicAcls": true, "BlockPublicPolicy": true, "IgnorePublicAcls": true, "RestrictPublicBuckets": true},
				"NotificationConfiguration":      obj{"EventBridgeConfiguration": obj{"EventBridgeEnabled": true}},
				"OwnershipControls":              obj{"Rules": []any{obj{"ObjectOwnership": "BucketOwnerEnforced"}}},
			}),
		}))
	})
	// TLS only: the bucket policy denies every request not over TLS.
	pol := onlyID(t, s, "AWS::S3::BucketPolicy", nil)
	if b, _ := logicalIDOf(at(s.json, "Resources", pol, "Properties", "Bucket")); b != id {
		t.Errorf("bucket policy %s is for %v, want %s", pol, b, id)
	}
	denied := false
	for _, st := range viewPolicies(s.json, s.kiln.Props).statements {
		if st.owner == pol && !st.allow && st.allows("s3:GetObject") && st.allows("s3:PutObject") &&
			at(st.conditions, "Bool", "aws:SecureTransport") == "false" &&
			st.covers("{"+id+".Arn}") && st.covers("{"+id+".Arn}/recipes/x.pkr.hcl") {
			denied = true
		}
	}
	if !denied {
		t.Errorf("bucket policy %s does not deny requests without TLS on the bucket and its objects", pol)
	}
	// The configured stack encrypts with its key.
	c := configuredStack.get(t)
	cdkAssert(t, "bucket with a KMS key", func() {
		c.template.HasResourceProperties(jsii.String("AWS::S3::Bucket"), like(obj{
			"BucketEncryption": obj{"ServerSideEncryptionConfiguration": []any{obj{
				"BucketKeyEnabled":              true,
				"ServerSideEncryptionByDefault": obj{"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": testKeyARN},
			}}},
		}))
	})
}

// TestRecipeRule: an object created under recipes/ of the bucket starts
// the state machine with {"recipe":{"bucket","key","version"}}.
func TestRecipeRule(t *testing.T) {
	s := defaultStack.get(t)
	bucket := onlyID(t, s, "AWS::S3::Bucket", nil)
	sm := onlyID(t, s, "AWS::StepFunctions::StateMachine", nil)
	id := onlyID(t, s, "AWS::Events::Rule", nil)
	p := props(resourcesOf(s, "AWS::Events::Rule")[id])
	wantPattern := obj{
		"source":      []any{"aws.s3"},
		"detail-type": []any{"Object Created"},
		"detail": obj{
			"bucket": obj{"name": []any{ref(bucket)}},
			"object": obj{"key": []any{obj{"prefix": RecipePrefix}}},
		},
	}
	if d := cmp.Diff(wantPattern, p["EventPattern"]); d != "" {
		t.Errorf("event pattern (-want +got):\n%s", d)
	}
	targets := asList(p["Targets"])
	if len(targets) != 1 {
		t.Fatalf("rule has %d targets, want the state machine", len(targets))
	}
	target := targets[0].(obj)
	if d := cmp.Diff(ref(sm), target["Arn"]); d != "" {
		t.Errorf("target (-want +got):\n%s", d)
	}
	dlq, _ := logicalIDOf(at(target, "DeadLetterConfig", "Arn"))
	if q := at(s.json, "Resources", dlq, "Properties"); at(q, "SqsManagedSseEnabled") != true || at(q, "MessageRetentionPeriod") != float64(14*24*3600) {
		t.Errorf("dead-letter queue %s: %v, want an encrypted queue keeping undelivered events 14 days", dlq, q)
	}
	var sends []string
	for _, st := range viewPolicies(s.json, s.kiln.Props).statements {
		if st.allow && st.allows("sqs:SendMessage") {
			sends = append(sends, st.resources[0]+" if aws:SourceArn="+resolve(at(st.conditions, "ArnEquals", "aws:SourceArn")))
		}
	}
	if d := cmp.Diff([]string{"{" + dlq + ".Arn} if aws:SourceArn={" + id + ".Arn}"}, sends); d != "" {
		t.Errorf("who may send to the dead-letter queue (-want +got):\n%s", d)
	}

	// Render the input transformer with an S3 event as EventBridge would.
	event := obj{"source": "aws.s3", "detail-type": "Object Created", "detail": obj{
		"bucket": obj{"name": "kiln-bucket"},
		"object": obj{"key": "recipes/web.pkr.hcl", "version-id": "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"},
	}}
	input := at(target, "InputTransformer", "InputTemplate").(string)
	for name, path := range at(target, "InputTransformer", "InputPathsMap").(obj) {
		var v any = event
		for _, k := range strings.Split(strings.TrimPrefix(path.(string), "$."), ".") {
			v = at(v, k)
		}
		b, _ := json.Marshal(v)
		input = strings.ReplaceAll(input, "<"+name+">", string(b))
	}
	var got struct {
		Recipe struct {
			Bucket, Key, Version string
		}
	}
	if err := json.Unmarshal([]byte(input), &got); err != nil {
		t.Fatalf("rendered input %s: %v", input, err)
	}
	if got.Recipe.Bucket != "kiln-bucket" || got.Recipe.Key != "recipes/web.pkr.hcl" || got.Recipe.Version != "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd" {
		t.Errorf("execution input %s, want the event's bucket, key and version-id", input)
	}

	// The rule's role may start this state machine and nothing else.
	role, _ := logicalIDOf(target["RoleArn"])
	var allowed []string
	for _, st := range viewPolicies(s.json, s.kiln.Props).statements {
		if st.owner == role && st.allow {
			allowed = append(allowed, strings.Join(st.actions, ",")+" on "+strings.Join(st.resources, ","))
		}
	}
	if d := cmp.Diff([]string{"states:StartExecution on {" + sm + "}"}, allowed); d != "" {
		t.Errorf("rule role %s allows (-want +got):\n%s", role, d)
	}
}

// TestSchedules: rebuild and retention run on EventBridge Scheduler
// schedules from context, invoking their functions.
func TestSchedules(t *testing.T) {
	t.Run("from context", func(t *testing.T) {
		c := configuredStack.get(t)
		cdkAssert(t, "two schedules", func() { c.template.ResourceCountIs(jsii.String("AWS::Scheduler::Schedule"), jsii.Number(2)) })
		byStage := functionsByStage(t, c)
		v := viewPolicies(c.json, c.kiln.Props)
		for job, expr := range map[string]string{"rebuild": "rate(12 hours)", "retention": "cron(30 5 ? * SUN *)"} {
			fn, ok := byStage[job]
			if !ok {
				t.Errorf("no %s function", job)
				continue
			}
			cdkAssert(t, job+" schedule", func() {
				c.template.HasResourceProperties(jsii.String("AWS::Scheduler::Schedule"), like(obj{
					"ScheduleExpression":         expr,
					"ScheduleExpressionTimezone": "Europe/Berlin",
					"FlexibleTimeWindow":         obj{"Mode": "OFF"},
					"State":                      "ENABLED",
					"Target":                     like(obj{"Arn": getAtt(fn, "Arn"), "Input": `{"job":"` + job + `"}`}),
				}))
			})
			sched := onlyID(t, c, "AWS::Scheduler::Schedule", func(p obj) bool { return p["ScheduleExpression"] == expr })
			role, _ := logicalIDOf(at(c.json, "Resources", sched, "Properties", "Target", "RoleArn"))
			var allowed []string
			for _, st := range v.statements {
				if st.owner == role && st.allow {
					allowed = append(allowed, strings.Join(st.actions, ",")+" on "+strings.Join(st.resources, ","))
				}
			}
			if d := cmp.Diff([]string{"lambda:InvokeFunction on {" + fn + ".Arn}"}, allowed); d != "" {
				t.Errorf("%s schedule role allows (-want +got):\n%s", job, d)
			}
			env, _ := at(c.json, "Resources", fn, "Properties", "Environment", "Variables").(obj)
			wantEnv := obj{EnvRetentionKeep: "5", EnvRetentionDays: "45", EnvRebuildMaxAgeDays: "14", EnvRetentionDeprecateDays: "7",
				EnvRegions: "us-east-1,eu-west-1", EnvStateMachineARN: ref(onlyID(t, c, "AWS::StepFunctions::StateMachine", nil))}
			for k, want := range wantEnv {
				if d := cmp.Diff(want, env[k]); d != "" {
					t.Errorf("%s %s (-want +got):\n%s", job, k, d)
				}
			}
		}
	})
	t.Run("defaults", func(t *testing.T) {
		p := KilnProps{}.withDefaults()
		if p.RebuildSchedule != "cron(0 3 * * ? *)" || p.RetentionSchedule != "cron(0 4 * * ? *)" || p.ScheduleTimeZone != "UTC" {
			t.Errorf("default schedules %q, %q in %q, want daily 03:00 and 04:00 UTC", p.RebuildSchedule, p.RetentionSchedule, p.ScheduleTimeZone)
		}
	})
	t.Run("kiln's functions", func(t *testing.T) {
		s := defaultStack.get(t)
		src := s.kiln.Props.SourceDir
		have := lambdabuild.Has(src, "rebuild") && lambdabuild.Has(src, "retention")
		n := len(resourcesOf(s, "AWS::Scheduler::Schedule"))
		if !have {
			// Gated: the rebuild and retention functions are issue 7's.
			t.Logf("NOTE: functions/rebuild and functions/retention do not exist yet in %s: the stack deploys no schedules until they do (the configured stack above covers the schedules with stand-in functions)", src)
			if n != 0 {
				t.Errorf("%d schedules without the functions they would start", n)
			}
			return
		}
		if n != 2 {
			t.Errorf("%d schedules, want rebuild and retention", n)
		}
		byStage := functionsByStage(t, s)
		for _, sched := range resourcesOf(s, "AWS::Scheduler::Schedule") {
			fn, _ := logicalIDOf(at(props(sched), "Target", "Arn"))
			if fn != byStage["rebuild"] && fn != byStage["retention"] {
				t.Errorf("schedule targets %v, want the rebuild or retention function", fn)
			}
		}
	})
}

// TestNetwork checks the provisioning network the stack creates by default.
func TestNetwork(t *testing.T) {
	s := defaultStack.get(t)
	cdkAssert(t, "VPC without NAT", func() {
		s.template.ResourceCountIs(jsii.String("AWS::EC2::VPC"), jsii.Number(1))
		s.template.ResourceCountIs(jsii.String("AWS::EC2::NatGateway"), jsii.Number(0))
		s.template.ResourceCountIs(jsii.String("AWS::EC2::Subnet"), jsii.Number(4))
	})
	builds, prov := subnetsOfGroup(s, BuildSubnetGroup), subnetsOfGroup(s, ProvisionerSubnetGroup)
	if len(builds) != 2 || len(prov) != 2 {
		t.Fatalf("subnets: %v builds, %v provisioner; want two of each", builds, prov)
	}
	for _, id := range builds {
		if at(s.json, "Resources", id, "Properties", "MapPublicIpOnLaunch") != true {
			t.Errorf("build subnet %s does not give instances a public address for egress", id)
		}
	}
	// Provisioner subnets have no route out: only the VPC and endpoints.
	for _, r := range resourcesOf(s, "AWS::EC2::Route") {
		rt, _ := logicalIDOf(props(r)["RouteTableId"])
		for _, assoc := range resourcesOf(s, "AWS::EC2::SubnetRouteTableAssociation") {
			sn, _ := logicalIDOf(props(assoc)["SubnetId"])
			art, _ := logicalIDOf(props(assoc)["RouteTableId"])
			if art == rt && slices.Contains(prov, sn) {
				t.Errorf("provisioner subnet %s has a route %v", sn, props(r))
			}
		}
	}
	sg := onlyID(t, s, "AWS::EC2::SecurityGroup", func(p obj) bool { return strings.HasPrefix(resolve(p["GroupDescription"]), "kiln provisioner:") })
	var egress []string
	for _, e := range asList(at(s.json, "Resources", sg, "Properties", "SecurityGroupEgress")) {
		egress = append(egress, resolve(at(e, "IpProtocol"))+" "+resolve(at(e, "FromPort"))+"-"+resolve(at(e, "ToPort"))+" to "+resolve(at(e, "CidrIp")))
	}
	vpc := onlyID(t, s, "AWS::EC2::VPC", nil)
	wantEgress := []string{"tcp 22-22 to {" + vpc + ".CidrBlock}", "tcp 443-443 to 0.0.0.0/0"}
	if d := cmp.Diff(wantEgress, egress); d != "" {
		t.Errorf("provisioner security group egress (-want +got):\n%s", d)
	}
	cdkAssert(t, "S3 gateway endpoint", func() {
		s.template.HasResourceProperties(jsii.String("AWS::EC2::VPCEndpoint"), like(obj{
			"VpcEndpointType": "Gateway",
			"ServiceName":     assertions.Match_AnyValue(),
		}))
	})
	interfaces := map[string]obj{}
	for _, e := range resourcesOf(s, "AWS::EC2::VPCEndpoint") {
		if props(e)["VpcEndpointType"] == "Interface" {
			name := resolve(props(e)["ServiceName"])
			interfaces[name[strings.LastIndex(name, ".")+1:]] = props(e)
		}
	}
	if got := sortedKeys(interfaces); !cmp.Equal(got, []string{"ec2", "logs", "ssm"}) {
		t.Errorf("interface endpoints %v, want ec2, logs and ssm (what provision calls)", got)
	}
	var epSGs []string
	for name, ep := range interfaces {
		if ep["PrivateDnsEnabled"] != true || len(asList(ep["SubnetIds"])) != 1 {
			t.Errorf("%s endpoint %v, want private DNS in one subnet", name, ep)
		}
		g, _ := logicalIDOf(at(ep, "SecurityGroupIds", 0))
		epSGs = append(epSGs, g)
	}
	if slices.Sort(epSGs); len(slices.Compact(epSGs)) != 1 {
		t.Errorf("endpoint groups %v, want one, open to the provisioner only", epSGs)
	}
	ssm := interfaces["ssm"]
	epSG, _ := logicalIDOf(at(ssm, "SecurityGroupIds", 0))
	ingress := resourcesOf(s, "AWS::EC2::SecurityGroupIngress")
	var from []string
	for _, in := range ingress {
		if g, _ := logicalIDOf(props(in)["GroupId"]); g == epSG {
			src, _ := logicalIDOf(props(in)["SourceSecurityGroupId"])
			from = append(from, resolve(props(in)["IpProtocol"])+" "+resolve(props(in)["FromPort"])+" from "+src)
		}
	}
	if d := cmp.Diff([]string{"tcp 443 from " + sg}, from); d != "" {
		t.Errorf("endpoint ingress (-want +got):\n%s", d)
	}
	if len(asList(at(s.json, "Resources", epSG, "Properties", "SecurityGroupIngress"))) != 0 {
		t.Errorf("endpoint group %s has inline ingress beyond the provisioner's", epSG)
	}

	// The build instances' groups: SSH from the provisioner only, and
	// nothing at all; both in the stack's VPC. (launch checks the same
	// before it uses them: bake's admitsMore.)
	for _, g := range []struct{ desc, want string }{
		{"kiln build instances: SSH", "tcp 22 from " + sg},
		{"kiln build instances without SSH", ""},
	} {
		id := instanceGroup(t, s, g.desc)
		var from []string
		for _, in := range ingress {
			if gid, _ := logicalIDOf(props(in)["GroupId"]); gid == id {
				src, _ := logicalIDOf(props(in)["SourceSecurityGroupId"])
				from = append(from, resolve(props(in)["IpProtocol"])+" "+resolve(props(in)["FromPort"])+" from "+src)
			}
		}
		if inline := asList(at(s.json, "Resources", id, "Properties", "SecurityGroupIngress")); len(inline) != 0 {
			t.Errorf("%s: inline ingress %v", g.desc, inline)
		}
		if got := strings.Join(from, ", "); got != g.want {
			t.Errorf("%s: ingress %q, want %q", g.desc, got, g.want)
		}
		if v, _ := logicalIDOf(at(s.json, "Resources", id, "Properties", "VpcId")); v != vpc {
			t.Errorf("%s: in VPC %v, want the stack's %s", g.desc, at(s.json, "Resources", id, "Properties", "VpcId"), vpc)
		}
	}
}

// instanceGroup is the logical ID of the one security group whose
// description starts with desc.
func instanceGroup(t *testing.T, s *synthesis, desc string) string {
	t.Helper()
	return onlyID(t, s, "AWS::EC2::SecurityGroup", func(p obj) bool { return strings.HasPrefix(resolve(p["GroupDescription"]), desc) })
}

// TestExistingNetwork: with kiln:vpcId the stack makes no VPC and uses the
// given subnets.
func TestExistingNetwork(t *testing.T) {
	c := configuredStack.get(t)
	for _, typ := range []string{"AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::VPCEndpoint", "AWS::EC2::NatGateway"} {
		cdkAssert(t, "no "+typ, func() { c.template.ResourceCountIs(jsii.String(typ), jsii.Number(0)) })
	}
	for _, desc := range []string{"kiln provisioner", "kiln build instances: SSH", "kiln build instances without SSH"} {
		sg := instanceGroup(t, c, desc)
		if got := at(c.json, "Resources", sg, "Properties", "VpcId"); got != configuredContext[CtxVPCID] {
			t.Errorf("%s group in %v, want %v", desc, got, configuredContext[CtxVPCID])
		}
	}
	byStage := functionsByStage(t, c)
	prov := props(resourcesOf(c, "AWS::Lambda::Function")[byStage["provision"]])
	if d := cmp.Diff([]any{"subnet-0aaa1111bbbb2222c", "subnet-0ddd3333eeee4444f"}, at(prov, "VpcConfig", "SubnetIds")); d != "" {
		t.Errorf("provision subnets (-want +got):\n%s", d)
	}
	env, _ := at(prov, "Environment", "Variables").(obj)
	wantEnv := obj{
		EnvSubnetID: "subnet-0fff5555aaaa6666b", EnvParameterPrefix: "/images", EnvKeyPrefix: "/kiln-keys", EnvCommandLogPrefix: "/kiln-output",
		EnvEventBus: "platform", EnvDefaultTransport: "session_manager",
	}
	for k, want := range wantEnv {
		if d := cmp.Diff(want, env[k]); d != "" {
			t.Errorf("%s (-want +got):\n%s", k, d)
		}
	}
	// Regions narrow the policies: EC2 and Parameter Store calls are
	// allowed in those Regions only (the provisioner's network interfaces
	// aside, which are in the stack's Region).
	v := viewPolicies(c.json, c.kiln.Props)
	regional := 0
	for _, st := range v.statements {
		ec2OrSSM := st.allow && !slices.ContainsFunc(st.actions, func(a string) bool {
			return !strings.HasPrefix(a, "ec2:") && !strings.HasPrefix(a, "ssm:")
		})
		if !ec2OrSSM || st.sid == "DescribeNetworkInterfaces" || st.sid == "ManageNetworkInterfaces" {
			continue
		}
		regional++
		if got := strs(at(st.conditions, "StringEquals", "aws:RequestedRegion")); !slices.Equal(got, []string{"us-east-1", "eu-west-1"}) {
			t.Errorf("%s: aws:RequestedRegion %v, want us-east-1 and eu-west-1", st, got)
		}
	}
	if regional < 30 {
		t.Errorf("only %d EC2 and Parameter Store statements checked for their Regions", regional)
	}
	for _, st := range viewPolicies(defaultStack.get(t).json, KilnProps{}).statements {
		if at(st.conditions, "StringEquals", "aws:RequestedRegion") != nil {
			t.Errorf("default stack: %s limited to Regions without kiln:regions", st)
		}
	}
	for _, r := range resourcesOf(c, "AWS::Logs::LogGroup") {
		if got := props(r)["RetentionInDays"]; got != float64(90) {
			t.Errorf("log retention %v, want kiln:logRetentionDays 90", got)
		}
	}
}

// TestBuildInstanceProfile: the build instances' role has what the
// session_manager transport needs and nothing else, and only launch may
// pass it, only to EC2.
func TestBuildInstanceProfile(t *testing.T) {
	s := defaultStack.get(t)
	profile := onlyID(t, s, "AWS::IAM::InstanceProfile", nil)
	role, _ := logicalIDOf(at(s.json, "Resources", profile, "Properties", "Roles", 0))
	if got := at(s.json, "Resources", role, "Properties", "AssumeRolePolicyDocument", "Statement", 0, "Principal", "Service"); got != "ec2.amazonaws.com" {
		t.Errorf("build role %s assumed by %v, want ec2.amazonaws.com", role, got)
	}
	var got []string
	v := viewPolicies(s.json, s.kiln.Props)
	for _, st := range v.statements {
		if st.owner == role {
			got = append(got, st.sid+": "+strings.Join(st.actions, ",")+" on "+strings.Join(st.resources, ","))
		}
	}
	want := []string{
		"RegisterWithSSM: ssm:UpdateInstanceInformation on arn:aws:ec2:*:111122223333:instance/*",
		"RunCommandChannels: ec2messages:AcknowledgeMessage,ec2messages:DeleteMessage,ec2messages:FailMessage,ec2messages:GetEndpoint,ec2messages:GetMessages,ec2messages:SendReply," +
			"ssmmessages:CreateControlChannel,ssmmessages:CreateDataChannel,ssmmessages:OpenControlChannel,ssmmessages:OpenDataChannel on *",
		"FindLogGroups: logs:DescribeLogGroups on *",
		"WriteCommandOutput: logs:CreateLogStream,logs:PutLogEvents,logs:DescribeLogStreams on arn:aws:logs:*:111122223333:log-group:/kiln/commands/*",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("build role %s (-want +got):\n%s", role, d)
	}
	var passers []string
	for _, st := range v.statements {
		if st.allow && st.allows("iam:PassRole") {
			passers = append(passers, st.stage+" passes "+strings.Join(st.resources, ",")+" to "+strings.Join(strs(at(st.conditions, "StringEquals", "iam:PassedToService")), ","))
		}
	}
	if d := cmp.Diff([]string{"launch passes {" + role + ".Arn} to ec2.amazonaws.com"}, passers); d != "" {
		t.Errorf("iam:PassRole (-want +got):\n%s", d)
	}
}

// TestStagePolicies pins what each stage may do, in one readable table per
// stage: a change to a stage's permissions shows here.
func TestStagePolicies(t *testing.T) {
	s := defaultStack.get(t)
	v := viewPolicies(s.json, s.kiln.Props)
	got := map[string][]string{}
	for _, st := range v.statements {
		if st.stage == "" || st.stage == "build-instance" {
			continue
		}
		var actions []string
		for _, a := range st.actions {
			if (!strings.HasPrefix(a, "logs:") || st.sid != "WriteOwnLogs") && !strings.HasPrefix(a, "ec2:Describe") && !strings.Contains(a, "NetworkInterface") && !strings.Contains(a, "PrivateIpAddresses") {
				actions = append(actions, a)
			}
		}
		if len(actions) > 0 && st.allow {
			got[st.stage] = append(got[st.stage], actions...)
		}
	}
	for stage := range got {
		slices.Sort(got[stage])
		got[stage] = slices.Compact(got[stage])
	}
	want := map[string][]string{
		"launch": {"ec2:AuthorizeSecurityGroupIngress", "ec2:CreateSecurityGroup", "ec2:CreateTags", "ec2:DeleteKeyPair", "ec2:ImportKeyPair", "ec2:RunInstances",
			"iam:PassRole", "s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:PutObject", "ssm:AddTagsToResource", "ssm:GetParameter", "ssm:PutParameter"},
		"provision": {"logs:CreateLogGroup", "logs:GetLogEvents", "logs:PutRetentionPolicy", "logs:TagResource",
			"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject",
			"ssm:CancelCommand", "ssm:DescribeInstanceInformation", "ssm:GetCommandInvocation", "ssm:GetParameter", "ssm:ListCommands", "ssm:SendCommand"},
		"snapshot": {"ec2:CopyImage", "ec2:CreateImage", "ec2:CreateTags", "ec2:DeleteSnapshot", "ec2:DeregisterImage", "ec2:EnableImageDeprecation",
			"ec2:ModifyImageAttribute", "ec2:ModifyInstanceAttribute", "ec2:StopInstances", "s3:GetObject"},
		"distribute": {"ec2:CopyImage", "ec2:CreateTags", "ec2:DeleteSnapshot", "ec2:DeregisterImage", "ec2:EnableImageDeprecation", "ec2:ModifyImageAttribute",
			"ec2:ModifySnapshotAttribute", "events:PutEvents", "s3:GetObject", "s3:ListBucket", "s3:PutObject", "ssm:PutParameter"},
		"cleanup": {"ec2:CreateTags", "ec2:DeleteKeyPair", "ec2:DeleteSecurityGroup", "ec2:DeleteSnapshot", "ec2:DeleteVolume", "ec2:DeregisterImage", "ec2:TerminateInstances",
			"logs:DeleteLogGroup", "s3:DeleteObject", "s3:GetObject", "s3:ListBucket", "ssm:CancelCommand", "ssm:DeleteParameter",
			"ssm:GetParameter", "ssm:GetParameterHistory", "ssm:GetParametersByPath", "ssm:ListCommands", "ssm:PutParameter"},
	}
	jobs := map[string][]string{
		"rebuild": {"events:PutEvents", "s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "ssm:GetParameter",
			"states:DescribeExecution", "states:ListExecutions", "states:StartExecution"},
		"retention": {"ec2:DeleteSnapshot", "ec2:DeregisterImage", "ec2:EnableImageDeprecation", "events:PutEvents", "ssm:GetParameter"},
	}
	for _, f := range deployed(s) {
		if j, ok := jobs[f.Name]; ok {
			want[f.Name] = j
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("stage permissions beyond Describe*, their own logs and network interfaces (-want +got):\n%s", d)
	}
	// Each function writes only its own log group.
	byStage := functionsByStage(t, s)
	for _, st := range v.statements {
		if st.allows("logs:PutLogEvents") && st.stage != "" && st.stage != "build-instance" {
			lg, _ := logicalIDOf(at(s.json, "Resources", byStage[st.stage], "Properties", "LoggingConfig", "LogGroup"))
			if d := cmp.Diff([]string{"{" + lg + ".Arn}"}, st.resources); d != "" {
				t.Errorf("%s writes logs (-want +got):\n%s", st, d)
			}
		}
	}
}

// TestKMSOnlyWithKey: without kiln:kmsKeyArn no role has a KMS permission
// (the Deny that keeps cleanup from decrypting aside); with it, the stages
// may use that key, through S3 and EC2 only.
func TestKMSOnlyWithKey(t *testing.T) {
	count := func(s *synthesis) (n int) {
		for _, st := range viewPolicies(s.json, s.kiln.Props).statements {
			if st.allow && slices.ContainsFunc(st.actions, func(a string) bool { return strings.HasPrefix(a, "kms:") }) {
				n++
				for _, via := range strs(at(st.conditions, "StringLike", "kms:ViaService")) {
					if !regexp.MustCompile(`^(s3|ec2)\.\*\.amazonaws\.com$`).MatchString(via) {
						t.Errorf("%s: kms:ViaService %s", st, via)
					}
				}
				if at(st.conditions, "StringLike", "kms:ViaService") == nil {
					t.Errorf("%s: KMS permission not limited to S3 or EC2", st)
				}
			}
		}
		return n
	}
	if n := count(defaultStack.get(t)); n != 0 {
		t.Errorf("default stack: %d KMS statements, want none", n)
	}
	if n := count(configuredStack.get(t)); n == 0 {
		t.Errorf("configured stack: no KMS statements for kiln:kmsKeyArn")
	}
}

// TestOutputs: the stack names what users need.
func TestOutputs(t *testing.T) {
	s := defaultStack.get(t)
	outputs := s.json["Outputs"].(obj)
	want := obj{
		"KilnBucketName":           ref(onlyID(t, s, "AWS::S3::Bucket", nil)),
		"KilnStateMachineArn":      ref(onlyID(t, s, "AWS::StepFunctions::StateMachine", nil)),
		"KilnParameterPrefix":      "/kiln",
		"KilnEventBus":             "default",
		"KilnEventSource":          "kiln",
		"KilnEventDetailType":      "kiln.image.baked",
		"KilnBuildSubnet":          ref(buildSubnet(t, s)),
		"KilnBuildInstanceProfile": getAtt(onlyID(t, s, "AWS::IAM::InstanceProfile", nil), "Arn"),
	}
	for _, f := range deployed(s) {
		switch f.Name {
		case "rebuild":
			want["KilnRebuildEventDetailType"] = EventRebuildDecisions
		case "retention":
			want["KilnRetentionEventDetailType"] = EventRetentionDecisions
		}
	}
	for name, v := range want {
		cdkAssert(t, "output "+name, func() { s.template.HasOutput(jsii.String(name), like(obj{"Value": v})) })
	}
	logGroups := map[string]bool{}
	for id := range resourcesOf(s, "AWS::Logs::LogGroup") {
		logGroups[id] = true
	}
	for name, o := range outputs {
		if strings.HasSuffix(name, "LogGroup") {
			id, _ := logicalIDOf(at(o, "Value"))
			delete(logGroups, id)
		}
	}
	if len(logGroups) != 0 {
		t.Errorf("log groups without an output: %v", sortedKeys(logGroups))
	}
}

// TestProps: context parsing and validation.
func TestProps(t *testing.T) {
	c := configuredStack.get(t)
	want := KilnProps{
		VPCID: "vpc-0a1b2c3d4e5f60718", SubnetIDs: []string{"subnet-0aaa1111bbbb2222c", "subnet-0ddd3333eeee4444f"},
		BuildSubnetID: "subnet-0fff5555aaaa6666b", Regions: []string{"us-east-1", "eu-west-1"},
		ParameterPrefix: "/images", KeyPrefix: "/kiln-keys", CommandLogPrefix: "/kiln-output", EventBus: "platform", DefaultTransport: "session_manager",
		KMSKeyARN: testKeyARN, RebuildSchedule: "rate(12 hours)", RetentionSchedule: "cron(30 5 ? * SUN *)",
		ScheduleTimeZone: "Europe/Berlin", RetentionKeep: 5, RetentionDays: 45, RebuildMaxAgeDays: 14, RetentionDeprecateDays: 7, LogRetentionDays: 90,
	}
	got := c.kiln.Props
	got.SourceDir, got.BuildDir = "", ""
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("props from context (-want +got):\n%s", d)
	}
	bad := []struct {
		name string
		p    KilnProps
		want string
	}{
		{"vpc without subnets", KilnProps{VPCID: "vpc-0123abcd"}, "name the provisioner's subnets"},
		{"subnets without vpc", KilnProps{SubnetIDs: []string{"subnet-0123abcd"}}, "name their VPC"},
		{"transport", KilnProps{DefaultTransport: "winrm"}, "ssh or session_manager"},
		{"region", KilnProps{Regions: []string{"mars-1"}}, "Region name"},
		{"key", KilnProps{KMSKeyARN: "alias/kiln"}, "key ARN"},
		{"schedule", KilnProps{RebuildSchedule: "daily"}, "cron(...)"},
		{"retention", KilnProps{LogRetentionDays: 31}, "log retention 31"},
		{"same prefixes", KilnProps{ParameterPrefix: "/kiln", KeyPrefix: "/kiln/"}, "must differ"},
		{"deprecate after delete", KilnProps{RetentionDays: 30, RetentionDeprecateDays: 30}, "want fewer days"},
	}
	for _, tt := range bad {
		if err := tt.p.withDefaults().validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("validate(%s) = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if err := (KilnProps{}).withDefaults().validate(); err != nil {
		t.Errorf("validate(defaults) = %v", err)
	}
	app := awscdk.NewApp(&awscdk.AppProps{Context: &map[string]any{CtxRetentionKeep: "many", CtxRegions: float64(3)}})
	if _, err := PropsFromContext(app.Node()); err == nil || !strings.Contains(err.Error(), CtxRetentionKeep) || !strings.Contains(err.Error(), CtxRegions) {
		t.Errorf("PropsFromContext(bad values) = %v, want errors naming %s and %s", err, CtxRetentionKeep, CtxRegions)
	}
}

// TestConstantsMatchStages: the tag and event names infra uses are the
// ones pkg/bake writes (read from its source: infra does not import it).
func TestConstantsMatchStages(t *testing.T) {
	want := map[string]string{
		"TagBuild": TagBuild, "EventSource": EventSource, "EventImageBaked": EventImageBaked, "RecipePrefix": RecipePrefix,
		"EventRebuildDecisions": EventRebuildDecisions, "EventRetentionDecisions": EventRetentionDecisions,
		"DefaultRetentionKeep": fmt.Sprint(DefaultRetentionKeep), "DefaultRetentionDays": fmt.Sprint(DefaultRetentionDays),
		"DefaultRebuildMaxAgeDays": fmt.Sprint(DefaultRebuildMaxAgeDays),
	}
	got := map[string]string{}
	files, _ := filepath.Glob(filepath.Join("..", "pkg", "bake", "*.go"))
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, name := range vs.Names {
				if _, wanted := want[name.Name]; wanted && i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
						got[name.Name] = strings.Trim(lit.Value, `"`)
					}
				}
			}
			return true
		})
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("infra's constants vs pkg/bake's (-infra +bake):\n%s", d)
	}
	// And the environment variables are the ones bake.ConfigFromEnv reads.
	src, err := os.ReadFile(filepath.Join("..", "pkg", "bake", "config.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range []string{EnvBucket, EnvProvisionerSecurityGroup, EnvInstanceSecurityGroup, EnvIsolatedSecurityGroup, EnvSubnetID, EnvInstanceProfile, EnvParameterPrefix, EnvKeyPrefix, EnvCommandLogPrefix, EnvEventBus, EnvDefaultTransport} {
		if !strings.Contains(string(src), `"`+env+`"`) {
			t.Errorf("pkg/bake/config.go does not read %s", env)
		}
	}
	for _, def := range []string{DefaultParameterPrefix, DefaultKeyPrefix, DefaultCommandLogPrefix, DefaultEventBus, DefaultTransport} {
		if !strings.Contains(string(src), `"`+def+`")`) {
			t.Errorf("pkg/bake/config.go does not default to %q as infra does", def)
		}
	}
	// The jobs' settings, where the jobs exist.
	var jobSrc []byte
	for _, f := range []string{"rebuild.go", "retention.go"} {
		b, _ := os.ReadFile(filepath.Join("..", "pkg", "bake", f))
		jobSrc = append(jobSrc, b...)
	}
	for _, j := range []string{"rebuild", "retention"} {
		b, _ := os.ReadFile(filepath.Join("..", "functions", j, "main.go"))
		jobSrc = append(jobSrc, b...)
	}
	if len(jobSrc) > 0 {
		for _, env := range []string{EnvStateMachineARN, EnvRetentionKeep, EnvRetentionDays, EnvRebuildMaxAgeDays, EnvRetentionDeprecateDays, EnvRegions} {
			if !strings.Contains(string(jobSrc), `"`+env+`"`) {
				t.Errorf("the rebuild and retention jobs do not read %s", env)
			}
		}
	}
}
