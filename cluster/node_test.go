package cluster

import (
	"errors"
	"strings"
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

// A rebuild clears the records of every node: while another node is
// live it would see its volumes vanish (the engine forgets them) until
// the rebuilding node adds them back, and its removals come back as
// live volumes. It is refused, naming the live nodes.
func TestClearRecordsRefusedWhileOthersLive(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := join(t, e, "node-a", 2*time.Second)
	b := join(t, e, "node-b", 2*time.Second)
	if err := a.ClearRecords(); !errors.Is(err, ErrOthersLive) || !strings.Contains(err.Error(), "node-b") {
		t.Fatalf("rebuild while node-b is live: %v, want ErrOthersLive naming node-b", err)
	}
	b.Close()
	if err := a.ClearRecords(); err != nil {
		t.Fatalf("rebuild alone: %v", err)
	}
}
