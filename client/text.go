package client

import (
	"context"
	"io"
	"net/http"
)

// Text GETs path and returns the answer as it is: for what is not JSON,
// such as the server's Prometheus metrics (/metrics), which `hearth bench
// scale` reads before and after a phase.
func (c *Client) Text(ctx context.Context, path string) (string, error) {
	resp, err := c.send(ctx, c.http, http.MethodGet, path, "", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return string(data), err
}
