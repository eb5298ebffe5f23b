package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/securevol/securevol/internal/mountinfo"
	"github.com/securevol/securevol/internal/testenv"
)

// scenario is one user story, run against a plugin.
type scenario struct {
	name string
	// legacy: also run against the legacy daemon (every scenario runs
	// against the managed plugin).
	legacy bool
	run    func(t *testing.T, p *plugin)
}

// scenarios in the order they run: the disruptive ones (a killed plugin, a
// restarted engine) last.
var scenarios = []scenario{
	{"DataOutlivesContainers", true, testDataOutlivesContainers},
	{"VolumesFrom", true, testVolumesFrom},
	{"TwoContainersAtOnce", true, testTwoContainers},
	{"DockerCpIntoRunningContainer", true, testDockerCp},
	{"AnonymousVolumeWithRm", true, testAnonymousRm},
	{"RemoveInUseFailsThenShreds", true, testRemove},
	{"InspectShowsStatusNoSecret", true, testInspect},
	{"BadOptionsRefused", true, testBadOptions},
	{"SizeLimit", true, testSizeLimit},
	{"NonRootUser", true, testNonRoot},
	{"WebAppKeepsUploads", true, testWebApp},
	{"Compose", true, testCompose},
	{"DriverNameResolves", false, testDriverName},
	{"DisableRefusedWithVolumes", false, testDisableRefused},
	{"RemoveGraceUndelete", true, testRemoveGraceUndelete},
	{"MetricsFromHost", true, testMetricsFromHost},
	{"Readahead", true, testReadahead},
	{"Kill9", true, testKill9},
	{"RestartDockerd", true, testRestartDockerd},
	{"NoSecretInLogs", true, testNoSecretInLogs},
}

// runScenarios runs every scenario that applies to p, in order.
func runScenarios(t *testing.T, p *plugin) {
	for _, sc := range scenarios {
		if !p.managed && !sc.legacy {
			continue
		}
		if err := p.serving(); err != nil {
			t.Fatalf("the %s no longer serves (%v): the remaining scenarios would only time out", p, err)
		}
		t.Run(sc.name, func(t *testing.T) { sc.run(t, p) })
	}
}

func sh(script string) []string { return []string{"sh", "-euc", script} }

// testDataOutlivesContainers: one container writes, is removed; another
// reads the same bytes; and on the host the backing folder holds neither
// the content nor the names.
func testDataOutlivesContainers(t *testing.T, p *plugin) {
	vol := newVolume(t, p)
	dir, file := "sve2e-dir-"+randHex(6), "sve2e-file-"+randHex(6)
	marker := "sve2e-marker-" + randHex(8)
	wrote := runSh(t, fmt.Sprintf(`
		mkdir /data/%[1]s
		head -c 1048576 /dev/urandom > /data/%[1]s/%[2]s
		echo %[3]s >> /data/%[1]s/%[2]s
		echo %[3]s > /data/%[2]s.txt
		sync
		sha256sum /data/%[1]s/%[2]s | cut -d' ' -f1
		cat /data/%[2]s.txt`, dir, file, marker), "-v", vol+":/data")
	read := runSh(t, fmt.Sprintf(`
		sha256sum /data/%[1]s/%[2]s | cut -d' ' -f1
		cat /data/%[2]s.txt`, dir, file), "-v", vol+":/data")
	if wrote != read || !strings.HasSuffix(read, marker) {
		t.Fatalf("a new container read\n%s\nwant what the first one wrote:\n%s", read, wrote)
	}
	info := inspectVolume(t, vol)
	if n := info.statusInt(t, "mounts"); n != 0 {
		t.Errorf("Status mounts = %d after both containers left, want 0", n)
	}

	backing := p.backingDir(t, vol)
	if n := dirBytes(t, backing); n < 1<<20 {
		t.Fatalf("backing folder %s holds %d bytes, want at least the 1 MiB written", backing, n)
	}
	if hits := findPlaintext(t, p.stateDir, marker, dir, file); len(hits) > 0 {
		t.Fatalf("plaintext on the host under %s:\n%s", p.stateDir, strings.Join(hits, "\n"))
	}
}

// testVolumesFrom: the data-volume-container pattern.
func testVolumesFrom(t *testing.T, p *plugin) {
	img := need(t).image
	vol := newVolume(t, p)
	dvc := uniq("dvc")
	t.Cleanup(func() { dockerTry("rm", "-f", dvc) })
	docker(t, "create", "--name", dvc, "-v", vol+":/data", img, "true")
	runSh(t, "echo via-volumes-from > /data/f", "--volumes-from", dvc)
	if got := run(t, "--volumes-from", dvc, img, "cat", "/data/f"); got != "via-volumes-from" {
		t.Fatalf("--volumes-from read %q", got)
	}
	if got := run(t, "-v", vol+":/data", img, "cat", "/data/f"); got != "via-volumes-from" {
		t.Fatalf("direct mount read %q", got)
	}
}

// testTwoContainers: both see each other's writes at once, and the volume
// stays mounted until the last one leaves.
func testTwoContainers(t *testing.T, p *plugin) {
	vol := newVolume(t, p)
	a := startSleeper(t, "-v", vol+":/data")
	b := startSleeper(t, "-v", vol+":/data")
	docker(t, "exec", a, "sh", "-c", "echo from-a > /data/a")
	if got := docker(t, "exec", b, "cat", "/data/a"); got != "from-a" {
		t.Fatalf("b read %q", got)
	}
	docker(t, "exec", b, "sh", "-c", "echo from-b > /data/b")
	if got := docker(t, "exec", a, "cat", "/data/b"); got != "from-b" {
		t.Fatalf("a read %q", got)
	}
	if n := inspectVolume(t, vol).statusInt(t, "mounts"); n != 2 {
		t.Errorf("Status mounts = %d with two containers, want 2", n)
	}
	docker(t, "rm", "-f", a)
	if got := docker(t, "exec", b, "cat", "/data/a", "/data/b"); got != "from-a\nfrom-b" {
		t.Fatalf("after a left, b read %q: unmounted at the first Unmount?", got)
	}
	if n := inspectVolume(t, vol).statusInt(t, "mounts"); n != 1 {
		t.Errorf("Status mounts = %d with one container, want 1", n)
	}
	docker(t, "rm", "-f", b)
	if n := inspectVolume(t, vol).statusInt(t, "mounts"); n != 0 {
		t.Errorf("Status mounts = %d with no container, want 0", n)
	}
}

// testDockerCp: docker cp into a running container (the engine mounts again
// with the same mount ID) and back out; the references come out right.
func testDockerCp(t *testing.T, p *plugin) {
	vol := newVolume(t, p)
	c := startSleeper(t, "-v", vol+":/data")
	tmp := t.TempDir()
	in := filepath.Join(tmp, "in.bin")
	data := make([]byte, 300_000)
	rand.Read(data)
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])

	docker(t, "cp", in, c+":/data/copied.bin")
	if got := docker(t, "exec", c, "sh", "-c", "sha256sum /data/copied.bin | cut -d' ' -f1"); got != want {
		t.Fatalf("inside the container after docker cp: sha256 %s, want %s", got, want)
	}
	docker(t, "cp", c+":/data/copied.bin", filepath.Join(tmp, "out.bin"))
	if out, _ := os.ReadFile(filepath.Join(tmp, "out.bin")); !bytes.Equal(out, data) {
		t.Fatalf("docker cp out of the container gave %d bytes, not what went in", len(out))
	}
	if n := inspectVolume(t, vol).statusInt(t, "mounts"); n != 1 {
		t.Errorf("Status mounts = %d after docker cp with one container, want 1", n)
	}
	docker(t, "rm", "-f", c)
	if n := inspectVolume(t, vol).statusInt(t, "mounts"); n != 0 {
		t.Errorf("Status mounts = %d after the container left, want 0 (docker cp leaked a reference)", n)
	}
	if got := runSh(t, "sha256sum /data/copied.bin | cut -d' ' -f1", "-v", vol+":/data"); got != want {
		t.Fatalf("a new container read sha256 %s, want %s", got, want)
	}
	// And the volume can go: no reference is left behind.
	docker(t, "volume", "rm", vol)
}

var (
	createCallRE = regexp.MustCompile(`op=/VolumeDriver\.Create\b`)
	removeCallRE = regexp.MustCompile(`op=/VolumeDriver\.Remove\b`)
	createdVolRE = regexp.MustCompile(`created volume.*volume=([0-9a-f]{64})`)
	removedVolRE = regexp.MustCompile(`removed volume.*volume=([0-9a-f]{64})`)
)

const anonVolumeOut = "anonymous-ok"

// testAnonymousRm: docker run --rm with an anonymous volume of the driver:
// the engine calls Create once and Remove once, and nothing stays behind.
func testAnonymousRm(t *testing.T, p *plugin) {
	before := volumesOf(t, p.driver)
	folders := func() int { e, _ := os.ReadDir(filepath.Join(p.stateDir, "volumes")); return len(e) }
	nFolders := folders()
	mark := p.logMark()
	got := runSh(t, "echo "+anonVolumeOut+" > /data/f && cat /data/f",
		"--mount", "type=volume,dst=/data,volume-driver="+p.name)
	if got != anonVolumeOut {
		t.Fatalf("container output %q", got)
	}
	// --rm is carried out by the engine after the container exits.
	var log string
	eventually(t, 30*time.Second, "the anonymous volume to be removed", func() error {
		if now := volumesOf(t, p.driver); len(now) != len(before) {
			return fmt.Errorf("volumes %v, before %v", now, before)
		}
		if log = p.logsSince(mark); len(removeCallRE.FindAllString(log, -1)) == 0 {
			return fmt.Errorf("no Remove call logged yet")
		}
		return nil
	})
	time.Sleep(time.Second) // a second Remove, if any, would come now
	log = p.logsSince(mark)
	if n := len(createCallRE.FindAllString(log, -1)); n != 1 {
		t.Errorf("%d Create calls, want 1:\n%s", n, log)
	}
	if n := len(removeCallRE.FindAllString(log, -1)); n != 1 {
		t.Errorf("%d Remove calls, want 1:\n%s", n, log)
	}
	c, r := createdVolRE.FindStringSubmatch(log), removedVolRE.FindStringSubmatch(log)
	if c == nil || r == nil || c[1] != r[1] {
		t.Errorf("want one anonymous volume created and the same one removed; log:\n%s", log)
	}
	if n := folders(); n != nFolders {
		t.Errorf("%d backing folders, %d before: the anonymous volume's stayed", n, nFolders)
	}
}

// testRemove: rm of a volume in use fails; once free it succeeds and the
// backing folder and the volume's wrapped key are gone from the host.
func testRemove(t *testing.T, p *plugin) {
	vol := newVolume(t, p)
	runSh(t, "echo keep > /data/f", "-v", vol+":/data")
	backing := p.backingDir(t, vol)
	wk := wrappedKey(t, backing)
	c := startSleeper(t, "-v", vol+":/data")

	msg := dockerFails(t, "volume", "rm", vol)
	if !strings.Contains(msg, "in use") {
		t.Errorf("docker volume rm of a volume in use: %s; want \"in use\"", msg)
	}
	if got := docker(t, "exec", c, "cat", "/data/f"); got != "keep" {
		t.Fatalf("after the refused rm the container reads %q", got)
	}
	docker(t, "rm", "-f", c)
	docker(t, "volume", "rm", vol)

	if _, err := os.Stat(backing); !os.IsNotExist(err) {
		t.Errorf("backing folder %s still there after rm (stat: %v)", backing, err)
	}
	if _, err := dockerTry("volume", "inspect", vol); err == nil {
		t.Errorf("docker volume inspect %s succeeds after rm", vol)
	}
	if hits := findPlaintext(t, p.stateDir, encodings(wk)...); len(hits) > 0 {
		t.Errorf("the removed volume's wrapped key is still on the host:\n%s", strings.Join(hits, "\n"))
	}
}

// testInspect: Status shows non-secret facts; nothing in inspect is a key.
func testInspect(t *testing.T, p *plugin) {
	vol := newVolume(t, p, "uid=1000", "gid=1000")
	info := inspectVolume(t, vol)
	if info.Driver != p.driver {
		t.Errorf("Driver = %q, want %q", info.Driver, p.driver)
	}
	if _, err := time.Parse(time.RFC3339, info.CreatedAt); err != nil {
		t.Errorf("CreatedAt %q: %v", info.CreatedAt, err)
	}
	if info.Options["uid"] != "1000" || info.Options["gid"] != "1000" {
		t.Errorf("Options = %v", info.Options)
	}
	if s := info.statusString(t, "state"); s != "ok" {
		t.Errorf("Status state = %q, want ok", s)
	}
	if c := info.statusString(t, "cipher"); !strings.Contains(c, "AES") {
		t.Errorf("Status cipher = %q", c)
	}
	if f := info.statusInt(t, "format"); f < 1 {
		t.Errorf("Status format = %d", f)
	}
	needles := append(encodings(p.masterKey(t)), encodings(wrappedKey(t, p.backingDir(t, vol)))...)
	for _, n := range needles {
		if strings.Contains(info.raw, n) {
			t.Errorf("docker volume inspect shows key material %q:\n%s", n, info.raw)
		}
	}
	if p.managed {
		raw := p.inspectRaw(t)
		for _, n := range needles {
			if strings.Contains(raw, n) {
				t.Errorf("docker plugin inspect shows key material %q", n)
			}
		}
	}
}

// testBadOptions: unknown and secret-looking options fail with a message
// that says what is valid, and leave no volume behind.
func testBadOptions(t *testing.T, p *plugin) {
	for _, tc := range []struct{ opt, want string }{
		{"colour=blue", "valid options: gid, mode, readonly-of, size, uid"},
		{"password=hunter2", "takes no secrets"},
		{"uid=-1", "invalid uid"},
		{"size=10", "at least 1.0 MiB"},
		{"size=ten", "invalid size"},
	} {
		name := uniq("bad")
		msg := dockerFails(t, "volume", "create", "-d", p.name, "-o", tc.opt, name)
		if !strings.Contains(msg, tc.want) {
			t.Errorf("-o %s: %s; want %q", tc.opt, msg, tc.want)
		}
		if strings.Contains(msg, "hunter2") {
			t.Errorf("-o %s: the error repeats the secret: %s", tc.opt, msg)
		}
		if _, err := dockerTry("volume", "inspect", name); err == nil {
			t.Errorf("-o %s: volume %s exists after a failed create", tc.opt, name)
			dockerTry("volume", "rm", "-f", name)
		}
	}
}

// testSizeLimit: -o size= limits a volume: df inside a container shows the
// limit as its size, dd past it fails with "No space left on device", and
// docker volume inspect shows the limit and the use.
func testSizeLimit(t *testing.T, p *plugin) {
	const limit = 8 << 20
	vol := newVolume(t, p, "size=8M")
	got := runSh(t, `
		df -P -k /data | tail -n 1 | awk '{print "size", $2}'
		dd if=/dev/zero of=/data/f bs=1M count=20 2>&1 || echo dd failed
		ls -l /data/f | awk '{print "wrote", $5}'`, "-v", vol+":/data")
	if !strings.Contains(got, fmt.Sprintf("size %d\n", limit>>10)) {
		t.Errorf("df inside the container does not show the 8 MiB limit:\n%s", got)
	}
	if !strings.Contains(got, "No space left on device") || !strings.Contains(got, "dd failed") {
		t.Errorf("dd past the limit did not fail with ENOSPC:\n%s", got)
	}
	var wrote int
	if _, err := fmt.Sscanf(got[strings.LastIndex(got, "wrote "):], "wrote %d", &wrote); err != nil || wrote > limit || wrote < limit*3/4 {
		t.Errorf("dd wrote %d bytes (%v), want most of the %d-byte limit:\n%s", wrote, err, limit, got)
	}
	info := inspectVolume(t, vol)
	used := info.statusInt(t, "backing_bytes")
	if info.statusInt(t, "size_limit_bytes") != limit || info.statusString(t, "size_limit") != "8.0 MiB" || used > limit || used < wrote {
		t.Errorf("Status %v: want size_limit_bytes %d and backing_bytes from %d up to it", info.Status, limit, wrote)
	}
	// Deleting makes room again.
	runSh(t, "rm /data/f && head -c 4194304 /dev/zero > /data/g", "-v", vol+":/data")
}

// testNonRoot: -o uid/gid/mode give a non-root container user its volume;
// another user is kept out by the mode.
func testNonRoot(t *testing.T, p *plugin) {
	img := need(t).image
	vol := newVolume(t, p, "uid=1000", "gid=1000", "mode=0750")
	got := runSh(t, `
		stat -c '%u:%g %a' /data
		echo mine > /data/f
		mkdir /data/d
		echo deep > /data/d/g
		cat /data/f /data/d/g
		stat -c '%u:%g' /data/f /data/d`, "-u", "1000:1000", "-v", vol+":/data")
	want := "1000:1000 750\nmine\ndeep\n1000:1000\n1000:1000"
	if got != want {
		t.Fatalf("user 1000 in the container got\n%s\nwant\n%s", got, want)
	}
	msg := dockerFails(t, "run", "--rm", "--network", "none", "-u", "2000:2000", "-v", vol+":/data", img, "ls", "/data")
	if !strings.Contains(msg, "Permission denied") {
		t.Errorf("user 2000 listing a 0750 volume of 1000:1000: %s; want Permission denied", msg)
	}
	if got := run(t, "-u", "1000:1000", "-v", vol+":/data", img, "cat", "/data/d/g"); got != "deep" {
		t.Errorf("second container of user 1000 read %q", got)
	}
}

// uploadCGI is the web app: busybox httpd with a CGI that stores the POSTed
// body under /www/uploads, the volume.
const uploadCGI = `#!/bin/sh
name=$(printf %s "$QUERY_STRING" | tr -cd "a-zA-Z0-9._-")
head -c "$CONTENT_LENGTH" > "/www/uploads/$name.part" && mv "/www/uploads/$name.part" "/www/uploads/$name"
printf "Content-Type: text/plain\r\n\r\nstored %s\n" "$name"
`

// testWebApp: uploads land on the volume; the web container is replaced and
// the files are still served.
func testWebApp(t *testing.T, p *plugin) {
	img := need(t).image
	vol := newVolume(t, p)
	startWeb := func() (name, url string) {
		name = start(t, "-e", "UPLOAD_CGI="+uploadCGI, "-v", vol+":/www/uploads", img, "sh", "-euc", `
			mkdir -p /www/cgi-bin
			printf '%s' "$UPLOAD_CGI" > /www/cgi-bin/upload
			chmod 755 /www/cgi-bin/upload
			exec httpd -f -p 8080 -h /www`)
		ip := docker(t, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)
		if ip == "" {
			t.Fatalf("container %s has no IP address", name)
		}
		url = "http://" + ip + ":8080"
		eventually(t, 20*time.Second, "httpd to answer", func() error {
			res, err := (&http.Client{Timeout: 2 * time.Second}).Get(url + "/")
			if err == nil {
				res.Body.Close() // any answer will do: there is no index page
			}
			return err
		})
		return name, url
	}
	web, url := startWeb()
	uploads := map[string][]byte{}
	for _, n := range []string{"photo1.jpg", "report.pdf"} {
		b := make([]byte, 150_000)
		rand.Read(b)
		uploads[n] = b
		res, err := http.Post(url+"/cgi-bin/upload?"+n, "application/octet-stream", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(body), "stored "+n) {
			t.Fatalf("upload %s: %s %s", n, res.Status, body)
		}
	}
	check := func(when string) {
		for n, want := range uploads {
			got, err := httpGet(url + "/uploads/" + n)
			if err != nil {
				t.Fatalf("%s: GET %s: %v", when, n, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: GET %s returned %d bytes, not the upload", when, n, len(got))
			}
		}
	}
	check("same container")
	docker(t, "rm", "-f", web)
	_, url = startWeb()
	check("after replacing the container")
}

func httpGet(url string) ([]byte, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", url, res.Status)
	}
	return b, err
}

// composeFile is a one-service project whose volume names the driver.
const composeFile = `version: "3.7"
services:
  app:
    image: %[1]s
    network_mode: none
    user: "1000:1000"
    command: ["sh", "-euc", "echo run >> /data/log; cat /data/log"]
    volumes:
      - data:/data
volumes:
  data:
    driver: %[2]s
    driver_opts:
      uid: "1000"
      gid: "1000"
      mode: "0750"
`

// testCompose: docker-compose up, down, up keeps the data; down -v removes
// the volume and its backing folder.
func testCompose(t *testing.T, p *plugin) {
	img := need(t).image
	dir := t.TempDir()
	// Compose v1 compares the driver it reads with the engine's name for
	// it exactly; for a managed plugin that name carries the tag.
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(fmt.Sprintf(composeFile, img, p.driver)), 0o644); err != nil {
		t.Fatal(err)
	}
	project := strings.ReplaceAll(uniq("compose"), "-", "")
	compose := func(args ...string) string {
		t.Helper()
		out, err := command(nil, dir, "docker-compose", append([]string{"-p", project, "--no-ansi"}, args...)...)
		if err != nil {
			t.Fatalf("docker-compose %v: %v\n%s", args, err, out)
		}
		return out
	}
	t.Cleanup(func() { command(nil, dir, "docker-compose", "-p", project, "down", "-v") })

	out := compose("up", "--exit-code-from", "app")
	if n := strings.Count(out, "| run"); n != 1 {
		t.Fatalf("first up: %d runs logged, want 1:\n%s", n, out)
	}
	vol := project + "_data"
	info := inspectVolume(t, vol)
	if info.Driver != p.driver || info.Options["uid"] != "1000" || info.Options["mode"] != "0750" {
		t.Errorf("compose volume: driver %q options %v", info.Driver, info.Options)
	}
	backing := p.backingDir(t, vol)
	compose("down")
	out = compose("up", "--exit-code-from", "app")
	if n := strings.Count(out, "| run"); n != 2 {
		t.Fatalf("second up after down: %d runs logged, want 2 (data kept):\n%s", n, out)
	}
	compose("down", "-v")
	if _, err := dockerTry("volume", "inspect", vol); err == nil {
		t.Errorf("volume %s still exists after down -v", vol)
	}
	if _, err := os.Stat(backing); !os.IsNotExist(err) {
		t.Errorf("backing folder %s still there after down -v", backing)
	}
}

// testDriverName: the managed plugin NAME (securevol for users, the tests'
// own name here) is NAME:latest to the engine; -d NAME, -d NAME:latest,
// --mount volume-driver=NAME and a compose file's short `driver: NAME` all
// reach it.
func testDriverName(t *testing.T, p *plugin) {
	img := need(t).image
	if got := docker(t, "plugin", "inspect", "-f", "{{.Name}}", p.name); got != p.driver {
		t.Errorf("plugin name %q, want %q", got, p.driver)
	}
	for _, d := range []string{p.name, p.name + ":latest"} {
		name := uniq("drv")
		docker(t, "volume", "create", "-d", d, name)
		t.Cleanup(func() { dockerTry("volume", "rm", "-f", name) })
		if got := inspectVolume(t, name).Driver; got != p.driver {
			t.Errorf("volume created with -d %s has driver %q, want %q", d, got, p.driver)
		}
	}
	// A first `up` with the short name creates the volume on the plugin.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(fmt.Sprintf(composeFile, img, p.name)), 0o644)
	project := strings.ReplaceAll(uniq("short"), "-", "")
	t.Cleanup(func() { command(nil, dir, "docker-compose", "-p", project, "down", "-v") })
	if out, err := command(nil, dir, "docker-compose", "-p", project, "--no-ansi", "up", "--exit-code-from", "app"); err != nil {
		t.Fatalf("compose up with driver: %s: %v\n%s", p.name, err, out)
	}
	if got := inspectVolume(t, project+"_data").Driver; got != p.driver {
		t.Errorf("compose driver: %s gave driver %q", p.name, got)
	}
}

// testDisableRefused: the engine will not disable a plugin its volumes use.
func testDisableRefused(t *testing.T, p *plugin) {
	newVolume(t, p)
	msg := dockerFails(t, "plugin", "disable", p.name)
	if !strings.Contains(msg, "in use") {
		t.Errorf("docker plugin disable with volumes: %s; want \"in use\"", msg)
	}
	if got := docker(t, "plugin", "inspect", "-f", "{{.Enabled}}", p.name); got != "true" {
		t.Fatalf("plugin enabled = %s after a refused disable", got)
	}
}

// testKill9: kill -9 the daemon while a container holds a volume: it comes
// back (the engine restarts a managed plugin), new containers mount the
// volume again, and the dead container's reference is released normally.
func testKill9(t *testing.T, p *plugin) {
	img := need(t).image
	vol := newVolume(t, p)
	runSh(t, "echo before-crash > /data/f && sync", "-v", vol+":/data")
	holder := startSleeper(t, "-v", vol+":/data")

	p.kill9(t)
	eventually(t, 30*time.Second, "the volume to answer after the restart", func() error {
		_, err := dockerTry("volume", "inspect", vol)
		return err
	})
	if got := run(t, "-v", vol+":/data", img, "cat", "/data/f"); got != "before-crash" {
		t.Fatalf("after kill -9 a new container read %q", got)
	}
	if n := inspectVolume(t, vol).statusInt(t, "mounts"); n != 1 {
		t.Errorf("Status mounts = %d with the surviving holder container, want 1 (references lost in the crash?)", n)
	}
	docker(t, "rm", "-f", holder)
	if n := inspectVolume(t, vol).statusInt(t, "mounts"); n != 0 {
		t.Errorf("Status mounts = %d after the holder left, want 0", n)
	}
	docker(t, "volume", "rm", vol)
}

// testRestartDockerd: after the engine restarts every volume is listed,
// keeps its options, and its data reads back.
func testRestartDockerd(t *testing.T, p *plugin) {
	img := need(t).image
	if why := restartForbidden(t); why != "" {
		t.Skipf("%s; CI runs this", why)
	}
	a := newVolume(t, p)
	b := newVolume(t, p, "uid=1000", "gid=1000")
	runSh(t, "echo data-a > /data/f", "-v", a+":/data")
	runSh(t, "echo data-b > /data/f", "-u", "1000", "-v", b+":/data")

	restartDockerd(t)
	if p.managed {
		p.waitEnabled(t)
	}
	listed := volumesOf(t, p.driver)
	for _, v := range []string{a, b} {
		if !contains(listed, v) {
			t.Errorf("volume %s not listed after the engine restart (listed: %v)", v, listed)
		}
	}
	if o := inspectVolume(t, b).Options; o["uid"] != "1000" {
		t.Errorf("volume %s options after the restart: %v", b, o)
	}
	if got := run(t, "-v", a+":/data", img, "cat", "/data/f"); got != "data-a" {
		t.Errorf("%s after the restart: %q", a, got)
	}
	if got := run(t, "-u", "1000", "-v", b+":/data", img, "cat", "/data/f"); got != "data-b" {
		t.Errorf("%s after the restart: %q", b, got)
	}
}

// testNoSecretInLogs: everything the daemon logged over the whole run holds
// no encoding of the master key.
func testNoSecretInLogs(t *testing.T, p *plugin) {
	logs := p.logs()
	if !strings.Contains(logs, "created volume") {
		t.Fatalf("the daemon's log does not show the volumes created in this run: wrong log?\n%s", tail(logs, 20))
	}
	for _, n := range encodings(p.masterKey(t)) {
		if strings.Contains(logs, n) {
			t.Errorf("the daemon's log holds the master key (as %q)", n)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// restartForbidden says why the tests may not restart dockerd ("" if they
// may). A restart stops every container on the engine: CI's engine is the
// tests' own; elsewhere, other people's containers are left alone.
func restartForbidden(t testing.TB) string {
	t.Helper()
	if testenv.InCI() {
		return ""
	}
	var others []string
	for _, n := range strings.Fields(docker(t, "ps", "--format", "{{.Names}}")) {
		if !strings.HasPrefix(n, prefix) {
			others = append(others, n)
		}
	}
	if len(others) == 0 {
		return ""
	}
	return fmt.Sprintf("restarting dockerd would stop %d running containers these tests did not start (%s)", len(others), strings.Join(others, ", "))
}

// testReadahead: each volume's FUSE mount gets a readahead of four of its
// requests (the daemon's 256 KiB), not the kernel's 128 KiB, so that a
// container's sequential read arrives in large requests decrypted in
// parallel. A managed plugin can only set it with --writable-bdi.
func testReadahead(t *testing.T, p *plugin) {
	vol := newVolume(t, p)
	startSleeper(t, "--network", "none", "-v", vol+":/data")
	ms, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Source != "securevol:"+vol {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", m.Major, m.Minor))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != "1024" {
			t.Errorf("read_ahead_kb of %s's mount = %s, want 1024", vol, got)
		}
		if p.managed {
			checkPluginSys(t, p)
		}
		return
	}
	t.Fatalf("no mount of securevol:%s in the host's mountinfo", vol)
}

// checkPluginSys: --writable-bdi lifts the read-only flag for the bdi
// settings only; the rest of the managed plugin's /sys stays read-only.
func checkPluginSys(t *testing.T, p *plugin) {
	pid := pluginPID(t, p)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	opts := map[string]string{} // mount point: its per-mount options
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 5 {
			opts[f[4]] = f[5]
		}
	}
	for mp, want := range map[string]string{"/sys": "ro", "/sys/devices/virtual/bdi": "rw"} {
		if o, ok := opts[mp]; !ok || !slices.Contains(strings.Split(o, ","), want) {
			t.Errorf("the plugin's %s is mounted %q, want %s", mp, o, want)
		}
	}
}

// pluginPID finds the managed plugin's daemon: the process running
// /securevol whose mounts include p's state folder.
func pluginPID(t *testing.T, p *plugin) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range procs {
		cmd, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !bytes.HasPrefix(cmd, []byte("/securevol\x00serve")) {
			continue
		}
		mi, err := os.ReadFile(filepath.Join(d, "mountinfo"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 4 && f[3] == p.stateDir {
				pid, _ := strconv.Atoi(filepath.Base(d))
				return pid
			}
		}
	}
	t.Fatalf("no process of the managed plugin %s found (state folder %s)", p, p.stateDir)
	return 0
}
