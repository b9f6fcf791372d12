package bake

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// testNow is the time legacy template tests render with: 2023-11-14T22:13:20Z.
var testNow = time.Unix(1700000000, 0).UTC()

func testTmplEnv(section string) *tmplEnv {
	vars := map[string]string{"x": "Val", "region": "eu-west-1", "dashed": "a-b-c"}
	return &tmplEnv{
		section: section,
		user: func(name string) (string, error) {
			if v, ok := vars[name]; ok {
				return v, nil
			}
			if name == "later" {
				return "", errNotReady{name: name}
			}
			return "", errors.New("undeclared " + name)
		},
		env:         map[string]string{"HOME_REGION": "us-east-2"},
		envAllowed:  section == "variables",
		now:         testNow,
		newUUID:     func() string { return "00000000-0000-4000-8000-000000000001" },
		buildName:   map[bool]string{true: "", false: "app"}[section == "variables"],
		buildType:   map[bool]string{true: "", false: "amazon-ebs"}[section == "variables"],
		templateDir: ".",
	}
}

func TestTemplateRender(t *testing.T) {
	tests := []struct {
		section string
		in      string
		want    string
	}{
		{"builders", "plain text", "plain text"},
		{"builders", "a }} b", "a }} b"},
		{"builders", "{{user `x`}}", "Val"},
		{"builders", `{{ user "x" }}`, "Val"},
		{"builders", "ami-{{timestamp}}", "ami-1700000000"},
		{"builders", "{{isotime}}", "2023-11-14T22:13:20Z"},
		{"builders", `{{isotime "2006-01-02"}}`, "2023-11-14"},
		{"builders", "{{isotime `20060102-1504`}}", "20231114-2213"},
		{"builders", `{{strftime "%Y%m%d-%H%M%S %%"}}`, "20231114-221320 %"},
		{"builders", "{{uuid}}", "00000000-0000-4000-8000-000000000001"},
		// The amazon plugin's own test case.
		{"builders", "{{clean_resource_name `AMZamz09()./-_:&^ $%[]#'@`}}", "AMZamz09()./-_--- --[]-'@"},
		{"builders", "app {{isotime | clean_resource_name}}", "app 2023-11-14T22-13-20Z"},
		{"builders", "{{timestamp | clean_resource_name}}", "1700000000"},
		{"builders", `{{lower "ABC"}}{{upper "def"}}`, "abcDEF"},
		{"builders", "{{ user `x` | lower }}", "val"},
		{"builders", "{{ lower (user `x`) }}", "val"},
		{"builders", "{{ lower timestamp }}", "1700000000"},
		{"builders", `{{split "a-b-c" "-" 1}}`, "b"},
		{"builders", "{{ split (user `dashed`) `-` 2 }}", "c"},
		{"builders", `{{replace "a" "b" 1 "aaa"}}`, "baa"},
		{"builders", `{{replace_all "a" "b" "aaa"}}`, "bbb"},
		{"builders", "{{ user `dashed` | replace_all `-` `_` }}", "a_b_c"},
		{"builders", "{{build_name}}/{{build_type}}", "app/amazon-ebs"},
		{"builders", "{{template_dir}}/scripts/a.sh", "./scripts/a.sh"},
		{"builders", "{{pwd}}", "."},
		{"builders", "a {{/* a comment */}}b", "a b"},
		{"builders", "a   {{- user `x` -}}   b", "aValb"},
		{"builders", "{{- 3 -}}", "3"},
		{"builders", "{{ `raw }} braces` }}", "raw }} braces"},
		{"builders", "{{true}}", "true"},
		// Run-time placeholders stay for the provisioner.
		{"provisioners", "chmod +x {{.Path}}; {{.Vars}} {{.Path}}", "chmod +x {{.Path}}; {{.Vars}} {{.Path}}"},
		{"provisioners", "echo {{ .Name }} {{ .WinRMPassword }}", "echo {{ .Name }} {{ .WinRMPassword }}"},
		{"provisioners", "{{ if .Sudo }}sudo {{ end }}{{ .Vars }} -r {{user `region`}}", "{{ if .Sudo }}sudo {{ end }}{{ .Vars }} -r eu-west-1"},
		{"provisioners", "{{ build `ID` }}-{{user `x`}}", "{{ build `ID` }}-Val"},
		{"provisioners", "{{ .Vars -}} x", "{{ .Vars -}} x"},
		{"provisioners", "{{ $x := .Path }}{{ $x }}", "{{ $x := .Path }}{{ $x }}"},
		{"builders", "{{ .SourceAMIName }} built {{isotime `2006`}}", "{{ .SourceAMIName }} built 2023"},
		{"variables", "{{env `HOME_REGION`}}", "us-east-2"},
		{"variables", "{{env `UNSET`}}", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, errs := testTmplEnv(tt.section).render(tt.in)
			if len(errs) > 0 {
				t.Fatalf("render(%q) errors: %+v", tt.in, errs)
			}
			if got != tt.want {
				t.Errorf("render(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestTemplateRenderErrors(t *testing.T) {
	tests := []struct {
		section    string
		in         string
		summary    string
		detail     string
		start, end int
	}{
		{"builders", "x {{ foo `a` }} y", "Unknown template function", `no template function named "foo"`, 2, 15},
		{"builders", "{{timestamp | nope}}", "Unknown template function", `"nope"`, 0, 20},
		{"builders", "{{ env `AWS_SECRET_ACCESS_KEY` }}", "env not allowed here", "variables section", 0, 33},
		{"builders", `{{vault "secret/x" "k"}}`, "Unsupported template function", "network", 0, 24},
		{"builders", `{{consul_key "a"}}`, "Unsupported template function", "network", 0, 18},
		{"builders", `{{aws_secretsmanager "a"}}`, "Unsupported template function", "Secrets Manager", 0, 26},
		{"builders", `{{sed "s/a/b/" "a"}}`, "Unsupported template function", "replace", 0, 20},
		{"builders", "ab {{user `x`", "Invalid template expression", "unclosed action", 3, 13},
		{"builders", "{{ \"unterminated }}", "Invalid template expression", "unterminated", 0, 19},
		{"builders", `{{split "a-b" "-" 3}}`, "Invalid template expression", "part 3 does not exist", 0, 21},
		{"builders", `{{lower 1}}`, "Invalid template expression", "must be a string", 0, 11},
		{"builders", `{{timestamp 1}}`, "Invalid template expression", "wrong number of arguments", 0, 15},
		{"builders", `{{isotime "a" "b"}}`, "Invalid template expression", "too many arguments", 0, 19},
		{"builders", `{{}}`, "Invalid template expression", "missing value", 0, 4},
		{"builders", `{{ "a" "b" }}`, "Invalid template expression", "non-function", 0, 13},
		{"builders", `{{ (lower "a" }}`, "Invalid template expression", "unclosed", 0, 16},
		{"builders", `{{ lower "a") }}`, "Invalid template expression", "unexpected", 0, 16},
		{"builders", "{{/* open }}", "Invalid template expression", "unclosed comment", 0, 12},
		{"builders", "{{ nil }}", "Invalid template expression", "nil", 0, 9},
		{"builders", "{{ user `nobody` }}", "Invalid template expression", "undeclared nobody", 0, 19},
		{"variables", "{{build_name}}", "Invalid template expression", "not available in variables", 0, 14},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, errs := testTmplEnv(tt.section).render(tt.in)
			if len(errs) != 1 {
				t.Fatalf("render(%q) errors = %+v, want one", tt.in, errs)
			}
			e := errs[0]
			if e.summary != tt.summary || !strings.Contains(e.detail, tt.detail) {
				t.Errorf("render(%q) error = %q: %q, want %q containing %q", tt.in, e.summary, e.detail, tt.summary, tt.detail)
			}
			if e.start != tt.start || e.end != tt.end {
				t.Errorf("render(%q) error at [%d,%d), want [%d,%d)", tt.in, e.start, e.end, tt.start, tt.end)
			}
		})
	}
}

func TestTemplateRenderNotReady(t *testing.T) {
	_, errs := testTmplEnv("variables").render("{{user `later`}}-{{user `x`}}")
	if len(errs) != 1 || errs[0].notReady != "later" {
		t.Fatalf("render of a pending variable = %+v, want one error with notReady \"later\"", errs)
	}
}

// TestTemplateEnvIsolated proves that {{env}} reads only the environment
// given to the load, never the process's own, where kiln's credentials live.
func TestTemplateEnvIsolated(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "process-secret")
	e := testTmplEnv("variables")
	e.env = nil
	got, errs := e.render("{{env `AWS_SECRET_ACCESS_KEY`}}")
	if len(errs) > 0 || got != "" {
		t.Errorf("render({{env `AWS_SECRET_ACCESS_KEY`}}) = %q, %+v; want \"\" and no error", got, errs)
	}
}

func TestCleanResourceName(t *testing.T) {
	for in, want := range map[string]string{
		"AMZamz09()./-_:&^ $%[]#'@":     "AMZamz09()./-_--- --[]-'@",
		"My Image 2023-11-14T22:13:20Z": "My Image 2023-11-14T22-13-20Z",
		"é":                             "--",
	} {
		if got := cleanResourceName(in); got != want {
			t.Errorf("cleanResourceName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestJSONLiteral(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "new\nline\ttab\rcr", "\x00\x1f\x7f",
		"é ü 日本", "emoji 😀", "invalid \xff byte", "{{.Path}}", "</script>&",
	} {
		lit := jsonLiteral(s)
		for i := 0; i < len(lit); i++ {
			if lit[i] >= utf8.RuneSelf || lit[i] < 0x20 {
				t.Errorf("jsonLiteral(%q) = %q holds byte %#x; want printable ASCII only", s, lit, lit[i])
				break
			}
		}
		var back string
		if err := json.Unmarshal([]byte(lit), &back); err != nil {
			t.Errorf("jsonLiteral(%q) = %q: not JSON: %v", s, lit, err)
			continue
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if back != want {
			t.Errorf("jsonLiteral(%q) decodes to %q, want %q", s, back, want)
		}
	}
}

func TestStrftime(t *testing.T) {
	got := strftime("%a %A %b %B %d %e %F %H %I %j %m %M %p %S %T %y %Y %z %Z %u %w %s %q", testNow)
	want := "Tue Tuesday Nov November 14 14 2023-11-14 22 10 318 11 13 PM 20 22:13:20 23 2023 +0000 UTC 2 2 1700000000 %q"
	if got != want {
		t.Errorf("strftime = %q, want %q", got, want)
	}
}
