package emulator

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// TestRegion is the Region of the config ForTest returns. Copy the config
// and set Region for calls to other Regions; moto serves them all.
const TestRegion = "us-east-1"

// shared is the one moto server of a test binary.
var shared struct {
	once     sync.Once
	srv      *Server
	endpoint string
	external bool
	err      error

	mu    sync.Mutex
	users []string // names of the tests using it now, outermost first
}

// LogEnv names a file that ForTest's moto server appends its request log
// to, for debugging a test; unset, the log is discarded.
const LogEnv = "KILN_MOTO_LOG"

// ForTest returns an aws.Config for TestRegion pointed at a moto server
// whose state is empty at the start of the calling test.
//
// The first call in a test binary installs moto if needed and starts a
// server on 127.0.0.1 that the binary's later tests share; it dies with the
// binary. Each call resets it, so tests that use ForTest must not run in
// parallel with each other; ForTest fails a test that tries. Subtests may
// call it again for a fresh state.
//
// If $AWS_ENDPOINT_URL names an external emulator, ForTest uses it and
// resets nothing.
//
// If python3, its venv module or the moto download is unavailable, ForTest
// skips the test with a message naming what is missing, or fails it when
// $CI is set. After the first install it needs no network.
func ForTest(t testing.TB) aws.Config {
	t.Helper()
	shared.once.Do(startShared)
	if shared.err != nil {
		if errors.Is(shared.err, ErrSetup) && !inCI() {
			t.Skipf("SKIPPING: moto is not available (set CI=1 to make this a failure): %v", shared.err)
		}
		t.Fatalf("emulator.ForTest: %v", shared.err)
	}
	acquire(t)
	if !shared.external {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := reset(ctx, shared.endpoint); err != nil {
			t.Fatalf("emulator.ForTest: %v", err)
		}
	}
	cfg, err := Config(context.Background(), shared.endpoint, TestRegion)
	if err != nil {
		t.Fatalf("emulator.ForTest: %v", err)
	}
	return cfg
}

func startShared() {
	if ep, ok := ExternalEndpoint(); ok {
		shared.endpoint, shared.external = ep, true
		return
	}
	// The first install downloads moto and its dependencies from PyPI.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	shared.srv, shared.err = Start(ctx, Options{LogFile: os.Getenv(LogEnv)})
	if shared.err == nil {
		shared.endpoint = shared.srv.Endpoint()
	}
}

// acquire records t as a user of the shared server until it ends, and fails
// t if a test that is neither its ancestor nor itself uses it already: a
// reset from one would wipe the other's resources mid-test.
func acquire(t testing.TB) {
	t.Helper()
	name := t.Name()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	for _, u := range shared.users {
		if u != name && !strings.HasPrefix(name, u+"/") {
			t.Fatalf("emulator.ForTest: %s and %s use the shared moto server at the same time; tests that call ForTest must not be parallel", u, name)
		}
	}
	shared.users = append(shared.users, name)
	t.Cleanup(func() {
		shared.mu.Lock()
		defer shared.mu.Unlock()
		for i := len(shared.users) - 1; i >= 0; i-- {
			if shared.users[i] == name {
				shared.users = append(shared.users[:i], shared.users[i+1:]...)
				break
			}
		}
	})
}

// inCI reports whether $CI asks for missing tools to fail tests rather than
// skip them.
func inCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "", "0", "false", "no":
		return false
	}
	return true
}
