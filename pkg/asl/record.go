package asl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Recording is one execution as its Task states saw it: every handler
// call in order with its input and result, the path the execution took and
// how it ended. It marshals to JSON, so a run can be saved and replayed in
// another engine (see package crosscheck) that should take the same path
// to the same end given the same task results.
type Recording struct {
	// Name, ARN and Input are the execution's $$.Execution.Name, .Id and
	// .Input.
	Name  string          `json:"name"`
	ARN   string          `json:"arn"`
	Input json.RawMessage `json:"input"`
	// Calls are the handler calls in the order they started.
	Calls []Call `json:"calls"`
	// Path is the states entered, from Result.History.
	Path   Path   `json:"path"`
	Status Status `json:"status"`
	// Output is set when Status is SUCCEEDED; Error and Cause when it is
	// FAILED or TIMED_OUT.
	Output json.RawMessage `json:"output,omitempty"`
	Error  string          `json:"error,omitempty"`
	Cause  string          `json:"cause,omitempty"`
}

// Call is one handler call made by a Task state.
type Call struct {
	// Scope locates the state as Event.Scope does: "" at the top level,
	// "Copy[2]" in iteration 2 of Map state Copy.
	Scope string `json:"scope,omitempty"`
	State string `json:"state"`
	// Resource is the Handlers key that was called.
	Resource string `json:"resource"`
	// Input is the JSON the handler received: the state's input after
	// InputPath and Parameters.
	Input json.RawMessage `json:"input"`
	// Output is what the handler returned, when the task succeeded.
	Output json.RawMessage `json:"output,omitempty"`
	// Error and Cause are the task's failure as Retry and Catch saw it:
	// the error's name (see ErrorName) and the Lambda-shaped Cause the
	// runner built, or States.Timeout for a task that ran out of time.
	Error string `json:"error,omitempty"`
	Cause string `json:"cause,omitempty"`
	// Aborted is set when the execution stopped waiting for the call (it
	// was stopped, or a sibling Map iteration failed); the call has no
	// result then.
	Aborted bool `json:"aborted,omitempty"`
}

// Recorder records the Task calls of one execution. Build the runner with
// the options Options returns, run one execution, and take the Recording:
//
//	rec := asl.NewRecorder()
//	r, err := asl.New(def, rec.Options(asl.Options{Handlers: handlers}))
//	...
//	res, err := r.Run(ctx, "bake-1", input)
//	recording := rec.Recording(res)
//
// A Recorder serves one execution at a time.
type Recorder struct {
	// next hands a call from the TaskStarted notice, which names the state,
	// to the handler invocation that follows it. The runner notifies
	// TaskStarted and only then starts the handler, and notices are
	// serialized, so with room for one call the k-th handler to start
	// always takes the k-th call, even when Map iterations call the same
	// handler at once.
	next chan *call

	mu       sync.Mutex
	calls    []*call
	inflight map[taskKey]*call
}

type taskKey struct{ scope, state string }

type call struct {
	Call
	output []byte
	ended  bool
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{next: make(chan *call, 1), inflight: map[taskKey]*call{}}
}

// Options returns opts with every handler wrapped so that its calls are
// recorded and with an Observer that names the state of each call (and
// passes every notice on to opts.Observer). A wrapped handler works only
// when the runner that has these options calls it.
func (r *Recorder) Options(opts Options) Options {
	handlers := make(map[string]Handler, len(opts.Handlers))
	for key, h := range opts.Handlers {
		handlers[key] = r.wrap(h)
	}
	opts.Handlers = handlers
	next := opts.Observer
	opts.Observer = ObserverFunc(func(n Notice) {
		if next != nil {
			next.Observe(n)
		}
		r.observe(n)
	})
	return opts
}

func (r *Recorder) observe(n Notice) {
	switch n.Kind {
	case TaskStarted:
		c := &call{Call: Call{Scope: n.Scope, State: n.State, Resource: n.Resource}}
		r.mu.Lock()
		r.calls = append(r.calls, c)
		r.inflight[taskKey{n.Scope, n.State}] = c
		r.mu.Unlock()
		r.next <- c // waits for the previous call's handler to start
	case TaskEnded:
		r.mu.Lock()
		defer r.mu.Unlock()
		k := taskKey{n.Scope, n.State}
		if c := r.inflight[k]; c != nil {
			c.ended = true
			c.Error, c.Cause = n.Error, n.Cause
			delete(r.inflight, k)
		}
	}
}

// errUnrecorded is a wrapped handler called by something other than the
// runner it was made for.
var errUnrecorded = errors.New("asl: a recorded handler was called without a TaskStarted notice; use Recorder.Options for the runner that calls it")

func (r *Recorder) wrap(h Handler) Handler {
	return func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
		var c *call
		select {
		case c = <-r.next:
		default:
			return nil, errUnrecorded
		}
		r.mu.Lock()
		c.Input = bytes.Clone(input)
		r.mu.Unlock()
		out, err := h(ctx, input)
		if err == nil {
			r.mu.Lock()
			c.output = bytes.Clone(out)
			r.mu.Unlock()
		}
		return out, err
	}
}

// Recording returns the calls recorded so far with res's path and outcome.
func (r *Recorder) Recording(res *Result) Recording {
	rec := Recording{
		Name:   res.Name,
		ARN:    res.ARN,
		Input:  res.Input,
		Calls:  []Call{},
		Path:   PathOf(res.History),
		Status: res.Status,
		Output: res.Output,
		Error:  res.Error,
		Cause:  res.Cause,
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.calls {
		out := c.Call
		switch {
		case !c.ended:
			out.Aborted = true
		case c.Error == "":
			out.Output = c.output
			if len(bytes.TrimSpace(out.Output)) == 0 {
				out.Output = json.RawMessage("null") // what the runner made of it
			}
		}
		rec.Calls = append(rec.Calls, out)
	}
	return rec
}

// Step is one state entered in an execution's path.
type Step struct {
	State string `json:"state"`
	// Retry is 0 when the state is entered and n for its n-th retry.
	Retry int `json:"retry,omitempty"`
	// Branches holds, for a Map or Parallel state, the steps of each
	// iteration or branch, by index.
	Branches []Path `json:"branches,omitempty"`
}

// Path is the states an execution entered, in order, with the steps of
// Map iterations and Parallel branches under the state that ran them.
// Concurrent iterations interleave differently from run to run; a Path
// does not depend on that.
type Path []Step

// PathOf builds the Path of an execution from its History.
func PathOf(history []Event) Path {
	root := &pathNode{}
	for _, ev := range history {
		list := root.locate(ev.Scope)
		list.children = append(list.children, &pathNode{step: Step{State: ev.State, Retry: ev.Attempt}})
	}
	return root.path()
}

// pathNode is a Step under construction: children are the steps of a
// scope, branches the scopes of a Map or Parallel step.
type pathNode struct {
	step     Step
	children []*pathNode
	branches []*pathNode
}

// scopeIndexRE finds the "[n]" that ends a scope component.
var scopeIndexRE = regexp.MustCompile(`\[(\d+)\](?:/|$)`)

// locate returns the scope node for an Event.Scope such as "Copy[2]" or
// "Outer[0]/Inner[3]", creating it as needed. A component belongs to the
// latest step of its state in the enclosing scope: the attempt of the Map
// or Parallel state that was running.
func (n *pathNode) locate(scope string) *pathNode {
	cur := n
	for scope != "" {
		var owner *pathNode
		var index, rest int
		// State names may contain "[", "]" or "/": take the first split
		// whose name is a state of the enclosing scope.
		for _, m := range scopeIndexRE.FindAllStringSubmatchIndex(scope, -1) {
			if owner = cur.last(scope[:m[0]]); owner != nil {
				index, _ = strconv.Atoi(scope[m[2]:m[3]])
				rest = m[1]
				break
			}
		}
		if owner == nil { // not seen: keep the scope visible rather than drop it
			owner = &pathNode{step: Step{State: scope}}
			cur.children = append(cur.children, owner)
			rest = len(scope)
		}
		for len(owner.branches) <= index {
			owner.branches = append(owner.branches, &pathNode{})
		}
		cur, scope = owner.branches[index], scope[rest:]
	}
	return cur
}

func (n *pathNode) last(state string) *pathNode {
	for i := len(n.children) - 1; i >= 0; i-- {
		if n.children[i].step.State == state {
			return n.children[i]
		}
	}
	return nil
}

func (n *pathNode) path() Path {
	p := Path{}
	for _, c := range n.children {
		s := c.step
		for _, b := range c.branches {
			s.Branches = append(s.Branches, b.path())
		}
		p = append(p, s)
	}
	return p
}

// Lines renders the path one step a line, as "Provision", "Provision
// (retry 1)" or "CopyToRegions[1]/CopyImage", each Map iteration or
// Parallel branch right after the step that ran it. Two paths are the
// same if their lines are.
func (p Path) Lines() []string {
	var out []string
	p.lines("", &out)
	return out
}

func (p Path) lines(prefix string, out *[]string) {
	for _, s := range p {
		line := prefix + s.State
		if s.Retry > 0 {
			line += fmt.Sprintf(" (retry %d)", s.Retry)
		}
		*out = append(*out, line)
		for i, b := range s.Branches {
			b.lines(prefix+s.State+"["+strconv.Itoa(i)+"]/", out)
		}
	}
}

// String returns the lines joined by newlines.
func (p Path) String() string { return strings.Join(p.Lines(), "\n") }
