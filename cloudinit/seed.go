// Package cloudinit builds the NoCloud seed a VM boots with: the meta-data,
// user-data and network-config documents, and the small ISO9660 image
// labelled "cidata" that carries them, which is what cloud-init's NoCloud
// datasource looks for. It is pure Go so that agents need no ISO tools.
// The same seed also makes the documents of the agent's metadata service
// (Instance: EC2, OpenStack and NoCloud over HTTP), so a guest reads the
// same data whichever way it asks.
package cloudinit

import (
	"bytes"
	"reflect"
	"strings"

	"sigs.k8s.io/yaml"
)

// Seed is a VM's NoCloud data.
type Seed struct {
	// InstanceID is the VM's uid. cloud-init reruns its first-boot modules
	// when it changes, so it must be stable for the VM's life.
	InstanceID string
	// Hostname is the VM name.
	Hostname string
	// SSHKeys are OpenSSH public keys ("ssh-ed25519 AAAA… comment").
	SSHKeys []string
	// UserData is the user's #cloud-config, script or other user-data;
	// "" means a minimal #cloud-config with hostname and
	// ssh_authorized_keys.
	UserData string
	// NetworkConfig is a network-config (version 2) YAML document; ""
	// leaves the file out, and cloud-init then runs DHCP on the first NIC.
	NetworkConfig string
}

// cloudConfigHeader is how cloud-init recognises a #cloud-config document.
const cloudConfigHeader = "#cloud-config"

// MetaData returns the meta-data document: instance-id, local-hostname
// (unless empty) and public-keys. cloud-init cannot run without an
// instance-id, so an empty InstanceID falls back to the hostname. Every
// value is written with Quote, so any string reads back as itself and
// none can add keys or fail to render: the boot service serves it for
// machines whose values come partly from their firmware.
func (s Seed) MetaData() []byte {
	id := s.InstanceID
	if id == "" {
		id = s.Hostname
	}
	if id == "" {
		id = "hearth"
	}
	var b bytes.Buffer
	b.WriteString("instance-id: " + Quote(id) + "\n")
	if s.Hostname != "" {
		b.WriteString("local-hostname: " + Quote(s.Hostname) + "\n")
	}
	if keys := s.keys(); len(keys) > 0 {
		b.WriteString("public-keys:\n")
		for _, k := range keys {
			b.WriteString("- " + Quote(k) + "\n")
		}
	}
	return b.Bytes()
}

// UserDataBytes returns the user-data document. An empty UserData becomes a
// minimal #cloud-config setting the hostname and the SSH keys. A
// #cloud-config of the user's gets hostname and ssh_authorized_keys added
// only where the user did not set them (hostname is also left alone when the
// user set fqdn, from which cloud-init derives the hostname). Anything else —
// a script, a MIME multipart, an #include, a #cloud-config that does not
// parse — is the user's business and is kept byte for byte.
func (s Seed) UserDataBytes() []byte {
	if s.UserData == "" {
		return s.generatedUserData()
	}
	if !strings.HasPrefix(s.UserData, cloudConfigHeader) {
		return []byte(s.UserData)
	}
	return s.mergedCloudConfig()
}

// keys returns the SSH keys without surrounding space and without empty ones.
func (s Seed) keys() []string {
	var keys []string
	for _, k := range s.SSHKeys {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// additions returns the keys Hearth would add to a cloud-config that has
// the keys in have.
func (s Seed) additions(have map[string]any) map[string]any {
	add := map[string]any{}
	_, hasHostname := have["hostname"]
	_, hasFQDN := have["fqdn"]
	if s.Hostname != "" && !hasHostname && !hasFQDN {
		add["hostname"] = s.Hostname
	}
	if _, ok := have["ssh_authorized_keys"]; !ok {
		if keys := s.keys(); len(keys) > 0 {
			add["ssh_authorized_keys"] = keys
		}
	}
	return add
}

func (s Seed) generatedUserData() []byte {
	var b bytes.Buffer
	b.WriteString(cloudConfigHeader + "\n")
	if add := s.additions(nil); len(add) > 0 {
		b.Write(marshal(add))
	}
	return b.Bytes()
}

// mergedCloudConfig adds what is missing to the user's cloud-config. It
// appends the new top-level keys to the user's text, so comments and layout
// survive, and checks by parsing the result that this meant what it should;
// when it did not (a flow mapping, an explicit document end, …) it writes
// the merged document out afresh instead.
func (s Seed) mergedCloudConfig() []byte {
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(s.UserData), &doc); err != nil {
		// cloud-init will report the broken document; changing it here
		// would only hide what the user wrote.
		return []byte(s.UserData)
	}
	add := s.additions(doc)
	if len(add) == 0 {
		return []byte(s.UserData)
	}
	want := make(map[string]any, len(doc)+len(add))
	for k, v := range doc {
		want[k] = v
	}
	for k, v := range add {
		want[k] = normalise(v)
	}

	text := s.UserData
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	appended := append([]byte(text), marshal(add)...)
	var got map[string]any
	if err := yaml.Unmarshal(appended, &got); err == nil && reflect.DeepEqual(got, want) {
		return appended
	}
	return append([]byte(cloudConfigHeader+"\n"), marshal(want)...)
}

// normalise turns v into what YAML decoding yields, so merged documents
// compare equal to parsed ones.
func normalise(v any) any {
	if keys, ok := v.([]string); ok {
		out := make([]any, len(keys))
		for i, k := range keys {
			out[i] = k
		}
		return out
	}
	return v
}

func marshal(v any) []byte {
	b, err := yaml.Marshal(v)
	if err != nil {
		// Only maps of strings and values decoded from YAML get here.
		panic("cloudinit: marshal user-data: " + err.Error())
	}
	return b
}
