package awsfront

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// stub is a stand-in emulator for the tests that need no moto: it answers
// every EC2 call with an empty <ActionResponse> and counts what it got.
type stub struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newStub(t *testing.T) *stub {
	t.Helper()
	s := &stub{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		w.Header().Set("Content-Type", "text/xml")
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
			`<`+form.Get("Action")+`Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>stub</requestId></`+form.Get("Action")+`Response>`)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// startFront starts a front before upstream and closes it with t.
func startFront(t *testing.T, opts Options) *Front {
	t.Helper()
	f, err := Start(opts)
	if err != nil {
		t.Fatalf("Start(%+v): %v", opts, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// ec2Call sends one unsigned EC2 query call with the credential scope of
// region, as the SDK would sign it, and returns the status and body. It
// reports failures with Errorf, so goroutines may use it.
func ec2Call(t *testing.T, f *Front, region, action string, params ...string) (int, string) {
	t.Helper()
	form := url.Values{"Action": {action}, "Version": {ec2APIVersion}}
	for i := 0; i+1 < len(params); i += 2 {
		form.Set(params[i], params[i+1])
	}
	req, err := http.NewRequest(http.MethodPost, f.URL()+"/", strings.NewReader(form.Encode()))
	if err != nil {
		t.Errorf("%s: %v", action, err)
		return 0, ""
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set("Authorization", authFor(region, "ec2"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s: %v", action, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// authFor is an Authorization header with region's and service's scope.
func authFor(region, service string) string {
	return "AWS4-HMAC-SHA256 Credential=testing/20260101/" + region + "/" + service +
		"/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
}

// faultsOf lists the faults of calls.
func faultsOf(calls []Call) []Fault {
	out := make([]Fault, len(calls))
	for i, c := range calls {
		out[i] = c.Fault
	}
	return out
}
