package cluster

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/securevol/securevol/internal/testenv"
)

// Many nodes read a volume at once; a writer waits for every reader and
// a reader for the writer, each failing after its wait with the holders
// named, and going ahead as soon as the last of them lets go.
func TestReadClaimsExcludeTheWriter(t *testing.T) {
	e := testenv.StartEtcd(t)
	a, b, w := join(t, e, "node-a", 2*time.Second), join(t, e, "node-b", 2*time.Second), join(t, e, "node-w", 2*time.Second)
	ra, err := a.ReadClaim("src", "view", 0)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.ReadClaim("src", "view", 0)
	if err != nil {
		t.Fatalf("a second reader: %v", err)
	}
	if rs, err := a.Readers("src", "view"); err != nil || len(rs) != 2 {
		t.Fatalf("readers: %+v, %v; want two", rs, err)
	}
	if rs, err := a.Readers("src", "other"); err != nil || len(rs) != 0 {
		t.Fatalf("readers of another view: %+v, %v; want none", rs, err)
	}

	start := time.Now()
	_, err = w.Claim("src", 300*time.Millisecond)
	var held *HeldError
	if !errors.As(err, &held) || !slices.Equal(held.Nodes(), []string{"node-a", "node-b"}) || held.Holders[0].Mode != ModeReadOnly || held.Holders[0].View != "view" {
		t.Fatalf("write claim while two nodes read: %v, want ErrHeld naming node-a and node-b", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("the write claim gave up after %v, before its wait", d)
	}
	// Another volume is free to write.
	if c, err := w.Claim("src2", 0); err != nil {
		t.Fatalf("write claim of another volume: %v", err)
	} else {
		c.Release()
	}
	if err := ra.Release(); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		rb.Release()
	}()
	start = time.Now()
	cw, err := w.Claim("src", 5*time.Second)
	if err != nil {
		t.Fatalf("write claim after the readers let go: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the write claim took %v after the last reader let go; the watch should wake it", d)
	}

	_, err = a.ReadClaim("src", "view", 300*time.Millisecond)
	if !errors.As(err, &held) || !slices.Equal(held.Nodes(), []string{"node-w"}) || held.Holders[0].Mode != ModeReadWrite {
		t.Fatalf("read claim while a node writes: %v, want ErrHeld naming node-w", err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		cw.Release()
	}()
	start = time.Now()
	if _, err := a.ReadClaim("src", "view", 5*time.Second); err != nil {
		t.Fatalf("read claim after the writer let go: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the read claim took %v after the writer let go", d)
	}
}

// A reader that dies lets go of its read claim when its lease expires.
func TestReadClaimGoesWithItsLease(t *testing.T) {
	e := testenv.StartEtcd(t)
	a, w := join(t, e, "node-a", 2*time.Second), join(t, e, "node-w", 2*time.Second)
	ra, err := a.ReadClaim("src", "view", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.cli.Revoke(t.Context(), ra.ep.lease); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Claim("src", time.Second); err != nil {
		t.Fatalf("write claim after the reader's lease went: %v", err)
	}
}
