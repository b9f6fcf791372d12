package bake

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Every wait polls around how long AWS is expected to take (Config.Expect).
// AWS's defaults fit a small image; a recipe whose image takes eight
// minutes to snapshot would poll every few seconds from the second minute
// on. So each successful bake records how long its waits took (State.Took)
// and publish keeps that for the recipe's build in the kiln bucket
// (TimingsKey); the next bake of it plans its waits around what it
// learned (State.Expect) instead.

// LearnedTimings is what kiln keeps of a recipe build's past bakes.
type LearnedTimings struct {
	Recipe string `json:"recipe"`
	Build  string `json:"build"`
	// Bakes counts the bakes learned from.
	Bakes   int       `json:"bakes"`
	Updated time.Time `json:"updated"`
	// Expect is what the next bake expects: each wait's duration averaged
	// over the bakes, the latest weighing half.
	Expect Timings `json:"expect"`
}

// TimingsKey is where a recipe build's learned timings are kept in the
// kiln bucket.
func TimingsKey(recipe, build string) string {
	return "timings/" + recipe + "/" + build + ".json"
}

// maxLearned bounds how large a learned timings object may be read.
const maxLearned = 64 << 10

// readLearned reads a recipe build's learned timings, or nil if it has none
// (or they cannot be read: learning only ever saves polls, so a bad object
// is logged and the defaults are used).
func readLearned(ctx context.Context, api objectGetter, bucket, recipe, build string) *LearnedTimings {
	key := TimingsKey(recipe, build)
	out, err := api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		Logger(ctx).Warn("not reading the learned timings: using the defaults", "key", key, "error", err.Error())
		return nil
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, maxLearned))
	var l LearnedTimings
	if err == nil {
		err = json.Unmarshal(b, &l)
	}
	if err != nil {
		Logger(ctx).Warn("ignoring unreadable learned timings: using the defaults", "key", key, "error", err.Error())
		return nil
	}
	return &l
}

// expectFor is the timings st's waits poll around: what the build's plan
// learned from earlier bakes over the deployment's defaults. A default of
// zero (an emulator that changes state at once) is never overridden.
func expectFor(st State, conf Config) Timings {
	e := conf.Expect
	if st.Expect == nil {
		return e
	}
	learned := st.Expect.durations()
	for i, d := range e.durations() {
		if *d > 0 && *learned[i] > 0 {
			*d = max(*learned[i], time.Second)
		}
	}
	return e
}

// durations lists t's fields in a fixed order, for code that treats each
// wait's duration alike.
func (t *Timings) durations() []*time.Duration {
	return []*time.Duration{&t.Running, &t.Stopped, &t.Image, &t.Copy, &t.SSH, &t.Agent}
}

// tookFor returns st with one of its measured durations set (set picks
// the field); State is passed by value, so Took is copied, not shared.
func tookFor(st State, set func(*Timings)) State {
	var t Timings
	if st.Took != nil {
		t = *st.Took
	}
	set(&t)
	st.Took = &t
	return st
}

// learn folds a bake's measured durations into what was learned before:
// each duration the bake measured becomes the average of the old
// expectation and it (the first bake's measure stands alone).
func learn(prev *LearnedTimings, recipe, build string, took Timings, now time.Time) LearnedTimings {
	measured := took.durations()
	for _, d := range measured {
		*d = d.Round(time.Millisecond)
	}
	next := LearnedTimings{Recipe: recipe, Build: build, Bakes: 1, Updated: now.UTC(), Expect: took}
	if prev == nil {
		return next
	}
	next.Bakes = prev.Bakes + 1
	next.Expect = prev.Expect
	for i, d := range next.Expect.durations() {
		switch m := *measured[i]; {
		case m <= 0:
		case *d <= 0:
			*d = m
		default:
			*d = ((*d + m) / 2).Round(time.Millisecond)
		}
	}
	return next
}

// storeLearned keeps what st's bake measured for its recipe build's next
// bake. A failure to store is logged, not returned: the images are made
// and published, and the next bake only polls as if new.
func storeLearned(ctx context.Context, api manifestStore, bucket string, st State, now time.Time) {
	if st.Took == nil || st.Plan == nil || bucket == "" {
		return
	}
	prev := readLearned(ctx, api, bucket, st.Plan.Recipe, st.Plan.Build)
	next := learn(prev, st.Plan.Recipe, st.Plan.Build, *st.Took, now)
	body, err := json.MarshalIndent(next, "", "  ")
	if err == nil {
		key := TimingsKey(st.Plan.Recipe, st.Plan.Build)
		_, err = api.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(bucket), Key: aws.String(key),
			Body: bytes.NewReader(body), ContentType: aws.String("application/json"),
		})
		if err == nil {
			expect, _ := json.Marshal(next.Expect)
			Logger(ctx).Info("learned timings", "key", key, "bakes", next.Bakes, "expect", string(expect))
			return
		}
	}
	Logger(ctx).Warn("could not keep this bake's timings for the next", "error", err.Error())
}

// timingsJSON is Timings as JSON: durations as strings ("2m0s"), the ones
// not measured left out, so that a bake's state and the learned timings
// read at a glance.
type timingsJSON struct {
	Running Duration `json:"running,omitempty"`
	Stopped Duration `json:"stopped,omitempty"`
	Image   Duration `json:"image,omitempty"`
	Copy    Duration `json:"copy,omitempty"`
	SSH     Duration `json:"ssh,omitempty"`
	Agent   Duration `json:"agent,omitempty"`
}

// MarshalJSON writes the durations as strings.
func (t Timings) MarshalJSON() ([]byte, error) {
	return json.Marshal(timingsJSON{
		Running: Duration(t.Running), Stopped: Duration(t.Stopped), Image: Duration(t.Image),
		Copy: Duration(t.Copy), SSH: Duration(t.SSH), Agent: Duration(t.Agent),
	})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (t *Timings) UnmarshalJSON(b []byte) error {
	var j timingsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("timings: %w", err)
	}
	*t = Timings{
		Running: time.Duration(j.Running), Stopped: time.Duration(j.Stopped), Image: time.Duration(j.Image),
		Copy: time.Duration(j.Copy), SSH: time.Duration(j.SSH), Agent: time.Duration(j.Agent),
	}
	return nil
}
