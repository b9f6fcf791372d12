package asl

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPathGet(t *testing.T) {
	input := `{"a":{"b":[10,{"c":"deep"},30]},"x y":1,"list":[{"n":1},{"n":2},{"m":3}],"null":null}`
	ctxObj := `{"Execution":{"Name":"e1"},"Map":{"Item":{"Index":2}}}`
	tests := []struct {
		path  string
		want  string
		found bool
	}{
		{"$", input, true},
		{"$.a.b[0]", `10`, true},
		{"$.a.b[1].c", `"deep"`, true},
		{"$.a.b[-1]", `30`, true},
		{"$['x y']", `1`, true},
		{`$["x y"]`, `1`, true},
		{"$.a.['b'][2]", `30`, true},
		{"$.null", `null`, true},
		{"$.list[*].n", `[1,2]`, true},
		{"$.list[*]", `[{"n":1},{"n":2},{"m":3}]`, true},
		{"$.a.*", `[[10,{"c":"deep"},30]]`, true},
		{"$.nope[*]", `[]`, true},
		{"$$.Execution.Name", `"e1"`, true},
		{"$$.Map.Item.Index", `2`, true},
		{"$.missing", ``, false},
		{"$.a.b[3]", ``, false},
		{"$.a.b.c", ``, false},
		{"$.a.b[0].c", ``, false},
		{"$$.State.Name", ``, false},
	}
	in, _ := decodeJSON([]byte(input))
	cx, _ := decodeJSON([]byte(ctxObj))
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			p, err := parsePath(tt.path)
			if err != nil {
				t.Fatalf("parsePath(%q) = %v", tt.path, err)
			}
			got, found := p.get(in, cx)
			if found != tt.found {
				t.Fatalf("get(%q) found = %v, want %v", tt.path, found, tt.found)
			}
			if !found {
				return
			}
			if diff := cmp.Diff(decoded(t, tt.want), decoded(t, mustJSON(got))); diff != "" {
				t.Errorf("get(%q) mismatch (-want +got):\n%s", tt.path, diff)
			}
		})
	}
}

func TestPathParseErrors(t *testing.T) {
	for _, p := range []string{"a.b", "$..a", "$.a[?(@.b)]", "$.a[0:2]", "$.a[0,1]", "$.", "$.a[", "$.a['b'", "$x", "$.a[b]"} {
		t.Run(p, func(t *testing.T) {
			if _, err := parsePath(p); err == nil {
				t.Errorf("parsePath(%q) = nil error, want one", p)
			}
		})
	}
}

func TestPathSet(t *testing.T) {
	tests := []struct {
		name, root, path, value, want, wantErr string
	}{
		{"replace root", `{"a":1}`, "$", `"r"`, `"r"`, ""},
		{"add field", `{"a":1}`, "$.b", `2`, `{"a":1,"b":2}`, ""},
		{"create nested objects", `{"a":1}`, "$.x.y.z", `true`, `{"a":1,"x":{"y":{"z":true}}}`, ""},
		{"replace nested", `{"x":{"y":1,"k":2}}`, "$.x.y", `3`, `{"x":{"y":3,"k":2}}`, ""},
		{"array element", `{"l":[1,2,3]}`, "$.l[1]", `"two"`, `{"l":[1,"two",3]}`, ""},
		{"bracket name", `{}`, "$['a b']", `1`, `{"a b":1}`, ""},
		{"into a string", `{"a":"s"}`, "$.a.b", `1`, "", "cannot set field"},
		{"into an array root", `[1]`, "$.a", `1`, "", "cannot set field"},
		{"index out of range", `{"l":[]}`, "$.l[0]", `1`, "", "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, _ := decodeJSON([]byte(tt.root))
			before := mustJSON(root)
			val, _ := decodeJSON([]byte(tt.value))
			p, err := parsePath(tt.path)
			if err != nil {
				t.Fatalf("parsePath(%q) = %v", tt.path, err)
			}
			got, err := p.set(root, val)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("set(%s, %q) error = %v, want %q", tt.root, tt.path, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("set(%s, %q) = %v", tt.root, tt.path, err)
			}
			if diff := cmp.Diff(decoded(t, tt.want), decoded(t, mustJSON(got))); diff != "" {
				t.Errorf("set(%s, %q) mismatch (-want +got):\n%s", tt.root, tt.path, diff)
			}
			if after := mustJSON(root); after != before {
				t.Errorf("set(%s, %q) changed its input to %s", tt.root, tt.path, after)
			}
		})
	}
}
