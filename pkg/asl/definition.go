package asl

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// State types.
const (
	typeTask     = "Task"
	typePass     = "Pass"
	typeChoice   = "Choice"
	typeWait     = "Wait"
	typeSucceed  = "Succeed"
	typeFail     = "Fail"
	typeMap      = "Map"
	typeParallel = "Parallel"
)

// lambdaInvokeARN is the optimized Lambda integration.
const lambdaInvokeARN = "arn:aws:states:::lambda:invoke"

// maxTimeoutSeconds is the largest TimeoutSeconds and Wait the service takes.
const maxTimeoutSeconds = 99999999

// machine is a StartAt and its States: the whole definition, a Map's
// iterator or a Parallel branch.
type machine struct {
	startAt string
	states  map[string]*state
	timeout time.Duration // top level only; 0 means none
}

// optPath is InputPath or OutputPath: absent means "$", null means {}.
type optPath struct {
	null bool
	p    *path
}

// resultPath is ResultPath: absent means "$" (the result replaces the
// input), null means the result is discarded.
type resultPath struct {
	discard bool
	p       *path
}

type retrier struct {
	errorEquals []string
	interval    time.Duration
	maxAttempts int
	backoff     float64
	maxDelay    time.Duration // 0: no cap
	jitter      bool
}

type catcher struct {
	errorEquals []string
	next        string
	resultPath  resultPath
}

// dynString is Fail's ErrorPath or CausePath: a reference path or an
// intrinsic call that yields a string.
type dynString struct {
	path *path
	call *intrinsicCall
}

type state struct {
	name, typ string
	next      string
	end       bool

	inputPath, outputPath optPath
	parameters            *template
	resultSelector        *template
	resultPath            resultPath
	result                any
	hasResult             bool

	// Task
	resource     string
	lambdaInvoke bool
	timeout      time.Duration
	timeoutPath  *path

	retry []*retrier
	catch []*catcher

	// Choice
	choices []*choiceRule
	deflt   string

	// Wait
	seconds       *int64
	secondsPath   *path
	timestamp     *time.Time
	timestampPath *path

	// Fail
	errName, cause     string
	errPath, causePath *dynString

	// Map
	iterator           *machine
	itemsPath          *path
	itemSelector       *template
	maxConcurrency     int
	maxConcurrencyPath *path

	// Parallel
	branches []*machine
}

// problems collects everything wrong with a definition.
type problems struct{ list []string }

func (p *problems) add(where, format string, args ...any) {
	if where == "" {
		where = "/"
	}
	p.list = append(p.list, where+": "+fmt.Sprintf(format, args...))
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &DefinitionError{Problems: p.list}
}

// fields reads an object's fields and reports the ones nobody asked for.
type fields struct {
	m     map[string]any
	where string
	probs *problems
	seen  map[string]bool
}

func newFields(v any, where string, probs *problems) *fields {
	m, ok := v.(map[string]any)
	if !ok {
		probs.add(where, "must be an object, got %s", kind(v))
		m = map[string]any{}
	}
	return &fields{m: m, where: where, probs: probs, seen: map[string]bool{}}
}

func (f *fields) at(key string) string { return f.where + "/" + key }

func (f *fields) get(key string) (any, bool) {
	f.seen[key] = true
	v, ok := f.m[key]
	return v, ok
}

func (f *fields) ignore(keys ...string) {
	for _, k := range keys {
		f.seen[k] = true
	}
}

func (f *fields) str(key string) (string, bool) {
	v, ok := f.get(key)
	if !ok {
		return "", false
	}
	s, isStr := v.(string)
	if !isStr {
		f.probs.add(f.at(key), "must be a string, got %s", kind(v))
		return "", false
	}
	return s, true
}

// integer reads a whole number in [lo, hi].
func (f *fields) integer(key string, lo, hi int64) (int64, bool) {
	v, ok := f.get(key)
	if !ok {
		return 0, false
	}
	n, isInt := exactInt(v)
	if !isInt || n < lo || n > hi {
		f.probs.add(f.at(key), "must be an integer from %d to %d, got %s", lo, hi, mustJSON(v))
		return 0, false
	}
	return n, true
}

func (f *fields) finish(what string) {
	var extra []string
	for k := range f.m {
		if !f.seen[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	for _, k := range extra {
		f.probs.add(f.at(k), "field is not supported in %s", what)
	}
}

// parseDefinition compiles and validates a decoded definition.
func parseDefinition(v any) (*machine, error) {
	probs := &problems{}
	names := map[string]string{}
	m := parseMachine(v, "", probs, true, names)
	return m, probs.err()
}

func parseMachine(v any, where string, probs *problems, top bool, names map[string]string) *machine {
	f := newFields(v, where, probs)
	m := &machine{states: map[string]*state{}}
	f.ignore("Comment")
	if top {
		f.ignore("Version")
		if ql, ok := f.str("QueryLanguage"); ok && ql != "JSONPath" {
			probs.add(f.at("QueryLanguage"), "only JSONPath is supported, not %q", ql)
		}
		if n, ok := f.integer("TimeoutSeconds", 1, maxTimeoutSeconds); ok {
			m.timeout = time.Duration(n) * time.Second
		}
	}
	start, ok := f.str("StartAt")
	if !ok {
		probs.add(f.at("StartAt"), "is required")
	}
	m.startAt = start
	rawStates, ok := f.get("States")
	sm, isObj := rawStates.(map[string]any)
	switch {
	case !ok:
		probs.add(f.at("States"), "is required")
	case !isObj || len(sm) == 0:
		probs.add(f.at("States"), "must be a non-empty object")
	}
	what := "a state machine"
	if !top {
		what = "a Map iterator or Parallel branch"
		// ItemProcessor's ProcessorConfig is checked by the Map parser.
		f.ignore("ProcessorConfig")
	}
	f.finish(what)

	order := make([]string, 0, len(sm))
	for name := range sm {
		order = append(order, name)
	}
	sort.Strings(order)
	for _, name := range order {
		at := f.at("States") + "/" + name
		if prev, dup := names[name]; dup {
			probs.add(at, "state name is already used at %s; names must be unique in the whole state machine", prev)
		}
		names[name] = at
		if len(name) > 80 {
			probs.add(at, "state names are at most 80 characters")
		}
		m.states[name] = parseState(name, sm[name], at, probs, names)
	}
	if start != "" && len(sm) > 0 {
		if _, ok := m.states[start]; !ok {
			probs.add(f.at("StartAt"), "names no state: %q", start)
		}
	}
	checkTransitions(m, f.at("States"), probs)
	return m
}

// transitions lists the states s can go to next.
func (s *state) transitions() []string {
	var out []string
	if s.next != "" {
		out = append(out, s.next)
	}
	for _, c := range s.choices {
		out = append(out, c.nexts()...)
	}
	if s.deflt != "" {
		out = append(out, s.deflt)
	}
	for _, c := range s.catch {
		if c.next != "" {
			out = append(out, c.next)
		}
	}
	return out
}

// checkTransitions reports targets that do not exist in the same scope and
// states that nothing reaches.
func checkTransitions(m *machine, where string, probs *problems) {
	names := make([]string, 0, len(m.states))
	for n := range m.states {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, t := range m.states[n].transitions() {
			if _, ok := m.states[t]; !ok {
				probs.add(where+"/"+n, "transition to %q, which is not a state in this scope", t)
			}
		}
	}
	if _, ok := m.states[m.startAt]; !ok {
		return
	}
	reached := map[string]bool{m.startAt: true}
	queue := []string{m.startAt}
	for len(queue) > 0 {
		s := m.states[queue[0]]
		queue = queue[1:]
		for _, t := range s.transitions() {
			if _, ok := m.states[t]; ok && !reached[t] {
				reached[t] = true
				queue = append(queue, t)
			}
		}
	}
	for _, n := range names {
		if !reached[n] {
			probs.add(where+"/"+n, "state is not reachable from StartAt")
		}
	}
}

var stateFields = map[string][]string{
	typeTask:     {"Next", "End", "InputPath", "OutputPath", "Parameters", "ResultSelector", "ResultPath", "Retry", "Catch"},
	typePass:     {"Next", "End", "InputPath", "OutputPath", "Parameters", "ResultPath"},
	typeChoice:   {"InputPath", "OutputPath"},
	typeWait:     {"Next", "End", "InputPath", "OutputPath"},
	typeSucceed:  {"InputPath", "OutputPath"},
	typeFail:     {},
	typeMap:      {"Next", "End", "InputPath", "OutputPath", "ResultSelector", "ResultPath", "Retry", "Catch"},
	typeParallel: {"Next", "End", "InputPath", "OutputPath", "Parameters", "ResultSelector", "ResultPath", "Retry", "Catch"},
}

func parseState(name string, v any, where string, probs *problems, names map[string]string) *state {
	f := newFields(v, where, probs)
	s := &state{name: name}
	f.ignore("Comment")
	typ, ok := f.str("Type")
	s.typ = typ
	common, known := stateFields[typ]
	switch {
	case !ok:
		probs.add(f.at("Type"), "is required")
		return s
	case !known:
		probs.add(f.at("Type"), "unknown state type %q", typ)
		return s
	}
	has := func(field string) bool { return slices.Contains(common, field) }

	if has("Next") {
		next, hasNext := f.str("Next")
		endV, hasEnd := f.get("End")
		end, _ := endV.(bool)
		if hasEnd {
			if _, isBool := endV.(bool); !isBool {
				probs.add(f.at("End"), "must be a boolean")
			}
		}
		switch {
		case hasNext && end:
			probs.add(where, "has both Next and End")
		case !hasNext && !end:
			probs.add(where, "needs Next or \"End\": true")
		}
		s.next, s.end = next, end
	}
	if has("InputPath") {
		s.inputPath = parseOptPath(f, "InputPath")
		s.outputPath = parseOptPath(f, "OutputPath")
	}
	if has("Parameters") {
		if v, ok := f.get("Parameters"); ok {
			s.parameters = parseTemplate(v, f.at("Parameters"), probs)
		}
	}
	if has("ResultSelector") {
		if v, ok := f.get("ResultSelector"); ok {
			s.resultSelector = parseTemplate(v, f.at("ResultSelector"), probs)
		}
	}
	if has("ResultPath") {
		s.resultPath = parseResultPath(f, "ResultPath")
	}
	if has("Retry") {
		s.retry = parseRetry(f, probs)
		s.catch = parseCatch(f, probs)
	}

	switch typ {
	case typeTask:
		parseTask(s, f, probs)
	case typePass:
		s.result, s.hasResult = f.get("Result")
	case typeChoice:
		parseChoice(s, f, probs)
	case typeWait:
		parseWait(s, f, probs)
	case typeFail:
		parseFail(s, f, probs)
	case typeMap:
		parseMap(s, f, probs, names)
	case typeParallel:
		list, ok := f.get("Branches")
		branches, isList := list.([]any)
		if !ok || !isList || len(branches) == 0 {
			probs.add(f.at("Branches"), "must be a non-empty array")
		}
		for i, b := range branches {
			s.branches = append(s.branches, parseMachine(b, fmt.Sprintf("%s/%d", f.at("Branches"), i), probs, false, names))
		}
	}
	for _, k := range []string{"Assign", "Output", "Arguments", "QueryLanguage"} {
		if _, ok := f.m[k]; ok {
			f.seen[k] = true
			probs.add(f.at(k), "JSONata and workflow variables are not supported")
		}
	}
	f.finish("a " + typ + " state")
	return s
}

func parseOptPath(f *fields, key string) optPath {
	v, ok := f.get(key)
	if !ok {
		return optPath{}
	}
	if v == nil {
		return optPath{null: true}
	}
	str, isStr := v.(string)
	if !isStr {
		f.probs.add(f.at(key), "must be a path or null, got %s", kind(v))
		return optPath{}
	}
	p, err := parsePath(str)
	if err != nil {
		f.probs.add(f.at(key), "%v", err)
		return optPath{}
	}
	return optPath{p: p}
}

func parseResultPath(f *fields, key string) resultPath {
	v, ok := f.get(key)
	if !ok {
		return resultPath{}
	}
	if v == nil {
		return resultPath{discard: true}
	}
	p := refPath(f, key, v)
	if p != nil && p.context {
		f.probs.add(f.at(key), "ResultPath cannot write to the context object")
		return resultPath{}
	}
	return resultPath{p: p}
}

// refPath parses a reference path: a path that names a single value.
func refPath(f *fields, key string, v any) *path {
	str, isStr := v.(string)
	if !isStr {
		f.probs.add(f.at(key), "must be a path string, got %s", kind(v))
		return nil
	}
	p, err := parsePath(str)
	if err != nil {
		f.probs.add(f.at(key), "%v", err)
		return nil
	}
	if !p.definite() {
		f.probs.add(f.at(key), "%q must be a reference path (no wildcards)", str)
		return nil
	}
	return p
}

func optRefPath(f *fields, key string) *path {
	v, ok := f.get(key)
	if !ok {
		return nil
	}
	return refPath(f, key, v)
}

func parseErrorEquals(v any, where string, probs *problems) []string {
	f := newFields(v, where, probs)
	raw, ok := f.get("ErrorEquals")
	list, isList := raw.([]any)
	if !ok || !isList || len(list) == 0 {
		probs.add(f.at("ErrorEquals"), "must be a non-empty array of error names")
		return nil
	}
	var out []string
	for i, e := range list {
		s, ok := e.(string)
		if !ok || s == "" {
			probs.add(fmt.Sprintf("%s/%d", f.at("ErrorEquals"), i), "must be an error name")
			continue
		}
		out = append(out, s)
	}
	if slices.Contains(out, StatesALL) && len(out) > 1 {
		probs.add(f.at("ErrorEquals"), "States.ALL must appear alone")
	}
	return out
}

func parseRetry(f *fields, probs *problems) []*retrier {
	raw, ok := f.get("Retry")
	if !ok {
		return nil
	}
	list, isList := raw.([]any)
	if !isList {
		probs.add(f.at("Retry"), "must be an array")
		return nil
	}
	var out []*retrier
	for i, item := range list {
		where := fmt.Sprintf("%s/%d", f.at("Retry"), i)
		rf := newFields(item, where, probs)
		rf.ignore("Comment")
		r := &retrier{
			errorEquals: parseErrorEquals(item, where, probs),
			interval:    time.Second,
			maxAttempts: 3,
			backoff:     2.0,
		}
		rf.ignore("ErrorEquals")
		if n, ok := rf.integer("IntervalSeconds", 1, maxTimeoutSeconds); ok {
			r.interval = time.Duration(n) * time.Second
		}
		if n, ok := rf.integer("MaxAttempts", 0, maxTimeoutSeconds); ok {
			r.maxAttempts = int(n)
		}
		if v, ok := rf.get("BackoffRate"); ok {
			b, isNum := toFloat(v)
			if !isNum || b < 1.0 || math.IsInf(b, 0) {
				probs.add(rf.at("BackoffRate"), "must be a number of at least 1.0, got %s", mustJSON(v))
			} else {
				r.backoff = b
			}
		}
		if n, ok := rf.integer("MaxDelaySeconds", 1, 31622400); ok {
			r.maxDelay = time.Duration(n) * time.Second
		}
		if j, ok := rf.str("JitterStrategy"); ok {
			switch j {
			case "FULL":
				r.jitter = true
			case "NONE":
			default:
				probs.add(rf.at("JitterStrategy"), "must be FULL or NONE, got %q", j)
			}
		}
		if slices.Contains(r.errorEquals, StatesALL) && i != len(list)-1 {
			probs.add(where, "a retrier with States.ALL must be the last one")
		}
		rf.finish("a retrier")
		out = append(out, r)
	}
	return out
}

func parseCatch(f *fields, probs *problems) []*catcher {
	raw, ok := f.get("Catch")
	if !ok {
		return nil
	}
	list, isList := raw.([]any)
	if !isList {
		probs.add(f.at("Catch"), "must be an array")
		return nil
	}
	var out []*catcher
	for i, item := range list {
		where := fmt.Sprintf("%s/%d", f.at("Catch"), i)
		cf := newFields(item, where, probs)
		cf.ignore("Comment", "ErrorEquals")
		c := &catcher{errorEquals: parseErrorEquals(item, where, probs)}
		next, ok := cf.str("Next")
		if !ok {
			probs.add(cf.at("Next"), "is required")
		}
		c.next = next
		c.resultPath = parseResultPath(cf, "ResultPath")
		if slices.Contains(c.errorEquals, StatesALL) && i != len(list)-1 {
			probs.add(where, "a catcher with States.ALL must be the last one")
		}
		cf.finish("a catcher")
		out = append(out, c)
	}
	return out
}

func parseTask(s *state, f *fields, probs *problems) {
	res, ok := f.str("Resource")
	if !ok || res == "" {
		probs.add(f.at("Resource"), "is required")
	}
	s.resource = res
	switch {
	case res == lambdaInvokeARN:
		s.lambdaInvoke = true
		if !s.parameters.hasField("FunctionName") {
			probs.add(f.at("Parameters"), "lambda:invoke needs Parameters.FunctionName")
		}
	case strings.HasPrefix(res, lambdaInvokeARN+"."):
		probs.add(f.at("Resource"), "%q: callback and .sync integration patterns are not supported", res)
	}
	if n, ok := f.integer("TimeoutSeconds", 1, maxTimeoutSeconds); ok {
		s.timeout = time.Duration(n) * time.Second
	}
	s.timeoutPath = optRefPath(f, "TimeoutSecondsPath")
	if s.timeout > 0 && s.timeoutPath != nil {
		probs.add(f.where, "has both TimeoutSeconds and TimeoutSecondsPath")
	}
	// Heartbeats only matter to activities and callback tasks, which this
	// engine does not run; Credentials only to cross-account calls.
	f.ignore("HeartbeatSeconds", "HeartbeatSecondsPath", "Credentials")
}

func parseChoice(s *state, f *fields, probs *problems) {
	raw, ok := f.get("Choices")
	list, isList := raw.([]any)
	if !ok || !isList || len(list) == 0 {
		probs.add(f.at("Choices"), "must be a non-empty array of rules")
	}
	for i, item := range list {
		s.choices = append(s.choices, parseChoiceRule(item, fmt.Sprintf("%s/%d", f.at("Choices"), i), true, probs))
	}
	s.choices = slices.DeleteFunc(s.choices, func(r *choiceRule) bool { return r == nil })
	s.deflt, _ = f.str("Default")
	for _, k := range []string{"Next", "End"} {
		if _, ok := f.m[k]; ok {
			f.seen[k] = true
			probs.add(f.at(k), "a Choice state transitions only through Choices and Default")
		}
	}
}

func parseWait(s *state, f *fields, probs *problems) {
	n := 0
	if sec, ok := f.integer("Seconds", 0, maxTimeoutSeconds); ok {
		s.seconds = &sec
		n++
	} else if _, present := f.m["Seconds"]; present {
		n++
	}
	if ts, ok := f.str("Timestamp"); ok {
		n++
		t, valid := parseTimestamp(ts)
		if !valid {
			probs.add(f.at("Timestamp"), "must be an RFC 3339 timestamp such as 2016-03-14T01:59:00Z, got %q", ts)
		}
		s.timestamp = &t
	}
	if s.secondsPath = optRefPath(f, "SecondsPath"); s.secondsPath != nil {
		n++
	}
	if s.timestampPath = optRefPath(f, "TimestampPath"); s.timestampPath != nil {
		n++
	}
	if n != 1 {
		probs.add(f.where, "needs exactly one of Seconds, Timestamp, SecondsPath and TimestampPath")
	}
}

func parseFail(s *state, f *fields, probs *problems) {
	s.errName, _ = f.str("Error")
	s.cause, _ = f.str("Cause")
	s.errPath = parseDynString(f, "ErrorPath")
	s.causePath = parseDynString(f, "CausePath")
	if _, ok := f.m["Error"]; ok && s.errPath != nil {
		probs.add(f.where, "has both Error and ErrorPath")
	}
	if _, ok := f.m["Cause"]; ok && s.causePath != nil {
		probs.add(f.where, "has both Cause and CausePath")
	}
}

func parseDynString(f *fields, key string) *dynString {
	v, ok := f.get(key)
	if !ok {
		return nil
	}
	str, _ := v.(string)
	if isIntrinsic(str) {
		c, err := parseIntrinsic(str)
		if err != nil {
			f.probs.add(f.at(key), "%v", err)
			return nil
		}
		return &dynString{call: c}
	}
	p := refPath(f, key, v)
	if p == nil {
		return nil
	}
	return &dynString{path: p}
}

func parseMap(s *state, f *fields, probs *problems, names map[string]string) {
	it, hasIt := f.get("Iterator")
	proc, hasProc := f.get("ItemProcessor")
	switch {
	case hasIt && hasProc:
		probs.add(f.where, "has both Iterator and ItemProcessor")
	case hasIt:
		s.iterator = parseMachine(it, f.at("Iterator"), probs, false, names)
	case hasProc:
		if pm, ok := proc.(map[string]any); ok {
			if cfg, ok := pm["ProcessorConfig"]; ok {
				cf := newFields(cfg, f.at("ItemProcessor")+"/ProcessorConfig", probs)
				if mode, ok := cf.str("Mode"); ok && mode != "INLINE" {
					probs.add(cf.at("Mode"), "only INLINE Map states are supported, not %q", mode)
				}
				cf.ignore("ExecutionType")
				cf.finish("ProcessorConfig")
			}
		}
		s.iterator = parseMachine(proc, f.at("ItemProcessor"), probs, false, names)
	default:
		probs.add(f.where, "needs an ItemProcessor (or Iterator)")
	}
	s.itemsPath = optRefPath(f, "ItemsPath")
	sel, hasSel := f.get("ItemSelector")
	params, hasParams := f.get("Parameters")
	switch {
	case hasSel && hasParams:
		probs.add(f.where, "has both ItemSelector and Parameters")
	case hasSel:
		s.itemSelector = parseTemplate(sel, f.at("ItemSelector"), probs)
	case hasParams:
		// Parameters is the older name of ItemSelector.
		s.itemSelector = parseTemplate(params, f.at("Parameters"), probs)
	}
	if n, ok := f.integer("MaxConcurrency", 0, math.MaxInt32); ok {
		s.maxConcurrency = int(n)
	}
	s.maxConcurrencyPath = optRefPath(f, "MaxConcurrencyPath")
	for _, k := range []string{"ItemReader", "ItemBatcher", "ResultWriter", "ToleratedFailurePercentage",
		"ToleratedFailurePercentagePath", "ToleratedFailureCount", "ToleratedFailureCountPath", "Label"} {
		if _, ok := f.m[k]; ok {
			f.seen[k] = true
			probs.add(f.at(k), "distributed Map features are not supported")
		}
	}
}

// walk visits every state, including those inside Map and Parallel.
func (m *machine) walk(fn func(*state)) {
	for _, name := range slices.Sorted(maps.Keys(m.states)) {
		s := m.states[name]
		fn(s)
		if s.iterator != nil {
			s.iterator.walk(fn)
		}
		for _, b := range s.branches {
			b.walk(fn)
		}
	}
}
