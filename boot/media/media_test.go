package media

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestScriptRefusesBadURLs(t *testing.T) {
	for _, u := range []string{"ftp://x/", "http://x/${y}", "not a url", "http://"} {
		if _, err := Script(u); err == nil {
			t.Errorf("Script(%q) accepted", u)
		}
	}
	s, err := Script("http://192.0.2.2:8080/")
	if err != nil || !strings.Contains(s, "chain http://192.0.2.2:8080/boot.ipxe?mac=${net0/mac}") {
		t.Fatalf("script: %v\n%s", err, s)
	}
}

// TestMediaBootChainsToTheBootService boots the written ISO and USB image
// in QEMU (SeaBIOS): iPXE from the media gets an address from QEMU's user
// network and asks the boot service, here a test server on loopback that
// QEMU's user network reaches as 10.0.2.2, for the machine's script by MAC.
func TestMediaBootChainsToTheBootService(t *testing.T) {
	for _, tool := range []string{"qemu-system-x86_64", "genisoimage", "isohybrid"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (.ci/run installs qemu-system-x86, genisoimage, isolinux, syslinux-utils)", tool)
		}
	}
	for _, f := range []string{"/usr/lib/ipxe/ipxe.lkrn", "/usr/lib/ISOLINUX/isolinux.bin"} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("%s missing (.ci/run installs ipxe and isolinux)", f)
		}
	}
	for _, usb := range []bool{false, true} {
		t.Run(fmt.Sprintf("usb=%v", usb), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			asked := make(chan string, 4)
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked <- r.URL.Path + " mac=" + r.URL.Query().Get("mac")
				fmt.Fprint(w, "#!ipxe\necho hearth-test-script-ran\nshell\n")
			})}
			go srv.Serve(ln)
			defer srv.Close()
			port := ln.Addr().(*net.TCPAddr).Port
			img := filepath.Join(t.TempDir(), "boot.iso")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := Write(ctx, img, Options{BootURL: fmt.Sprintf("http://10.0.2.2:%d", port), USB: usb}); err != nil {
				t.Fatal(err)
			}
			drive := "-cdrom"
			if usb {
				drive = "-hda" // a USB stick looks like a hard disk to the BIOS
			}
			q := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none",
				"-serial", "null", drive, img, "-netdev", "user,id=n0", "-device", "e1000,netdev=n0,mac=52:54:00:aa:bb:cc,romfile=",
				"-boot", map[bool]string{false: "d", true: "c"}[usb])
			if err := q.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { q.Process.Kill(); q.Wait() }()
			select {
			case u := <-asked:
				if u != "/boot.ipxe mac=52:54:00:aa:bb:cc" {
					t.Fatalf("the media asked for %q", u)
				}
			case <-ctx.Done():
				t.Fatal("the media never asked the boot service for a script")
			}
		})
	}
}
