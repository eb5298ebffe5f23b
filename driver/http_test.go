package driver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/securevol/securevol/internal/testenv"
)

// serveUnix serves h on a fresh Unix socket, as the daemon does, and
// returns a client for it.
func serveUnix(t testing.TB, h http.Handler) *http.Client {
	t.Helper()
	_, c := serveUnixLimits(t, h, DefaultServerLimits())
	return c
}

// serveUnixLimits serves h with limits l and returns the socket's path and
// a client for it.
func serveUnixLimits(t testing.TB, h http.Handler, l ServerLimits) (string, *http.Client) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "p.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(h, l)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock, testenv.UnixClient(sock, 30*time.Second)
}

type answer struct {
	status int
	ctype  string
	body   map[string]any
	raw    string
}

// call POSTs body to path as the engine does (pkg/plugins/client.go).
func call(t testing.TB, c *http.Client, method, path, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, "http://plugin"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", ContentType)
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	a := answer{status: res.StatusCode, ctype: res.Header.Get("Content-Type"), raw: string(raw)}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object: %q", method, path, raw)
	}
	return a
}

func TestProtocolOverUnixSocket(t *testing.T) {
	e := newEnv(t)
	c := serveUnix(t, NewHandler(e.d, e.d.log))

	a := call(t, c, "POST", "/Plugin.Activate", "")
	if a.status != 200 || !strings.Contains(a.raw, `"Implements":["VolumeDriver"]`) || a.ctype != ContentType {
		t.Fatalf("Activate: %d %q %q", a.status, a.ctype, a.raw)
	}
	a = call(t, c, "POST", "/VolumeDriver.Capabilities", "{}")
	if a.status != 200 || a.body["Capabilities"].(map[string]any)["Scope"] != "local" {
		t.Fatalf("Capabilities: %+v", a)
	}
	// docker volume create -d securevol -o uid=1000 web: Get first, then Create.
	a = call(t, c, "POST", "/VolumeDriver.Get", `{"Name":"web"}`)
	if a.status == 200 && a.body["Err"] == nil {
		t.Fatalf("Get of an unknown volume answered a volume: %s", a.raw)
	}
	if !strings.Contains(a.body["Err"].(string), "no such volume") {
		t.Fatalf("Get of an unknown volume: %s", a.raw)
	}
	a = call(t, c, "POST", "/VolumeDriver.Create", `{"Name":"web","Opts":{"uid":"1000"}}`)
	if a.status != 200 || len(a.body) != 0 {
		t.Fatalf("Create: %d %s", a.status, a.raw)
	}
	a = call(t, c, "POST", "/VolumeDriver.Get", `{"Name":"web"}`)
	vol := a.body["Volume"].(map[string]any)
	if a.status != 200 || vol["Name"] != "web" || vol["Status"].(map[string]any)["root"] != "uid=1000 gid=0 mode=0755" {
		t.Fatalf("Get: %s", a.raw)
	}
	if _, err := time.Parse(time.RFC3339, vol["CreatedAt"].(string)); err != nil {
		t.Fatalf("CreatedAt: %v", err)
	}
	a = call(t, c, "POST", "/VolumeDriver.List", "{}")
	if vols := a.body["Volumes"].([]any); a.status != 200 || len(vols) != 1 {
		t.Fatalf("List: %s", a.raw)
	}
	a = call(t, c, "POST", "/VolumeDriver.Create", `{"Name":"web","Opts":{"secret_key":"x"}}`)
	if a.status != 500 || !strings.Contains(a.body["Err"].(string), "looks like a secret") {
		t.Fatalf("Create with a secret option: %d %s", a.status, a.raw)
	}
	a = call(t, c, "POST", "/VolumeDriver.Remove", `{"Name":"web"}`)
	if a.status != 200 {
		t.Fatalf("Remove: %d %s", a.status, a.raw)
	}
	a = call(t, c, "POST", "/VolumeDriver.Path", `{"Name":"web"}`)
	if a.status != 500 || !strings.Contains(a.body["Err"].(string), "no such volume") {
		t.Fatalf("Path after Remove: %d %s", a.status, a.raw)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	c := serveUnix(t, NewHandler(e.d, e.d.log))
	huge := `{"Name":"v1","Opts":{"uid":"` + strings.Repeat("1", MaxRequestBytes) + `"}}`
	cases := []struct {
		method, path, body string
		status             int
		errPart            string
	}{
		{"POST", "/VolumeDriver.Create", `{"Name":`, 400, "malformed request"},
		{"POST", "/VolumeDriver.Create", ``, 400, "malformed request"},
		{"POST", "/VolumeDriver.Create", `{"Name":"v1"} trailing`, 400, "malformed request"},
		{"POST", "/VolumeDriver.Create", `{"Name":42}`, 400, "malformed request"},
		{"POST", "/VolumeDriver.Create", `{"Name":"v1","Opts":["uid"]}`, 400, "malformed request"},
		{"POST", "/VolumeDriver.Mount", `[1,2,3]`, 400, "malformed request"},
		{"POST", "/VolumeDriver.Create", huge, 413, "larger than"},
		{"POST", "/VolumeDriver.Create", `null`, 500, "name is empty"},
		{"POST", "/VolumeDriver.Create", `{"Name":"../../etc"}`, 500, "invalid volume name"},
		{"GET", "/VolumeDriver.List", ``, 405, "POST"},
		{"POST", "/VolumeDriver.Frobnicate", `{}`, 404, "unknown call"},
	}
	for _, tc := range cases {
		a := call(t, c, tc.method, tc.path, tc.body)
		errMsg, _ := a.body["Err"].(string)
		if a.status != tc.status || !strings.Contains(errMsg, tc.errPart) {
			t.Errorf("%s %s %.40q: %d %.200s; want %d with %q", tc.method, tc.path, tc.body, a.status, a.raw, tc.status, tc.errPart)
		}
	}
	// Nothing was created, and the server still answers.
	if a := call(t, c, "POST", "/VolumeDriver.List", `{}`); a.status != 200 || len(a.body["Volumes"].([]any)) != 0 {
		t.Fatalf("List after bad requests: %s", a.raw)
	}
}

type panicDriver struct{ recordingDriver }

func (panicDriver) List() (*volume.ListResponse, error) { panic("boom") }

func TestPanicBecomes500(t *testing.T) {
	c := serveUnix(t, NewHandler(&panicDriver{}, nil))
	a := call(t, c, "POST", "/VolumeDriver.List", "{}")
	if a.status != 500 || !strings.Contains(a.body["Err"].(string), "internal error") {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	if a := call(t, c, "POST", "/Plugin.Activate", ""); a.status != 200 {
		t.Fatal("server died after a panic")
	}
}

// recordingDriver answers fixed values and fails for names starting with
// "fail", so our handler and go-plugins-helpers' can be compared.
type recordingDriver struct{}

func (recordingDriver) res(name string) error {
	if strings.HasPrefix(name, "fail") {
		return errors.New("failed: " + name)
	}
	return nil
}
func (r recordingDriver) Create(q *volume.CreateRequest) error { return r.res(q.Name) }
func (recordingDriver) List() (*volume.ListResponse, error) {
	return &volume.ListResponse{Volumes: []*volume.Volume{{Name: "a", Mountpoint: "/m/a", CreatedAt: "2025-01-01T00:00:00Z"}, {Name: "b"}}}, nil
}
func (r recordingDriver) Get(q *volume.GetRequest) (*volume.GetResponse, error) {
	if err := r.res(q.Name); err != nil {
		return nil, err
	}
	return &volume.GetResponse{Volume: &volume.Volume{Name: q.Name, Status: map[string]any{"n": 1.0, "s": "x"}}}, nil
}
func (r recordingDriver) Remove(q *volume.RemoveRequest) error { return r.res(q.Name) }
func (r recordingDriver) Path(q *volume.PathRequest) (*volume.PathResponse, error) {
	return &volume.PathResponse{Mountpoint: "/m/" + q.Name}, r.res(q.Name)
}
func (r recordingDriver) Mount(q *volume.MountRequest) (*volume.MountResponse, error) {
	if err := r.res(q.Name); err != nil {
		return nil, err
	}
	return &volume.MountResponse{Mountpoint: "/m/" + q.Name + "/" + q.ID}, nil
}
func (r recordingDriver) Unmount(q *volume.UnmountRequest) error { return r.res(q.Name) }
func (recordingDriver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}

// For every well-formed request the engine sends, our handler answers what
// go-plugins-helpers' handler answers (status and JSON).
func TestSameAnswersAsHelper(t *testing.T) {
	ours := serveUnix(t, NewHandler(recordingDriver{}, nil))
	sock := filepath.Join(t.TempDir(), "helper.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go volume.NewHandler(recordingDriver{}).Serve(l)
	helper := testenv.UnixClient(sock, 0)
	reqs := [][2]string{
		{"/Plugin.Activate", ""},
		{"/VolumeDriver.Capabilities", "{}"},
		{"/VolumeDriver.List", "{}"},
	}
	for _, n := range []string{"vol", "fail1"} {
		reqs = append(reqs,
			[2]string{"/VolumeDriver.Create", fmt.Sprintf(`{"Name":%q,"Opts":{"uid":"1"}}`, n)},
			[2]string{"/VolumeDriver.Get", fmt.Sprintf(`{"Name":%q}`, n)},
			[2]string{"/VolumeDriver.Path", fmt.Sprintf(`{"Name":%q}`, n)},
			[2]string{"/VolumeDriver.Mount", fmt.Sprintf(`{"Name":%q,"ID":"abc123"}`, n)},
			[2]string{"/VolumeDriver.Unmount", fmt.Sprintf(`{"Name":%q,"ID":"abc123"}`, n)},
			[2]string{"/VolumeDriver.Remove", fmt.Sprintf(`{"Name":%q}`, n)},
		)
	}
	for _, r := range reqs {
		a, b := call(t, ours, "POST", r[0], r[1]), call(t, helper, "POST", r[0], r[1])
		if a.status != b.status || !reflect.DeepEqual(a.body, b.body) {
			t.Errorf("%s %s:\n ours   %d %s\n helper %d %s", r[0], r[1], a.status, a.raw, b.status, b.raw)
		}
		if b.ctype != "" && a.ctype != b.ctype {
			t.Errorf("%s: content type %q, helper %q", r[0], a.ctype, b.ctype)
		}
	}
}

// FuzzRequest feeds arbitrary bodies to every call through the handler and
// the real validation. The handler must never panic, must answer JSON with
// a known status, and whatever it lets through to the driver must be a safe
// single path component with valid options.
func FuzzRequest(f *testing.F) {
	paths := []string{"/VolumeDriver.Create", "/VolumeDriver.Mount", "/VolumeDriver.Get", "/VolumeDriver.Remove", "/VolumeDriver.Path", "/VolumeDriver.Unmount", "/VolumeDriver.List", "/Plugin.Activate"}
	for _, s := range []string{
		`{"Name":"data","Opts":{"uid":"1000","gid":"1000","mode":"0750"}}`,
		`{"Name":"data","ID":"3f5a"}`,
		`{"Name":"../etc"}`, `{"Name":"a/b"}`, `{"Name":".."}`, `{"Name":"a\u0000b"}`,
		`{"Name":"ok","Opts":{"password":"x"}}`, `{"Name":"ok","Opts":{"mode":"0o777"}}`,
		`{"Name":"ok","Opts":{"uid":"99999999999"}}`, `{"Name":`, `null`, `[]`, ``, `{"Name":"é"}`,
	} {
		for i := range paths {
			f.Add(uint8(i), []byte(s))
		}
	}
	checker := &checkingDriver{}
	h := NewHandler(checker, nil)
	f.Fuzz(func(t *testing.T, pi uint8, body []byte) {
		checker.t = t
		path := paths[int(pi)%len(paths)]
		req, _ := http.NewRequest("POST", "http://plugin"+path, bytes.NewReader(body))
		w := &recorder{header: http.Header{}}
		h.ServeHTTP(w, req)
		switch w.status {
		case 200, 400, 413, 500:
		default:
			t.Fatalf("status %d", w.status)
		}
		var v map[string]any
		if err := json.Unmarshal(w.body.Bytes(), &v); err != nil {
			t.Fatalf("answer is not JSON: %q", w.body.String())
		}
		if msg, _ := v["Err"].(string); strings.Contains(msg, "internal error") {
			t.Fatalf("handler panicked on %q", body)
		}
	})
}

type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(s int) { r.status = s }

// checkingDriver runs the real validation and checks what it admits.
type checkingDriver struct {
	recordingDriver
	t *testing.T
}

func (c *checkingDriver) name(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	root := "/var/lib/securevol/mnt"
	if p := filepath.Join(root, name); filepath.Dir(p) != root || filepath.Base(p) != name || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		c.t.Fatalf("name %q admitted but escapes the mount root: %s", name, p)
	}
	return nil
}

func (c *checkingDriver) Create(q *volume.CreateRequest) error {
	if err := c.name(q.Name); err != nil {
		return err
	}
	o, err := ParseOptions(q.Options)
	if err != nil {
		// Only names may appear in the message; strip them, then look
		// for the values.
		msg := err.Error()
		for k := range q.Options {
			msg = strings.ReplaceAll(msg, fmt.Sprintf("%q", k), "")
		}
		for _, v := range q.Options {
			if len(v) > 3 && strings.Contains(msg, v) {
				c.t.Fatalf("error %q echoes an option value", err)
			}
		}
		return err
	}
	for k := range q.Options {
		if _, ok := optionHelp[k]; !ok {
			c.t.Fatalf("option %q admitted", k)
		}
	}
	// Round trip through the header labels gives the same options.
	if back, err := labelOptions(optionLabels(o)); err != nil || back != o {
		c.t.Fatalf("options %+v do not survive the header: %+v %v", o, back, err)
	}
	if o.Mode > 0o7777 {
		c.t.Fatalf("mode %o admitted", o.Mode)
	}
	return nil
}
func (c *checkingDriver) Get(q *volume.GetRequest) (*volume.GetResponse, error) {
	if err := c.name(q.Name); err != nil {
		return nil, err
	}
	return c.recordingDriver.Get(q)
}
func (c *checkingDriver) Mount(q *volume.MountRequest) (*volume.MountResponse, error) {
	if err := c.name(q.Name); err != nil {
		return nil, err
	}
	return c.recordingDriver.Mount(q)
}
func (c *checkingDriver) Remove(q *volume.RemoveRequest) error {
	if err := c.name(q.Name); err != nil {
		return err
	}
	return nil
}
