package asl

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
)

// evalEnv is what paths and payload templates are evaluated against: "$"
// is input and "$$" the context object.
type evalEnv struct {
	input  any
	ctxObj func() any
	rand   *lockedRand
	// field names the definition field being evaluated, for error causes.
	field string
}

// resolve evaluates a path; a definite path that matches nothing is a
// States.Runtime error, as on AWS.
func (e *evalEnv) resolve(p *path) (any, error) {
	var ctx any
	if p.context {
		ctx = e.ctxObj()
	}
	v, ok := p.get(e.input, ctx)
	if !ok {
		where := "the input"
		if p.context {
			where = "the context object"
		}
		field := ""
		if e.field != "" {
			field = fmt.Sprintf(" specified for the field '%s'", e.field)
		}
		src := e.input
		if p.context {
			src = ctx
		}
		return nil, failf(StatesRuntime, "The JSONPath '%s'%s could not be found in %s '%s'", p.raw, field, where, mustJSON(src))
	}
	return v, nil
}

// lockedRand is the execution's random source, shared by Map iterations.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newLockedRand(seed uint64, seeded bool) *lockedRand {
	if !seeded {
		seed = rand.Uint64()
	}
	return &lockedRand{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (l *lockedRand) uint64n(n uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Uint64N(n)
}

func (l *lockedRand) float64() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64()
}

// uuid returns a version 4 UUID drawn from the source.
func (l *lockedRand) uuid() string {
	l.mu.Lock()
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := l.r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	l.mu.Unlock()
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// template is a payload template (Parameters, ResultSelector, ItemSelector):
// JSON in which a field whose name ends in ".$" takes its value from a path
// or an intrinsic call, at any depth.
type template struct {
	lit    any // tmplLiteral
	fields []tmplField
	items  []*template
	path   *path
	call   *intrinsicCall
	kind   tmplKind
	src    string // the ".$" field's value, for messages
}

type tmplKind int

const (
	tmplLiteral tmplKind = iota
	tmplObject
	tmplArray
	tmplPath
	tmplCall
)

type tmplField struct {
	key     string // with ".$" removed
	srcKey  string
	value   *template
	dynamic bool
}

// parseTemplate compiles a decoded JSON value into a template, adding a
// problem for every ".$" field whose value is not a path or intrinsic call.
func parseTemplate(v any, where string, probs *problems) *template {
	switch x := v.(type) {
	case map[string]any:
		t := &template{kind: tmplObject}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			val := x[k]
			if !strings.HasSuffix(k, ".$") {
				t.fields = append(t.fields, tmplField{key: k, srcKey: k, value: parseTemplate(val, where+"/"+k, probs)})
				continue
			}
			key := strings.TrimSuffix(k, ".$")
			s, ok := val.(string)
			if !ok {
				probs.add(where+"/"+k, "the value of a field ending in '.$' must be a string path or intrinsic function, got %s", kind(val))
				continue
			}
			sub, err := parseDynamic(s)
			if err != nil {
				probs.add(where+"/"+k, "%v", err)
				continue
			}
			t.fields = append(t.fields, tmplField{key: key, srcKey: k, value: sub, dynamic: true})
		}
		return t
	case []any:
		t := &template{kind: tmplArray}
		for i, e := range x {
			t.items = append(t.items, parseTemplate(e, fmt.Sprintf("%s/%d", where, i), probs))
		}
		return t
	}
	return &template{kind: tmplLiteral, lit: v}
}

// parseDynamic compiles the value of a ".$" field.
func parseDynamic(s string) (*template, error) {
	switch {
	case strings.HasPrefix(s, "$"):
		p, err := parsePath(s)
		if err != nil {
			return nil, err
		}
		return &template{kind: tmplPath, path: p, src: s}, nil
	case isIntrinsic(s):
		c, err := parseIntrinsic(s)
		if err != nil {
			return nil, err
		}
		return &template{kind: tmplCall, call: c, src: s}, nil
	}
	return nil, fmt.Errorf("%q is neither a path nor an intrinsic function", s)
}

// eval builds the payload.
func (t *template) eval(env *evalEnv) (any, error) {
	switch t.kind {
	case tmplObject:
		out := make(map[string]any, len(t.fields))
		for _, f := range t.fields {
			sub := env
			if f.dynamic {
				e := *env
				e.field = f.srcKey
				sub = &e
			}
			v, err := f.value.eval(sub)
			if err != nil {
				return nil, err
			}
			out[f.key] = v
		}
		return out, nil
	case tmplArray:
		out := make([]any, len(t.items))
		for i, it := range t.items {
			v, err := it.eval(env)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	case tmplPath:
		return env.resolve(t.path)
	case tmplCall:
		return t.call.eval(env)
	}
	return t.lit, nil
}

// staticString returns the literal string value of a field of an object
// template, if the field is present and not computed.
func (t *template) staticString(key string) (string, bool) {
	if t == nil || t.kind != tmplObject {
		return "", false
	}
	for _, f := range t.fields {
		if f.key == key && !f.dynamic && f.value.kind == tmplLiteral {
			s, ok := f.value.lit.(string)
			return s, ok
		}
	}
	return "", false
}

// hasField reports whether an object template sets key (statically or not).
func (t *template) hasField(key string) bool {
	if t == nil || t.kind != tmplObject {
		return false
	}
	for _, f := range t.fields {
		if f.key == key {
			return true
		}
	}
	return false
}
