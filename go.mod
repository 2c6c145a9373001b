module github.com/secretfs/secretfs

go 1.26.0

require (
	github.com/hanwen/go-fuse/v2 v2.12.1
	golang.org/x/sync v0.25.0
)

require (
	github.com/spf13/pflag v1.1.0 // indirect
	golang.org/x/sys v0.28.0 // indirect
)
