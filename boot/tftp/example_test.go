package tftp_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"

	"hearth.dev/hearth/boot/tftp"
)

// The boot service serves the iPXE binaries of Debian's ipxe package by
// name (ipxe.efi is a symlink to /boot, which DirResolver would refuse) and
// anything else from its own directory of generated files.
func ExampleServer() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s := &tftp.Server{
		Resolver: tftp.Chain(
			tftp.Files(map[string]string{
				"undionly.kpxe": "/usr/lib/ipxe/undionly.kpxe", // BIOS (DHCP option 93 = 0)
				"ipxe.efi":      "/usr/lib/ipxe/ipxe.efi",      // x86-64 UEFI (7, 9)
				"snponly.efi":   "/usr/lib/ipxe/snponly.efi",
			}),
			tftp.DirResolver("/var/lib/hearth/boot/tftp"),
		),
		Observe: func(ev tftp.Event) {
			log.Printf("tftp %s %s %q: %d bytes in %v %v", ev.Kind, ev.Client, ev.Path, ev.Bytes, ev.Duration, ev.Err)
		},
	}
	if err := s.ListenAndServe(ctx, ":69"); err != nil {
		log.Fatal(err)
	}
}
