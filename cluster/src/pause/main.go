// Command pause is the sandbox container of every pod on the local cluster (containerd's
// plugins.'io.containerd.cri.v1.images'.pinned_images.sandbox): it holds the pod's namespaces open and does
// nothing else. It behaves like Kubernetes' own build/pause/linux/pause.c: exit 0 on SIGINT or SIGTERM, reap
// children it inherits as PID 1 (on SIGCHLD), sleep otherwise. Written in Go so that it builds from this
// checkout with the Go toolchain alone (no C compiler, no image to pull).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause (shardscore local cluster)")
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child without blocking (wait4(-1, WNOHANG) until none is left).
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
