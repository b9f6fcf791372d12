package asl

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// choiceRule is a Choice state rule: a comparison, or And/Or/Not of rules.
// Only top-level rules have a Next.
type choiceRule struct {
	next string

	and, or []*choiceRule
	not     *choiceRule

	variable  *path
	op        string // operator without the "Path" suffix
	byPath    bool   // the operator compares with another path
	value     any
	valuePath *path
}

type opClass int

const (
	opString opClass = iota
	opNumeric
	opBoolean
	opTimestamp
	opIs
)

// choiceOps maps each comparison operator (without "Path") to its class.
var choiceOps = map[string]opClass{
	"StringEquals":               opString,
	"StringLessThan":             opString,
	"StringGreaterThan":          opString,
	"StringLessThanEquals":       opString,
	"StringGreaterThanEquals":    opString,
	"StringMatches":              opString,
	"NumericEquals":              opNumeric,
	"NumericLessThan":            opNumeric,
	"NumericGreaterThan":         opNumeric,
	"NumericLessThanEquals":      opNumeric,
	"NumericGreaterThanEquals":   opNumeric,
	"BooleanEquals":              opBoolean,
	"TimestampEquals":            opTimestamp,
	"TimestampLessThan":          opTimestamp,
	"TimestampGreaterThan":       opTimestamp,
	"TimestampLessThanEquals":    opTimestamp,
	"TimestampGreaterThanEquals": opTimestamp,
	"IsNull":                     opIs,
	"IsPresent":                  opIs,
	"IsNumeric":                  opIs,
	"IsString":                   opIs,
	"IsBoolean":                  opIs,
	"IsTimestamp":                opIs,
}

// lookupOp splits an operator field name into operator and Path-ness.
func lookupOp(key string) (op string, byPath bool, ok bool) {
	if _, ok := choiceOps[key]; ok {
		return key, false, true
	}
	if base, found := strings.CutSuffix(key, "Path"); found {
		if c, ok := choiceOps[base]; ok && c != opIs && base != "StringMatches" {
			return base, true, true
		}
	}
	return "", false, false
}

// parseChoiceRule compiles one rule. top says whether it is a top-level
// rule, which must have Next; nested rules must not.
func parseChoiceRule(v any, where string, top bool, probs *problems) *choiceRule {
	m, ok := v.(map[string]any)
	if !ok {
		probs.add(where, "a choice rule must be an object, got %s", kind(v))
		return nil
	}
	r := &choiceRule{}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ops []string
	for _, k := range keys {
		val := m[k]
		switch k {
		case "Comment":
		case "Next":
			s, ok := val.(string)
			if !ok || s == "" {
				probs.add(where+"/Next", "must be a state name")
			}
			r.next = s
		case "Variable":
			s, ok := val.(string)
			if !ok {
				probs.add(where+"/Variable", "must be a path string")
				continue
			}
			p, err := parsePath(s)
			if err != nil {
				probs.add(where+"/Variable", "%v", err)
				continue
			}
			if !p.definite() {
				probs.add(where+"/Variable", "%q must be a reference path (no wildcards)", s)
			}
			r.variable = p
		case "And", "Or":
			list, ok := val.([]any)
			if !ok || len(list) == 0 {
				probs.add(where+"/"+k, "must be a non-empty array of rules")
				continue
			}
			ops = append(ops, k)
			for i, sub := range list {
				rule := parseChoiceRule(sub, fmt.Sprintf("%s/%s/%d", where, k, i), false, probs)
				if k == "And" {
					r.and = append(r.and, rule)
				} else {
					r.or = append(r.or, rule)
				}
			}
		case "Not":
			ops = append(ops, k)
			r.not = parseChoiceRule(val, where+"/Not", false, probs)
		default:
			op, byPath, ok := lookupOp(k)
			if !ok {
				probs.add(where+"/"+k, "unknown field in a choice rule")
				continue
			}
			ops = append(ops, k)
			r.op, r.byPath = op, byPath
			parseOperand(r, val, where+"/"+k, probs)
		}
	}
	switch {
	case len(ops) == 0:
		probs.add(where, "a choice rule needs a comparison operator, And, Or or Not")
	case len(ops) > 1:
		probs.add(where, "a choice rule has more than one operator: %s", strings.Join(ops, ", "))
	}
	if r.op != "" && r.variable == nil {
		probs.add(where, "a comparison needs a Variable")
	}
	if r.op == "" && r.variable != nil {
		probs.add(where+"/Variable", "Variable is only allowed with a comparison operator")
	}
	if top && r.next == "" {
		probs.add(where, "a top-level choice rule needs Next")
	}
	if !top && r.next != "" {
		probs.add(where+"/Next", "only top-level choice rules may have Next")
	}
	return r
}

func parseOperand(r *choiceRule, val any, where string, probs *problems) {
	if r.byPath {
		s, ok := val.(string)
		if !ok {
			probs.add(where, "must be a path string")
			return
		}
		p, err := parsePath(s)
		if err != nil {
			probs.add(where, "%v", err)
			return
		}
		if !p.definite() {
			probs.add(where, "%q must be a reference path (no wildcards)", s)
		}
		r.valuePath = p
		return
	}
	r.value = val
	switch choiceOps[r.op] {
	case opString:
		if _, ok := val.(string); !ok {
			probs.add(where, "must be a string, got %s", kind(val))
		}
	case opNumeric:
		if _, ok := toFloat(val); !ok {
			probs.add(where, "must be a number, got %s", kind(val))
		}
	case opBoolean, opIs:
		if _, ok := val.(bool); !ok {
			probs.add(where, "must be a boolean, got %s", kind(val))
		}
	case opTimestamp:
		s, _ := val.(string)
		if _, ok := parseTimestamp(s); !ok {
			probs.add(where, "must be an RFC 3339 timestamp such as 2016-03-14T01:59:00Z, got %s", mustJSON(val))
		}
	}
}

// nexts lists the states a rule can transition to.
func (r *choiceRule) nexts() []string {
	if r == nil || r.next == "" {
		return nil
	}
	return []string{r.next}
}

// eval reports whether the rule matches. A Variable (or comparison path)
// that matches nothing is a States.Runtime error, except under IsPresent.
func (r *choiceRule) eval(env *evalEnv) (bool, error) {
	switch {
	case r.and != nil:
		for _, sub := range r.and {
			ok, err := sub.eval(env)
			if err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case r.or != nil:
		for _, sub := range r.or {
			ok, err := sub.eval(env)
			if err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case r.not != nil:
		ok, err := r.not.eval(env)
		return !ok, err
	}
	v, present := r.lookup(env, r.variable)
	if r.op == "IsPresent" {
		return present == r.value.(bool), nil
	}
	if !present {
		return false, failf(StatesRuntime, "Invalid path '%s': The choice state's condition path references an invalid value.", r.variable.raw)
	}
	want := r.value
	if r.byPath {
		w, ok := r.lookup(env, r.valuePath)
		if !ok {
			return false, failf(StatesRuntime, "Invalid path '%s': The choice state's condition path references an invalid value.", r.valuePath.raw)
		}
		want = w
	}
	return compare(r.op, v, want), nil
}

func (r *choiceRule) lookup(env *evalEnv, p *path) (any, bool) {
	var ctx any
	if p.context {
		ctx = env.ctxObj()
	}
	return p.get(env.input, ctx)
}

// compare applies an operator. A value of the wrong type for the operator
// makes the comparison false rather than an error, as on AWS.
func compare(op string, v, want any) bool {
	switch choiceOps[op] {
	case opString:
		a, ok1 := v.(string)
		b, ok2 := want.(string)
		if !ok1 || !ok2 {
			return false
		}
		if op == "StringMatches" {
			return stringMatches(a, b)
		}
		return ordered(op, strings.Compare(a, b))
	case opNumeric:
		a, ok1 := v.(json.Number)
		b, ok2 := want.(json.Number)
		if !ok1 || !ok2 {
			return false
		}
		c, ok := numCmp(a, b)
		return ok && ordered(op, c)
	case opBoolean:
		a, ok1 := v.(bool)
		b, ok2 := want.(bool)
		return ok1 && ok2 && a == b
	case opTimestamp:
		as, _ := v.(string)
		bs, _ := want.(string)
		a, ok1 := parseTimestamp(as)
		b, ok2 := parseTimestamp(bs)
		return ok1 && ok2 && ordered(op, a.Compare(b))
	case opIs:
		var is bool
		switch op {
		case "IsNull":
			is = v == nil
		case "IsNumeric":
			_, is = v.(json.Number)
		case "IsString":
			_, is = v.(string)
		case "IsBoolean":
			_, is = v.(bool)
		case "IsTimestamp":
			s, ok := v.(string)
			_, is = parseTimestamp(s)
			is = is && ok
		}
		return is == want.(bool)
	}
	return false
}

func ordered(op string, c int) bool {
	switch {
	case strings.HasSuffix(op, "GreaterThanEquals"):
		return c >= 0
	case strings.HasSuffix(op, "LessThanEquals"):
		return c <= 0
	case strings.HasSuffix(op, "GreaterThan"):
		return c > 0
	case strings.HasSuffix(op, "LessThan"):
		return c < 0
	}
	return c == 0
}

// parseTimestamp accepts the RFC 3339 profile the States Language requires:
// an uppercase T between date and time and an uppercase Z when there is no
// numeric offset.
func parseTimestamp(s string) (time.Time, bool) {
	if len(s) < 20 || s[10] != 'T' || strings.ContainsRune(s, 'z') {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// stringMatches implements StringMatches: '*' matches any run of
// characters (including none), "\*" is a literal star and "\\" a literal
// backslash; everything else matches itself.
func stringMatches(s, pattern string) bool {
	type tok struct {
		star bool
		r    rune
	}
	var toks []tok
	pr := []rune(pattern)
	for i := 0; i < len(pr); i++ {
		switch {
		case pr[i] == '\\' && i+1 < len(pr):
			i++
			toks = append(toks, tok{r: pr[i]})
		case pr[i] == '*':
			toks = append(toks, tok{star: true})
		default:
			toks = append(toks, tok{r: pr[i]})
		}
	}
	sr := []rune(s)
	// Greedy matching with backtracking to the last star.
	si, ti := 0, 0
	starTi, starSi := -1, 0
	for si < len(sr) {
		switch {
		case ti < len(toks) && !toks[ti].star && toks[ti].r == sr[si]:
			si++
			ti++
		case ti < len(toks) && toks[ti].star:
			starTi, starSi = ti, si
			ti++
		case starTi >= 0:
			starSi++
			si = starSi
			ti = starTi + 1
		default:
			return false
		}
	}
	for ti < len(toks) && toks[ti].star {
		ti++
	}
	return ti == len(toks)
}
