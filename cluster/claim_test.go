package cluster

import (
	"github.com/securevol/securevol/internal/testenv"
	"slices"

	"errors"
	"testing"
	"time"
)

// A claim that is let go of is fenced at once: a mount whose server
// outlives its unmount (a descriptor still open, a bind mount elsewhere)
// must not write once another node may claim the volume.
func TestReleaseFencesTheClaim(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := join(t, e, "node-a", 2*time.Second)
	c, err := a.Claim("vol", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	if !c.Fence().Tripped() {
		t.Fatal("a released claim's fence still lets writes through")
	}
	c2, err := a.Claim("other", 0)
	if err != nil || c2.Fence().Tripped() {
		t.Fatalf("another claim of the node after a release: %v, fenced %v", err, c2 != nil && c2.Fence().Tripped())
	}
}

// Two claims of one volume on one node (a mount that ended behind the
// driver's back and the Mount that follows it) share the key: letting go
// of the first keeps the volume the node's while the second holds it.
func TestSecondClaimOnANodeOutlivesTheFirst(t *testing.T) {
	e := testenv.StartEtcd(t)
	a, b := join(t, e, "node-a", 2*time.Second), join(t, e, "node-b", 2*time.Second)
	first, err := a.Claim("vol", 0)
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.Claim("vol", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	if second.Fence().Tripped() {
		t.Fatal("letting go of the first claim fenced the second")
	}
	var held *HeldError
	if _, err := b.Claim("vol", 0); !errors.As(err, &held) || !slices.Equal(held.Nodes(), []string{"node-a"}) {
		t.Fatalf("node b claims the volume node a still holds: %v", err)
	}
	if err := second.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Claim("vol", time.Second); err != nil {
		t.Fatalf("after the last claim of node a went: %v", err)
	}
}
