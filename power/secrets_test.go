package power

import (
	"context"
	"strings"
	"testing"

	api "hearth.dev/hearth/api/v1alpha1"
)

// TestResolveSecrets: a webhook's secret header reaches the plug with the
// value its Secret holds, the Machine itself is not changed, a missing
// secret or key is an error naming the field, and For refuses a machine
// whose Secrets were not read.
func TestResolveSecrets(t *testing.T) {
	plug, url := newPlug(t)
	secrets := map[string]*api.Secret{"plug": {Metadata: api.ObjectMeta{Name: "plug"},
		Spec: api.SecretSpec{Data: map[string][]byte{"token": []byte("Bearer t0ken")}}}}
	get := func(_ context.Context, name string) (*api.Secret, error) {
		if s, ok := secrets[name]; ok {
			return s, nil
		}
		return nil, api.NewNotFound("Secret", "", name)
	}
	ref := func(name, key string) []api.SecretHeader {
		return []api.SecretHeader{{Name: "Authorization", ValueFrom: api.HeaderSource{SecretKeyRef: &api.SecretKeyRef{Name: name, Key: key}}}}
	}
	m := &api.Machine{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Machine"}, Metadata: api.ObjectMeta{Name: "node1"},
		Spec: api.MachineSpec{MAC: "52:54:00:aa:bb:01", Power: api.MachinePower{Driver: api.PowerDriverWebhook,
			Webhook: &api.PowerWebhook{OnURL: url + "/on", OffURL: url + "/off", SecretHeaders: ref("plug", "token")}}}}
	ctx := context.Background()

	if _, err := For(m, Options{}); err == nil || !strings.Contains(err.Error(), "read them first") {
		t.Fatalf("For on unresolved secrets: %v, want a refusal", err)
	}
	r, err := ResolveSecrets(ctx, m, get)
	if err != nil {
		t.Fatal(err)
	}
	d, err := For(r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.On(ctx); err != nil {
		t.Fatal(err)
	}
	if _, auth := plug.take(); len(auth) != 1 || auth[0] != "Bearer t0ken" {
		t.Fatalf("the plug got Authorization %q, want the secret's value", auth)
	}
	if len(m.Spec.Power.Webhook.Headers) != 0 || len(m.Spec.Power.Webhook.SecretHeaders) != 1 {
		t.Fatalf("resolving changed the machine: %+v", m.Spec.Power.Webhook)
	}

	for _, c := range []struct{ secret, key, want string }{
		{"gone", "token", "spec.power.webhook.secretHeaders[0]: reading secret gone"},
		{"plug", "password", `spec.power.webhook.secretHeaders[0]: secret plug has no key "password" (it has: token)`},
	} {
		m.Spec.Power.Webhook.SecretHeaders = ref(c.secret, c.key)
		if _, err := ResolveSecrets(ctx, m, get); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("secret %s key %s: %v, want %q", c.secret, c.key, err, c.want)
		}
	}

	bmc := &api.Machine{TypeMeta: m.TypeMeta, Metadata: api.ObjectMeta{Name: "node2"}, Spec: api.MachineSpec{MAC: "52:54:00:aa:bb:02",
		Power: api.MachinePower{Driver: api.PowerDriverIPMI, Address: "bmc2", Username: "hearth", PasswordSecret: &api.SecretKeyRef{Name: "plug", Key: "token"}}}}
	r, err = ResolveSecrets(ctx, bmc, get)
	if err != nil || r.Spec.Power.Password != "Bearer t0ken" || r.Spec.Power.PasswordSecret != nil {
		t.Fatalf("ipmi password from a secret: %+v, %v", r.Spec.Power, err)
	}
	if _, err := For(r, Options{}); err != nil {
		t.Fatal(err)
	}
}
