package asl

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// intrinsicDef wraps an intrinsic expression in a Pass state that stores
// its value at $.r.
func intrinsicDef(t *testing.T, expr string) string {
	t.Helper()
	def := map[string]any{
		"StartAt": "P",
		"States": map[string]any{
			"P": map[string]any{"Type": "Pass", "Parameters": map[string]any{"r.$": expr}, "End": true},
		},
	}
	b, err := json.Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestIntrinsics(t *testing.T) {
	input := `{
		"name": "Arnav", "template": "Hello, my name is {}.",
		"nums": [1,2,3,4,5,6,7,8,9], "dups": [1,2,3,3,3,3,4,{"a":1},{"a":1}],
		"obj": {"foo": "bar"}, "esc": "{\"foo\": \"bar\"}",
		"json1": {"a": {"a1": 1, "a2": 2}, "b": 2}, "json2": {"a": {"a3": 1, "a4": 2}, "c": 3},
		"arn": "arn:aws:imagebuilder:us-east-1:123:image-recipe/web/1.0.2",
		"id": 123456
	}`
	tests := []struct {
		name, expr, want, wantErr string
	}{
		{"Format literal", `States.Format('Hello, my name is {}.', $.name)`, `"Hello, my name is Arnav."`, ""},
		{"Format template from path", `States.Format($.template, $.name)`, `"Hello, my name is Arnav."`, ""},
		{"Format escapes", `States.Format('\{\} {} it\'s \\ done', $.name)`, `"{} Arnav it's \\ done"`, ""},
		{"Format value kinds", `States.Format('{} {} {} {} {}', 1.5, true, null, $.nums[0:1], $.obj)`, ``, "path"},
		{"Format scalars and containers", `States.Format('{}|{}|{}|{}|{}', 1.5, true, null, States.Array(1, 'b'), $.obj)`, `"1.5|true|null|[1, b]|{foo=bar}"`, ""},
		{"Format comma in literal", `States.Format('a, b) {}', 'c')`, `"a, b) c"`, ""},
		{"Format too few values", `States.Format('{} and {}', $.name)`, ``, StatesIntrinsicFailure},
		{"Format context object", `States.Format('{}/{}', $$.Execution.Name, $$.State.Name)`, `"test/P"`, ""},
		{"StringToJson", `States.StringToJson($.esc)`, `{"foo":"bar"}`, ""},
		{"StringToJson bad", `States.StringToJson($.name)`, ``, StatesIntrinsicFailure},
		{"JsonToString", `States.JsonToString($.obj)`, `"{\"foo\":\"bar\"}"`, ""},
		{"Array", `States.Array($.id, 'x', 2, true, null)`, `[123456,"x",2,true,null]`, ""},
		{"Array empty", `States.Array()`, `[]`, ""},
		{"ArrayPartition", `States.ArrayPartition($.nums, 4)`, `[[1,2,3,4],[5,6,7,8],[9]]`, ""},
		{"ArrayPartition rounds size", `States.ArrayPartition($.nums, 4.2)`, `[[1,2,3,4],[5,6,7,8],[9]]`, ""},
		{"ArrayPartition zero", `States.ArrayPartition($.nums, 0)`, ``, StatesIntrinsicFailure},
		{"ArrayContains yes", `States.ArrayContains($.nums, 5)`, `true`, ""},
		{"ArrayContains no", `States.ArrayContains($.nums, 10)`, `false`, ""},
		{"ArrayContains object", `States.ArrayContains($.dups, $.dups[7])`, `true`, ""},
		{"ArrayContains not array", `States.ArrayContains($.name, 1)`, ``, StatesIntrinsicFailure},
		{"ArrayRange", `States.ArrayRange(1, 9, 2)`, `[1,3,5,7,9]`, ""},
		{"ArrayRange down", `States.ArrayRange(5, 1, -2)`, `[5,3,1]`, ""},
		{"ArrayRange too long", `States.ArrayRange(1, 1001, 1)`, ``, StatesIntrinsicFailure},
		{"ArrayRange zero step", `States.ArrayRange(1, 2, 0)`, ``, StatesIntrinsicFailure},
		{"ArrayGetItem", `States.ArrayGetItem($.nums, 5)`, `6`, ""},
		{"ArrayGetItem out of range", `States.ArrayGetItem($.nums, 9)`, ``, StatesIntrinsicFailure},
		{"ArrayLength", `States.ArrayLength($.nums)`, `9`, ""},
		{"ArrayUnique", `States.ArrayUnique($.dups)`, `[1,2,3,4,{"a":1}]`, ""},
		{"Base64Encode", `States.Base64Encode('Data to encode')`, `"RGF0YSB0byBlbmNvZGU="`, ""},
		{"Base64Decode", `States.Base64Decode('RGF0YSB0byBlbmNvZGU=')`, `"Data to encode"`, ""},
		{"Base64Decode bad", `States.Base64Decode('!!')`, ``, StatesIntrinsicFailure},
		{"Hash MD5", `States.Hash('abc', 'MD5')`, `"900150983cd24fb0d6963f7d28e17f72"`, ""},
		{"Hash SHA-1", `States.Hash('abc', 'SHA-1')`, `"a9993e364706816aba3e25717850c26c9cd0d89d"`, ""},
		{"Hash SHA-256", `States.Hash('abc', 'SHA-256')`, `"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"`, ""},
		{"Hash SHA-384", `States.Hash('abc', 'SHA-384')`, `"cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"`, ""},
		{"Hash SHA-512", `States.Hash('abc', 'SHA-512')`, `"ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"`, ""},
		{"Hash bad algorithm", `States.Hash('abc', 'SHA-3')`, ``, StatesIntrinsicFailure},
		{"JsonMerge", `States.JsonMerge($.json1, $.json2, false)`, `{"a":{"a3":1,"a4":2},"b":2,"c":3}`, ""},
		{"JsonMerge deep", `States.JsonMerge($.json1, $.json2, true)`, ``, StatesIntrinsicFailure},
		{"MathAdd", `States.MathAdd(111, -1)`, `110`, ""},
		{"MathAdd rounds", `States.MathAdd(1.2, 2.7)`, `4`, ""},
		{"MathAdd overflow", `States.MathAdd(2147483648, 1)`, ``, StatesIntrinsicFailure},
		{"MathRandom seeded", `States.MathRandom(5, 6, 1234)`, `5`, ""},
		{"MathRandom empty range", `States.MathRandom(5, 5)`, ``, StatesIntrinsicFailure},
		{"StringSplit one delimiter", `States.StringSplit('1,2,3,4,5', ',')`, `["1","2","3","4","5"]`, ""},
		{"StringSplit many delimiters", `States.StringSplit('This.is+a,test=string', '.+,=')`, `["This","is","a","test","string"]`, ""},
		{"StringSplit drops empties", `States.StringSplit(',a,,b,', ',')`, `["a","b"]`, ""},
		{"nested", `States.ArrayGetItem(States.StringSplit(States.ArrayGetItem(States.StringSplit($.arn, '/'), 2), '.'), 0)`, `"1"`, ""},
		{"missing path", `States.Array($.nope)`, ``, StatesRuntime},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := intrinsicDef(t, tt.expr)
			if tt.wantErr == "path" {
				// Slices are not in the supported JsonPath subset.
				if err := Validate([]byte(def)); err == nil {
					t.Errorf("Validate(%s) = nil, want an error", tt.expr)
				}
				return
			}
			res := runDef(t, def, Options{}, input)
			if tt.wantErr != "" {
				if res.Status != StatusFailed || res.Error != tt.wantErr {
					t.Fatalf("%s: status %s error %q (%s), want FAILED %q", tt.expr, res.Status, res.Error, res.Cause, tt.wantErr)
				}
				return
			}
			got := succeeded(t, res).(map[string]any)["r"]
			if diff := cmp.Diff(decoded(t, tt.want), got); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", tt.expr, diff)
			}
		})
	}
}

func TestIntrinsicRandomness(t *testing.T) {
	uuidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	def := intrinsicDef(t, `States.Array(States.UUID(), States.MathRandom(1, 999), States.MathRandom(1, 1000000, 7))`)
	first := succeeded(t, runDef(t, def, Options{Seed: 1}, `{}`)).(map[string]any)["r"].([]any)
	again := succeeded(t, runDef(t, def, Options{Seed: 1}, `{}`)).(map[string]any)["r"].([]any)
	other := succeeded(t, runDef(t, def, Options{Seed: 2}, `{}`)).(map[string]any)["r"].([]any)

	if id := first[0].(string); !uuidRE.MatchString(id) {
		t.Errorf("States.UUID() = %q, want a v4 UUID", id)
	}
	if n := first[1].(float64); n < 1 || n >= 999 {
		t.Errorf("States.MathRandom(1, 999) = %v, want 1 <= n < 999", n)
	}
	if diff := cmp.Diff(first, again); diff != "" {
		t.Errorf("same Seed gave different values (-first +again):\n%s", diff)
	}
	if first[0] == other[0] {
		t.Errorf("States.UUID() = %v for seeds 1 and 2, want different", first[0])
	}
	if first[2] != other[2] {
		t.Errorf("States.MathRandom with seed 7 = %v and %v under different runner seeds, want equal", first[2], other[2])
	}
}

func TestIntrinsicParseErrors(t *testing.T) {
	tests := []struct{ expr, want string }{
		{`States.Nope(1)`, "unknown function"},
		{`States.MathAdd(1)`, "takes 2 arguments"},
		{`States.UUID(1)`, "takes 0 arguments"},
		{`States.JsonToString('x')`, "must be a path"},
		{`States.Format('a\x')`, "open escape"},
		{`States.Format('abc)`, "unterminated"},
		{`States.Format('{}', $.a`, "missing ')'"},
		{`States.Array(1) extra`, "after the call"},
		{`States.Array(nope)`, "bad argument"},
		{`States.Array(Inf)`, "bad argument"},
		{`States.Array(0x10)`, "bad argument"},
		{strings.Repeat("States.Array(", 11) + "1" + strings.Repeat(")", 11), "nested"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			err := Validate([]byte(intrinsicDef(t, tt.expr)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate(%s) = %v, want an error containing %q", tt.expr, err, tt.want)
			}
		})
	}
}
