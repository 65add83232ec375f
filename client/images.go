package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"

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
// upload has no time limit but ctx's. A body whose size is known (it has
// a Size() int64 method, as *bytes.Reader and WithSize's have) is sent
// with a Content-Length, so a server that cannot take that much (its
// upload limit, the tenant's quota, its disk) says so before a byte is
// sent rather than after.
func (c *Client) UploadImage(ctx context.Context, tenant, name string, body io.Reader) (*api.Image, error) {
	path := ImageContentPath(tenant, name)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if s, ok := body.(interface{ Size() int64 }); ok {
		req.ContentLength = s.Size()
		if req.ContentLength == 0 {
			req.Body = http.NoBody
		}
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.stream.Do(req)
	if err != nil {
		return nil, fmt.Errorf("PUT %s: %w", c.base, err)
	}
	if resp.StatusCode >= 400 {
		return nil, errorOf(resp, http.MethodPut, path)
	}
	img := &api.Image{}
	return img, decodeBody(resp, img)
}

// WithSize gives r a Size, for UploadImage: r must deliver exactly size
// bytes.
func WithSize(r io.Reader, size int64) io.Reader { return sizedReader{r, size} }

type sizedReader struct {
	io.Reader
	size int64
}

func (s sizedReader) Size() int64 { return s.size }

// DownloadImage requests the uploaded content of the Image name (in
// tenant, or shared for "") from byte offset on (0: all of it), sending
// ifRange as If-Range when resuming, so a broken download goes on where
// it stopped. It returns the response when it is 200, 206 or 416 (the
// range is past the end: start again) for the caller to read and close,
// and the server's error otherwise.
//
// This is the only request besides the API's own that carries the
// client's credential, and it goes only to the API server, to the content
// path of that one Image, following no redirect: an image's URL is
// written by tenants, so the general downloads of agents (storage's fetch
// client) carry no credential at all.
func (c *Client) DownloadImage(ctx context.Context, tenant, name string, offset int64, ifRange string) (*http.Response, error) {
	path := ImageContentPath(tenant, name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	// The bytes must arrive as stored, for ranges and checksums to hold.
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		if ifRange != "" {
			req.Header.Set("If-Range", ifRange)
		}
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := &http.Client{Transport: c.stream.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s%s: %w", c.base, path, err)
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable:
		return resp, nil
	}
	return nil, errorOf(resp, http.MethodGet, path)
}
