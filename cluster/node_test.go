package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/securevol/securevol/internal/testenv"
)

// Two live nodes under one name (cloned hosts keep their host name, the
// default node name): the second must not revoke the first's lease, which
// would let a third node write the first's volumes while the first, not
// yet told, writes on. It waits for that lease to end, and fails when it
// does not.
func TestSameNameOnAnotherLiveNodeIsRefused(t *testing.T) {
	e := testenv.StartEtcd(t)
	first, err := Join(Config{Endpoints: e.Endpoints(), NodeName: "twin", Instance: "host-1", LeaseTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	c, err := first.Claim("vol", 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	second, err := Join(Config{Endpoints: e.Endpoints(), NodeName: "twin", Instance: "host-2", LeaseTTL: 2 * time.Second})
	if err == nil {
		second.Close()
	}
	if !errors.Is(err, ErrNameInUse) {
		t.Fatalf("a second live node named twin: %v, want ErrNameInUse", err)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("gave up after %v, before the other node's lease could have ended", d)
	}
	if c.Fence().Tripped() {
		t.Fatal("the first node lost its lease to its namesake")
	}
	if _, err := join(t, e, "other", 2*time.Second).Claim("vol", 0); !errors.Is(err, ErrHeld) {
		t.Fatalf("another node claims the first twin's volume: %v", err)
	}
}

// A node that died (its lease not revoked) under another instance, such
// as a host whose state folder was replaced: the new one waits for the
// old lease to expire rather than revoke it, then joins.
func TestSameNameAfterAnotherInstanceDied(t *testing.T) {
	e := testenv.StartEtcd(t)
	old, err := Join(Config{Endpoints: e.Endpoints(), NodeName: "n", Instance: "old", LeaseTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	close(old.stop) // dies without revoking
	defer old.cli.Close()
	n, err := Join(Config{Endpoints: e.Endpoints(), NodeName: "n", Instance: "new", LeaseTTL: 2 * time.Second})
	if err != nil {
		t.Fatalf("joining after the namesake's lease expired: %v", err)
	}
	n.Close()
}
