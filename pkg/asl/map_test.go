package asl

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// gate is a stateful fake for concurrency tests: each call reports its
// item on entered and blocks until the test releases that item.
type gate struct {
	entered chan int
	release map[int]chan struct{}

	mu             sync.Mutex
	active, maxAct int
}

func newGate(n int) *gate {
	g := &gate{entered: make(chan int, n), release: map[int]chan struct{}{}}
	for i := range n {
		g.release[i] = make(chan struct{})
	}
	return g
}

func (g *gate) handle(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
	var item struct{ I int }
	if err := json.Unmarshal(in, &item); err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.active++
	g.maxAct = max(g.maxAct, g.active)
	g.mu.Unlock()
	g.entered <- item.I
	select {
	case <-g.release[item.I]:
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.active--
	g.mu.Unlock()
	return json.RawMessage(strconv.Itoa(item.I * 10)), nil
}

func TestMapMaxConcurrency(t *testing.T) {
	const items, limit = 6, 2
	g := newGate(items)
	def := `{"StartAt":"M","States":{"M":{"Type":"Map","MaxConcurrency":2,"ItemSelector":{"I.$":"$$.Map.Item.Index"},
		"ItemProcessor":{"StartAt":"Work","States":{"Work":{"Type":"Task","Resource":"Work","End":true}}},"End":true}}}`
	r := mustNew(t, def, Options{Handlers: map[string]Handler{"Work": g.handle}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := r.Start(ctx, "conc", json.RawMessage(`[0,0,0,0,0,0]`))
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	next := func() int {
		t.Helper()
		select {
		case i := <-g.entered:
			return i
		case <-ctx.Done():
			t.Fatalf("no iteration started")
			return -1
		}
	}
	first := []int{next(), next()}
	slices.Sort(first)
	if diff := cmp.Diff([]int{0, 1}, first); diff != "" {
		t.Fatalf("first iterations mismatch (-want +got):\n%s", diff)
	}
	// With two running, a third must not start. Waiting briefly in real
	// time is the only way to see something not happen.
	select {
	case i := <-g.entered:
		t.Fatalf("iteration %d started while %d were running under MaxConcurrency %d", i, limit, limit)
	case <-time.After(50 * time.Millisecond):
	}
	// Each finished iteration lets exactly the next item in.
	for i := range items {
		close(g.release[i])
		if i+limit < items {
			if got := next(); got != i+limit {
				t.Errorf("after item %d finished, item %d started, want %d", i, got, i+limit)
			}
		}
	}
	res := e.Wait()
	if diff := cmp.Diff(decoded(t, `[0,10,20,30,40,50]`), succeeded(t, res)); diff != "" {
		t.Errorf("Map results mismatch (-want +got):\n%s", diff)
	}
	if g.maxAct != limit {
		t.Errorf("at most %d iterations ran at once, want %d", g.maxAct, limit)
	}
}

func TestMapIterationErrorCaughtByMap(t *testing.T) {
	work := func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		if string(in) == `"bad"` {
			return nil, fmt.Errorf("copy to %s: %w", in, &QuotaError{Limit: 5})
		}
		return in, nil
	}
	def := `{"StartAt":"Copy","States":{
		"Copy":{"Type":"Map","ItemsPath":"$.regions","MaxConcurrency":1,
			"Iterator":{"StartAt":"CopyOne","States":{"CopyOne":{"Type":"Task","Resource":"Work","End":true}}},
			"ResultPath":"$.copies",
			"Catch":[{"ErrorEquals":["wrapError"],"ResultPath":"$.error","Next":"Cleanup"}],
			"Next":"Done"},
		"Cleanup":{"Type":"Pass","End":true},
		"Done":{"Type":"Succeed"}}}`
	res := runDef(t, def, Options{Handlers: map[string]Handler{"Work": work}}, `{"regions":["a","b","bad","c"]}`)
	want := `{"regions":["a","b","bad","c"],"error":{"Error":"wrapError",
		"Cause":"{\"errorMessage\":\"copy to \\\"bad\\\": quota exceeded\",\"errorType\":\"wrapError\"}"}}`
	if diff := cmp.Diff(decoded(t, want), succeeded(t, res)); diff != "" {
		t.Errorf("output mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"Copy", "Copy[0]/CopyOne", "Copy[1]/CopyOne", "Copy[2]/CopyOne", "Cleanup"}, states(res.History)); diff != "" {
		t.Errorf("transitions mismatch (-want +got):\n%s", diff)
	}
}

func TestMapChoiceErrorPropagates(t *testing.T) {
	def := `{"StartAt":"M","States":{
		"M":{"Type":"Map","Iterator":{"StartAt":"C","States":{
				"C":{"Type":"Choice","Choices":[{"Variable":"$","NumericLessThan":10,"Next":"Ok"}]},
				"Ok":{"Type":"Succeed"}}},
			"Catch":[{"ErrorEquals":["States.ALL"],"Next":"Caught"}],"End":true},
		"Caught":{"Type":"Pass","End":true}}}`
	got := succeeded(t, runDef(t, def, Options{}, `[1,2,30]`))
	if diff := cmp.Diff(map[string]any{"Error": StatesNoChoiceMatched, "Cause": "No Matches!"}, got); diff != "" {
		t.Errorf("caught error mismatch (-want +got):\n%s", diff)
	}
}

func TestMapFailureStopsSiblings(t *testing.T) {
	hanging, cancelled := make(chan struct{}), make(chan struct{})
	work := func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		if string(in) == `"hang"` {
			close(hanging)
			<-ctx.Done()
			close(cancelled)
			return nil, ctx.Err()
		}
		// Fail only once the other iteration is running.
		<-hanging
		return nil, NotReadyError{"image"}
	}
	def := `{"StartAt":"M","States":{"M":{"Type":"Map",
		"Iterator":{"StartAt":"W","States":{"W":{"Type":"Task","Resource":"Work","End":true}}},"End":true}}}`
	res := runDef(t, def, Options{Handlers: map[string]Handler{"Work": work}}, `["hang","fail"]`)
	if res.Status != StatusFailed || res.Error != "NotReadyError" {
		t.Errorf("Run() = %s %q, want FAILED NotReadyError", res.Status, res.Error)
	}
	// The runner does not wait for a cancelled handler to return, so wait
	// for it here.
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Errorf("the hanging iteration's context was not cancelled")
	}
}

func TestMapRetryRerunsIterations(t *testing.T) {
	work := &flaky{n: 1, err: errPlain, out: `"ok"`}
	def := `{"StartAt":"M","States":{"M":{"Type":"Map","MaxConcurrency":1,
		"Iterator":{"StartAt":"W","States":{"W":{"Type":"Task","Resource":"Work","End":true}}},
		"Retry":[{"ErrorEquals":["States.ALL"],"MaxAttempts":1}],"End":true}}}`
	res := runDef(t, def, Options{Handlers: map[string]Handler{"Work": work.handle}}, `[1,2]`)
	succeeded(t, res)
	want := []string{"M", "M[0]/W", "M", "M[0]/W", "M[1]/W"}
	if diff := cmp.Diff(want, states(res.History)); diff != "" {
		t.Errorf("transitions mismatch (-want +got):\n%s", diff)
	}
}

func TestParallelBranchErrorCaught(t *testing.T) {
	def := `{"StartAt":"Par","States":{
		"Par":{"Type":"Parallel","Branches":[
				{"StartAt":"Fine","States":{"Fine":{"Type":"Pass","End":true}}},
				{"StartAt":"Broke","States":{"Broke":{"Type":"Fail","Error":"BranchBroke","Cause":"disk full"}}}],
			"Catch":[{"ErrorEquals":["BranchBroke"],"ResultPath":"$.err","Next":"Handled"}],"End":true},
		"Handled":{"Type":"Pass","End":true}}}`
	got := succeeded(t, runDef(t, def, Options{}, `{"x":1}`))
	if diff := cmp.Diff(decoded(t, `{"x":1,"err":{"Error":"BranchBroke","Cause":"disk full"}}`), got); diff != "" {
		t.Errorf("output mismatch (-want +got):\n%s", diff)
	}
}
