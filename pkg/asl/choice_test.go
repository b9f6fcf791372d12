package asl

import (
	"encoding/json"
	"testing"
)

// choiceDef is a Choice with one rule that goes to Yes, defaulting to No.
func choiceDef(t *testing.T, rule string) string {
	t.Helper()
	var r map[string]any
	if err := json.Unmarshal([]byte(rule), &r); err != nil {
		t.Fatalf("bad rule %s: %v", rule, err)
	}
	r["Next"] = "Yes"
	b, _ := json.Marshal(map[string]any{
		"StartAt": "C",
		"States": map[string]any{
			"C":   map[string]any{"Type": "Choice", "Choices": []any{r}, "Default": "No"},
			"Yes": map[string]any{"Type": "Pass", "Result": "yes", "End": true},
			"No":  map[string]any{"Type": "Pass", "Result": "no", "End": true},
		},
	})
	return string(b)
}

func TestChoiceOperators(t *testing.T) {
	input := `{"s":"beta","n":10,"f":2.5,"b":true,"nil":null,"ts":"2024-05-01T12:00:00Z",
		"ts2":"2024-05-01T13:00:00+01:00","other":"alpha","ten":10,"file":"ami-*.json","path":"a\\b"}`
	tests := []struct {
		name, rule string
		want       bool
	}{
		{"StringEquals", `{"Variable":"$.s","StringEquals":"beta"}`, true},
		{"StringEquals other type", `{"Variable":"$.n","StringEquals":"10"}`, false},
		{"StringEqualsPath", `{"Variable":"$.s","StringEqualsPath":"$.other"}`, false},
		{"StringLessThan", `{"Variable":"$.s","StringLessThan":"gamma"}`, true},
		{"StringGreaterThan", `{"Variable":"$.s","StringGreaterThan":"alpha"}`, true},
		{"StringGreaterThanPath", `{"Variable":"$.s","StringGreaterThanPath":"$.other"}`, true},
		{"StringLessThanEquals", `{"Variable":"$.s","StringLessThanEquals":"beta"}`, true},
		{"StringGreaterThanEquals", `{"Variable":"$.s","StringGreaterThanEquals":"c"}`, false},
		{"StringLessThanPath", `{"Variable":"$.other","StringLessThanPath":"$.s"}`, true},
		{"StringLessThanEqualsPath", `{"Variable":"$.s","StringLessThanEqualsPath":"$.s"}`, true},
		{"StringGreaterThanEqualsPath", `{"Variable":"$.other","StringGreaterThanEqualsPath":"$.s"}`, false},
		{"StringMatches star", `{"Variable":"$.s","StringMatches":"b*a"}`, true},
		{"StringMatches empty star", `{"Variable":"$.s","StringMatches":"beta*"}`, true},
		{"StringMatches no match", `{"Variable":"$.s","StringMatches":"*x*"}`, false},
		{"StringMatches escaped star", `{"Variable":"$.file","StringMatches":"ami-\\*.json"}`, true},
		{"StringMatches escaped star literal only", `{"Variable":"$.s","StringMatches":"\\*"}`, false},
		{"StringMatches escaped backslash", `{"Variable":"$.path","StringMatches":"a\\\\b"}`, true},
		{"NumericEquals", `{"Variable":"$.n","NumericEquals":10.0}`, true},
		{"NumericEquals string", `{"Variable":"$.s","NumericEquals":10}`, false},
		{"NumericEqualsPath", `{"Variable":"$.n","NumericEqualsPath":"$.ten"}`, true},
		{"NumericLessThan", `{"Variable":"$.f","NumericLessThan":3}`, true},
		{"NumericLessThanPath", `{"Variable":"$.f","NumericLessThanPath":"$.n"}`, true},
		{"NumericGreaterThan", `{"Variable":"$.f","NumericGreaterThan":2.5}`, false},
		{"NumericGreaterThanPath", `{"Variable":"$.n","NumericGreaterThanPath":"$.f"}`, true},
		{"NumericLessThanEquals", `{"Variable":"$.f","NumericLessThanEquals":2.5}`, true},
		{"NumericLessThanEqualsPath", `{"Variable":"$.n","NumericLessThanEqualsPath":"$.ten"}`, true},
		{"NumericGreaterThanEquals", `{"Variable":"$.n","NumericGreaterThanEquals":11}`, false},
		{"NumericGreaterThanEqualsPath", `{"Variable":"$.n","NumericGreaterThanEqualsPath":"$.f"}`, true},
		{"BooleanEquals", `{"Variable":"$.b","BooleanEquals":true}`, true},
		{"BooleanEquals string", `{"Variable":"$.s","BooleanEquals":true}`, false},
		{"BooleanEqualsPath", `{"Variable":"$.b","BooleanEqualsPath":"$.b"}`, true},
		{"TimestampEquals offset", `{"Variable":"$.ts","TimestampEquals":"2024-05-01T13:00:00+01:00"}`, true},
		{"TimestampEqualsPath", `{"Variable":"$.ts","TimestampEqualsPath":"$.ts2"}`, true},
		{"TimestampLessThan", `{"Variable":"$.ts","TimestampLessThan":"2024-05-01T12:00:01Z"}`, true},
		{"TimestampLessThanPath", `{"Variable":"$.ts","TimestampLessThanPath":"$.ts2"}`, false},
		{"TimestampGreaterThan", `{"Variable":"$.ts","TimestampGreaterThan":"2024-01-01T00:00:00Z"}`, true},
		{"TimestampGreaterThanPath", `{"Variable":"$.ts","TimestampGreaterThanPath":"$.ts2"}`, false},
		{"TimestampLessThanEquals", `{"Variable":"$.ts","TimestampLessThanEquals":"2024-05-01T12:00:00Z"}`, true},
		{"TimestampLessThanEqualsPath", `{"Variable":"$.ts","TimestampLessThanEqualsPath":"$.ts2"}`, true},
		{"TimestampGreaterThanEquals", `{"Variable":"$.ts","TimestampGreaterThanEquals":"2024-05-01T12:00:00.001Z"}`, false},
		{"TimestampGreaterThanEqualsPath", `{"Variable":"$.ts","TimestampGreaterThanEqualsPath":"$.ts2"}`, true},
		{"Timestamp not a timestamp", `{"Variable":"$.s","TimestampEquals":"2024-05-01T12:00:00Z"}`, false},
		{"IsNull", `{"Variable":"$.nil","IsNull":true}`, true},
		{"IsNull false", `{"Variable":"$.s","IsNull":false}`, true},
		{"IsPresent", `{"Variable":"$.s","IsPresent":true}`, true},
		{"IsPresent missing", `{"Variable":"$.missing","IsPresent":false}`, true},
		{"IsNumeric", `{"Variable":"$.f","IsNumeric":true}`, true},
		{"IsNumeric string", `{"Variable":"$.s","IsNumeric":true}`, false},
		{"IsString", `{"Variable":"$.s","IsString":true}`, true},
		{"IsBoolean", `{"Variable":"$.b","IsBoolean":true}`, true},
		{"IsTimestamp", `{"Variable":"$.ts","IsTimestamp":true}`, true},
		{"IsTimestamp plain string", `{"Variable":"$.s","IsTimestamp":true}`, false},
		{"context object", `{"Variable":"$$.State.Name","StringEquals":"C"}`, true},
		{"And", `{"And":[{"Variable":"$.n","NumericGreaterThan":5},{"Variable":"$.s","StringEquals":"beta"}]}`, true},
		{"And false", `{"And":[{"Variable":"$.n","NumericGreaterThan":5},{"Variable":"$.s","StringEquals":"x"}]}`, false},
		{"Or", `{"Or":[{"Variable":"$.n","NumericLessThan":5},{"Variable":"$.s","StringEquals":"beta"}]}`, true},
		{"Not", `{"Not":{"Variable":"$.s","StringEquals":"beta"}}`, false},
		{"nested", `{"And":[{"Not":{"Variable":"$.b","BooleanEquals":false}},{"Or":[{"Variable":"$.missing","IsPresent":true},{"Variable":"$.n","NumericEquals":10}]}]}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := succeeded(t, runDef(t, choiceDef(t, tt.rule), Options{}, input))
			want := "no"
			if tt.want {
				want = "yes"
			}
			if got != want {
				t.Errorf("Choice %s on %s went to %v, want %v", tt.rule, input, got, want)
			}
		})
	}
}

func TestChoiceFailures(t *testing.T) {
	tests := []struct {
		name, def, want string
	}{
		{"no match and no default", `{"StartAt":"C","States":{
			"C":{"Type":"Choice","Choices":[{"Variable":"$.n","NumericEquals":1,"Next":"Done"}]},
			"Done":{"Type":"Succeed"}}}`, StatesNoChoiceMatched},
		{"missing variable", `{"StartAt":"C","States":{
			"C":{"Type":"Choice","Choices":[{"Variable":"$.missing","NumericEquals":1,"Next":"Done"}],"Default":"Done"},
			"Done":{"Type":"Succeed"}}}`, StatesRuntime},
		{"missing comparison path", `{"StartAt":"C","States":{
			"C":{"Type":"Choice","Choices":[{"Variable":"$.n","NumericEqualsPath":"$.missing","Next":"Done"}],"Default":"Done"},
			"Done":{"Type":"Succeed"}}}`, StatesRuntime},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runDef(t, tt.def, Options{}, `{"n":2}`)
			if res.Status != StatusFailed || res.Error != tt.want {
				t.Errorf("Run() = %s %q (%s), want FAILED %q", res.Status, res.Error, res.Cause, tt.want)
			}
		})
	}
}

func TestChoicePaths(t *testing.T) {
	// InputPath narrows what the rules see; OutputPath shapes what the
	// Choice passes on.
	def := `{"StartAt":"C","States":{
		"C":{"Type":"Choice","InputPath":"$.job","OutputPath":"$.id",
			"Choices":[{"Variable":"$.state","StringEquals":"done","Next":"Done"}],"Default":"Done"},
		"Done":{"Type":"Succeed"}}}`
	got := succeeded(t, runDef(t, def, Options{}, `{"job":{"state":"done","id":"j-1"}}`))
	if got != "j-1" {
		t.Errorf("Choice output = %v, want j-1", got)
	}
}
