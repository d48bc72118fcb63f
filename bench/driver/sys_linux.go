package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times.
const clockTicks = 100

func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
