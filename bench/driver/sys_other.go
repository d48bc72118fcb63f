//go:build !linux

package main

import "os"

const clockTicks = 100

func fdatasync(f *os.File) error { return f.Sync() }
