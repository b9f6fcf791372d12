package awsfront

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// ForTest starts a front before the emulator cfg points at (its
// BaseEndpoint, unless opts.Upstream is set) and returns it with a copy of
// cfg pointed at the front. The front closes when t ends. Use it as
//
//	front, cfg := awsfront.ForTest(t, emulator.ForTest(t), awsfront.Options{})
//	ec2c := ec2.NewFromConfig(cfg)
func ForTest(t testing.TB, cfg aws.Config, opts Options) (*Front, aws.Config) {
	t.Helper()
	if opts.Upstream == "" {
		if cfg.BaseEndpoint == nil || *cfg.BaseEndpoint == "" {
			t.Fatal("awsfront.ForTest: cfg has no BaseEndpoint and opts no Upstream")
		}
		opts.Upstream = *cfg.BaseEndpoint
	}
	f, err := Start(opts)
	if err != nil {
		t.Fatalf("awsfront.ForTest: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	out := cfg.Copy()
	out.BaseEndpoint = aws.String(f.URL())
	return f, out
}
