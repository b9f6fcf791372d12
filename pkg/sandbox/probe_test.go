package sandbox

import (
	"context"
	"testing"
)

// TestProbeRejectsAnotherSandboxsSSHD: a sandbox whose sshd could not bind
// its port (another sandbox picked the same free port at the same moment
// and bound it first) must not take the other sshd for its own; the probe
// checks the host key, not just the banner.
func TestProbeRejectsAnotherSandboxsSSHD(t *testing.T) {
	_, authorized := clientKey(t)
	first := ForTest(t, Options{AuthorizedKeys: []string{authorized}})
	_, otherKey := hostKeyPEM(t)
	second := &Sandbox{addr: first.Addr(), user: first.User(), hostKey: otherKey}
	if err := second.probe(context.Background()); err == nil {
		t.Errorf("probe of %s with another host key = nil, want an error: the sshd there is not this sandbox's", first.Addr())
	}
	if err := first.probe(context.Background()); err != nil {
		t.Errorf("probe of the sandbox's own sshd = %v, want nil", err)
	}
}
