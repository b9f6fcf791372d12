package awsfront

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Timings are how long AWS takes for the state changes the front models,
// in AWS time (the front scales them by Options.TimeScale). A zero field
// leaves that change instant, as moto makes it.
type Timings struct {
	// Running is how long a launched or started instance stays pending.
	Running time.Duration
	// Stopped is how long a stopped instance stays stopping.
	Stopped time.Duration
	// Image is how long a new image (CreateImage) stays pending.
	Image time.Duration
	// Copy is how long an image copy (CopyImage) stays pending.
	Copy time.Duration
	// Terminated is how long a terminated instance stays shutting-down.
	Terminated time.Duration
}

// DefaultTimings are typical AWS timings for a small Linux image. Running,
// Stopped, Image and Copy are kiln's bake.AWSTimings (a test pins that);
// Terminated is an assumption: kiln never waits for it.
var DefaultTimings = Timings{
	Running:    30 * time.Second,
	Stopped:    45 * time.Second,
	Image:      120 * time.Second,
	Copy:       300 * time.Second,
	Terminated: 30 * time.Second,
}

// EC2's instance state codes.
var instanceCodes = map[string]int{
	"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80,
}

type kind int

const (
	kindInstance kind = iota
	kindImage
)

// resource is an instance or image the front saw created or changed.
type resource struct {
	// hidden is how many more describes must not see it (eventual
	// consistency); fixed at creation from the delay then in force.
	hidden int
	// The last state change: moto shows target at once; the front shows
	// during until since+dur.
	since  time.Time
	dur    time.Duration
	during string
	target string
}

// shown is the state a describe should report for r when moto reports
// actual.
func (r *resource) shown(actual string, now time.Time) string {
	if r.target != "" && actual == r.target && now.Before(r.since.Add(r.dur)) {
		return r.during
	}
	return actual
}

// change is a state change that a successful call starts.
type change struct {
	path           string // where the response names the changed IDs
	during, target string
	dur            func(Timings) time.Duration
	create         bool // the call creates the resource
}

var changes = map[string]change{
	"ec2:RunInstances":       {"instancesSet/item/instanceId", "pending", "running", func(t Timings) time.Duration { return t.Running }, true},
	"ec2:StartInstances":     {"instancesSet/item/instanceId", "pending", "running", func(t Timings) time.Duration { return t.Running }, false},
	"ec2:StopInstances":      {"instancesSet/item/instanceId", "stopping", "stopped", func(t Timings) time.Duration { return t.Stopped }, false},
	"ec2:TerminateInstances": {"instancesSet/item/instanceId", "shutting-down", "terminated", func(t Timings) time.Duration { return t.Terminated }, false},
	"ec2:CreateImage":        {"imageId", "pending", "available", func(t Timings) time.Duration { return t.Image }, true},
	"ec2:CopyImage":          {"imageId", "pending", "available", func(t Timings) time.Duration { return t.Copy }, true},
	"ec2:RegisterImage":      {"imageId", "", "", func(Timings) time.Duration { return 0 }, true},
}

// createdPaths are where the responses of other creating calls name what
// they created, for Call.Created.
var createdPaths = map[string]string{
	"ec2:CreateSecurityGroup":  "groupId",
	"ec2:CreateKeyPair":        "keyPairId",
	"ec2:ImportKeyPair":        "keyPairId",
	"ec2:CreateSnapshot":       "snapshotId",
	"ec2:CopySnapshot":         "snapshotId",
	"ec2:CreateVolume":         "volumeId",
	"ec2:CreateLaunchTemplate": "launchTemplate/launchTemplateId",
}

// observe records what a successful EC2 call created or changed and
// returns the IDs it created. Callers hold f.mu.
func (f *Front) observe(req *request, doc *element, now time.Time) (created []string) {
	if req.action == "ec2:DeregisterImage" {
		delete(f.world[req.region], req.form.Get("ImageId"))
		return nil
	}
	root := doc.first(req.op + "Response")
	if root == nil {
		return nil
	}
	ch, ok := changes[req.action]
	if !ok {
		if p, ok := createdPaths[req.action]; ok {
			for _, e := range root.find(p) {
				created = append(created, strings.TrimSpace(e.text))
			}
		}
		return created
	}
	for _, e := range root.find(ch.path) {
		id := strings.TrimSpace(e.text)
		if id == "" {
			continue
		}
		if f.world[req.region] == nil {
			f.world[req.region] = map[string]*resource{}
		}
		r := f.world[req.region][id]
		if r == nil || ch.create {
			r = &resource{}
			if ch.create {
				r.hidden = f.consistency
				created = append(created, id)
			}
			f.world[req.region][id] = r
		}
		r.since, r.during, r.target = now, ch.during, ch.target
		r.dur = time.Duration(float64(ch.dur(f.timings)) * f.scale)
	}
	return created
}

// describeKinds are the describes the front keeps consistent with its
// model, with the parameter that names IDs and the NotFound error AWS
// gives for an ID it does not know (yet).
var describeKinds = map[string]struct {
	kind  kind
	param string
	code  string
}{
	"ec2:DescribeInstances": {kindInstance, "InstanceId", "InvalidInstanceID.NotFound"},
	"ec2:DescribeImages":    {kindImage, "ImageId", "InvalidAMIID.NotFound"},
}

// notYetVisible answers a describe that names a resource still hidden by
// eventual consistency with AWS's NotFound error, as AWS does for an ID it
// has not propagated yet. Each such describe uses up one of the resource's
// hidden describes. Callers hold f.mu.
func (f *Front) notYetVisible(req *request) (apiError, bool) {
	dk, ok := describeKinds[req.action]
	if !ok {
		return apiError{}, false
	}
	var missing []string
	for _, id := range formList(req.form, dk.param) {
		if r := f.world[req.region][id]; r != nil && r.hidden > 0 {
			r.hidden--
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return apiError{}, false
	}
	msg := "The instance ID '" + strings.Join(missing, ", ") + "' does not exist"
	if len(missing) > 1 {
		msg = "The instance IDs '" + strings.Join(missing, ", ") + "' do not exist"
	}
	if dk.kind == kindImage {
		msg = "The image id '[" + strings.Join(missing, ", ") + "]' does not exist"
	}
	return apiError{http.StatusBadRequest, dk.code, msg}, true
}

// rewriteDescribe makes a successful DescribeInstances or DescribeImages
// answer agree with the model: resources still hidden are left out (using
// up one hidden describe each), resources mid-change show their
// intermediate state, and a resource whose shown state no longer passes the
// request's state filter is left out. A reservation left without instances
// is left out too. Anything the model does not track keeps its bytes.
// doc is body parsed. Callers hold f.mu.
func (f *Front) rewriteDescribe(req *request, doc *element, body []byte, now time.Time) []byte {
	dk := describeKinds[req.action]
	filters := formFilters(req.form)
	var edits []edit
	if dk.kind == kindInstance {
		for _, resv := range doc.find("DescribeInstancesResponse/reservationSet/item") {
			insts := resv.find("instancesSet/item")
			var own []edit
			kept := 0
			for _, inst := range insts {
				e, keep := f.rewriteInstance(req.region, inst, filters, now)
				if keep {
					kept++
				}
				own = append(own, e...)
			}
			if kept == 0 && len(insts) > 0 {
				edits = append(edits, drop(resv))
			} else {
				edits = append(edits, own...)
			}
		}
	} else {
		for _, img := range doc.find("DescribeImagesResponse/imagesSet/item") {
			id := img.textAt("imageId")
			r := f.world[req.region][id]
			if r == nil {
				continue
			}
			if r.hidden > 0 {
				r.hidden--
				edits = append(edits, drop(img))
				continue
			}
			st := img.first("imageState")
			if st == nil {
				continue
			}
			actual := strings.TrimSpace(st.text)
			shown := r.shown(actual, now)
			if shown == actual {
				continue
			}
			if vs, ok := filters["state"]; ok && !slices.Contains(vs, shown) {
				edits = append(edits, drop(img))
				continue
			}
			edits = append(edits, setText(st, shown))
		}
	}
	return applyEdits(body, edits)
}

// rewriteInstance is rewriteDescribe for one instance item: the edits to
// make and whether the instance stays in the answer.
func (f *Front) rewriteInstance(region string, inst *element, filters map[string][]string, now time.Time) ([]edit, bool) {
	id := inst.textAt("instanceId")
	r := f.world[region][id]
	if r == nil {
		return nil, true
	}
	if r.hidden > 0 {
		r.hidden--
		return []edit{drop(inst)}, false
	}
	name, code := inst.first("instanceState/name"), inst.first("instanceState/code")
	if name == nil {
		return nil, true
	}
	actual := strings.TrimSpace(name.text)
	shown := r.shown(actual, now)
	if shown == actual {
		return nil, true
	}
	if vs, ok := filters["instance-state-name"]; ok && !slices.Contains(vs, shown) {
		return []edit{drop(inst)}, false
	}
	c := strconv.Itoa(instanceCodes[shown])
	if vs, ok := filters["instance-state-code"]; ok && !slices.Contains(vs, c) {
		return []edit{drop(inst)}, false
	}
	edits := []edit{setText(name, shown)}
	if code != nil {
		edits = append(edits, setText(code, c))
	}
	return edits, true
}

// tracks reports whether the model knows any resource in region, so that
// describes elsewhere skip the parse. Callers hold f.mu.
func (f *Front) tracks(region string) bool {
	return len(f.world[region]) > 0
}
