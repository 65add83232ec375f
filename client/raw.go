package client

import (
	"context"
	"io"
	"net/http"
)

// GetRaw reads path and returns the answer's body as it is, for answers
// that are not JSON (the server's Prometheus /metrics). API errors come
// back as *api.Status, as from Do.
func (c *Client) GetRaw(ctx context.Context, path string) ([]byte, error) {
	resp, err := c.send(ctx, c.http, http.MethodGet, path, "", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}
