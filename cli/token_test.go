package cli

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
	"hearth.dev/hearth/client"
)

// TestE2EJoinAndHostTokens: join tokens made, listed and revoked with the
// CLI; a host joined with one is listed among the host credentials and
// revoked from there.
func TestE2EJoinAndHostTokens(t *testing.T) {
	const host = "e2e-join-h1"
	out, errOut := hearthOK(t, "token", "create", "--join", "--site", "home", "--label", "rack=a", "--description", "e2e join")
	secret := strings.TrimSpace(out)
	wantContains(t, "token create --join stderr", errOut, "for joining one host", "expires")
	var joins struct{ Items []api.TokenRecord }
	if err := json.Unmarshal([]byte(hearth(t, "", "token", "list", "--join", "-o", "json")), &joins); err != nil {
		t.Fatal(err)
	}
	var id string
	for _, r := range joins.Items {
		if r.Description == "e2e join" {
			id = r.ID
		}
	}
	if id == "" {
		t.Fatalf("the join token is not listed: %+v", joins.Items)
	}
	out = hearth(t, "", "token", "list", "--join")
	wantContains(t, "token list --join", out, "USES", "HOST", id, "once", "(new)", "home", "rack=a", "e2e join", "in 23h")

	ca, err := os.ReadFile(filepath.Join(serverDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	withToken := func(token string) *client.Client {
		c, err := client.New(&client.Context{Server: theServer.URL(), CertificateAuthority: string(ca), Token: token})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	joiner := withToken(secret)
	if err != nil {
		t.Fatal(err)
	}
	var jr api.JoinResponse
	if err := joiner.Do(t.Context(), http.MethodPost, api.PathPrefix+"/join", api.JoinRequest{Host: host}, &jr); err != nil {
		t.Fatalf("joining with the join token: %v", err)
	}
	if out := hearth(t, "", "token", "list", "--join"); strings.Contains(out, id) {
		t.Errorf("a spent single-use join token is still listed:\n%s", out)
	}
	out = hearth(t, "", "get", "host", host, "-o", "wide")
	wantContains(t, "get host", out, host, "home")

	_, errOut = hearthOK(t, "token", "create", "--join", "--host", host)
	wantContains(t, "token create --join --host stderr", errOut, "for re-joining host "+host)
	out = hearth(t, "", "token", "list", "--join")
	wantContains(t, "token list --join", out, host)
	var rejoin struct{ Items []api.TokenRecord }
	_ = json.Unmarshal([]byte(hearth(t, "", "token", "list", "--join", "-o", "json")), &rejoin)
	for _, r := range rejoin.Items {
		if r.Host == host {
			out = hearth(t, "", "token", "delete", "--join", r.ID)
			wantContains(t, "token delete --join", out, "token "+r.ID+" deleted")
		}
	}
	if out = hearth(t, "", "token", "list", "--join"); strings.Contains(out, host) {
		t.Errorf("the revoked re-join token is still listed:\n%s", out)
	}

	out = hearth(t, "", "token", "list", "--hosts", "--host", host)
	wantContains(t, "token list --hosts", out, "KIND", "HOST", "host", host)
	var creds struct{ Items []api.TokenRecord }
	if err := json.Unmarshal([]byte(hearth(t, "", "token", "list", "--hosts", "--host", host, "-o", "json")), &creds); err != nil || len(creds.Items) != 1 {
		t.Fatalf("the host's credentials: %v %+v", err, creds.Items)
	}
	out = hearth(t, "", "token", "delete", "--hosts", creds.Items[0].ID)
	wantContains(t, "token delete --hosts", out, "deleted")
	if _, err := withToken(jr.Token).WhoAmI(t.Context()); api.ReasonOf(err) != api.ReasonUnauthorized {
		t.Errorf("the revoked host credential: got %v, want Unauthorized", err)
	}
	if _, errOut, err := hearthErr(t, "", "token", "delete", "--hosts", creds.Items[0].ID); err == nil || !strings.Contains(errOut, "hearth token list --hosts") {
		t.Errorf("deleting it again: %v\n%s", err, errOut)
	}
	if _, errOut, err := hearthErr(t, "", "token", "list", "--join", "--hosts"); err == nil || !strings.Contains(errOut, "give one of") {
		t.Errorf("--join with --hosts: %v\n%s", err, errOut)
	}
}

// TestJoinTokenFlags: the join token comes from a file, the environment
// (which is then cleared) or, with a warning, the command line.
func TestJoinTokenFlags(t *testing.T) {
	tests := []struct {
		name, flag, file, env       string
		wantToken, wantFile, warned string
		err                         string
	}{
		{name: "file", file: "/etc/hearth/join-token", wantFile: "/etc/hearth/join-token"},
		{name: "environment", env: " hearth-join-abc\n", wantToken: "hearth-join-abc"},
		{name: "flag warns", flag: "hearth-join-abc", wantToken: "hearth-join-abc", warned: "visible to every local user"},
		{name: "file wins over the environment", file: "/f", env: "x", wantFile: "/f"},
		{name: "not both", flag: "x", file: "/f", err: "not both"},
		{name: "none", wantToken: ""},
	}
	for _, tt := range tests {
		t.Setenv("HEARTH_JOIN_TOKEN", tt.env)
		var errOut strings.Builder
		j := joinTokenFlags{token: tt.flag, file: tt.file}
		token, file, err := j.resolve(&errOut)
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.err)
			continue
		}
		if token != tt.wantToken || file != tt.wantFile || !strings.Contains(errOut.String(), tt.warned) || (tt.warned == "" && errOut.Len() > 0) {
			t.Errorf("%s: got token %q, file %q, said %q; want %q, %q, %q", tt.name, token, file, errOut.String(), tt.wantToken, tt.wantFile, tt.warned)
		}
		if _, set := os.LookupEnv("HEARTH_JOIN_TOKEN"); set {
			t.Errorf("%s: HEARTH_JOIN_TOKEN is still in the environment, for QEMU to inherit", tt.name)
		}
	}
}
