package awsfront

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/pkg/asl"
)

// Options configures Start.
type Options struct {
	// Upstream is the URL of the emulator the front passes calls to, e.g.
	// moto's http://127.0.0.1:PORT. Required. Hosts under amazonaws.com
	// are refused: the front is for emulators, not AWS.
	Upstream string
	// TimeScale maps AWS time onto the Clock: every duration the front
	// models (Timings, latency, bucket refills) takes TimeScale times as
	// long on the Clock. 0.01 turns a 30 s boot into 0.3 s. Zero means 1.
	TimeScale float64
	// Clock is the front's time; nil means the wall clock. With a fake
	// clock (asl.FakeClock satisfies Clock) a test moves the time model
	// and the buckets forward by hand.
	Clock Clock
	// Timings is the time model's durations from the start. The zero
	// value leaves state changes instant; DefaultTimings are AWS's.
	Timings Timings
}

// Clock is the front's source of time: the state machine runner's, so
// that one fake clock drives both.
type Clock = asl.Clock

// Fault says why the front, not the emulator, answered a call.
type Fault string

// The faults the front injects.
const (
	// FaultThrottle is a random throttling error (Faults.ThrottleRate).
	FaultThrottle Fault = "throttle"
	// FaultServerError is a random HTTP 500 (Faults.ServerErrorRate).
	FaultServerError Fault = "server-error"
	// FaultBucket is a throttling error from an empty token bucket.
	FaultBucket Fault = "bucket"
	// FaultFail is a permanent failure (Fail, FailCall, FailNth).
	FaultFail Fault = "fail"
	// FaultNotFound is a NotFound error for a resource that eventual
	// consistency still hides (SetConsistencyDelay).
	FaultNotFound Fault = "not-found"
)

// Call is one HTTP request through the front: one attempt of an SDK
// operation (the SDK's retries are calls of their own).
type Call struct {
	// Seq numbers the calls in order of arrival from 1, since Start or
	// the last Reset.
	Seq int
	// N numbers the calls of Action (all Regions) from 1.
	N int
	// RegionN numbers the calls of Action in Region from 1.
	RegionN int
	// Time is when the call arrived, on the front's clock.
	Time time.Time
	// Action is "<service>:<operation>" as SigV4 and the API name them:
	// "ec2:RunInstances", "ssm:PutParameter", "s3:PutObject".
	Action string
	// Region is the Region the call was signed for.
	Region string
	// Attempt is the SDK's attempt number (1 for a first try), 0 if the
	// client did not say.
	Attempt int
	// Invocation is the SDK's invocation ID, shared by all attempts of one
	// operation call.
	Invocation string
	// IDs are the resource IDs and names the request names: EC2's
	// top-level *Id and KeyName parameters, SSM's Name(s), S3's
	// "bucket/key".
	IDs []string
	// Created are the IDs of the resources the call created, read from a
	// successful answer: instances, images, security groups, key pairs,
	// snapshots, volumes, launch templates.
	Created []string
	// Status is the HTTP status the client was answered with; 0 if the
	// client went away before an answer (or the call is in flight).
	Status int
	// Code is the error code of the answer, injected or the emulator's;
	// "" for a success.
	Code string
	// Fault is the fault the front injected, "" if none.
	Fault Fault
	// Forwarded reports whether the emulator saw the call (and so carried
	// it out). A failure with AfterUpstream is forwarded and faulted.
	Forwarded bool
	// Replayed reports an answer repeated for a reused client token
	// (SetClientTokens).
	Replayed bool
}

// Front is a running fault-injecting, time-keeping proxy in front of an
// AWS emulator. Its methods are safe for concurrent use, also while calls
// are in flight.
type Front struct {
	opts     Options
	scale    float64
	clock    Clock
	upstream *url.URL
	url      string
	srv      *http.Server
	client   *http.Client

	closeOnce sync.Once
	closeErr  error

	mu           sync.Mutex
	gen          int // counts Resets, so a call in flight across one is not logged into the new log
	calls        []Call
	counts       map[string]int
	regionCounts map[string]map[string]int
	faults       Faults
	rng          *rand.Rand
	rules        []*rule
	bucketsOn    bool
	buckets      []Bucket
	levels       map[string]*bucketLevel
	consistency  int
	timings      Timings
	latency      time.Duration
	world        map[string]map[string]*resource // Region -> ID -> resource
	clientTokens bool
	tokens       map[string]*tokenReply
	hooks        []*hook
}

// tokenReply is the answer to the first call with a client token.
type tokenReply struct {
	fp     string
	header http.Header
	body   []byte
}

// hook is a callback registered with OnResponse.
type hook struct {
	pattern string
	fn      func(Call)
}

// Start starts a front on a free port of 127.0.0.1. Close stops it.
func Start(opts Options) (*Front, error) {
	u, err := url.Parse(opts.Upstream)
	if err != nil {
		return nil, fmt.Errorf("start aws front for %q: %w", opts.Upstream, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("start aws front for %q: want an http(s)://host:port upstream", opts.Upstream)
	}
	if h := strings.ToLower(u.Hostname()); h == "amazonaws.com" || strings.HasSuffix(h, ".amazonaws.com") {
		return nil, fmt.Errorf("start aws front for %q: the front is for emulators, not AWS", opts.Upstream)
	}
	if opts.TimeScale < 0 {
		return nil, fmt.Errorf("start aws front: negative time scale %v", opts.TimeScale)
	}
	f := &Front{opts: opts, scale: opts.TimeScale, clock: opts.Clock, upstream: u}
	if f.scale == 0 {
		f.scale = 1
	}
	if f.clock == nil {
		f.clock = asl.RealClock{}
	}
	f.resetLocked()
	f.client = &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // never via $HTTP_PROXY: the upstream is local
			DisableCompression:  true,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start aws front: %w", err)
	}
	f.url = "http://" + ln.Addr().String()
	f.srv = &http.Server{Handler: f, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

// URL is the front's address, http://127.0.0.1:PORT: the BaseEndpoint
// for SDK clients.
func (f *Front) URL() string { return f.url }

// Close stops the front; calls in flight are cut off.
func (f *Front) Close() error {
	f.closeOnce.Do(func() {
		f.closeErr = f.srv.Close()
		f.client.CloseIdleConnections()
	})
	return f.closeErr
}

// Reset returns the front to the state Start left it in: it forgets the
// call log, the counts and the sequence numbers, the resources it tracks
// and the client tokens it saw, refills the buckets, and drops every fault
// setting, failure, hook and latency (the Options' Timings apply again).
// Reset the emulator alongside: what the front tracked lives there.
func (f *Front) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resetLocked()
}

func (f *Front) resetLocked() {
	f.gen++
	f.calls = nil
	f.counts = map[string]int{}
	f.regionCounts = map[string]map[string]int{}
	f.faults = Faults{}
	f.rng = rand.New(rand.NewPCG(0, 0))
	f.rules = nil
	f.bucketsOn = false
	f.buckets = slices.Clone(EC2Buckets)
	f.levels = map[string]*bucketLevel{}
	f.consistency = 0
	f.timings = f.opts.Timings
	f.latency = 0
	f.world = map[string]map[string]*resource{}
	f.clientTokens = false
	f.tokens = map[string]*tokenReply{}
	f.hooks = nil
}

// Calls returns the log of calls so far, in order of arrival.
func (f *Front) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Counts returns how many calls of each action arrived, all Regions
// together, keyed by action ("ec2:RunInstances").
func (f *Front) Counts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.counts)
}

// RegionCounts returns how many calls of each action arrived per Region:
// Region -> action -> count.
func (f *Front) RegionCounts() map[string]map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]map[string]int, len(f.regionCounts))
	for r, m := range f.regionCounts {
		out[r] = maps.Clone(m)
	}
	return out
}

// SetConsistencyDelay makes each instance (RunInstances) and image
// (CreateImage, CopyImage, RegisterImage) created from now on invisible to
// its first k describes: a DescribeInstances or DescribeImages naming it in
// InstanceId.N / ImageId.N is answered InvalidInstanceID.NotFound /
// InvalidAMIID.NotFound (HTTP 400), and one that lists without IDs leaves
// it out. Each such describe uses up one of the k. Zero turns it off for
// new resources.
func (f *Front) SetConsistencyDelay(k int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.consistency = max(k, 0)
}

// SetTimings sets the time model's durations for the state changes that
// start from now on. The zero Timings makes them instant again.
func (f *Front) SetTimings(t Timings) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.timings = t
}

// SetLatency delays every call by d of AWS time (scaled by TimeScale,
// slept on the Clock) before the front handles it. On a fake clock in
// manual mode the calls wait until the clock is advanced.
func (f *Front) SetLatency(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = max(d, 0)
}

// EnableBuckets turns the token buckets on or off. Turning them on fills
// every bucket.
func (f *Front) EnableBuckets(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bucketsOn = on
	f.levels = map[string]*bucketLevel{}
}

// SetBuckets replaces the buckets (EC2Buckets until then) and fills them.
func (f *Front) SetBuckets(bs []Bucket) error {
	if err := validateBuckets(bs); err != nil {
		return fmt.Errorf("set buckets: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buckets = slices.Clone(bs)
	f.levels = map[string]*bucketLevel{}
	return nil
}

// Tokens reports the tokens in region's bucket of that name now (a full
// bucket if no call has drawn on it yet); ok is false if there is no such
// bucket.
func (f *Front) Tokens(region, bucket string) (tokens float64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.buckets {
		if f.buckets[i].Name == bucket {
			return f.level(region, &f.buckets[i], f.clock.Now()).tokens, true
		}
	}
	return 0, false
}

// SetClientTokens turns on EC2 client-token idempotency, which moto lacks
// (shared/FACTS.md): a repeated EC2 call with a ClientToken already
// answered successfully in that Region gets the first answer again without
// reaching the emulator, or IdempotentParameterMismatch if its other
// parameters differ. Two concurrent first calls with one token both go
// through.
func (f *Front) SetClientTokens(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clientTokens = on
}

// OnResponse calls fn for every call matching the action pattern
// (path.Match syntax: "ec2:RunInstances", "ec2:*", "*") after the
// emulator answered it and before the front passes the answer on. fn
// receives the call as the log will show it. It runs on the request's
// goroutine and holds the answer back until it returns, so it can, say,
// cancel the caller's context to simulate a crash right after a call took
// effect. Calls the front answers itself (faults, replays) do not reach
// fn. remove unregisters fn.
func (f *Front) OnResponse(action string, fn func(Call)) (remove func()) {
	h := &hook{pattern: action, fn: fn}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hooks = append(f.hooks, h)
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.hooks = slices.DeleteFunc(f.hooks, func(o *hook) bool { return o == h })
	}
}

// reply is an answer the front makes itself.
type reply struct {
	status int
	code   string // the error code, "" for a success
	header http.Header
	body   []byte
}

// ServeHTTP handles one call: log it, maybe answer it with a fault, else
// pass it to the emulator and pass the answer back, adjusted to the model.
func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "awsfront: read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	req, ok := classify(r, body)
	if !ok {
		f.passThrough(w, r, body)
		return
	}
	fp := fingerprint(req, r)

	f.mu.Lock()
	now := f.clock.Now()
	f.counts[req.action]++
	if f.regionCounts[req.region] == nil {
		f.regionCounts[req.region] = map[string]int{}
	}
	f.regionCounts[req.region][req.action]++
	idx := len(f.calls)
	f.calls = append(f.calls, Call{
		Seq: idx + 1, N: f.counts[req.action], RegionN: f.regionCounts[req.region][req.action],
		Time: now, Action: req.action, Region: req.region, Attempt: req.attempt,
		Invocation: req.invocation, IDs: req.ids,
	})
	c, gen := f.calls[idx], f.gen
	latency := time.Duration(float64(f.latency) * f.scale)
	f.mu.Unlock()

	if latency > 0 {
		if err := f.clock.Sleep(r.Context(), latency); err != nil {
			return // the client went away: Status stays 0
		}
	}

	f.mu.Lock()
	rep, fault, after := f.admit(req, &c, fp)
	f.mu.Unlock()
	if rep != nil {
		f.finish(gen, idx, c, func(c *Call) {
			c.Status, c.Fault, c.Code = rep.status, fault, rep.code
			c.Replayed = fault == "" && rep.status == http.StatusOK
		})
		f.write(w, req, rep.status, rep.header, rep.body)
		return
	}

	resp, rbody, err := f.forward(r, body)
	if err != nil {
		e := serverError(req)
		e.status, e.message = http.StatusBadGateway, "awsfront: upstream: "+err.Error()
		h, b := render(req, e, requestID(c.Seq))
		f.finish(gen, idx, c, func(c *Call) { c.Status, c.Code = e.status, e.code })
		f.write(w, req, e.status, h, b)
		return
	}
	status, header := resp.StatusCode, resp.Header
	rbody, created := f.model(req, status, header, rbody, fp)
	fault = ""
	if after != nil {
		e := after.apiError(req, c.Seq)
		header, rbody = render(req, e, requestID(c.Seq))
		status, fault = e.status, FaultFail
	}
	final := f.finish(gen, idx, c, func(c *Call) {
		c.Forwarded, c.Status, c.Fault, c.Created = true, status, fault, created
		if status >= 300 {
			c.Code = errorCode(req, header, rbody)
		}
	})
	f.runHooks(final)
	f.write(w, req, status, header, rbody)
}

// admit decides whether the front answers the call itself, in this order:
// a permanent failure, a random fault, an empty bucket, eventual
// consistency, a client-token replay. after is a permanent failure to
// apply once the emulator has carried the call out. Callers hold f.mu.
func (f *Front) admit(req *request, c *Call, fp string) (rep *reply, fault Fault, after *rule) {
	errReply := func(e apiError) *reply {
		h, b := render(req, e, requestID(c.Seq))
		return &reply{e.status, e.code, h, b}
	}
	for _, r := range f.rules {
		if r.match(c, fp) {
			if r.AfterUpstream {
				return nil, "", r
			}
			return errReply(r.apiError(req, c.Seq)), FaultFail, nil
		}
	}
	if fs := f.faults; (fs.ThrottleRate > 0 || fs.ServerErrorRate > 0) && (len(fs.Only) == 0 || matchAny(fs.Only, req.action)) {
		switch x := f.rng.Float64(); {
		case x < fs.ThrottleRate:
			return errReply(throttleError(req)), FaultThrottle, nil
		case x < fs.ThrottleRate+fs.ServerErrorRate:
			return errReply(serverError(req)), FaultServerError, nil
		}
	}
	if f.bucketsOn {
		if b := bucketFor(f.buckets, req.action); b != nil {
			l := f.level(req.region, b, f.clock.Now())
			if l.tokens < 1 {
				return errReply(throttleError(req)), FaultBucket, nil
			}
			l.tokens--
		}
	}
	if e, ok := f.notYetVisible(req); ok {
		return errReply(e), FaultNotFound, nil
	}
	if f.clientTokens && req.proto == protoEC2 {
		if tok := req.form.Get("ClientToken"); tok != "" {
			if t := f.tokens[req.region+"\x00"+req.action+"\x00"+tok]; t != nil {
				if t.fp != fp {
					return errReply(apiError{http.StatusBadRequest, "IdempotentParameterMismatch",
						"The client token " + tok + " was already used with different parameters."}), "", nil
				}
				return &reply{http.StatusOK, "", t.header.Clone(), t.body}, "", nil
			}
		}
	}
	return nil, "", nil
}

// model updates the model from a call the emulator answered and adjusts
// the answer to it: it tracks what the call created or changed, remembers
// client tokens, and rewrites describes. It returns the body to send and
// the IDs the call created.
func (f *Front) model(req *request, status int, header http.Header, body []byte, fp string) ([]byte, []string) {
	if req.proto != protoEC2 || status != http.StatusOK || header.Get("Content-Encoding") != "" {
		return body, nil
	}
	_, creates := changes[req.action]
	_, creates2 := createdPaths[req.action]
	_, describes := describeKinds[req.action]
	f.mu.Lock()
	describes = describes && f.tracks(req.region)
	f.mu.Unlock()
	if !creates && !creates2 && !describes && req.action != "ec2:DeregisterImage" && !f.wantsToken(req) {
		return body, nil
	}
	doc, err := parseSpans(body)
	if err != nil {
		return body, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.clock.Now()
	created := f.observe(req, doc, now)
	if describes {
		body = f.rewriteDescribe(req, doc, body, now)
	}
	if f.clientTokens {
		if tok := req.form.Get("ClientToken"); tok != "" {
			f.tokens[req.region+"\x00"+req.action+"\x00"+tok] = &tokenReply{fp: fp, header: header.Clone(), body: body}
		}
	}
	return body, created
}

// wantsToken reports whether a successful answer to req must be kept for
// client-token replays.
func (f *Front) wantsToken(req *request) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clientTokens && req.form.Get("ClientToken") != ""
}

// finish updates the logged call idx of generation gen and returns it.
func (f *Front) finish(gen, idx int, orig Call, update func(*Call)) Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != f.gen { // a Reset while the call was in flight
		c := orig
		update(&c)
		return c
	}
	update(&f.calls[idx])
	return f.calls[idx]
}

func (f *Front) runHooks(c Call) {
	f.mu.Lock()
	var run []func(Call)
	for _, h := range f.hooks {
		if matchAny([]string{h.pattern}, c.Action) {
			run = append(run, h.fn)
		}
	}
	f.mu.Unlock()
	for _, fn := range run {
		fn(c)
	}
}

// hopHeaders are connection-level headers a proxy must not pass on.
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Expect",
}

// forward sends the call to the emulator as it came. Once the front has
// accepted a call, the emulator carries it out even if the client goes
// away meanwhile, as AWS would.
func (f *Front) forward(r *http.Request, body []byte) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 2*time.Minute)
	defer cancel()
	target := f.upstream.Scheme + "://" + f.upstream.Host + strings.TrimSuffix(f.upstream.Path, "/") + r.RequestURI
	out, err := http.NewRequestWithContext(ctx, r.Method, target, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	out.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	out.Host = f.upstream.Host
	resp, err := f.client.Do(out)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	return resp, b, nil
}

// passThrough forwards a request that is no AWS call. A reset of moto's
// state (POST /moto-api/reset) also clears what the front tracks.
func (f *Front) passThrough(w http.ResponseWriter, r *http.Request, body []byte) {
	resp, b, err := f.forward(r, body)
	if err != nil {
		http.Error(w, "awsfront: upstream: "+err.Error(), http.StatusBadGateway)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/moto-api/reset") && resp.StatusCode < 300 {
		f.mu.Lock()
		f.world = map[string]map[string]*resource{}
		f.tokens = map[string]*tokenReply{}
		f.mu.Unlock()
	}
	f.write(w, &request{method: r.Method}, resp.StatusCode, resp.Header, b)
}

// write sends an answer. A HEAD answer keeps the Content-Length it
// describes; any other gets its body's.
func (f *Front) write(w http.ResponseWriter, req *request, status int, h http.Header, body []byte) {
	dst := w.Header()
	for k, vs := range h {
		if slices.Contains(hopHeaders, http.CanonicalHeaderKey(k)) || http.CanonicalHeaderKey(k) == "Content-Length" {
			continue
		}
		dst[k] = slices.Clone(vs)
	}
	if req.method == http.MethodHead {
		if cl := h.Get("Content-Length"); cl != "" {
			dst.Set("Content-Length", cl)
		}
		w.WriteHeader(status)
		return
	}
	dst.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// requestID is the request ID of an answer the front makes itself.
func requestID(seq int) string {
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", seq)
}

// errorCode reads the error code of an answer.
func errorCode(req *request, h http.Header, body []byte) string {
	if t := h.Get("X-Amzn-Errortype"); t != "" {
		t, _, _ = strings.Cut(t, ":")
		if i := strings.LastIndex(t, "#"); i >= 0 {
			t = t[i+1:]
		}
		return t
	}
	switch req.proto {
	case protoJSON, protoREST:
		var m struct {
			Type string `json:"__type"`
			Code string `json:"code"`
		}
		if json.Unmarshal(body, &m) == nil {
			t := cmp.Or(m.Type, m.Code)
			if i := strings.LastIndex(t, "#"); i >= 0 {
				t = t[i+1:]
			}
			return t
		}
	default:
		s := string(body)
		if i := strings.Index(s, "<Code>"); i >= 0 {
			s = s[i+len("<Code>"):]
			if j := strings.Index(s, "</Code>"); j >= 0 {
				return s[:j]
			}
		}
	}
	return ""
}
