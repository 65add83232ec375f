package v1alpha1

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// SSHKey is a person's SSH public key. VMs get their tenant's keys through
// cloud-init, and machine profiles hand them to the machines they install.
type SSHKey = Resource[SSHKeySpec, SSHKeyStatus]

type SSHKeySpec struct {
	// PublicKey is one line of an OpenSSH public key file (id_ed25519.pub):
	// type, base64 key data and an optional comment.
	PublicKey string `json:"publicKey"`
}

type SSHKeyStatus struct {
	CommonStatus `json:",inline"`
	// Fingerprint is the key's SHA256 fingerprint, as `ssh-keygen -l` shows it.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// sshKeyTypes are the public key types Hearth accepts. DSA keys are left
// out: OpenSSH no longer accepts them either.
var sshKeyTypes = []string{
	"ssh-ed25519",
	"ssh-rsa",
	"ecdsa-sha2-nistp256",
	"ecdsa-sha2-nistp384",
	"ecdsa-sha2-nistp521",
	"sk-ssh-ed25519@openssh.com",
	"sk-ecdsa-sha2-nistp256@openssh.com",
}

// ParseSSHPublicKey splits one line of an OpenSSH public key into its type,
// its key data and its comment. It checks that the data is base64 and that
// the type written inside it is the type the line starts with, which
// catches keys pasted with their parts mixed up or cut short. Errors are
// worded to follow a field name ("spec.publicKey: is a private key").
func ParseSSHPublicKey(line string) (keyType string, blob []byte, comment string, err error) {
	s := strings.TrimSpace(line)
	if strings.Contains(s, "PRIVATE KEY") {
		return "", nil, "", errors.New("is a private key; give the public key (the .pub file) and keep the private key to yourself")
	}
	if strings.HasPrefix(s, "---- BEGIN") || strings.HasPrefix(s, "-----BEGIN") {
		return "", nil, "", errors.New("is in RFC 4716 or PEM form; convert it with `ssh-keygen -i -f KEY`")
	}
	if strings.ContainsAny(s, "\r\n") {
		return "", nil, "", errors.New("holds more than one line; give each key its own SSHKey")
	}
	fields := strings.Fields(s)
	if len(fields) < 2 {
		return "", nil, "", errors.New("is not an OpenSSH public key (want a line such as \"ssh-ed25519 AAAA… you@laptop\")")
	}
	keyType = fields[0]
	known := false
	for _, t := range sshKeyTypes {
		if t == keyType {
			known = true
		}
	}
	if !known {
		if strings.ContainsAny(keyType, "=\"") {
			return "", nil, "", fmt.Errorf("starts with options (%s); give the key alone", keyType)
		}
		return "", nil, "", fmt.Errorf("has key type %q (want one of %s)", keyType, strings.Join(sshKeyTypes, ", "))
	}
	blob, err = base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return "", nil, "", errors.New("has key data that is not base64")
	}
	// The data starts with the key type again as an SSH string: a 32-bit
	// big-endian length and the bytes.
	if len(blob) < 4 || uint64(len(blob)) < 4+uint64(binary.BigEndian.Uint32(blob)) {
		return "", nil, "", errors.New("has key data that is cut short")
	}
	if inner := string(blob[4 : 4+binary.BigEndian.Uint32(blob)]); inner != keyType {
		return "", nil, "", fmt.Errorf("says %s but its key data is for %s", keyType, inner)
	}
	return keyType, blob, strings.Join(fields[2:], " "), nil
}

// SSHFingerprint returns a public key's fingerprint in OpenSSH's form,
// "SHA256:" and the unpadded base64 of the SHA-256 of the key data.
func SSHFingerprint(pub string) (string, error) {
	_, blob, _, err := ParseSSHPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("public key %s", err)
	}
	sum := sha256.Sum256(blob)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:]), nil
}

func (s *SSHKeySpec) Default() {
	s.PublicKey = strings.TrimSpace(s.PublicKey)
}

func (s *SSHKeySpec) Validate(path string) FieldErrors {
	var es FieldErrors
	if s.PublicKey == "" {
		es.Add(path+".publicKey", "is required")
		return es
	}
	if _, _, _, err := ParseSSHPublicKey(s.PublicKey); err != nil {
		es.Add(path+".publicKey", "%s", err)
	}
	return es
}

func init() {
	register[SSHKeySpec, SSHKeyStatus](KindInfo{
		Kind: "SSHKey", Plural: "sshkeys", ShortNames: []string{"sshkey"}, Scope: TenantScoped,
		Description: "An SSH public key that VMs and installed machines of the tenant accept.",
		Columns: []Column{
			{Name: "TYPE", Get: func(o Object) string {
				t, _, _ := strings.Cut(o.(*SSHKey).Spec.PublicKey, " ")
				return t
			}},
			{Name: "FINGERPRINT", Get: func(o Object) string {
				k := o.(*SSHKey)
				if k.Status.Fingerprint != "" {
					return k.Status.Fingerprint
				}
				fp, _ := SSHFingerprint(k.Spec.PublicKey)
				return fp
			}},
			{Name: "COMMENT", Wide: true, Get: func(o Object) string {
				_, _, c, _ := ParseSSHPublicKey(o.(*SSHKey).Spec.PublicKey)
				return c
			}},
		},
	})
}
