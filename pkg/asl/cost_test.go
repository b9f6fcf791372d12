package asl

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTransitionCount(t *testing.T) {
	// T fails once and is retried; the Map runs two states for each of
	// three items; then a Choice and a Succeed.
	def := `{"StartAt":"T","States":{
		"T":{"Type":"Task","Resource":"Work","Retry":[{"ErrorEquals":["States.ALL"]}],"ResultPath":null,"Next":"M"},
		"M":{"Type":"Map","ItemsPath":"$.items","Iterator":{"StartAt":"A","States":{
			"A":{"Type":"Pass","Next":"B"},"B":{"Type":"Pass","End":true}}},"ResultPath":"$.out","Next":"C"},
		"C":{"Type":"Choice","Choices":[{"Variable":"$.items[0]","NumericEquals":1,"Next":"Done"}]},
		"Done":{"Type":"Succeed"}}}`
	work := &flaky{n: 1, err: errPlain, out: `{}`}
	res := runDef(t, def, Options{Handlers: map[string]Handler{"Work": work.handle}}, `{"items":[1,2,3]}`)
	succeeded(t, res)
	want := []string{"C", "Done", "M", "M[0]/A", "M[0]/B", "M[1]/A", "M[1]/B", "M[2]/A", "M[2]/B", "T", "T"}
	if diff := cmp.Diff(want, sortedStates(res.History)); diff != "" {
		t.Errorf("transitions mismatch (-want +got):\n%s", diff)
	}
	if got := res.Report(Pricing{}); got.Transitions != 11 || got.Invocations != 2 {
		t.Errorf("Report() = %d transitions, %d invocations; want 11 and 2", got.Transitions, got.Invocations)
	}
	for i, ev := range res.History {
		if ev.Seq != i+1 || ev.Exited.IsZero() || ev.Exited.Before(ev.Entered) {
			t.Errorf("History[%d] = %+v, want Seq %d and an exit after entry", i, ev, i+1)
		}
	}
}

func TestCost(t *testing.T) {
	clock := autoClock()
	takes := func(d time.Duration) Handler {
		return func(context.Context, json.RawMessage) (json.RawMessage, error) {
			clock.Advance(d)
			return json.RawMessage(`{}`), nil
		}
	}
	def := `{"StartAt":"Big","States":{
		"Big":{"Type":"Task","Resource":"Big","Next":"Small"},
		"Small":{"Type":"Task","Resource":"Small","Next":"Done"},
		"Done":{"Type":"Succeed"}}}`
	res := runDef(t, def, Options{Clock: clock, Handlers: map[string]Handler{
		"Big":   takes(1500 * time.Millisecond),
		"Small": takes(250*time.Millisecond + 400*time.Microsecond),
	}}, `{}`)
	succeeded(t, res)

	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-12 }
	tests := []struct {
		name    string
		pricing Pricing
		want    Report
	}{
		{
			name:    "defaults",
			pricing: Pricing{MemoryMB: map[string]int{"Big": 1024}},
			want: Report{
				Transitions: 3, Invocations: 2,
				TaskTime:       1750*time.Millisecond + 400*time.Microsecond,
				BilledTaskTime: 1751 * time.Millisecond,
				// 1.5 s at 1 GB plus 0.251 s (rounded up) at 128 MB.
				GBSeconds:      1.5 + 0.251*128/1024,
				TransitionCost: 3 * 0.025 / 1000,
				ComputeCost:    (1.5 + 0.251*128/1024) * 0.0000133334,
				RequestCost:    2 * 0.20 / 1e6,
			},
		},
		{
			name:    "custom prices",
			pricing: Pricing{PerTransition: 0.001, PerGBSecond: 0.01, PerRequest: 0.1, DefaultMemoryMB: 2048},
			want: Report{
				Transitions: 3, Invocations: 2,
				TaskTime:       1750*time.Millisecond + 400*time.Microsecond,
				BilledTaskTime: 1751 * time.Millisecond,
				GBSeconds:      1.751 * 2,
				TransitionCost: 0.003,
				ComputeCost:    1.751 * 2 * 0.01,
				RequestCost:    0.2,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := res.Report(tt.pricing)
			tt.want.Total = tt.want.TransitionCost + tt.want.ComputeCost + tt.want.RequestCost
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(near)); diff != "" {
				t.Errorf("Report(%+v) mismatch (-want +got):\n%s", tt.pricing, diff)
			}
			if s := got.String(); !strings.Contains(s, "3 transitions") {
				t.Errorf("Report.String() = %q, want it to mention 3 transitions", s)
			}
		})
	}
}

func TestCostOfAThousandTransitions(t *testing.T) {
	h := make([]Event, 1000)
	if got := Cost(h, Pricing{}).Total; math.Abs(got-0.025) > 1e-12 {
		t.Errorf("Cost(1000 transitions) = $%v, want $0.025", got)
	}
}
