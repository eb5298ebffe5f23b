package driver

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

// testLimits are DefaultServerLimits scaled down so a test can wait them out.
func testLimits() ServerLimits {
	return ServerLimits{
		ReadHeader:     300 * time.Millisecond,
		Read:           600 * time.Millisecond,
		Idle:           400 * time.Millisecond,
		Write:          10 * time.Second,
		MaxHeaderBytes: 4 << 10,
	}
}

// The daemon's limits are set, and the write limit (which runs while the
// handler works) outlasts the longest call the engine waits for.
func TestDefaultServerLimits(t *testing.T) {
	l := DefaultServerLimits()
	if l.ReadHeader <= 0 || l.Read < l.ReadHeader || l.Idle <= 0 || l.MaxHeaderBytes <= 0 {
		t.Fatalf("read limits unset: %+v", l)
	}
	if l.Write != 0 && l.Write <= engineLongestCall {
		t.Fatalf("Write %v would cut off a Mount the engine waits %v for", l.Write, engineLongestCall)
	}
	srv := NewServer(http.NotFoundHandler(), l)
	if srv.ReadHeaderTimeout != l.ReadHeader || srv.ReadTimeout != l.Read || srv.IdleTimeout != l.Idle ||
		srv.WriteTimeout != l.Write || srv.MaxHeaderBytes != l.MaxHeaderBytes {
		t.Fatalf("NewServer dropped a limit: header %v read %v idle %v write %v max header %d",
			srv.ReadHeaderTimeout, srv.ReadTimeout, srv.IdleTimeout, srv.WriteTimeout, srv.MaxHeaderBytes)
	}
}

// A client that connects and stalls, before or in the middle of a
// request, or that keeps an idle connection, is disconnected once its
// limit passes; the server answers others meanwhile and afterwards.
func TestServerDisconnectsStalledClients(t *testing.T) {
	l := testLimits()
	sock, c := serveUnixLimits(t, NewHandler(recordingDriver{}, nil), l)
	const list = "POST /VolumeDriver.List HTTP/1.1\r\nHost: plugin\r\nContent-Length: 2\r\n\r\n{}"
	cases := []struct {
		name   string
		send   string
		limit  time.Duration // the limit that must cut the connection
		answer string        // what the server says before it closes
	}{
		{"nothing sent", "", l.ReadHeader, ""},
		{"half the headers", "POST /VolumeDriver.List HTTP/1.1\r\nHost: plu", l.ReadHeader, ""},
		{"half the body", "POST /VolumeDriver.Create HTTP/1.1\r\nHost: plugin\r\nContent-Length: 100\r\n\r\n{\"Name\":", l.Read,
			"HTTP/1.1 408 Request Timeout"},
		{"idle after an answer", list, l.Idle, "HTTP/1.1 200 OK"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			start := time.Now()
			if _, err := io.WriteString(conn, tc.send); err != nil {
				t.Fatal(err)
			}
			// Meanwhile a well-behaved client is served.
			if a := call(t, c, "POST", "/VolumeDriver.List", "{}"); a.status != 200 {
				t.Fatalf("List while a client stalls: %d %s", a.status, a.raw)
			}
			conn.SetReadDeadline(time.Now().Add(l.Read + 5*time.Second))
			got, err := io.ReadAll(conn)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("connection not closed by the server after %v: %v (read %q)", took, err, got)
			}
			if took < tc.limit/2 {
				t.Fatalf("closed after %v, before its %v limit", took, tc.limit)
			}
			if !strings.HasPrefix(string(got), tc.answer) || (tc.answer == "") != (len(got) == 0) {
				t.Fatalf("answer before the close: %q, want %q", got, tc.answer)
			}
			if tc.answer != "" && strings.Contains(string(got), sock) {
				t.Fatalf("answer names the socket: %q", got)
			}
			t.Logf("closed after %v", took.Round(time.Millisecond))
		})
	}
}

// slowDriver's Mount takes longer than every read limit, as a Mount
// waiting for a busy volume does.
type slowDriver struct {
	recordingDriver
	delay time.Duration
}

func (s slowDriver) Mount(q *volume.MountRequest) (*volume.MountResponse, error) {
	time.Sleep(s.delay)
	return s.recordingDriver.Mount(q)
}

// The read limits end with the request: a handler that works longer than
// all of them still delivers its answer.
func TestServerLetsSlowHandlersAnswer(t *testing.T) {
	l := testLimits()
	_, c := serveUnixLimits(t, NewHandler(slowDriver{delay: 2 * (l.Read + l.Idle)}, nil), l)
	start := time.Now()
	a := call(t, c, "POST", "/VolumeDriver.Mount", `{"Name":"v","ID":"c1"}`)
	if a.status != 200 || a.body["Mountpoint"] != "/m/v/c1" {
		t.Fatalf("slow Mount after %v: %d %s", time.Since(start), a.status, a.raw)
	}
}

// Oversized headers and bodies get a clear refusal, not a hang or a
// dropped connection.
func TestServerRefusesOversizedRequests(t *testing.T) {
	l := testLimits()
	sock, c := serveUnixLimits(t, NewHandler(recordingDriver{}, nil), l)

	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	huge := "POST /VolumeDriver.List HTTP/1.1\r\nHost: plugin\r\nX-Pad: " + strings.Repeat("a", 2*l.MaxHeaderBytes+8192) + "\r\nContent-Length: 2\r\n\r\n{}"
	go io.WriteString(conn, huge)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("oversized header: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized header: %s, want 431", res.Status)
	}

	body := `{"Name":"v","Opts":{"uid":"` + strings.Repeat("1", MaxRequestBytes) + `"}}`
	a := call(t, c, "POST", "/VolumeDriver.Create", body)
	if a.status != http.StatusRequestEntityTooLarge || !strings.Contains(a.raw, "request body larger than 65536 bytes") {
		t.Fatalf("oversized body: %d %s", a.status, a.raw)
	}
	if a := call(t, c, "POST", "/VolumeDriver.Create", `{"Name":"v"}`); a.status != 200 {
		t.Fatalf("normal Create after the refusals: %d %s", a.status, a.raw)
	}
}
