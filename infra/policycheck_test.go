package infra

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// The least-privilege rules, checked against every IAM statement of a
// synthesized template: identity policies (inline in roles, or
// AWS::IAM::Policy) and resource policies (bucket, queue). Each rule
// returns its violations; policy_test.go runs them on both synthesized
// stacks (none may report) and on mutated copies (each must report).
//
// Statements are compared symbolically: intrinsics resolve to strings in
// which pseudo parameters have test values and resources appear as
// "{LogicalID.Attr}" (see resolve), and ARN patterns are matched with IAM's
// wildcards against sample ARNs of what a rule protects.

// policyStatement is one statement of the template.
type policyStatement struct {
	// owner is the role (logical ID) an identity policy is attached to,
	// or the resource policy's logical ID; stage is the stage or job
	// whose function has the role, "build-instance" for the build role,
	// else "".
	owner, stage string
	// where names the statement for messages.
	where      string
	sid        string
	allow      bool
	actions    []string
	notAction  bool
	resources  []string
	conditions obj
	// raw is the statement in the template (for mutations).
	raw obj
}

func (s policyStatement) String() string { return s.where }

// policyView is a template's statements and what the rules need to know.
type policyView struct {
	statements []policyStatement
	// roles maps role logical IDs to their stage ("" for others).
	roles map[string]string
	// buildRole is the build instances' role's logical ID.
	buildRole string
	// managed lists roles with managed policies attached, and managed
	// policies defined.
	managed []string
	props   KilnProps
}

// viewPolicies collects the statements of tmpl, deployed with props.
func viewPolicies(tmpl obj, props KilnProps) policyView {
	v := policyView{roles: map[string]string{}, props: props.withDefaults()}
	res := tmpl["Resources"].(obj)
	for _, r := range res {
		r := r.(obj)
		p := props0(r)
		switch r["Type"] {
		case "AWS::Lambda::Function":
			role, _ := logicalIDOf(p["Role"])
			for _, tag := range asList(p["Tags"]) {
				if at(tag, "Key") == TagStage {
					v.roles[role] = at(tag, "Value").(string)
				}
			}
		case "AWS::IAM::InstanceProfile":
			for _, role := range asList(p["Roles"]) {
				id, _ := logicalIDOf(role)
				v.buildRole = id
				v.roles[id] = "build-instance"
			}
		}
	}
	for _, id := range sortedKeys(res) {
		r := res[id].(obj)
		p := props0(r)
		switch r["Type"] {
		case "AWS::IAM::Role":
			for i, pol := range asList(p["Policies"]) {
				v.add(id, fmt.Sprintf("%s policy %d (%v)", id, i, at(pol, "PolicyName")), at(pol, "PolicyDocument"))
			}
			if len(asList(p["ManagedPolicyArns"])) > 0 {
				v.managed = append(v.managed, id)
			}
		case "AWS::IAM::Policy":
			for _, role := range asList(p["Roles"]) {
				rid, _ := logicalIDOf(role)
				v.add(rid, id, p["PolicyDocument"])
			}
		case "AWS::IAM::ManagedPolicy":
			v.managed = append(v.managed, id)
		case "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy", "AWS::Lambda::Permission":
			v.add(id, id, p["PolicyDocument"])
		}
	}
	return v
}

func props0(r obj) obj {
	p, _ := r["Properties"].(obj)
	if p == nil {
		return obj{}
	}
	return p
}

func (v *policyView) add(owner, where string, doc any) {
	stmts := at(doc, "Statement")
	if m, ok := stmts.(obj); ok {
		stmts = []any{m}
	}
	for i, s := range asList(stmts) {
		s := s.(obj)
		ps := policyStatement{
			owner: owner, stage: v.roles[owner], raw: s,
			where: fmt.Sprintf("%s statement %d", where, i),
			allow: s["Effect"] == "Allow",
		}
		if sid, ok := s["Sid"].(string); ok {
			ps.sid = sid
			ps.where += " (" + sid + ")"
		}
		if a, ok := s["NotAction"]; ok {
			ps.notAction = true
			ps.actions = strs(a)
		} else {
			ps.actions = strs(s["Action"])
		}
		if _, ok := s["NotResource"]; ok {
			ps.resources = []string{"*"} // as broad as it gets
		} else {
			ps.resources = strs(s["Resource"])
		}
		ps.conditions, _ = s["Condition"].(obj)
		v.statements = append(v.statements, ps)
	}
}

// allows reports whether the statement's actions include action (IAM
// matches actions case-insensitively, with wildcards).
func (s policyStatement) allows(action string) bool {
	if s.notAction {
		return !slices.ContainsFunc(s.actions, func(a string) bool { return wildcard(strings.ToLower(a), strings.ToLower(action)) })
	}
	return slices.ContainsFunc(s.actions, func(a string) bool { return wildcard(strings.ToLower(a), strings.ToLower(action)) })
}

// covers reports whether one of the statement's resources matches arn.
func (s policyStatement) covers(arn string) bool {
	return slices.ContainsFunc(s.resources, func(r string) bool { return wildcard(r, arn) })
}

// wildcard matches s against an IAM pattern: * is any run of characters
// (slashes included), ? is one.
func wildcard(pattern, s string) bool {
	var re strings.Builder
	re.WriteString("^")
	for _, r := range pattern {
		switch r {
		case '*':
			re.WriteString(".*")
		case '?':
			re.WriteString(".")
		default:
			re.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	re.WriteString("$")
	return regexp.MustCompile(re.String()).MatchString(s)
}

// requiresTag reports whether the statement's conditions require the
// condition key (such as aws:ResourceTag/kiln:build) to be present: a Null
// check of "false", or a string comparison on it.
func (s policyStatement) requiresTag(key string) bool {
	for op, body := range s.conditions {
		m, _ := body.(obj)
		v, ok := m[key]
		if !ok {
			continue
		}
		switch {
		case op == "Null" && fmt.Sprint(v) == "false":
			return true
		case strings.HasPrefix(op, "String") && !strings.Contains(op, "Not") && !strings.HasSuffix(op, "IfExists"):
			return true
		}
	}
	return false
}

const (
	resourceTagBuild = "aws:ResourceTag/" + TagBuild
	requestTagBuild  = "aws:RequestTag/" + TagBuild
)

// sampleEC2ARN is an ARN of an EC2 resource of type typ.
func sampleEC2ARN(typ string) string {
	account := testAccount
	if typ == "image" || typ == "snapshot" {
		account = ""
	}
	return fmt.Sprintf("arn:%s:ec2:%s:%s:%s/kiln-sample", testPartition, testRegion, account, typ)
}

// sampleKeyParameter is the ARN of a build's login key, and of the path
// cleanup lists.
func (v policyView) sampleKeyParameter() (key, path string) {
	path = fmt.Sprintf("arn:%s:ssm:%s:%s:parameter%s/kiln-sample-0123456789ab", testPartition, testRegion, testAccount, v.props.KeyPrefix)
	return path + "/ssh-key", path
}

// rule is one least-privilege rule.
type rule struct {
	name  string
	check func(v policyView) []string
}

// rules are the least-privilege rules of issue 5.
var rules = []rule{
	{"no wildcard actions in Allow statements", func(v policyView) []string {
		var out []string
		for _, s := range v.statements {
			if !s.allow {
				continue // a Deny of s3:* (TLS only) narrows, not widens
			}
			if s.notAction {
				out = append(out, fmt.Sprintf("%s: NotAction", s))
			}
			for _, a := range s.actions {
				if strings.ContainsAny(a, "*?") {
					out = append(out, fmt.Sprintf("%s: action %q", s, a))
				}
			}
		}
		return out
	}},
	{"Resource \"*\" only for actions without resource-level permissions", func(v policyView) []string {
		var out []string
		for _, s := range v.statements {
			if !s.allow || !slices.Contains(s.resources, "*") {
				continue
			}
			for _, a := range s.actions {
				if !slices.Contains(ResourceStarActions, a) {
					out = append(out, fmt.Sprintf("%s: %s on Resource \"*\"", s, a))
				}
			}
		}
		return out
	}},
	{"destructive EC2 actions only on resources tagged " + TagBuild, func(v policyView) []string {
		var out []string
		for _, s := range v.statements {
			if !s.allow {
				continue
			}
			for _, a := range DestructiveEC2Actions {
				if s.allows(a) && !s.requiresTag(resourceTagBuild) {
					out = append(out, fmt.Sprintf("%s: %s without a %s condition", s, a, resourceTagBuild))
				}
			}
		}
		return out
	}},
	{"creating EC2 actions require " + TagBuild + " in the request", func(v policyView) []string {
		var out []string
		for _, s := range v.statements {
			if !s.allow {
				continue
			}
			for _, a := range sortedKeys(CreatingEC2Actions) {
				if !s.allows(a) {
					continue
				}
				for _, typ := range CreatingEC2Actions[a] {
					// A statement that requires the resource to carry the
					// tag already cannot authorize creating it.
					if s.covers(sampleEC2ARN(typ)) && !s.requiresTag(requestTagBuild) && !s.requiresTag(resourceTagBuild) {
						out = append(out, fmt.Sprintf("%s: %s may create a %s without %s", s, a, typ, requestTagBuild))
					}
				}
			}
		}
		return out
	}},
	{"CreateTags only while creating, or on resources tagged " + TagBuild, func(v policyView) []string {
		var out []string
		for _, s := range v.statements {
			if !s.allow || !s.allows("ec2:CreateTags") || s.requiresTag(resourceTagBuild) {
				continue
			}
			creating := strs(at(s.conditions, "StringEquals", "ec2:CreateAction"))
			ok := len(creating) > 0
			for _, c := range creating {
				if _, known := CreatingEC2Actions["ec2:"+c]; !known {
					ok = false
				}
			}
			if !ok {
				out = append(out, fmt.Sprintf("%s: ec2:CreateTags neither limited to ec2:CreateAction of a creating call nor to tagged resources", s))
			}
		}
		return out
	}},
	{"login keys: launch writes, launch and provision read, cleanup deletes; host keys: launch alone reads", func(v policyView) []string {
		key, path := v.sampleKeyParameter()
		hostKey := path + "/host-key"
		cannotDecrypt := map[string]bool{}
		for _, s := range v.statements {
			if !s.allow && s.allows("kms:Decrypt") && s.covers("*") && strings.HasPrefix(fmt.Sprint(at(s.conditions, "StringLike", "kms:ViaService")), "ssm.") {
				cannotDecrypt[s.owner] = true
			}
		}
		var out []string
		for _, s := range v.statements {
			if !s.allow {
				continue
			}
			onKey := s.covers(key)
			for _, a := range []string{"ssm:GetParameter", "ssm:GetParameters", "ssm:GetParameterHistory"} {
				if onKey && s.allows(a) && s.stage != "launch" && s.stage != "provision" {
					out = append(out, fmt.Sprintf("%s: %s (%s) may read login keys", s, s.owner, s.stage))
				}
			}
			if s.covers(path) && s.allows("ssm:GetParametersByPath") && s.stage != "launch" && s.stage != "provision" && !cannotDecrypt[s.owner] {
				out = append(out, fmt.Sprintf("%s: %s (%s) may read login keys by path and decrypt them", s, s.owner, s.stage))
			}
			for _, a := range []string{"ssm:PutParameter", "ssm:LabelParameterVersion"} {
				if onKey && s.allows(a) && s.stage != "launch" {
					out = append(out, fmt.Sprintf("%s: %s (%s) may write login keys", s, s.owner, s.stage))
				}
			}
			for _, a := range []string{"ssm:DeleteParameter", "ssm:DeleteParameters"} {
				if onKey && s.allows(a) && s.stage != "cleanup" {
					out = append(out, fmt.Sprintf("%s: %s (%s) may delete login keys", s, s.owner, s.stage))
				}
			}
			if s.covers(hostKey) && s.allows("ssm:GetParameter") && s.stage != "launch" {
				out = append(out, fmt.Sprintf("%s: %s (%s) may read host keys", s, s.owner, s.stage))
			}
		}
		return out
	}},
	{"ssm:SendCommand only " + RunCommandDocument + ", only to instances tagged " + TagBuild, func(v policyView) []string {
		instance := sampleEC2ARN("instance")
		other := []string{
			"arn:aws:ssm:us-east-1::document/AWS-RunPowerShellScript",
			"arn:aws:ssm:us-east-1:111122223333:document/kiln-sample",
		}
		var out []string
		for _, s := range v.statements {
			if !s.allow || !s.allows("ssm:SendCommand") {
				continue
			}
			if s.stage != "provision" {
				out = append(out, fmt.Sprintf("%s: %s (%s) may run commands on instances", s, s.owner, s.stage))
			}
			if s.covers(instance) && !s.requiresTag("ssm:resourceTag/"+TagBuild) && !s.requiresTag(resourceTagBuild) {
				out = append(out, fmt.Sprintf("%s: ssm:SendCommand to instances without a %s condition", s, TagBuild))
			}
			for _, doc := range other {
				if s.covers(doc) {
					out = append(out, fmt.Sprintf("%s: ssm:SendCommand may run %s", s, doc))
				}
			}
		}
		return out
	}},
	{"iam:PassRole only by launch, only for the build role, only to EC2", func(v policyView) []string {
		var out []string
		for _, s := range v.statements {
			if !s.allow || !s.allows("iam:PassRole") {
				continue
			}
			if s.stage != "launch" {
				out = append(out, fmt.Sprintf("%s: %s (%s) may pass roles", s, s.owner, s.stage))
			}
			want := "{" + v.buildRole + ".Arn}"
			if len(s.resources) != 1 || s.resources[0] != want {
				out = append(out, fmt.Sprintf("%s: passes %v, want only %s", s, s.resources, want))
			}
			if got := strs(at(s.conditions, "StringEquals", "iam:PassedToService")); !slices.Equal(got, []string{"ec2.amazonaws.com"}) {
				out = append(out, fmt.Sprintf("%s: iam:PassedToService %v, want ec2.amazonaws.com", s, got))
			}
		}
		return out
	}},
	{"KMS permissions only for the configured key", func(v policyView) []string {
		var out []string
		for _, s := range v.statements {
			if !s.allow || !slices.ContainsFunc(s.actions, func(a string) bool { return strings.HasPrefix(strings.ToLower(a), "kms:") || a == "*" }) {
				continue
			}
			if v.props.KMSKeyARN == "" {
				out = append(out, fmt.Sprintf("%s: KMS permission %v without a configured key", s, s.actions))
				continue
			}
			if len(s.resources) != 1 || s.resources[0] != v.props.KMSKeyARN {
				out = append(out, fmt.Sprintf("%s: KMS permission on %v, want only %s", s, s.resources, v.props.KMSKeyARN))
			}
		}
		return out
	}},
	{"no managed policies (every permission is in a statement these rules see)", func(v policyView) []string {
		var out []string
		for _, id := range v.managed {
			out = append(out, id+": managed policy")
		}
		return out
	}},
}
