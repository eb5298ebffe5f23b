package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/securevol/securevol/archive"
	"github.com/securevol/securevol/driver"
	"github.com/securevol/securevol/handover"
	"github.com/securevol/securevol/internal/testenv"
)

// chainRecord is record seq of a log whose every record carries the hash
// of the one before: a log missing or changing a record, or torn anywhere
// but at its end, does not verify.
func chainRecord(prev [32]byte, seq uint64) ([]byte, [32]byte) {
	data := bytes.Repeat([]byte{byte(seq)}, 1+int(seq*733%5000))
	var hdr [12]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)))
	binary.BigEndian.PutUint64(hdr[4:], seq)
	sum := sha256.Sum256(slices.Concat(prev[:], hdr[:], data))
	return slices.Concat(hdr[:], data, sum[:]), sum
}

// checkChain verifies a log as a crash would leave it (whole records,
// then at most the start of the next: the kernel sends a write(2) that
// starts inside a page as two requests, and a snapshot may fall between
// them) and returns its count of whole records.
func checkChain(b []byte) (int, error) {
	var prev [32]byte
	n := 0
	for len(b) > 0 {
		want, sum := chainRecord(prev, uint64(n))
		if len(b) < len(want) && bytes.HasPrefix(want, b) {
			return n, nil
		}
		if !bytes.HasPrefix(b, want) {
			return n, fmt.Errorf("record %d is wrong (%d bytes left)", n, len(b))
		}
		b, prev = b[len(want):], sum
		n++
	}
	return n, nil
}

// appendChain appends records to the log at path until stop is closed.
func appendChain(path string, stop <-chan struct{}) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var prev [32]byte
	for seq := uint64(0); ; seq++ {
		select {
		case <-stop:
			return nil
		default:
		}
		var rec []byte
		rec, prev = chainRecord(prev, seq)
		if _, err := f.Write(rec); err != nil {
			return err
		}
		if seq%5 == 0 {
			if err := f.Sync(); err != nil {
				return err
			}
		}
	}
}

// host is a daemon with its own state dir and master key, and a client.
type host struct {
	*testDaemon
	c *Client
}

func newHost(t *testing.T) *host {
	t.Helper()
	d := startDaemon(t, testConfig(t))
	c, err := Dial(d.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &host{d, c}
}

// export has h export req into a packed archive file, as the command
// line's volume export -o does, and deletes the exports folder.
func (h *host) export(req ExportRequest) (string, *ExportResult) {
	h.t.Helper()
	res, err := h.c.Export(context.Background(), req)
	if err != nil {
		h.t.Fatal(err)
	}
	dir, err := TransferPath(h.cfg.StateDir, ExportsDir, res.Dir)
	if err != nil {
		h.t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(h.t.TempDir(), "archive.tar")
	f, err := os.Create(file)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	if err := archive.Pack(dir, f); err != nil {
		h.t.Fatal(err)
	}
	return file, res
}

// unpack unpacks the archive file into a new imports folder of h, passing
// its layout to damage first if not nil, and returns the folder's name.
func (h *host) unpack(file string, damage func(dir string)) string {
	h.t.Helper()
	dir, rel, err := NewTransferDir(h.cfg.StateDir, ImportsDir)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { os.RemoveAll(dir) })
	f, err := os.Open(file)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	if _, err := archive.Unpack(f, dir); err != nil {
		h.t.Fatal(err)
	}
	if damage != nil {
		damage(dir)
	}
	return rel
}

// importFile imports the archive file as req.Name (req.Dir is filled in).
func (h *host) importFile(file string, req ImportRequest, damage func(string)) (*ImportResult, error) {
	h.t.Helper()
	req.Dir = h.unpack(file, damage)
	return h.c.Import(context.Background(), req)
}

// state is what h holds: its volumes' names and its volume folders.
func (h *host) state() string {
	h.t.Helper()
	vols, err := h.c.Volumes(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
	}
	ents, _ := os.ReadDir(filepath.Join(h.cfg.StateDir, "volumes"))
	return fmt.Sprintf("volumes %v, %d folders", names, len(ents))
}

// checkLog mounts name on h and verifies its chained log; it returns the
// record count.
func (h *host) checkLog(name string) int {
	h.t.Helper()
	h.must("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "check"})
	defer h.must("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": "check"})
	b, err := os.ReadFile(filepath.Join(h.cfg.MountRoot, name, "log"))
	if err != nil {
		h.t.Fatal(err)
	}
	n, err := checkChain(b)
	if err != nil {
		h.t.Fatalf("%s: after %d good records: %v", name, n, err)
	}
	return n
}

// flipChunk flips a byte in the biggest blob of an archive layout (a
// chunk of the folder's stream).
func flipChunk(t *testing.T) func(dir string) {
	return func(dir string) {
		blobs := filepath.Join(dir, "blobs", "sha256")
		ents, err := os.ReadDir(blobs)
		if err != nil {
			t.Fatal(err)
		}
		var big string
		var size int64
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.Size() > size {
				big, size = e.Name(), fi.Size()
			}
		}
		p := filepath.Join(blobs, big)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 1
		os.Chmod(p, 0o600)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// The story on one machine with two daemons: a volume exported
// while a container-like writer appends to a chained log, moved to a
// "second host" with a different master key through a recipient's
// identity and through a passphrase, mounted there with its log whole;
// and everything that must be refused is, leaving nothing behind.
func TestExportImportAcrossHosts(t *testing.T) {
	testenv.RequireFUSE(t)
	src, dst := newHost(t), newHost(t)
	src.must("/VolumeDriver.Create", map[string]any{"Name": "db", "Opts": map[string]string{"uid": "999"}})
	src.must("/VolumeDriver.Mount", map[string]string{"Name": "db", "ID": "writer"})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() { werr = appendChain(filepath.Join(src.cfg.MountRoot, "db", "log"), stop) })
	time.Sleep(200 * time.Millisecond)

	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	byKey, res := src.export(ExportRequest{Name: "db", Recipients: "# the backup host\n" + id.Recipient().String() + "\n"})
	if !res.Handover || res.Files == 0 {
		t.Fatalf("export: %+v", res)
	}
	time.Sleep(100 * time.Millisecond)
	byPass, _ := src.export(ExportRequest{Name: "db", Passphrase: []byte("correct horse battery")})
	plain, _ := src.export(ExportRequest{Name: "db"})
	close(stop)
	wg.Wait()
	if werr != nil {
		t.Fatalf("the writer failed: %v", werr)
	}
	src.must("/VolumeDriver.Unmount", map[string]string{"Name": "db", "ID": "writer"})
	if ents, _ := os.ReadDir(filepath.Join(src.cfg.StateDir, ExportsDir)); len(ents) != 0 {
		t.Errorf("exports folder holds %d entries after the exports were read", len(ents))
	}

	if _, err := dst.importFile(byKey, ImportRequest{Name: "db", Identities: "# key\n" + id.String() + "\n"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.importFile(byPass, ImportRequest{Name: "db-pass", Passphrase: []byte("correct horse battery")}, nil); err != nil {
		t.Fatal(err)
	}
	n1, n2 := dst.checkLog("db"), dst.checkLog("db-pass")
	if n1 == 0 || n2 < n1 {
		t.Fatalf("imported logs hold %d and %d records", n1, n2)
	}
	if info, err := dst.c.Volume(context.Background(), "db"); err != nil || fmt.Sprint(info.Status["options"]) == "" {
		t.Fatalf("imported volume: %+v, %v", info, err)
	}
	st, err := os.Stat(filepath.Join(dst.cfg.StateDir, "volumes"))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("volumes folder: %v", err)
	}

	before := dst.state()
	stranger, _ := age.GenerateX25519Identity()
	cases := []struct {
		name   string
		file   string
		req    ImportRequest
		damage func(string)
		want   error
	}{
		{"wrong identity", byKey, ImportRequest{Name: "x1", Identities: stranger.String()}, nil, handover.ErrWrongIdentity},
		{"wrong passphrase", byPass, ImportRequest{Name: "x1", Passphrase: []byte("wrong horse")}, nil, handover.ErrWrongIdentity},
		{"no identity", byKey, ImportRequest{Name: "x1"}, nil, ErrNeedIdentity},
		{"identity for an archive without handover", plain, ImportRequest{Name: "x1", Identities: id.String()}, nil, ErrNoHandover},
		{"another host's master key", plain, ImportRequest{Name: "x1"}, nil, driver.ErrInvalid},
		{"existing name", byKey, ImportRequest{Name: "db", Identities: id.String()}, nil, driver.ErrConflict},
		{"chunk flipped", byKey, ImportRequest{Name: "x1", Identities: id.String()}, flipChunk(t), archive.ErrDamaged},
		{"malformed identity", byKey, ImportRequest{Name: "x1", Identities: "AGE-SECRET-KEY-1NOPE"}, nil, ErrBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dst.importFile(tc.file, tc.req, tc.damage)
			if !errors.Is(err, tc.want) {
				t.Fatalf("import: %v, want %v", err, tc.want)
			}
			if now := dst.state(); now != before {
				t.Fatalf("left behind: %s, was %s", now, before)
			}
		})
	}
	// A request cannot point the daemon outside its imports folder.
	for _, dir := range []string{"../volumes", "exports/0123456789abcdef0123456789abcdef", "imports/../../etc", "/tmp"} {
		if _, err := dst.c.Import(context.Background(), ImportRequest{Name: "x2", Dir: dir}); !errors.Is(err, ErrBadRequest) {
			t.Errorf("import from %q: %v", dir, err)
		}
	}
	// The source's own daemon opens the plain archive with its key.
	if _, err := src.importFile(plain, ImportRequest{Name: "db-again"}, nil); err != nil {
		t.Fatal(err)
	}
	if n := src.checkLog("db-again"); n == 0 {
		t.Fatal("the re-imported log is empty")
	}
}

// A truncated archive file is refused when it is unpacked, before the
// daemon sees it; and export refuses what it cannot do.
func TestExportRefuses(t *testing.T) {
	testenv.RequireFUSE(t)
	h := newHost(t)
	h.must("/VolumeDriver.Create", map[string]any{"Name": "vol"})
	file, _ := h.export(ExportRequest{Name: "vol"})
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dir, _, _ := NewTransferDir(h.cfg.StateDir, ImportsDir)
	if _, err := archive.Unpack(bytes.NewReader(b[:len(b)*2/3]), dir); !errors.Is(err, archive.ErrDamaged) {
		t.Fatalf("unpack of a truncated archive: %v", err)
	}
	id, _ := age.GenerateX25519Identity()
	for _, req := range []ExportRequest{
		{Name: "nosuch"},
		{Name: "vol", Recipients: "age1notakey"},
		{Name: "vol", Recipients: id.Recipient().String(), Passphrase: []byte("both")},
	} {
		if _, err := h.c.Export(context.Background(), req); err == nil {
			t.Errorf("export %+v succeeded", req)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(h.cfg.StateDir, ExportsDir)); len(ents) != 0 {
		t.Errorf("failed exports left %d folders", len(ents))
	}
}

// Clone copies a volume (mounted or not) to a new name on the same daemon;
// the copy is independent of its source.
func TestClone(t *testing.T) {
	testenv.RequireFUSE(t)
	h := newHost(t)
	ctx := context.Background()
	h.must("/VolumeDriver.Create", map[string]any{"Name": "orig"})
	h.must("/VolumeDriver.Mount", map[string]string{"Name": "orig", "ID": "c1"})
	orig := filepath.Join(h.cfg.MountRoot, "orig")
	if err := os.WriteFile(filepath.Join(orig, "f"), []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.Clone(ctx, "orig", "copy"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(orig, "f"), []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.must("/VolumeDriver.Mount", map[string]string{"Name": "copy", "ID": "c2"})
	if b, err := os.ReadFile(filepath.Join(h.cfg.MountRoot, "copy", "f")); err != nil || string(b) != "one" {
		t.Fatalf("clone holds %q, %v", b, err)
	}
	if _, err := h.c.Clone(ctx, "orig", "copy"); !errors.Is(err, driver.ErrConflict) {
		t.Fatalf("clone onto an existing name: %v", err)
	}
	if _, err := h.c.Clone(ctx, "nosuch", "copy2"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("clone of no volume: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(h.cfg.StateDir, ExportsDir)); len(ents) != 0 {
		t.Errorf("clone left %d transfer folders", len(ents))
	}
}

// Transfer folders left by commands cut short are deleted at start.
func TestTransfersCleanedAtStart(t *testing.T) {
	cfg := testConfig(t)
	var left []string
	for _, kind := range []string{ExportsDir, ImportsDir} {
		p, _, err := NewTransferDir(cfg.StateDir, kind)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(p, "blobs"), 0o700); err != nil {
			t.Fatal(err)
		}
		left = append(left, p)
	}
	startDaemon(t, cfg)
	for _, p := range left {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there: %v", p, err)
		}
	}
}
