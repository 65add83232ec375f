package client

import (
	"context"
	"io"
	"net/http"
	"net/url"

	api "hearth.dev/hearth/api/v1alpha1"
)

// ImageContentPath is the URL path of the bytes of an Image uploaded
// through the API (tenant "" for a shared image).
func ImageContentPath(tenant, name string) string {
	k, _ := api.KindByName("Image")
	return api.ObjectPath(k, tenant, name) + "/content"
}

// UploadImage sends body as the content of the Image name (in tenant, or
// shared for "") and returns the Image with the checksum and size the
// server recorded. The Image must exist with spec.source.upload set. The
// upload has no time limit but ctx's.
func (c *Client) UploadImage(ctx context.Context, tenant, name string, body io.Reader) (*api.Image, error) {
	resp, err := c.send(ctx, c.stream, http.MethodPut, ImageContentPath(tenant, name), "application/octet-stream", body)
	if err != nil {
		return nil, err
	}
	img := &api.Image{}
	return img, decodeBody(resp, img)
}

// HTTPClient returns an http.Client for plain requests, such as image
// downloads, that may go to the API server or anywhere else. Requests to
// the server's own origin trust the cluster CA and carry this client's
// credential; requests to any other origin (and redirects to one) go out
// through http.DefaultTransport without it, so the credential never
// reaches a third party. It has no overall timeout, since images are
// large: bound each request with its context.
func (c *Client) HTTPClient() *http.Client {
	u, _ := url.Parse(c.base)
	return &http.Client{Transport: &originAuth{scheme: u.Scheme, host: u.Host, token: c.token,
		server: c.stream.Transport, other: http.DefaultTransport}}
}

// originAuth routes requests for the API server's origin through the
// client's transport with its bearer token, and everything else through
// another transport untouched.
type originAuth struct {
	scheme, host  string
	token         string
	server, other http.RoundTripper
}

func (t *originAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != t.scheme || req.URL.Host != t.host {
		return t.other.RoundTrip(req)
	}
	if t.token != "" && req.Header.Get("Authorization") == "" {
		// A RoundTripper must not change the caller's request.
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	return t.server.RoundTrip(req)
}
