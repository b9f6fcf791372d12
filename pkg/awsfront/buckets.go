package awsfront

import (
	"fmt"
	"path"
	"time"
)

// Bucket is one of an API's request-rate token buckets: Size tokens when
// full, Refill tokens added per second of AWS time (so a TimeScale of 0.01
// refills a hundred times faster in real time). Each Region has its own
// buckets. A call takes one token from the first bucket whose Actions
// match it; a call that finds its bucket empty is throttled and takes none.
// Calls no bucket matches are never throttled.
type Bucket struct {
	// Name identifies the bucket to Tokens.
	Name string
	// Actions are patterns of the calls that draw on the bucket, as
	// path.Match takes them: "ec2:RunInstances", "ec2:Describe*", "ec2:*".
	Actions []string
	// Size is the burst: the tokens of a full bucket.
	Size float64
	// Refill is how many tokens come back per second of AWS time.
	Refill float64
}

// EC2Buckets are EC2's documented request-rate buckets (EC2 developer
// guide, "Request throttling for the Amazon EC2 API"; see shared/FACTS.md).
// Order matters: the first match wins, so the action-specific buckets come
// before the classes. Every other EC2 action counts as mutating.
//
// The RunInstances resource bucket (1,000 instances refilling 2 a second)
// is not modelled: a bake launches one instance at a time.
var EC2Buckets = []Bucket{
	{Name: "RunInstances", Actions: []string{"ec2:RunInstances"}, Size: 5, Refill: 2},
	{Name: "CopyImage", Actions: []string{"ec2:CopyImage"}, Size: 100, Refill: 1},
	{Name: "TerminateInstances", Actions: []string{"ec2:TerminateInstances"}, Size: 100, Refill: 5},
	{Name: "DeregisterImage", Actions: []string{"ec2:DeregisterImage"}, Size: 100, Refill: 5},
	{Name: "ModifyImageAttribute", Actions: []string{"ec2:ModifyImageAttribute"}, Size: 100, Refill: 5},
	{Name: "non-mutating", Actions: []string{"ec2:Describe*", "ec2:Get*", "ec2:List*", "ec2:Search*"}, Size: 100, Refill: 20},
	{Name: "mutating", Actions: []string{"ec2:*"}, Size: 50, Refill: 5},
}

// bucketLevel is one Region's bucket: its tokens at a moment.
type bucketLevel struct {
	tokens float64
	at     time.Time
}

func validateBuckets(bs []Bucket) error {
	seen := map[string]bool{}
	for _, b := range bs {
		if b.Name == "" || seen[b.Name] {
			return fmt.Errorf("bucket %q: empty or duplicate name", b.Name)
		}
		seen[b.Name] = true
		if b.Size < 1 || b.Refill < 0 {
			return fmt.Errorf("bucket %q: size %v, refill %v: want size >= 1 and refill >= 0", b.Name, b.Size, b.Refill)
		}
		if err := validPatterns(b.Actions); err != nil {
			return fmt.Errorf("bucket %q: %w", b.Name, err)
		}
	}
	return nil
}

// bucketFor is the bucket action draws on, or nil.
func bucketFor(bs []Bucket, action string) *Bucket {
	for i := range bs {
		if matchAny(bs[i].Actions, action) {
			return &bs[i]
		}
	}
	return nil
}

// level brings region's bucket b up to now and returns it. Callers hold
// f.mu.
func (f *Front) level(region string, b *Bucket, now time.Time) *bucketLevel {
	key := region + "\x00" + b.Name
	l := f.levels[key]
	if l == nil {
		l = &bucketLevel{tokens: b.Size, at: now}
		f.levels[key] = l
		return l
	}
	if now.After(l.at) {
		aws := now.Sub(l.at).Seconds() / f.scale
		l.tokens = min(b.Size, l.tokens+aws*b.Refill)
		l.at = now
	}
	return l
}

// validPatterns checks patterns for path.Match.
func validPatterns(ps []string) error {
	for _, p := range ps {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("pattern %q: %w", p, err)
		}
	}
	return nil
}

// matchAny reports whether action matches one of patterns.
func matchAny(patterns []string, action string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, action); ok {
			return true
		}
	}
	return false
}
