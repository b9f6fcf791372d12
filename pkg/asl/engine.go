package asl

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
)

// maxInlineConcurrency is how many iterations an inline Map runs at once on
// AWS when MaxConcurrency is 0 (or larger).
const maxInlineConcurrency = 40

// runMachine runs a StartAt/States scope from its start to an End, a
// Succeed or a failure.
func (x *run) runMachine(ctx context.Context, m *machine, input any, scope string) (any, error) {
	cur := m.startAt
	for {
		s := m.states[cur]
		out, next, err := x.runState(ctx, s, input, scope)
		if err != nil {
			return nil, err
		}
		if next == "" {
			return out, nil
		}
		input, cur = out, next
	}
}

// stepCtx is what one attempt of a state works with.
type stepCtx struct {
	ctx        context.Context
	s          *state
	raw        any // the state's input
	scope      string
	entered    time.Time
	retryCount int
	event      int

	ctxMemo any
	item    *mapItem
}

type mapItem struct {
	index int
	value any
}

// runState runs one state, with its retriers and catchers, and returns its
// output and the next state ("" to end the scope).
func (x *run) runState(ctx context.Context, s *state, raw any, scope string) (any, string, error) {
	inBytes := jsonSize(raw)
	counts := make([]int, len(s.retry))
	retryCount := 0
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return nil, "", errAborted
		}
		now := x.r.tl.Now()
		st := &stepCtx{ctx: ctx, s: s, raw: raw, scope: scope, entered: now, retryCount: retryCount}
		st.event = x.enter(s, scope, attempt, inBytes, now)
		out, next, err := x.attempt(st)
		var f *failure
		if err == nil {
			n := jsonSize(out)
			if n > MaxPayloadBytes {
				f = failf(StatesDataLimitExceeded, "The state/task %q returned a result with a size exceeding the maximum number of bytes service limit (%d > %d).", s.name, n, MaxPayloadBytes)
			} else {
				x.exit(st.event, n, nil)
				return out, next, nil
			}
		} else if errors.Is(err, errAborted) || ctx.Err() != nil {
			x.exit(st.event, 0, &failure{name: "Aborted"})
			return nil, "", errAborted
		} else {
			f = asFailure(err)
		}
		if f.name == StatesRuntime && !strings.HasPrefix(f.cause, "An error occurred") {
			f = &failure{name: f.name, cause: fmt.Sprintf("An error occurred while executing the state '%s'. %s", s.name, f.cause)}
		}
		x.exit(st.event, 0, f)

		if i := matchRetrier(s.retry, f.name); i >= 0 && counts[i] < s.retry[i].maxAttempts {
			d := x.backoff(s.retry[i], counts[i])
			counts[i]++
			retryCount++
			x.notify(Notice{Kind: Retrying, Time: x.r.tl.Now(), Scope: scope, State: s.name, Type: s.typ, Attempt: attempt + 1, Duration: d, Error: f.name, Cause: f.cause})
			if err := x.r.tl.wait(ctx, d); err != nil {
				return nil, "", errAborted
			}
			continue
		}
		for _, c := range s.catch {
			if !errorMatches(c.errorEquals, f.name) {
				continue
			}
			errOut := map[string]any{"Error": f.name}
			if f.cause != "" {
				errOut["Cause"] = f.cause
			}
			out, err := applyResultPath(c.resultPath, raw, errOut)
			if err != nil {
				return nil, "", err
			}
			x.notify(Notice{Kind: Caught, Time: x.r.tl.Now(), Scope: scope, State: s.name, Type: s.typ, Attempt: attempt, Next: c.next, Error: f.name, Cause: f.cause})
			return out, c.next, nil
		}
		return nil, "", f
	}
}

// matchRetrier returns the first retrier whose ErrorEquals matches, or -1.
// Only that retrier applies, even when its attempts are used up.
func matchRetrier(rs []*retrier, name string) int {
	for i, r := range rs {
		if errorMatches(r.errorEquals, name) {
			return i
		}
	}
	return -1
}

// backoff is the wait before retry number n+1 of a retrier:
// IntervalSeconds * BackoffRate^n, capped at MaxDelaySeconds, and with FULL
// jitter a uniform random delay between 0 and that.
func (x *run) backoff(r *retrier, n int) time.Duration {
	d := float64(r.interval) * math.Pow(r.backoff, float64(n))
	if r.maxDelay > 0 && d > float64(r.maxDelay) {
		d = float64(r.maxDelay)
	}
	if d > float64(math.MaxInt64/2) {
		d = float64(math.MaxInt64 / 2)
	}
	if r.jitter {
		d *= x.rand.float64()
	}
	return time.Duration(d).Round(time.Millisecond)
}

// attempt runs the state once.
func (x *run) attempt(st *stepCtx) (any, string, error) {
	s := st.s
	switch s.typ {
	case typePass:
		eff, err := x.effectiveInput(st)
		if err != nil {
			return nil, "", err
		}
		result := eff
		if s.hasResult {
			result = s.result
		}
		out, err := x.output(st, result)
		return out, s.next, err
	case typeTask:
		eff, err := x.effectiveInput(st)
		if err != nil {
			return nil, "", err
		}
		result, err := x.invoke(st, eff)
		if err != nil {
			return nil, "", err
		}
		out, err := x.output(st, result)
		return out, s.next, err
	case typeChoice:
		return x.choice(st)
	case typeWait:
		return x.wait(st)
	case typeSucceed:
		eff, err := x.inputPath(st)
		if err != nil {
			return nil, "", err
		}
		out, err := x.outputPath(st, eff)
		return out, "", err
	case typeFail:
		return nil, "", x.fail(st)
	case typeMap:
		return x.mapState(st)
	case typeParallel:
		return x.parallel(st)
	}
	return nil, "", fmt.Errorf("unknown state type %q", s.typ)
}

// env returns the evaluation environment for input.
func (x *run) env(st *stepCtx, input any) *evalEnv {
	return &evalEnv{input: input, ctxObj: func() any { return x.contextObject(st) }, rand: x.rand}
}

// contextObject builds $$ for the step.
func (x *run) contextObject(st *stepCtx) any {
	if st.ctxMemo != nil && st.item == nil {
		return st.ctxMemo
	}
	smARN := x.r.opts.StateMachineARN
	smName := smARN[strings.LastIndex(smARN, ":")+1:]
	account := "123456789012"
	if parts := strings.Split(smARN, ":"); len(parts) > 4 && parts[4] != "" {
		account = parts[4]
	}
	c := map[string]any{
		"Execution": map[string]any{
			"Id":           x.arn,
			"Input":        x.input,
			"Name":         x.name,
			"RoleArn":      "arn:aws:iam::" + account + ":role/" + smName,
			"StartTime":    contextTime(x.start),
			"RedriveCount": jsonNumber(0),
		},
		"State": map[string]any{
			"EnteredTime": contextTime(st.entered),
			"Name":        st.s.name,
			"RetryCount":  jsonNumber(st.retryCount),
		},
		"StateMachine": map[string]any{
			"Id":   smARN,
			"Name": smName,
		},
	}
	if st.item != nil {
		c["Map"] = map[string]any{"Item": map[string]any{"Index": jsonNumber(st.item.index), "Value": st.item.value}}
		return c
	}
	st.ctxMemo = c
	return c
}

// contextTime formats a time as $$ shows it: UTC with milliseconds.
func contextTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// inputPath applies InputPath to the raw input.
func (x *run) inputPath(st *stepCtx) (any, error) {
	ip := st.s.inputPath
	switch {
	case ip.null:
		return map[string]any{}, nil
	case ip.p == nil:
		return st.raw, nil
	}
	return x.selectPath(st, ip.p, st.raw, "InputPath")
}

// selectPath evaluates an InputPath, OutputPath or ItemsPath.
func (x *run) selectPath(st *stepCtx, p *path, input any, field string) (any, error) {
	var ctx any
	if p.context {
		ctx = x.contextObject(st)
	}
	v, ok := p.get(input, ctx)
	if !ok {
		return nil, failf(StatesRuntime, "Invalid path '%s' : No results for path: %s (%s)", p.raw, p.jsonPathLabel(), field)
	}
	return v, nil
}

// effectiveInput applies InputPath then Parameters.
func (x *run) effectiveInput(st *stepCtx) (any, error) {
	eff, err := x.inputPath(st)
	if err != nil || st.s.parameters == nil {
		return eff, err
	}
	eff, err = st.s.parameters.eval(x.env(st, eff))
	if err != nil {
		return nil, err
	}
	if n := jsonSize(eff); n > MaxPayloadBytes {
		return nil, failf(StatesDataLimitExceeded, "The input to state %q after Parameters is %d bytes, over the %d byte limit.", st.s.name, n, MaxPayloadBytes)
	}
	return eff, nil
}

// output applies ResultSelector, ResultPath and OutputPath to a result.
func (x *run) output(st *stepCtx, result any) (any, error) {
	if st.s.resultSelector != nil {
		var err error
		if result, err = st.s.resultSelector.eval(x.env(st, result)); err != nil {
			return nil, err
		}
	}
	out, err := applyResultPath(st.s.resultPath, st.raw, result)
	if err != nil {
		return nil, err
	}
	return x.outputPath(st, out)
}

func (x *run) outputPath(st *stepCtx, v any) (any, error) {
	op := st.s.outputPath
	switch {
	case op.null:
		return map[string]any{}, nil
	case op.p == nil:
		return v, nil
	}
	return x.selectPath(st, op.p, v, "OutputPath")
}

// applyResultPath combines a state's input with its result.
func applyResultPath(rp resultPath, raw, result any) (any, error) {
	switch {
	case rp.discard:
		return raw, nil
	case rp.p == nil || len(rp.p.segs) == 0:
		return result, nil
	}
	out, err := rp.p.set(raw, result)
	if err != nil {
		return nil, failf(StatesResultPathMatchFailure, "Unable to apply ResultPath '%s' to input '%s': %v", rp.p.raw, mustJSON(raw), err)
	}
	return out, nil
}

func (x *run) choice(st *stepCtx) (any, string, error) {
	eff, err := x.inputPath(st)
	if err != nil {
		return nil, "", err
	}
	env := x.env(st, eff)
	next := ""
	for _, r := range st.s.choices {
		ok, err := r.eval(env)
		if err != nil {
			return nil, "", err
		}
		if ok {
			next = r.next
			break
		}
	}
	if next == "" {
		next = st.s.deflt
	}
	if next == "" {
		return nil, "", failf(StatesNoChoiceMatched, "No Matches!")
	}
	out, err := x.outputPath(st, eff)
	return out, next, err
}

func (x *run) wait(st *stepCtx) (any, string, error) {
	s := st.s
	eff, err := x.inputPath(st)
	if err != nil {
		return nil, "", err
	}
	now := x.r.tl.Now()
	var d time.Duration
	switch {
	case s.seconds != nil:
		d = time.Duration(*s.seconds) * time.Second
	case s.timestamp != nil:
		d = s.timestamp.Sub(now)
	case s.secondsPath != nil:
		v, err := x.env(st, eff).resolve(s.secondsPath)
		if err != nil {
			return nil, "", err
		}
		n, ok := exactInt(v)
		if !ok || n < 0 || n > maxTimeoutSeconds {
			return nil, "", failf(StatesRuntime, "The SecondsPath parameter does not reference a valid integer value: %s", mustJSON(v))
		}
		d = time.Duration(n) * time.Second
	case s.timestampPath != nil:
		v, err := x.env(st, eff).resolve(s.timestampPath)
		if err != nil {
			return nil, "", err
		}
		str, _ := v.(string)
		t, ok := parseTimestamp(str)
		if !ok {
			return nil, "", failf(StatesRuntime, "The TimestampPath parameter does not reference a valid ISO-8601 extended offset date-time format string: %s", mustJSON(v))
		}
		d = t.Sub(now)
	}
	d = max(d, 0)
	x.notify(Notice{Kind: WaitStarted, Time: now, Scope: st.scope, State: s.name, Type: s.typ, Duration: d, Until: now.Add(d)})
	if err := x.r.tl.wait(st.ctx, d); err != nil {
		return nil, "", errAborted
	}
	out, err := x.outputPath(st, eff)
	return out, s.next, err
}

func (x *run) fail(st *stepCtx) error {
	s := st.s
	f := &failure{name: s.errName, cause: s.cause}
	env := x.env(st, st.raw)
	for _, d := range []struct {
		ds   *dynString
		dst  *string
		name string
	}{{s.errPath, &f.name, "ErrorPath"}, {s.causePath, &f.cause, "CausePath"}} {
		if d.ds == nil {
			continue
		}
		var v any
		var err error
		if d.ds.call != nil {
			v, err = d.ds.call.eval(env)
		} else {
			env.field = d.name
			v, err = env.resolve(d.ds.path)
		}
		if err != nil {
			return err
		}
		str, ok := v.(string)
		if !ok {
			return failf(StatesRuntime, "The %s of Fail state %q must resolve to a string, got %s", d.name, s.name, kind(v))
		}
		*d.dst = str
	}
	return f
}

func (x *run) mapState(st *stepCtx) (any, string, error) {
	s := st.s
	eff, err := x.inputPath(st)
	if err != nil {
		return nil, "", err
	}
	items := eff
	if s.itemsPath != nil {
		if items, err = x.selectPath(st, s.itemsPath, eff, "ItemsPath"); err != nil {
			return nil, "", err
		}
	}
	list, ok := items.([]any)
	if !ok {
		return nil, "", failf(StatesRuntime, "Map state %q: the items must be an array, got %s", s.name, kind(items))
	}
	limit := s.maxConcurrency
	if s.maxConcurrencyPath != nil {
		v, err := x.env(st, eff).resolve(s.maxConcurrencyPath)
		if err != nil {
			return nil, "", err
		}
		n, ok := exactInt(v)
		if !ok || n < 0 {
			return nil, "", failf(StatesRuntime, "MaxConcurrencyPath must reference a non-negative integer, got %s", mustJSON(v))
		}
		limit = int(n)
	}
	inputs := list
	if s.itemSelector != nil {
		inputs = make([]any, len(list))
		for i, item := range list {
			ist := *st
			ist.item = &mapItem{index: i, value: item}
			if inputs[i], err = s.itemSelector.eval(x.env(&ist, eff)); err != nil {
				return nil, "", err
			}
		}
	}
	scopes := make([]*machine, len(inputs))
	for i := range scopes {
		scopes[i] = s.iterator
	}
	results, err := x.fanOut(st, scopes, inputs, limit)
	if err != nil {
		return nil, "", err
	}
	out, err := x.output(st, results)
	return out, s.next, err
}

func (x *run) parallel(st *stepCtx) (any, string, error) {
	eff, err := x.effectiveInput(st)
	if err != nil {
		return nil, "", err
	}
	inputs := make([]any, len(st.s.branches))
	for i := range inputs {
		inputs[i] = eff
	}
	results, err := x.fanOut(st, st.s.branches, inputs, len(inputs))
	if err != nil {
		return nil, "", err
	}
	out, err := x.output(st, results)
	return out, st.s.next, err
}

// errSiblingFailed cancels the other branches once one has failed.
var errSiblingFailed = errors.New("another branch failed")

// fanOut runs scopes[i] on inputs[i], at most limit at a time (0 means the
// inline Map maximum), starting them in order and returning results in
// order. The first failure stops the rest and is the result.
func (x *run) fanOut(st *stepCtx, scopes []*machine, inputs []any, limit int) ([]any, error) {
	if limit <= 0 || limit > maxInlineConcurrency {
		limit = maxInlineConcurrency
	}
	ctx, cancel := context.WithCancelCause(st.ctx)
	defer cancel(nil)
	sem := make(chan struct{}, limit)
	results := make([]any, len(inputs))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	prefix := st.scope
	if prefix != "" {
		prefix += "/"
	}
start:
	for i := range inputs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break start
		}
		wg.Go(func() {
			defer func() { <-sem }()
			out, err := x.runMachine(ctx, scopes[i], inputs[i], fmt.Sprintf("%s%s[%d]", prefix, st.s.name, i))
			if err != nil {
				mu.Lock()
				if firstErr == nil && !errors.Is(err, errAborted) {
					firstErr = err
					cancel(errSiblingFailed)
				}
				mu.Unlock()
				return
			}
			results[i] = out
		})
	}
	wg.Wait()
	if st.ctx.Err() != nil {
		return nil, errAborted
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return results, nil
}
