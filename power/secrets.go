package power

import (
	"context"
	"fmt"
	"maps"

	api "hearth.dev/hearth/api/v1alpha1"
)

// SecretGetter reads a Secret by name. The CLI reads with the caller's
// own credential, so whoever runs a power action needs the right to read
// the machine's Secrets (cluster admins).
type SecretGetter func(ctx context.Context, name string) (*api.Secret, error)

// ResolveSecrets returns a copy of m whose power settings hold the values
// its Secret references point at (spec.power.passwordSecret, the
// webhook's secretHeaders), ready for For. m is left as it was. Errors
// name the field whose Secret or key is missing.
func ResolveSecrets(ctx context.Context, m *api.Machine, get SecretGetter) (*api.Machine, error) {
	c := api.DeepCopy(m).(*api.Machine)
	p := &c.Spec.Power
	name := m.Metadata.Name
	value := func(field string, ref *api.SecretKeyRef) (string, error) {
		s, err := get(ctx, ref.Name)
		if err != nil {
			return "", fmt.Errorf("machine %s: %s: reading secret %s: %w", name, field, ref.Name, err)
		}
		v, err := api.SecretValue(s, ref.Key)
		if err != nil {
			return "", fmt.Errorf("machine %s: %s: %w", name, field, err)
		}
		return v, nil
	}
	if ref := p.PasswordSecret; ref != nil {
		v, err := value("spec.power.passwordSecret", ref)
		if err != nil {
			return nil, err
		}
		p.Password, p.PasswordSecret = v, nil
	}
	if w := p.Webhook; w != nil && len(w.SecretHeaders) > 0 {
		h := maps.Clone(w.Headers)
		if h == nil {
			h = map[string]string{}
		}
		for i, sh := range w.SecretHeaders {
			if sh.ValueFrom.SecretKeyRef == nil {
				continue // Validate names it
			}
			v, err := value(fmt.Sprintf("spec.power.webhook.secretHeaders[%d]", i), sh.ValueFrom.SecretKeyRef)
			if err != nil {
				return nil, err
			}
			h[sh.Name] = v
		}
		w.Headers, w.SecretHeaders = h, nil
	}
	return c, nil
}
