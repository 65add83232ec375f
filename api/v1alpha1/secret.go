package v1alpha1

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Secret holds credentials other objects refer to by name and key: a BMC
// password (a Machine's spec.power.passwordSecret), a smart plug's API
// token (spec.power.webhook.secretHeaders), later Ceph keyrings. It is
// modelled on Kubernetes' Secret, with its data under spec like every
// Hearth kind. Only cluster admins read or write Secrets (hosts and
// cluster viewers do not), `hearth describe` shows keys and sizes but no
// values, and the server encrypts them in etcd with a key kept outside
// etcd (`hearth server --secrets-key-file`).
type Secret = Resource[SecretSpec, SecretStatus]

type SecretSpec struct {
	// Type says what the secret holds, for people and tools (default
	// Opaque: anything). It does not change how it is stored.
	Type string `json:"type,omitempty"`
	// Data maps keys to values; in JSON and YAML the values are base64,
	// so they may hold any bytes.
	Data map[string][]byte `json:"data,omitempty"`
	// StringData is a write-only convenience: plain-text values that the
	// server moves into Data (replacing a key of the same name) when the
	// secret is written. It is never stored or shown.
	StringData map[string]string `json:"stringData,omitempty" openapi:"writeOnly"`
}

type SecretStatus struct {
	CommonStatus `json:",inline"`
}

// SecretOpaque is the default Secret type.
const SecretOpaque = "Opaque"

// MaxSecretSize bounds the values of one Secret together: a Secret is for
// credentials, not files, and every server keeps it in memory to serve it.
const MaxSecretSize = 1 << 20

// SecretKeyRef names one value of a Secret.
type SecretKeyRef struct {
	// Name of the Secret.
	Name string `json:"name"`
	// Key in its data.
	Key string `json:"key"`
}

func (r *SecretKeyRef) validate(path string) FieldErrors {
	var es FieldErrors
	if r.Name == "" {
		es.Add(path+".name", "is required (the name of a Secret)")
	} else {
		es = append(es, ValidateName(path+".name", r.Name)...)
	}
	if r.Key == "" {
		es.Add(path+".key", "is required (a key in the Secret's data)")
	} else if !secretKey.MatchString(r.Key) {
		es.Add(path+".key", "%q is not a secret key (letters, digits, '-', '_' and '.')", r.Key)
	}
	return es
}

// secretKey is what a key of Secret data may be, as in Kubernetes.
var secretKey = regexp.MustCompile(`^[-._a-zA-Z0-9]{1,253}$`)

// Default moves StringData into Data, so that what is stored and shown
// has only Data.
func (s *SecretSpec) Default() {
	if s.Type == "" {
		s.Type = SecretOpaque
	}
	if len(s.StringData) > 0 && s.Data == nil {
		s.Data = make(map[string][]byte, len(s.StringData))
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
}

func (s *SecretSpec) Validate(path string) FieldErrors {
	var es FieldErrors
	keys := make([]string, 0, len(s.Data))
	for k := range s.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	total := 0
	for _, k := range keys {
		if !secretKey.MatchString(k) {
			es.Add(path+".data", "key %q is not a secret key (letters, digits, '-', '_' and '.')", k)
		}
		total += len(k) + len(s.Data[k])
	}
	if total > MaxSecretSize {
		es.Add(path+".data", "holds %d bytes, more than the %d a Secret may", total, MaxSecretSize)
	}
	if !secretType.MatchString(s.Type) {
		es.Add(path+".type", "%q is not a secret type (such as Opaque or example.com/keyring)", s.Type)
	}
	return es
}

var secretType = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9_./]{0,252}$`)

// Redact blanks every value (the keys stay, to show what is set). The API
// serves Secrets to cluster admins only; this is for anything that shows
// one to someone else.
func (s *SecretSpec) Redact() {
	if len(s.Data) > 0 {
		d := make(map[string][]byte, len(s.Data))
		for k := range s.Data {
			d[k] = nil
		}
		s.Data = d
	}
	s.StringData = nil
}

// SecretValue returns the value of key in s, or an error that names the
// secret and the keys it has.
func SecretValue(s *Secret, key string) (string, error) {
	v, ok := s.Spec.Data[key]
	if !ok {
		keys := make([]string, 0, len(s.Spec.Data))
		for k := range s.Spec.Data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return "", fmt.Errorf("secret %s has no key %q (it has: %s)", s.Metadata.Name, key, strings.Join(keys, ", "))
	}
	return string(v), nil
}

func init() {
	register[SecretSpec, SecretStatus](KindInfo{
		Kind: "Secret", Plural: "secrets", ShortNames: []string{"secret"}, Scope: ClusterScoped, Confidential: true,
		Description: "Credentials (BMC passwords, API tokens, keyrings) that other objects refer to by name and key; readable by cluster admins only, encrypted at rest.",
		Columns: []Column{
			{Name: "TYPE", Get: func(o Object) string { return o.(*Secret).Spec.Type }},
			{Name: "DATA", Get: func(o Object) string { return fmt.Sprint(len(o.(*Secret).Spec.Data)) }},
		},
	})
}
