package cluster

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/securevol/securevol/internal/testenv"
	"github.com/securevol/securevol/store"
)

func join(t *testing.T, e *testenv.Etcd, name string, ttl time.Duration) *Node {
	t.Helper()
	n, err := Join(Config{Endpoints: e.Endpoints(), NodeName: name, LeaseTTL: ttl, MountWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func openStore(t *testing.T, n *Node) *store.Store {
	t.Helper()
	s, err := store.New(n.Records())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A record written through one node is read through another, and writers
// on two nodes are serialized: no increment of a shared counter is lost.
func TestRecordsSharedAndSerialized(t *testing.T) {
	e := testenv.StartEtcd(t)
	a, b := openStore(t, join(t, e, "a", 2*time.Second)), openStore(t, join(t, e, "b", 2*time.Second))
	v := &store.Volume{ID: "0123", Name: "data", CreatedAt: time.Now().UTC().Truncate(time.Second), Options: store.Options{Mode: 0o755}}
	if err := a.Update(func(tx *store.Tx) error { return tx.Put(v) }); err != nil {
		t.Fatal(err)
	}
	got, err := b.Get("data")
	if err != nil || got.ID != v.ID || !got.CreatedAt.Equal(v.CreatedAt) {
		t.Fatalf("node b reads %+v, %v", got, err)
	}
	var wg sync.WaitGroup
	for _, s := range []*store.Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if err := s.Update(func(tx *store.Tx) error {
					n, _ := strconv.Atoi(string(tx.Meta("n")))
					return tx.SetMeta("n", []byte(strconv.Itoa(n+1)))
				}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	var n []byte
	if err := a.View(func(tx *store.Tx) error { n = tx.Meta("n"); return nil }); err != nil || string(n) != "20" {
		t.Fatalf("counter = %q, %v; want 20", n, err)
	}
	// A transaction sees its own writes, ForEach and Count included.
	if err := a.Update(func(tx *store.Tx) error {
		if err := tx.Delete("data"); err != nil {
			return err
		}
		w := *v
		w.Name, w.ID = "other", "4567"
		if err := tx.Put(&w); err != nil {
			return err
		}
		names := ""
		tx.ForEach(func(v *store.Volume) error { names += v.Name; return nil })
		if names != "other" || tx.Count() != 1 {
			return fmt.Errorf("inside the transaction: %q, %d", names, tx.Count())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A claim excludes other nodes: a second claim waits, and after the wait
// fails naming the holder; released meanwhile, it succeeds at once.
func TestClaimWaitsForHolder(t *testing.T) {
	e := testenv.StartEtcd(t)
	a, b := join(t, e, "node-a", 2*time.Second), join(t, e, "node-b", 2*time.Second)
	ca, err := a.Claim("vol", 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = b.Claim("vol", 500*time.Millisecond)
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) || held.Holders[0].Node != "node-a" {
		t.Fatalf("second claim: %v, want ErrHeld naming node-a", err)
	}
	if d := time.Since(start); d < 500*time.Millisecond || d > 3*time.Second {
		t.Fatalf("the second claim gave up after %v, want about 500ms", d)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		ca.Release()
	}()
	start = time.Now()
	cb, err := b.Claim("vol", 5*time.Second)
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the claim took %v after the release; the watch should wake it", d)
	}
	// A stale release (a's claim is gone) leaves b's claim alone.
	if err := ca.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Claim("vol", 0); !errors.As(err, &held) || held.Holders[0].Node != "node-b" {
		t.Fatalf("claim after a stale release: %v, want node-b to hold the volume", err)
	}
	cb.Release()
}

// A node whose lease etcd drops fences its claims within a keep-alive,
// takes a new lease for the next claim, and another node can claim the
// volume.
func TestLostLeaseFences(t *testing.T) {
	e := testenv.StartEtcd(t)
	a, b := join(t, e, "node-a", 2*time.Second), join(t, e, "node-b", 2*time.Second)
	ca, err := a.Claim("vol", 0)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Fence().Tripped() {
		t.Fatal("a fresh claim is fenced")
	}
	if _, err := b.cli.Revoke(t.Context(), ca.ep.lease); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !ca.Fence().Tripped() {
		if time.Now().After(deadline) {
			t.Fatal("the fence did not trip within the TTL after the lease was revoked")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cb, err := b.Claim("vol", time.Second)
	if err != nil {
		t.Fatalf("claim after the holder's lease was lost: %v", err)
	}
	cb.Release()
	c2, err := a.Claim("other", 0)
	if err != nil || c2.Fence().Tripped() || c2.ep == ca.ep {
		t.Fatalf("a new claim after a lost lease: %v (same epoch: %v)", err, c2 != nil && c2.ep == ca.ep)
	}
}

// A node that restarts under its name revokes its previous lease: its
// claims go at once, not after the TTL.
func TestRestartRevokesPreviousLease(t *testing.T) {
	e := testenv.StartEtcd(t)
	old, err := Join(Config{Endpoints: e.Endpoints(), NodeName: "node-a", LeaseTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Claim("vol", 0); err != nil {
		t.Fatal(err)
	}
	close(old.stop) // dies without revoking
	join(t, e, "node-a", 10*time.Second)
	if _, err := join(t, e, "node-b", 10*time.Second).Claim("vol", 0); err != nil {
		t.Fatalf("the claim of the previous run survived the restart: %v", err)
	}
	old.cli.Close()
}

// etcd restarting (same data) loses no record, and claims work after.
func TestEtcdRestartKeepsRecords(t *testing.T) {
	e := testenv.StartEtcd(t)
	n := join(t, e, "a", 5*time.Second)
	s := openStore(t, n)
	if err := s.Update(func(tx *store.Tx) error {
		return tx.Put(&store.Volume{ID: "0123", Name: "data", Options: store.Options{Mode: 0o755}})
	}); err != nil {
		t.Fatal(err)
	}
	e.Stop()
	e.Start()
	var got *store.Volume
	var err error
	for range 50 { // the client reconnects
		if got, err = s.Get("data"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || got.ID != "0123" {
		t.Fatalf("after etcd restarted: %+v, %v", got, err)
	}
	if _, err := n.Claim("data", time.Second); err != nil {
		t.Fatal(err)
	}
}

// Settings that can never work are refused before anything connects.
func TestConfigErrors(t *testing.T) {
	ok := Config{Endpoints: []string{"http://127.0.0.1:2379"}, NodeName: "n"}
	for name, c := range map[string]func(*Config){
		"no endpoint":           func(c *Config) { c.Endpoints = nil },
		"bad endpoint":          func(c *Config) { c.Endpoints = []string{"127.0.0.1:2379"} },
		"no node name":          func(c *Config) { c.NodeName = "" },
		"slash in node name":    func(c *Config) { c.NodeName = "a/b" },
		"short TTL":             func(c *Config) { c.LeaseTTL = time.Second },
		"fractional TTL":        func(c *Config) { c.LeaseTTL = 2500 * time.Millisecond },
		"password without user": func(c *Config) { c.PasswordFile = "/etc/hostname" },
		"user without password": func(c *Config) { c.User = "root" },
		"cert without key":      func(c *Config) { c.Cert = "/etc/hostname" },
	} {
		cfg := ok
		c(&cfg)
		if _, err := Join(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	for name, c := range map[string]func(*Config){
		"unreadable CA":            func(c *Config) { c.CACert = "/nonexistent/ca.pem" },
		"CA without certificate":   func(c *Config) { c.CACert = "/etc/hostname" },
		"unreadable password file": func(c *Config) { c.User, c.PasswordFile = "root", "/nonexistent/pw" },
	} {
		cfg := ok
		c(&cfg)
		if _, err := Join(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}
