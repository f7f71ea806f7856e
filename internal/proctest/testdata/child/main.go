// Command child is the program proctest's tests run. Its arguments are steps,
// done in order:
//
//	out:TEXT      TEXT and a newline on stdout
//	err:TEXT      TEXT and a newline on stderr
//	partial:TEXT  TEXT on stdout, no newline
//	pid           "pid N" on stdout
//	env           its environment, sorted, one "env KEY=value" line each on stdout
//	interleave:N  N lines of 100000 'e's on stderr, while N short lines go to stdout
//	wait          waits for SIGTERM, then writes "got SIGTERM" on stderr
//	ignore        ignores SIGTERM from then on
//	alloc:N       touches N MiB, then frees it and returns it to the system
//	hang          never returns
//	exit:N        exits with code N
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

func main() {
	terms := make(chan os.Signal, 1)
	signal.Notify(terms, syscall.SIGTERM)
	for _, step := range os.Args[1:] {
		name, arg, _ := strings.Cut(step, ":")
		switch name {
		case "out":
			fmt.Println(arg)
		case "err":
			fmt.Fprintln(os.Stderr, arg)
		case "partial":
			fmt.Print(arg)
		case "pid":
			fmt.Println("pid", os.Getpid())
		case "env":
			env := os.Environ()
			slices.Sort(env)
			for _, kv := range env {
				fmt.Println("env " + kv)
			}
		case "interleave":
			n, _ := strconv.Atoi(arg)
			long := strings.Repeat("e", 100000) + "\n"
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					fmt.Printf("short line %d\n", i)
				}
			}()
			for range n {
				os.Stderr.WriteString(long)
			}
			wg.Wait()
		case "wait":
			<-terms
			fmt.Fprintln(os.Stderr, "got SIGTERM")
		case "ignore":
			signal.Ignore(syscall.SIGTERM)
		case "alloc":
			n, _ := strconv.Atoi(arg)
			touch(n << 20)
			debug.FreeOSMemory()
		case "hang":
			select {}
		case "exit":
			code, _ := strconv.Atoi(arg)
			os.Exit(code)
		default:
			fmt.Fprintf(os.Stderr, "child: unknown step %q\n", step)
			os.Exit(100)
		}
	}
}

// touch allocates n bytes and writes every one, so that they are resident.
func touch(n int) {
	b := make([]byte, n)
	for i := range b {
		b[i] = 1
	}
}
