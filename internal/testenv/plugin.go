package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// UnixClient is an HTTP client whose every request goes to the Unix
// socket sock (the host part of a URL is ignored); timeout 0 is none.
func UnixClient(sock string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
}

// PluginCall posts req as JSON to path on c, as the engine calls a volume
// plugin, and decodes the answer into res unless it is nil. A status
// other than 200, or an answer whose Err is set, is an error.
func PluginCall(c *http.Client, path string, req, res any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	resp, err := c.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.1+json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var e struct{ Err string }
	json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusOK || e.Err != "" {
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, e.Err)
	}
	if res != nil {
		return json.Unmarshal(body, res)
	}
	return nil
}
