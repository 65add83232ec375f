package cli

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestE2ESecretPowerWebhook: a Secret applied with stringData is listed
// and described with its keys and sizes but no values; `get -o yaml`
// shows an admin the value (base64); and `hearth machine power on` sends
// the webhook header whose value the machine takes from that Secret.
func TestE2ESecretPowerWebhook(t *testing.T) {
	var mu sync.Mutex
	var auth []string
	plug := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(w, `{"ok":true}`)
	}))
	defer plug.Close()
	manifest := `apiVersion: hearth.dev/v1alpha1
kind: Secret
metadata: {name: e2e-plug}
spec:
  stringData: {token: "Bearer sup3r-s3cret-t0ken"}
---
apiVersion: hearth.dev/v1alpha1
kind: Machine
metadata: {name: e2e-plugged}
spec:
  mac: "52:54:00:e2:e2:01"
  power:
    driver: webhook
    webhook:
      onURL: ` + plug.URL + `/on
      offURL: ` + plug.URL + `/off
      headers: {Content-Type: application/json}
      secretHeaders:
      - name: Authorization
        valueFrom: {secretKeyRef: {name: e2e-plug, key: token}}
`
	hearth(t, manifest, "apply", "-f", "-")
	t.Cleanup(func() { hearthErr(t, manifest, "delete", "-f", "-") })

	out := hearth(t, "", "get", "secrets")
	wantContains(t, "get secrets", out, "e2e-plug", "Opaque")
	out = hearth(t, "", "describe", "secret", "e2e-plug")
	wantContains(t, "describe secret", out, "token: 25 bytes")
	if strings.Contains(out, "sup3r") || strings.Contains(out, "c3VwM3I") {
		t.Fatalf("describe shows the secret's value:\n%s", out)
	}
	out = hearth(t, "", "get", "secret", "e2e-plug", "-o", "yaml")
	wantContains(t, "get -o yaml", out, "token: QmVhcmVyIHN1cDNyLXMzY3JldC10MGtlbg==")
	if strings.Contains(out, "stringData") {
		t.Fatalf("stringData was stored:\n%s", out)
	}

	hearth(t, "", "machine", "power", "on", "e2e-plugged")
	mu.Lock()
	defer mu.Unlock()
	if len(auth) != 1 || auth[0] != "Bearer sup3r-s3cret-t0ken" {
		t.Fatalf("the plug got Authorization %q, want the secret's value", auth)
	}
}
