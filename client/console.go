package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"

	api "hearth.dev/hearth/api/v1alpha1"
)

func vmPath(c *Client, tenant, name, sub string) (string, error) {
	k, err := api.KindByName("VirtualMachine")
	if err != nil {
		return "", err
	}
	return api.ObjectPath(k, c.tenantFor(k, tenant), name) + "/" + sub, nil
}

// Logs reads the serial console log of a VM (the whole log with the zero
// options). Close the reader when done.
func (c *Client) Logs(ctx context.Context, tenant, name string, o api.LogOptions) (io.ReadCloser, error) {
	path, err := vmPath(c, tenant, name, "log")
	if err != nil {
		return nil, err
	}
	if q := o.Query(); len(q) > 0 {
		path += "?" + q.Encode()
	}
	resp, err := c.send(ctx, c.stream, http.MethodGet, path, "", nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Console attaches to the serial console of a VM. What is written to the
// connection goes to the guest's serial port; what the guest prints is
// read from it. Other viewers may be attached at the same time and see
// the same output. Reads end with io.EOF when the console closes (the VM
// stopped); the connection ends with ctx or Close.
func (c *Client) Console(ctx context.Context, tenant, name string) (net.Conn, error) {
	path, err := vmPath(c, tenant, name, "console")
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	conn, resp, err := websocket.Dial(ctx, c.base+path, &websocket.DialOptions{HTTPClient: c.stream, HTTPHeader: h})
	if err != nil {
		if resp != nil && resp.StatusCode >= 300 && resp.Body != nil {
			data, _ := io.ReadAll(resp.Body)
			var st api.Status
			if json.Unmarshal(data, &st) == nil && st.Message != "" {
				return nil, &st
			}
			return nil, &api.Status{Kind: "Status", Code: resp.StatusCode, Reason: api.ReasonInternal,
				Message: fmt.Sprintf("console of %s: %s: %s", name, resp.Status, strings.TrimSpace(string(data)))}
		}
		return nil, fmt.Errorf("console of %s: %w", name, err)
	}
	return websocket.NetConn(ctx, conn, websocket.MessageBinary), nil
}
