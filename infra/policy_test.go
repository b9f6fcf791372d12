package infra

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPolicyRulesHold checks every IAM statement of both synthesized stacks
// against every least-privilege rule.
func TestPolicyRulesHold(t *testing.T) {
	for _, stack := range []struct {
		name string
		l    *lazy
	}{{"default", defaultStack}, {"configured", configuredStack}} {
		s := stack.l.get(t)
		v := viewPolicies(s.json, s.kiln.Props)
		// The checker must see the stages' statements, or it proves
		// nothing.
		seen := map[string]int{}
		for _, st := range v.statements {
			seen[st.stage]++
		}
		for _, stage := range stageNames() {
			if seen[stage] < 3 {
				t.Errorf("%s: the checker found %d statements of %s's role, want its policy", stack.name, seen[stage], stage)
			}
		}
		for _, r := range rules {
			t.Run(stack.name+"/"+r.name, func(t *testing.T) {
				for _, violation := range r.check(v) {
					t.Errorf("%s", violation)
				}
			})
		}
	}
}

// TestPolicyRulesCatchViolations breaks each rule in a copy of a
// synthesized template and checks that the rule reports it: a checker
// that cannot fail proves nothing.
func TestPolicyRulesCatchViolations(t *testing.T) {
	tests := []struct {
		name   string
		rule   string
		stack  *lazy
		mutate func(t *testing.T, m mutator)
	}{
		{"wildcard action", "no wildcard actions", defaultStack, func(t *testing.T, m mutator) {
			st := m.statement(t, "launch", "StorePlanAndClaim")
			st["Action"] = []any{"s3:*"}
		}},
		{"Describe wildcard", "no wildcard actions", defaultStack, func(t *testing.T, m mutator) {
			st := m.statement(t, "cleanup", "Describe")
			st["Action"] = "ec2:Describe*"
		}},
		{"NotAction", "no wildcard actions", defaultStack, func(t *testing.T, m mutator) {
			m.add(t, "snapshot", obj{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
		}},
		{"Resource * on writes", "Resource \"*\" only", defaultStack, func(t *testing.T, m mutator) {
			m.statement(t, "distribute", "WriteManifest")["Resource"] = "*"
		}},
		{"Resource * on instances", "Resource \"*\" only", defaultStack, func(t *testing.T, m mutator) {
			m.statement(t, "snapshot", "StopKilnInstances")["Resource"] = "*"
		}},
		{"untagged terminate", "destructive EC2 actions", defaultStack, func(t *testing.T, m mutator) {
			delete(m.statement(t, "cleanup", "TerminateKilnInstances"), "Condition")
		}},
		{"deregister on another tag", "destructive EC2 actions", defaultStack, func(t *testing.T, m mutator) {
			m.statement(t, "cleanup", "DeregisterKilnImages")["Condition"] = obj{"Null": obj{"aws:ResourceTag/Name": "false"}}
		}},
		{"tag merely optional", "destructive EC2 actions", configuredStack, func(t *testing.T, m mutator) {
			m.statement(t, "distribute", "ShareKilnImages")["Condition"] = obj{"StringLikeIfExists": obj{resourceTagBuild: "*"}}
		}},
		{"stop added elsewhere", "destructive EC2 actions", defaultStack, func(t *testing.T, m mutator) {
			m.statement(t, "launch", "RunInstancesFrom")["Action"] = []any{"ec2:RunInstances", "ec2:StopInstances"}
		}},
		{"untagged instances", "creating EC2 actions", defaultStack, func(t *testing.T, m mutator) {
			delete(m.statement(t, "launch", "RunTaggedInstances"), "Condition")
		}},
		{"run creates on the open statement", "creating EC2 actions", configuredStack, func(t *testing.T, m mutator) {
			st := m.statement(t, "launch", "RunInstancesFrom")
			st["Resource"] = append(asList(st["Resource"]), "arn:aws:ec2:us-east-1:111122223333:volume/*")
		}},
		{"untagged security group", "creating EC2 actions", defaultStack, func(t *testing.T, m mutator) {
			delete(m.statement(t, "launch", "CreateTaggedSecurityGroup"), "Condition")
		}},
		{"untagged key pair", "creating EC2 actions", defaultStack, func(t *testing.T, m mutator) {
			delete(m.statement(t, "launch", "ImportTaggedKeyPair"), "Condition")
		}},
		{"untagged image", "creating EC2 actions", defaultStack, func(t *testing.T, m mutator) {
			delete(m.statement(t, "snapshot", "CreateTaggedImage"), "Condition")
		}},
		{"tags on anything", "CreateTags only", defaultStack, func(t *testing.T, m mutator) {
			delete(m.statement(t, "snapshot", "TagImagesAtCreation"), "Condition")
		}},
		{"tags by any call", "CreateTags only", defaultStack, func(t *testing.T, m mutator) {
			m.statement(t, "launch", "TagAtCreation")["Condition"] = obj{"StringEquals": obj{"ec2:CreateAction": []any{"RunInstances", "CreateTags"}}}
		}},
		{"distribute reads keys", "login keys", defaultStack, func(t *testing.T, m mutator) {
			m.add(t, "distribute", obj{"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "arn:aws:ssm:*:111122223333:parameter/kiln/*"})
		}},
		{"publishing reaches the keys", "login keys", defaultStack, func(t *testing.T, m mutator) {
			m.statement(t, "distribute", "PublishAMIParameters")["Resource"] = obj{"Fn::Sub": "arn:${AWS::Partition}:ssm:*:${AWS::AccountId}:parameter/kiln/*"}
		}},
		{"cleanup may decrypt", "login keys", configuredStack, func(t *testing.T, m mutator) {
			m.statement(t, "cleanup", "NeverDecryptParameters")["Effect"] = "Allow"
		}},
		{"snapshot deletes keys", "login keys", configuredStack, func(t *testing.T, m mutator) {
			m.add(t, "snapshot", obj{"Effect": "Allow", "Action": "ssm:DeleteParameter", "Resource": "arn:aws:ssm:us-east-1:111122223333:parameter/kiln-keys/*"})
		}},
		{"provision reads host keys", "login keys", defaultStack, func(t *testing.T, m mutator) {
			m.statement(t, "provision", "ReadLoginKeys")["Resource"] = obj{"Fn::Sub": "arn:${AWS::Partition}:ssm:*:${AWS::AccountId}:parameter/kiln/builds/*"}
		}},
		{"volumes deleted untagged", "destructive", defaultStack, func(t *testing.T, m mutator) {
			delete(m.statement(t, "cleanup", "DeleteKilnVolumes"), "Condition")
		}},
		{"commands on any instance", "ssm:SendCommand", defaultStack, func(t *testing.T, m mutator) {
			delete(m.statement(t, "provision", "RunCommandsOnKilnInstances"), "Condition")
		}},
		{"any document", "ssm:SendCommand", defaultStack, func(t *testing.T, m mutator) {
			m.statement(t, "provision", "RunShellScript")["Resource"] = obj{"Fn::Sub": "arn:${AWS::Partition}:ssm:*::document/*"}
		}},
		{"cleanup runs commands", "ssm:SendCommand", configuredStack, func(t *testing.T, m mutator) {
			m.add(t, "cleanup", m.statement(t, "provision", "RunShellScript"))
		}},
		{"pass any role", "iam:PassRole", defaultStack, func(t *testing.T, m mutator) {
			m.statement(t, "launch", "PassBuildRole")["Resource"] = "*"
		}},
		{"pass to any service", "iam:PassRole", defaultStack, func(t *testing.T, m mutator) {
			delete(m.statement(t, "launch", "PassBuildRole"), "Condition")
		}},
		{"provision passes roles", "iam:PassRole", defaultStack, func(t *testing.T, m mutator) {
			m.add(t, "provision", m.statement(t, "launch", "PassBuildRole"))
		}},
		{"KMS without a key", "KMS permissions", defaultStack, func(t *testing.T, m mutator) {
			m.add(t, "provision", obj{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:us-east-1:111122223333:key/other"})
		}},
		{"KMS beyond the key", "KMS permissions", configuredStack, func(t *testing.T, m mutator) {
			m.statement(t, "launch", "UseKeyThroughS3")["Resource"] = "*"
		}},
		{"managed policy", "no managed policies", defaultStack, func(t *testing.T, m mutator) {
			m.role(t, "snapshot")["ManagedPolicyArns"] = []any{"arn:aws:iam::aws:policy/AmazonEC2FullAccess"}
		}},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.stack.get(t)
			var r *rule
			for i := range rules {
				if strings.HasPrefix(rules[i].name, tt.rule) {
					r = &rules[i]
				}
			}
			if r == nil {
				t.Fatalf("no rule %q", tt.rule)
			}
			covered[r.name] = true
			before := r.check(viewPolicies(s.json, s.kiln.Props))
			tmpl := deepCopy(s.json)
			tt.mutate(t, mutator{tmpl: tmpl, s: s})
			after := r.check(viewPolicies(tmpl, s.kiln.Props))
			if len(after) <= len(before) {
				t.Errorf("rule %q did not catch the violation: before %d, after %d violations%s", r.name, len(before), len(after),
					cmp.Diff(before, after))
			} else {
				t.Logf("caught: %s", after[len(after)-1])
			}
		})
	}
	for _, r := range rules {
		if !covered[r.name] {
			t.Errorf("rule %q has no violation that proves it can fail", r.name)
		}
	}
}

// mutator edits a copy of a template's roles.
type mutator struct {
	tmpl obj
	s    *synthesis
}

// role returns the Properties of the stage function's role in the copy.
func (m mutator) role(t *testing.T, stage string) obj {
	t.Helper()
	fn, ok := functionsByStage(t, m.s)[stage]
	if !ok {
		t.Fatalf("no %s function", stage)
	}
	roleID, _ := logicalIDOf(at(m.tmpl, "Resources", fn, "Properties", "Role"))
	role, _ := at(m.tmpl, "Resources", roleID, "Properties").(obj)
	if role == nil {
		t.Fatalf("no role %s of %s", roleID, stage)
	}
	return role
}

// statement returns the statement with sid in the stage role's policy.
func (m mutator) statement(t *testing.T, stage, sid string) obj {
	t.Helper()
	for _, pol := range asList(m.role(t, stage)["Policies"]) {
		for _, st := range asList(at(pol, "PolicyDocument", "Statement")) {
			if at(st, "Sid") == sid {
				return st.(obj)
			}
		}
	}
	t.Fatalf("no statement %s in %s's role", sid, stage)
	return nil
}

// add appends a statement to the stage role's policy.
func (m mutator) add(t *testing.T, stage string, st obj) {
	t.Helper()
	pol := asList(m.role(t, stage)["Policies"])[0].(obj)
	doc := pol["PolicyDocument"].(obj)
	doc["Statement"] = append(asList(doc["Statement"]), deepCopy(st))
}
