package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

// TestBackupThroughRegistry is issue 9's story on two "hosts": the managed
// plugin (host A) and a legacy daemon with a master key of its own (host
// B), beside a Debian docker-registry on loopback. A container keeps
// appending numbered lines to a volume on A; while it writes, the volume
// is exported to a file and pushed to the registry, sealed to an age
// recipient; the volume is removed on A; B pulls it (and imports the file)
// with the recipient's identity, and a container on B reads the same
// data, with the writer's invariant intact. The registry's storage holds
// neither the plaintext nor the file names; a tampered or truncated
// archive and a tampered registry blob are refused, leaving nothing behind.
func TestBackupThroughRegistry(t *testing.T) {
	s := need(t)
	checkFree(t)
	a := newManaged(t)
	b := newLegacy(t)

	regDir := t.TempDir()
	regEnv := []string{"REGISTRY_DIR=" + regDir, "REGISTRY_ADDR=" + freeLoopbackAddr(t)}
	script(t, regEnv, "registry.sh", "start")
	t.Cleanup(func() { command(regEnv, "", filepath.Join(s.root, "scripts", "registry.sh"), "stop") })
	addr := strings.TrimPrefix(regEnv[1], "REGISTRY_ADDR=")

	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(t.TempDir(), "identity.txt")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	recipient := id.Recipient().String()
	cli := func(p *plugin, args ...string) string {
		t.Helper()
		out, err := command(nil, "", s.bin, append(args, "--state-dir", p.stateDir)...)
		if err != nil {
			t.Fatalf("securevol %s: %v", strings.Join(args, " "), err)
		}
		return out
	}

	const marker, secretName = "PLAINTEXT-MARKER-7f3a9c", "secret-file-name-e1b4"
	vol := newVolume(t, a)
	runSh(t, "echo "+marker+" > /data/"+secretName+" && head -c 5000000 /dev/urandom > /data/blob && sha256sum /data/blob > /data/blob.sum", "-v", vol+":/data")
	sum := runSh(t, "cut -d' ' -f1 /data/blob.sum", "-v", vol+":/data")
	writer := start(t, "-v", vol+":/data", s.image, "sh", "-c", "i=0; while true; do i=$((i+1)); echo $i >> /data/log; done")
	time.Sleep(time.Second)

	file := filepath.Join(t.TempDir(), "vol.tar")
	cli(a, "volume", "export", vol, "-o", file, "--recipient", recipient)
	ref := addr + "/backups/" + vol + ":1"
	cli(a, "volume", "push", vol, ref, "--recipient", recipient)
	docker(t, "rm", "-f", writer)
	docker(t, "volume", "rm", vol)

	pulled, imported := uniq("pulled"), uniq("imported")
	cli(b, "volume", "pull", ref, pulled, "--identity", idFile)
	cli(b, "volume", "import", imported, file, "--identity", idFile)
	for _, v := range []string{pulled, imported} {
		got := run(t, "-v", v+":/data", s.image, "sh", "-c",
			`cat /data/`+secretName+` && sha256sum /data/blob | cut -d' ' -f1 && `+
				`awk '{n++; if ($1 != n) {print "gap at line", n, ":", $0; exit 1}} END {if (n < 1) print "empty log"; else print "log ok"}' /data/log`)
		if want := marker + "\n" + sum + "\nlog ok"; got != want {
			t.Errorf("volume %s on host B reads:\n%s\nwant:\n%s", v, got, want)
		}
	}

	// What the registry stores is ciphertext: neither the plaintext nor
	// the names show in its storage.
	for _, plain := range []string{marker, secretName} {
		if out, _ := exec.Command("grep", "-rl", plain, regDir).Output(); len(out) > 0 {
			t.Errorf("the registry's storage holds %q in:\n%s", plain, out)
		}
	}

	// Damaged archives are refused and leave nothing on host B.
	before := folders(t, b)
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(raw)
	flipped[len(flipped)/2] ^= 0x40
	for name, data := range map[string][]byte{"tampered": flipped, "truncated": raw[:len(raw)/2]} {
		f := filepath.Join(t.TempDir(), name+".tar")
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		v := uniq(name)
		if out, err := command(nil, "", s.bin, "volume", "import", v, f, "--identity", idFile, "--state-dir", b.stateDir); err == nil {
			t.Errorf("import of a %s archive succeeded: %s", name, out)
		}
		if slices.Contains(volumesOf(t, b.driver), v) {
			t.Errorf("a %s archive left volume %s behind", name, v)
		}
	}
	tamperLargestBlob(t, regDir)
	v := uniq("fromtampered")
	if out, err := command(nil, "", s.bin, "volume", "pull", ref, v, "--identity", idFile, "--state-dir", b.stateDir); err == nil {
		t.Errorf("pull of a tampered registry blob succeeded: %s", out)
	}
	if after := folders(t, b); !slices.Equal(before, after) {
		t.Errorf("refused imports left folders in %s: before %v, after %v", b.stateDir, before, after)
	}
}

// folders lists the backing folders and transfer folders of p's state dir.
func folders(t *testing.T, p *plugin) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"volumes", "imports", "exports"} {
		ents, _ := os.ReadDir(filepath.Join(p.stateDir, sub))
		for _, e := range ents {
			out = append(out, sub+"/"+e.Name())
		}
	}
	return out
}

// tamperLargestBlob flips a byte in the middle of the largest blob the
// registry stores (a chunk of the volume's ciphertext).
func tamperLargestBlob(t *testing.T, regDir string) {
	t.Helper()
	var largest string
	var size int64
	filepath.Walk(regDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && filepath.Base(p) == "data" && fi.Size() > size {
			largest, size = p, fi.Size()
		}
		return nil
	})
	if largest == "" {
		t.Fatal("no blob in the registry's storage")
	}
	f, err := os.OpenFile(largest, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, size/2); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, size/2); err != nil {
		t.Fatal(err)
	}
}
