// Command reader is the program of the test image (FROM scratch): it
// prints files.
//
//	reader FILE...                 each file once; exit 1 if one cannot be read
//	reader -every DURATION FILE    the file, or the error, at every tick, until killed
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	args := os.Args[1:]
	if len(args) == 3 && args[0] == "-every" {
		d, err := time.ParseDuration(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for {
			if b, err := os.ReadFile(args[2]); err != nil {
				fmt.Println("error:", err)
			} else {
				fmt.Printf("value: %s\n", b)
			}
			time.Sleep(d)
		}
	}
	code := 0
	for _, f := range args {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
			continue
		}
		os.Stdout.Write(b)
	}
	os.Exit(code)
}
