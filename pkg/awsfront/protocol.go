package awsfront

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// protocol is the wire protocol of a call, which decides how the front names
// it and how it renders an error the SDK will parse.
type protocol int

const (
	// protoEC2 is EC2's query protocol: form-encoded POST, errors as
	// <Response><Errors><Error>.
	protoEC2 protocol = iota
	// protoQuery is the query protocol of other services (STS, IAM):
	// errors as <ErrorResponse><Error>.
	protoQuery
	// protoJSON is awsJson1.0/1.1 (SSM, EventBridge): X-Amz-Target names the
	// operation, errors as {"__type": ...}.
	protoJSON
	// protoS3 is S3's REST-XML protocol: the operation follows from the
	// method, path and query; errors as <Error><Code>.
	protoS3
	// protoREST is any other REST protocol; errors as REST-JSON.
	protoREST
)

// request is what the front reads from an incoming call.
type request struct {
	service string // "ec2", from the SigV4 credential scope
	region  string
	op      string // "RunInstances"
	action  string // "ec2:RunInstances"
	proto   protocol
	method  string
	form    url.Values // the parameters of a query-protocol call
	body    []byte
	ids     []string

	attempt    int
	invocation string
}

// scope reads the Region and service of a SigV4-signed request from the
// credential scope of its Authorization header (or, for a presigned URL,
// its X-Amz-Credential parameter): AKID/20260101/us-east-1/ec2/aws4_request.
func scope(r *http.Request) (region, service string) {
	cred := ""
	if auth := r.Header.Get("Authorization"); auth != "" {
		if i := strings.Index(auth, "Credential="); i >= 0 {
			cred = auth[i+len("Credential="):]
			if j := strings.IndexAny(cred, ", "); j >= 0 {
				cred = cred[:j]
			}
		}
	} else {
		cred = r.URL.Query().Get("X-Amz-Credential")
	}
	parts := strings.Split(cred, "/")
	if len(parts) < 5 {
		return "", ""
	}
	n := len(parts)
	return parts[n-3], parts[n-2]
}

// targetServices maps an X-Amz-Target prefix to its signing name, for
// unsigned JSON calls.
var targetServices = map[string]string{
	"AmazonSSM":                        "ssm",
	"AWSEvents":                        "events",
	"AWSStepFunctions":                 "states",
	"AWSSecurityTokenServiceV20110615": "sts",
}

// classify names a call. ok is false for a request that is no AWS call
// (moto's own /moto-api/ endpoints, a health check): the front forwards
// those untouched and does not record them.
func classify(r *http.Request, body []byte) (req *request, ok bool) {
	req = &request{method: r.Method, body: body}
	req.region, req.service = scope(r)
	req.invocation = r.Header.Get("Amz-Sdk-Invocation-Id")
	req.attempt = sdkAttempt(r.Header.Get("Amz-Sdk-Request"))

	target := r.Header.Get("X-Amz-Target")
	ctype := r.Header.Get("Content-Type")
	switch {
	case target != "":
		req.proto = protoJSON
		prefix, op, _ := strings.Cut(target, ".")
		req.op = op
		if req.service == "" {
			req.service = targetServices[prefix]
			if req.service == "" {
				req.service = strings.ToLower(prefix)
			}
		}
		req.ids = jsonIDs(body)
	case r.Method == http.MethodPost && strings.HasPrefix(ctype, "application/x-www-form-urlencoded"),
		r.Method == http.MethodGet && r.URL.Query().Get("Action") != "":
		form := r.URL.Query()
		if r.Method == http.MethodPost {
			var err error
			if form, err = url.ParseQuery(string(body)); err != nil {
				return nil, false
			}
		}
		req.form = form
		req.op = form.Get("Action")
		if req.service == "" && form.Get("Version") == ec2APIVersion {
			req.service = "ec2"
		}
		req.proto = protoQuery
		if req.service == "ec2" {
			req.proto = protoEC2
		}
		req.ids = formIDs(form)
	case req.service == "s3":
		req.proto = protoS3
		req.op = s3Op(r.Method, r.URL.Path, r.URL.Query(), r.Header)
		if p := strings.TrimPrefix(r.URL.Path, "/"); p != "" {
			req.ids = []string{p}
		}
	case req.service != "":
		req.proto = protoREST
		req.op = r.Method
	}
	if req.service == "" || req.op == "" {
		return nil, false
	}
	req.action = req.service + ":" + req.op
	return req, true
}

// ec2APIVersion is the Version every EC2 query call carries.
const ec2APIVersion = "2016-11-15"

// sdkAttempt reads the attempt number from the SDK's amz-sdk-request
// header ("attempt=2; max=3"), 0 if absent.
func sdkAttempt(h string) int {
	for part := range strings.SplitSeq(h, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		if k == "attempt" {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// formIDs are the resource IDs and names a query-protocol call names in its
// top-level parameters (InstanceId.1, ImageId, SourceImageId, GroupId,
// KeyName, ResourceId.2, ...), sorted. Nested parameters (a block device
// mapping's SnapshotId) are left out.
func formIDs(form url.Values) []string {
	var ids []string
	for k, vs := range form {
		base, _, _ := strings.Cut(k, ".")
		if base != "KeyName" && !strings.HasSuffix(base, "Id") {
			continue
		}
		if rest := strings.TrimPrefix(k, base); rest != "" && !isIndex(rest[1:]) {
			continue
		}
		ids = append(ids, vs...)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func isIndex(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

// formList reads a query-protocol list parameter: name.1, name.2, ...
func formList(form url.Values, name string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := form[name+"."+strconv.Itoa(i)]
		if !ok {
			return out
		}
		out = append(out, v...)
	}
}

// formFilters reads EC2's Filter.N.Name / Filter.N.Value.M parameters.
func formFilters(form url.Values) map[string][]string {
	out := map[string][]string{}
	for i := 1; ; i++ {
		p := "Filter." + strconv.Itoa(i)
		name := form.Get(p + ".Name")
		if name == "" {
			return out
		}
		out[name] = append(out[name], formList(form, p+".Value")...)
	}
}

// jsonIDs are the names a JSON call names in its usual top-level fields.
func jsonIDs(body []byte) []string {
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	var ids []string
	for _, k := range []string{"Name", "Names", "Path", "InstanceId", "InstanceIds", "CommandId", "EventBusName"} {
		switch v := m[k].(type) {
		case string:
			ids = append(ids, v)
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok {
					ids = append(ids, s)
				}
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// s3Sub names the bucket subresources that select an operation, as the
// operation's name after its Get/Put/Delete verb.
var s3Sub = map[string]string{
	"accelerate":        "BucketAccelerateConfiguration",
	"acl":               "BucketAcl",
	"cors":              "BucketCors",
	"encryption":        "BucketEncryption",
	"lifecycle":         "BucketLifecycleConfiguration",
	"logging":           "BucketLogging",
	"notification":      "BucketNotificationConfiguration",
	"object-lock":       "ObjectLockConfiguration",
	"ownershipControls": "BucketOwnershipControls",
	"policy":            "BucketPolicy",
	"policyStatus":      "BucketPolicyStatus",
	"publicAccessBlock": "PublicAccessBlock",
	"replication":       "BucketReplication",
	"requestPayment":    "BucketRequestPayment",
	"tagging":           "BucketTagging",
	"versioning":        "BucketVersioning",
	"website":           "BucketWebsite",
}

// s3Op names an S3 REST call of the path-style form /bucket/key. The SDK
// names most object operations itself in an x-id parameter; the rest follow
// from the method and the subresource in the query.
func s3Op(method, p string, q url.Values, h http.Header) string {
	if id := q.Get("x-id"); id != "" {
		return id
	}
	bucket, key, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	has := func(k string) bool { _, ok := q[k]; return ok }
	verb := map[string]string{http.MethodGet: "Get", http.MethodPut: "Put", http.MethodDelete: "Delete"}[method]
	if bucket == "" {
		if method == http.MethodGet {
			return "ListBuckets"
		}
		return method
	}
	if key == "" {
		for k, name := range s3Sub {
			if has(k) && verb != "" {
				return verb + name
			}
		}
		switch method {
		case http.MethodPut:
			return "CreateBucket"
		case http.MethodHead:
			return "HeadBucket"
		case http.MethodDelete:
			return "DeleteBucket"
		case http.MethodPost:
			if has("delete") {
				return "DeleteObjects"
			}
		case http.MethodGet:
			switch {
			case q.Get("list-type") == "2":
				return "ListObjectsV2"
			case has("versions"):
				return "ListObjectVersions"
			case has("uploads"):
				return "ListMultipartUploads"
			case has("location"):
				return "GetBucketLocation"
			}
			return "ListObjects"
		}
		return method
	}
	switch method {
	case http.MethodPut:
		switch {
		case has("uploadId") && h.Get("X-Amz-Copy-Source") != "":
			return "UploadPartCopy"
		case has("uploadId"):
			return "UploadPart"
		case has("tagging"):
			return "PutObjectTagging"
		case has("acl"):
			return "PutObjectAcl"
		case h.Get("X-Amz-Copy-Source") != "":
			return "CopyObject"
		}
		return "PutObject"
	case http.MethodGet:
		switch {
		case has("uploadId"):
			return "ListParts"
		case has("tagging"):
			return "GetObjectTagging"
		case has("acl"):
			return "GetObjectAcl"
		case has("attributes"):
			return "GetObjectAttributes"
		}
		return "GetObject"
	case http.MethodHead:
		return "HeadObject"
	case http.MethodDelete:
		switch {
		case has("uploadId"):
			return "AbortMultipartUpload"
		case has("tagging"):
			return "DeleteObjectTagging"
		}
		return "DeleteObject"
	case http.MethodPost:
		switch {
		case has("uploads"):
			return "CreateMultipartUpload"
		case has("uploadId"):
			return "CompleteMultipartUpload"
		case has("restore"):
			return "RestoreObject"
		}
	}
	return method
}

// idempotencyParams are the parameters that differ between two sends of
// the same request by different SDK invocations: leaving them out of a
// fingerprint lets a permanent failure catch a re-run Lambda's repeat too.
var idempotencyParams = []string{"ClientToken", "ClientRequestToken"}

// fingerprint identifies a request by its action, Region and parameters
// less its idempotency token, so that an SDK retry and a re-invoked stage's
// identical call share it.
func fingerprint(req *request, r *http.Request) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", req.action, req.region)
	switch req.proto {
	case protoEC2, protoQuery:
		form := url.Values{}
		for k, v := range req.form {
			if !slices.Contains(idempotencyParams, k) {
				form[k] = v
			}
		}
		h.Write([]byte(form.Encode()))
	case protoJSON:
		var m map[string]any
		if json.Unmarshal(req.body, &m) == nil {
			for _, k := range idempotencyParams {
				delete(m, k)
			}
			b, _ := json.Marshal(m) // map keys are sorted
			h.Write(b)
		} else {
			h.Write(req.body)
		}
	default:
		q := r.URL.Query()
		fmt.Fprintf(h, "%s %s?%s\x00", r.Method, r.URL.Path, q.Encode())
		h.Write(req.body)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// apiError is an error in the shape of one service's protocol.
type apiError struct {
	status  int
	code    string
	message string
}

// throttleError is the service's own throttling error, which the SDK's
// standard retryer retries (it lists all three codes).
func throttleError(req *request) apiError {
	switch req.proto {
	case protoEC2:
		return apiError{http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded."}
	case protoS3:
		return apiError{http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate."}
	case protoQuery:
		return apiError{http.StatusBadRequest, "Throttling", "Rate exceeded"}
	}
	return apiError{http.StatusBadRequest, "ThrottlingException", "Rate exceeded"}
}

// serverError is an HTTP 500 in the service's words; the SDK retries any
// 500.
func serverError(req *request) apiError {
	code := "InternalFailure"
	switch {
	case req.proto == protoEC2 || req.proto == protoS3:
		code = "InternalError"
	case req.service == "ssm":
		code = "InternalServerError"
	case req.service == "events":
		code = "InternalException"
	}
	return apiError{http.StatusInternalServerError, code, "We encountered an internal error. Please try again."}
}

// defaultFailCode is the non-retryable code of a permanent failure when the
// rule names none: what an IAM policy that denies the call produces.
func defaultFailCode(req *request) string {
	switch req.proto {
	case protoEC2:
		return "UnauthorizedOperation"
	case protoS3, protoQuery:
		return "AccessDenied"
	}
	return "AccessDeniedException"
}

// statusFor is the HTTP status AWS answers code with.
func statusFor(req *request, code string) int {
	switch code {
	case "UnauthorizedOperation", "AuthFailure", "AccessDenied":
		return http.StatusForbidden
	case "AccessDeniedException":
		if req.proto == protoJSON {
			return http.StatusBadRequest
		}
		return http.StatusForbidden
	case "RequestLimitExceeded", "SlowDown", "ServiceUnavailable", "Unavailable":
		return http.StatusServiceUnavailable
	case "InternalError", "InternalFailure", "InternalServerError", "InternalException":
		return http.StatusInternalServerError
	case "NoSuchKey", "NoSuchBucket", "NoSuchUpload":
		return http.StatusNotFound
	}
	return http.StatusBadRequest
}

// render writes e the way the service would, with requestID.
func render(req *request, e apiError, requestID string) (http.Header, []byte) {
	h := http.Header{}
	var b bytes.Buffer
	esc := html.EscapeString
	switch req.proto {
	case protoEC2:
		h.Set("Content-Type", "text/xml;charset=UTF-8")
		fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
			`<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>`,
			esc(e.code), esc(e.message), requestID)
	case protoQuery:
		kind := "Sender"
		if e.status >= 500 {
			kind = "Receiver"
		}
		h.Set("Content-Type", "text/xml")
		fmt.Fprintf(&b, `<ErrorResponse><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`,
			kind, esc(e.code), esc(e.message), requestID)
	case protoS3:
		h.Set("Content-Type", "application/xml")
		h.Set("X-Amz-Request-Id", requestID)
		if req.method != http.MethodHead {
			fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
				`<Error><Code>%s</Code><Message>%s</Message><RequestId>%s</RequestId><HostId>awsfront</HostId></Error>`,
				esc(e.code), esc(e.message), requestID)
		}
	default:
		ct := "application/x-amz-json-1.1"
		if req.proto == protoREST {
			ct = "application/json"
		}
		h.Set("Content-Type", ct)
		h.Set("X-Amzn-Errortype", e.code)
		h.Set("X-Amzn-Requestid", requestID)
		j, _ := json.Marshal(map[string]string{"__type": e.code, "message": e.message})
		b.Write(j)
	}
	return h, b.Bytes()
}
