package awsfront

import (
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/pkg/asl"
	"github.com/kiln-dev/kiln/pkg/bake"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name           string
		method, target string
		header         map[string]string
		body           string
		wantAction     string
		wantRegion     string
	}{
		{"ec2 query", "POST", "/", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": authFor("eu-west-1", "ec2")},
			"Action=RunInstances&Version=2016-11-15", "ec2:RunInstances", "eu-west-1"},
		{"ec2 unsigned", "POST", "/", map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
			"Action=DescribeImages&Version=2016-11-15", "ec2:DescribeImages", ""},
		{"ssm json", "POST", "/", map[string]string{"X-Amz-Target": "AmazonSSM.GetParameter", "Content-Type": "application/x-amz-json-1.1", "Authorization": authFor("us-east-1", "ssm")},
			`{"Name":"/a"}`, "ssm:GetParameter", "us-east-1"},
		{"events json", "POST", "/", map[string]string{"X-Amz-Target": "AWSEvents.PutEvents", "Authorization": authFor("us-east-1", "events")},
			`{}`, "events:PutEvents", "us-east-1"},
		{"sts query", "POST", "/", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": authFor("us-east-1", "sts")},
			"Action=GetCallerIdentity&Version=2011-06-15", "sts:GetCallerIdentity", "us-east-1"},
		{"s3 put x-id", "PUT", "/b/k/x?x-id=PutObject", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "hi", "s3:PutObject", "us-east-1"},
		{"s3 put plain", "PUT", "/b/k", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "hi", "s3:PutObject", "us-east-1"},
		{"s3 copy", "PUT", "/b/k", map[string]string{"Authorization": authFor("us-east-1", "s3"), "X-Amz-Copy-Source": "/b/j"}, "", "s3:CopyObject", "us-east-1"},
		{"s3 create bucket", "PUT", "/b", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "", "s3:CreateBucket", "us-east-1"},
		{"s3 versioning", "PUT", "/b?versioning", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "", "s3:PutBucketVersioning", "us-east-1"},
		{"s3 list v2", "GET", "/b?list-type=2&prefix=x", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "", "s3:ListObjectsV2", "us-east-1"},
		{"s3 list versions", "GET", "/b?versions", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "", "s3:ListObjectVersions", "us-east-1"},
		{"s3 delete objects", "POST", "/b?delete", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "<Delete/>", "s3:DeleteObjects", "us-east-1"},
		{"s3 head", "HEAD", "/b/k", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "", "s3:HeadObject", "us-east-1"},
		{"s3 head bucket", "HEAD", "/b", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "", "s3:HeadBucket", "us-east-1"},
		{"s3 delete", "DELETE", "/b/k", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "", "s3:DeleteObject", "us-east-1"},
		{"s3 list buckets", "GET", "/", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "", "s3:ListBuckets", "us-east-1"},
		{"s3 upload part", "PUT", "/b/k?partNumber=1&uploadId=u", map[string]string{"Authorization": authFor("us-east-1", "s3")}, "x", "s3:UploadPart", "us-east-1"},
		{"s3 presigned", "GET", "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20260101%2Fus-west-2%2Fs3%2Faws4_request", nil, "", "s3:GetObject", "us-west-2"},
		{"moto api", "POST", "/moto-api/reset", nil, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body))
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			req, ok := classify(r, []byte(tt.body))
			if tt.wantAction == "" {
				if ok {
					t.Errorf("classify(%s %s) = %q, want no AWS call", tt.method, tt.target, req.action)
				}
				return
			}
			if !ok {
				t.Fatalf("classify(%s %s): not an AWS call, want %q", tt.method, tt.target, tt.wantAction)
			}
			if req.action != tt.wantAction || req.region != tt.wantRegion {
				t.Errorf("classify(%s %s) = %q in %q, want %q in %q", tt.method, tt.target, req.action, req.region, tt.wantAction, tt.wantRegion)
			}
		})
	}
}

func TestSpansRewriteOnlyWhatTheyTouch(t *testing.T) {
	in := `<?xml version="1.0"?>` + "\n" + `<R xmlns="x"><set><item><id>a</id><st><code>16</code><name>running</name></st></item>` +
		`<item><id>b&amp;c</id><st><code/><name/></st></item></set><tail>t</tail></R>`
	doc, err := parseSpans([]byte(in))
	if err != nil {
		t.Fatalf("parseSpans: %v", err)
	}
	items := doc.find("R/set/item")
	if len(items) != 2 || items[1].textAt("id") != "b&c" {
		t.Fatalf("find(R/set/item) = %d items, second id %q; want 2 and %q", len(items), items[1].textAt("id"), "b&c")
	}
	got := string(applyEdits([]byte(in), []edit{
		setText(items[0].first("st/name"), "pending"),
		setText(items[0].first("st/code"), "0"),
		setText(items[1].first("st/code"), "64"), // self-closing
	}))
	want := strings.NewReplacer("<code>16</code><name>running</name>", "<code>0</code><name>pending</name>",
		"<code/>", "<code>64</code>").Replace(in)
	if got != want {
		t.Errorf("edited:\n%s\nwant:\n%s", got, want)
	}
	got = string(applyEdits([]byte(in), []edit{drop(items[0])}))
	want = strings.Replace(in, `<item><id>a</id><st><code>16</code><name>running</name></st></item>`, "", 1)
	if got != want {
		t.Errorf("dropped:\n%s\nwant:\n%s", got, want)
	}
	if _, err := parseSpans([]byte("<a><b></a>")); err == nil {
		t.Errorf("parseSpans(unbalanced) succeeded, want an error")
	}
}

// TestRandomFaultRate checks the injected fraction statistically: over n
// calls with rate p the count is binomial, so allow 5 standard deviations.
func TestRandomFaultRate(t *testing.T) {
	s := newStub(t)
	f := startFront(t, Options{Upstream: s.srv.URL})
	const n = 1500
	run := func(seed uint64) []Call {
		f.Reset()
		if err := f.SetFaults(Faults{ThrottleRate: 0.3, ServerErrorRate: 0.05, Seed: seed, Only: []string{"ec2:Describe*"}}); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			action := "DescribeImages"
			if i%10 == 0 {
				action = "CreateTags" // not admitted by Only
			}
			status, body := ec2Call(t, f, "us-east-1", action)
			if status == http.StatusServiceUnavailable && !strings.Contains(body, "<Code>RequestLimitExceeded</Code>") {
				t.Fatalf("throttled %s body = %s, want RequestLimitExceeded", action, body)
			}
			if status == http.StatusInternalServerError && !strings.Contains(body, "<Code>InternalError</Code>") {
				t.Fatalf("500 %s body = %s, want InternalError", action, body)
			}
		}
		return f.Calls()
	}
	calls := run(42)
	var admitted, throttled, errored int
	for _, c := range calls {
		if c.Action == "ec2:CreateTags" {
			if c.Fault != "" || c.Status != 200 {
				t.Errorf("call %d %s = %d %q; Only excludes it", c.Seq, c.Action, c.Status, c.Fault)
			}
			continue
		}
		admitted++
		switch c.Fault {
		case FaultThrottle:
			throttled++
			if c.Status != 503 || c.Code != "RequestLimitExceeded" || c.Forwarded {
				t.Errorf("throttled call %d = %d %q forwarded %v", c.Seq, c.Status, c.Code, c.Forwarded)
			}
		case FaultServerError:
			errored++
		}
	}
	within := func(name string, got int, p float64) {
		mean := p * float64(admitted)
		sd := math.Sqrt(float64(admitted) * p * (1 - p))
		if math.Abs(float64(got)-mean) > 5*sd {
			t.Errorf("%s: %d of %d calls, want %.0f ± %.0f", name, got, admitted, mean, 5*sd)
		}
	}
	within("throttled", throttled, 0.3)
	within("500s", errored, 0.05)
	if want := int64(n - throttled - errored); s.hits.Load() != want {
		t.Errorf("upstream saw %d calls, want %d (faulted calls must not reach it)", s.hits.Load(), want)
	}
	s.hits.Store(0)
	if diff := cmp.Diff(faultsOf(calls), faultsOf(run(42))); diff != "" {
		t.Errorf("same seed, different faults (-first +second):\n%s", diff)
	}
	if err := f.SetFaults(Faults{ThrottleRate: 0.8, ServerErrorRate: 0.3}); err == nil {
		t.Errorf("SetFaults(rates summing to 1.1) succeeded, want an error")
	}
}

func TestBuckets(t *testing.T) {
	s := newStub(t)
	clock := asl.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f := startFront(t, Options{Upstream: s.srv.URL, Clock: clock, TimeScale: 0.01})
	f.EnableBuckets(true)
	status := func(region, action string) int {
		st, _ := ec2Call(t, f, region, action)
		return st
	}
	for i := range 5 {
		if st := status("us-east-1", "RunInstances"); st != 200 {
			t.Fatalf("RunInstances %d in a full bucket = %d, want 200", i+1, st)
		}
	}
	if tok, ok := f.Tokens("us-east-1", "RunInstances"); !ok || tok != 0 {
		t.Errorf("Tokens(us-east-1, RunInstances) = %v, %v after the burst, want 0, true", tok, ok)
	}
	if st := status("us-east-1", "RunInstances"); st != 503 {
		t.Errorf("RunInstances 6 = %d, want 503 (bucket empty)", st)
	}
	if st := status("us-west-2", "RunInstances"); st != 200 {
		t.Errorf("RunInstances in us-west-2 = %d, want 200 (own bucket)", st)
	}
	if st := status("us-east-1", "CreateImage"); st != 200 {
		t.Errorf("CreateImage = %d, want 200 (mutating bucket)", st)
	}
	// 2 tokens a second of AWS time; at scale 0.01 one token takes 5 ms.
	clock.Advance(4 * time.Millisecond)
	if st := status("us-east-1", "RunInstances"); st != 503 {
		t.Errorf("RunInstances after 0.4 s of AWS time = %d, want 503", st)
	}
	clock.Advance(time.Millisecond)
	if st := status("us-east-1", "RunInstances"); st != 200 {
		t.Errorf("RunInstances after 0.5 s of AWS time = %d, want 200", st)
	}
	last := f.Calls()[len(f.Calls())-2]
	if last.Fault != FaultBucket || last.Code != "RequestLimitExceeded" {
		t.Errorf("throttled call = %q %q, want %q RequestLimitExceeded", last.Fault, last.Code, FaultBucket)
	}
	// Describes share one bucket of 100.
	for i := range 100 {
		action := []string{"DescribeInstances", "DescribeImages"}[i%2]
		if st := status("eu-west-1", action); st != 200 {
			t.Fatalf("describe %d = %d, want 200", i+1, st)
		}
	}
	if st := status("eu-west-1", "DescribeVpcs"); st != 503 {
		t.Errorf("describe 101 = %d, want 503", st)
	}
	if tok, _ := f.Tokens("eu-west-1", "mutating"); tok != 50 {
		t.Errorf("Tokens(eu-west-1, mutating) = %v, want 50 (untouched)", tok)
	}
	f.EnableBuckets(false)
	if st := status("us-east-1", "RunInstances"); st != 200 {
		t.Errorf("RunInstances with buckets off = %d, want 200", st)
	}
	if _, ok := f.Tokens("us-east-1", "nope"); ok {
		t.Errorf("Tokens(nope) ok, want not ok")
	}
}

func TestFailureSemantics(t *testing.T) {
	s := newStub(t)
	f := startFront(t, Options{Upstream: s.srv.URL})
	run := func(token, typ string) (int, string) {
		return ec2Call(t, f, "us-east-1", "RunInstances", "ClientToken", token, "InstanceType", typ)
	}

	t.Run("nth and its repeats", func(t *testing.T) {
		f.Reset()
		f.FailNth("ec2:RunInstances", 2, "")
		steps := []struct {
			token, typ string
			want       int
		}{
			{"a", "t3.micro", 200},
			{"b", "t3.micro", 403}, // the 2nd call
			{"b", "t3.micro", 403}, // an SDK retry
			{"c", "t3.micro", 403}, // a re-run with a new client token
			{"d", "t3.small", 200}, // another request
		}
		for i, st := range steps {
			status, body := run(st.token, st.typ)
			if status != st.want {
				t.Errorf("step %d: RunInstances(%s, %s) = %d, want %d", i+1, st.token, st.typ, status, st.want)
			}
			if status == 403 && !strings.Contains(body, "<Code>UnauthorizedOperation</Code>") {
				t.Errorf("step %d: body %s, want UnauthorizedOperation", i+1, body)
			}
		}
		if got := s.hits.Swap(0); got != 2 {
			t.Errorf("upstream saw %d calls, want 2", got)
		}
	})

	t.Run("seq, code and repeat action", func(t *testing.T) {
		f.Reset()
		if err := f.Fail(Failure{Seq: 2, Code: "InvalidParameterValue", Repeat: RepeatAction}); err != nil {
			t.Fatal(err)
		}
		ec2Call(t, f, "us-east-1", "DescribeImages")
		status, body := ec2Call(t, f, "us-east-1", "CreateImage", "Name", "x")
		if status != 400 || !strings.Contains(body, "<Code>InvalidParameterValue</Code>") || !strings.Contains(body, "call 2") {
			t.Errorf("call 2 = %d %s, want 400 InvalidParameterValue naming call 2", status, body)
		}
		if status, _ := ec2Call(t, f, "us-east-1", "CreateImage", "Name", "y"); status != 400 {
			t.Errorf("a later CreateImage = %d, want 400 (RepeatAction)", status)
		}
		if status, _ := ec2Call(t, f, "us-east-1", "DescribeImages"); status != 200 {
			t.Errorf("DescribeImages = %d, want 200", status)
		}
	})

	t.Run("region", func(t *testing.T) {
		f.Reset()
		if err := f.Fail(Failure{Action: "ec2:CopyImage", N: 1, Region: "eu-west-1"}); err != nil {
			t.Fatal(err)
		}
		if status, _ := ec2Call(t, f, "us-east-1", "CopyImage"); status != 200 {
			t.Errorf("CopyImage in us-east-1 = %d, want 200", status)
		}
		if status, _ := ec2Call(t, f, "eu-west-1", "CopyImage"); status != 403 {
			t.Errorf("first CopyImage in eu-west-1 = %d, want 403", status)
		}
	})

	t.Run("after upstream", func(t *testing.T) {
		f.Reset()
		s.hits.Store(0)
		if err := f.Fail(Failure{Action: "ec2:RunInstances", N: 1, AfterUpstream: true}); err != nil {
			t.Fatal(err)
		}
		if status, _ := run("a", "t3.micro"); status != 403 {
			t.Errorf("RunInstances = %d, want 403", status)
		}
		c := f.Calls()[0]
		if s.hits.Load() != 1 || !c.Forwarded || c.Fault != FaultFail {
			t.Errorf("upstream saw %d calls, call forwarded %v fault %q; want 1, true, %q", s.hits.Load(), c.Forwarded, c.Fault, FaultFail)
		}
	})

	for _, bad := range []Failure{{}, {Seq: 1, Action: "ec2:X", N: 1}, {Action: "ec2:X"}, {Seq: 1, Status: 200}} {
		if err := f.Fail(bad); err == nil {
			t.Errorf("Fail(%+v) succeeded, want an error", bad)
		}
	}
}

func TestLatencyIsScaled(t *testing.T) {
	s := newStub(t)
	f := startFront(t, Options{Upstream: s.srv.URL, TimeScale: 0.01})
	f.SetLatency(3 * time.Second) // 30 ms of real time
	start := time.Now()
	ec2Call(t, f, "us-east-1", "DescribeImages")
	if d := time.Since(start); d < 30*time.Millisecond || d > 2*time.Second {
		t.Errorf("a call with 3 s of AWS latency at scale 0.01 took %v, want about 30ms", d)
	}
}

func TestStartRejects(t *testing.T) {
	for _, up := range []string{"", "127.0.0.1:5000", "https://ec2.us-east-1.amazonaws.com"} {
		if f, err := Start(Options{Upstream: up}); err == nil {
			f.Close()
			t.Errorf("Start(%q) succeeded, want an error", up)
		}
	}
}

func TestDefaultTimingsAreKilns(t *testing.T) {
	want := bake.AWSTimings
	got := DefaultTimings
	if got.Running != want.Running || got.Stopped != want.Stopped || got.Image != want.Image || got.Copy != want.Copy {
		t.Errorf("DefaultTimings = %+v, want bake.AWSTimings' %+v", got, want)
	}
}

// TestConcurrentUse drives the front from several goroutines while
// settings change and the log is read: run it with -race.
func TestConcurrentUse(t *testing.T) {
	s := newStub(t)
	f := startFront(t, Options{Upstream: s.srv.URL, TimeScale: 0.001})
	f.EnableBuckets(true)
	f.SetConsistencyDelay(1)
	done := make(chan struct{})
	const workers, each = 6, 40
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range each {
				action := []string{"DescribeInstances", "RunInstances", "CreateImage", "DescribeImages"}[(w+i)%4]
				ec2Call(t, f, []string{"us-east-1", "eu-west-1"}[w%2], action, "ClientToken", "t")
			}
		}()
	}
	for i := range workers {
		_ = f.SetFaults(Faults{ThrottleRate: 0.2, Seed: uint64(i)})
		_ = f.Calls()
		_ = f.Counts()
		_ = f.RegionCounts()
		_, _ = f.Tokens("us-east-1", "RunInstances")
		f.SetClientTokens(i%2 == 0)
		remove := f.OnResponse("*", func(Call) {})
		<-done
		remove()
	}
	calls := f.Calls()
	if len(calls) != workers*each {
		t.Fatalf("logged %d calls, want %d", len(calls), workers*each)
	}
	for i, c := range calls {
		if c.Seq != i+1 || c.Status == 0 {
			t.Errorf("call %d = seq %d status %d, want seq %d and an answer", i, c.Seq, c.Status, i+1)
		}
	}
}
