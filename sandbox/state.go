package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// State is DIR/sandbox.json: everything a sandbox made, written after
// every step of Up, so Down removes exactly that even when Up stopped
// half-way.
type State struct {
	Dir      string `json:"dir"`
	Prefix   string `json:"prefix"`
	Underlay string `json:"underlay"`
	// CreatedDir says Up created Dir, so Down may remove it once empty.
	CreatedDir bool `json:"createdDir,omitempty"`
	// Namespaces are the network namespaces made, in order (under
	// /run/netns).
	Namespaces []string `json:"namespaces,omitempty"`
	// RootLinks are the links made in the root namespace.
	RootLinks []string `json:"rootLinks,omitempty"`
	// Bridge is the underlay bridge, inside the underlay namespace.
	Bridge string `json:"bridge,omitempty"`
	// Paths are the files and directories made under Dir.
	Paths []string `json:"paths,omitempty"`
	// Server is the `hearth server` process, ServerURL where the hosts
	// and the CLI reach it, AdminConfig its admin client config.
	Server      *Process `json:"server,omitempty"`
	ServerURL   string   `json:"serverURL,omitempty"`
	AdminConfig string   `json:"adminConfig,omitempty"`
	Hosts       []Host   `json:"hosts,omitempty"`
	// TestGuest is where VMs find the test guest's kernel and initrd.
	TestGuest *Guest `json:"testGuest,omitempty"`
}

// Host is one sandbox host: a network namespace with an agent.
type Host struct {
	// Name is the Host object's name (h1, h2, …).
	Name    string `json:"name"`
	Netns   string `json:"netns"`
	Address string `json:"address"`
	// Dir is the agent's data directory; its log is Dir/agent.log.
	Dir   string   `json:"dir"`
	Agent *Process `json:"agent,omitempty"`
}

// Log is the path of the host's agent log.
func (h Host) Log() string { return filepath.Join(h.Dir, agentLog) }

// Guest is the test guest's kernel and initrd.
type Guest struct {
	Kernel string `json:"kernel"`
	Initrd string `json:"initrd"`
}

// Process is a daemon the sandbox started.
type Process struct {
	PID int `json:"pid"`
	// StartTime is the process's start in clock ticks after boot
	// (/proc/PID/stat field 22). With the pid it names the process for
	// good: a pid reused after a reboot or a crash is not mistaken for it.
	StartTime uint64 `json:"startTime"`
	Log       string `json:"log"`
}

func statePath(dir string) string { return filepath.Join(dir, stateFile) }

// LoadState reads DIR/sandbox.json. A missing file is an error wrapping
// os.ErrNotExist.
func LoadState(dir string) (*State, error) {
	data, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	return &st, nil
}

// save writes the state atomically, so a crash never leaves half a record.
func (st *State) save() error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(st.Dir) + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("recording the sandbox: %w", err)
	}
	if err := os.Rename(tmp, statePath(st.Dir)); err != nil {
		return fmt.Errorf("recording the sandbox: %w", err)
	}
	return nil
}
