package emulator

import (
	"context"
	"fmt"
	"net/url"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// EndpointEnv is the variable the AWS SDKs read for a global endpoint
// override. When it is set, kiln treats it as an emulator someone else runs.
const EndpointEnv = "AWS_ENDPOINT_URL"

// ExternalEndpoint reports the emulator named by $AWS_ENDPOINT_URL, if any.
// When ok is true the caller must neither start nor reset its own: the
// emulator and its state belong to whoever started it.
func ExternalEndpoint() (endpoint string, ok bool) {
	endpoint = os.Getenv(EndpointEnv)
	return endpoint, endpoint != ""
}

// Config returns an aws.Config for the real SDK clients that sends every
// call to endpoint in region, signed with static test credentials. Retries
// are left at the SDK's defaults. Pass S3Options to s3.NewFromConfig.
//
// The config is built by hand rather than with config.LoadDefaultConfig on
// purpose: that would also read ~/.aws and AWS_* variables, and a
// service-specific one such as AWS_ENDPOINT_URL_S3 takes precedence over
// BaseEndpoint, which could send a test's calls to real AWS with real
// credentials. ctx is not used today; it keeps the signature of a loader.
func Config(ctx context.Context, endpoint, region string) (aws.Config, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return aws.Config{}, fmt.Errorf("aws config for endpoint %q: %w", endpoint, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return aws.Config{}, fmt.Errorf("aws config for endpoint %q: want http(s)://host:port", endpoint)
	}
	if region == "" {
		return aws.Config{}, fmt.Errorf("aws config for endpoint %q: empty region", endpoint)
	}
	return aws.Config{
		Region:       region,
		BaseEndpoint: aws.String(endpoint),
		// moto accepts any key; "testing" is its documented convention.
		Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider("testing", "testing", "")),
	}, nil
}

// S3Options makes an S3 client address buckets by path
// (http://127.0.0.1:PORT/bucket/key). The SDK's default virtual-hosted style
// puts the bucket in the host name (bucket.127.0.0.1), which does not
// resolve. Use it as s3.NewFromConfig(cfg, emulator.S3Options).
func S3Options(o *s3.Options) {
	o.UsePathStyle = true
}
