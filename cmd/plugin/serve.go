package main

import "errors"

// runServe runs the Docker volume plugin daemon. (Being built: issue 3.)
func runServe(args []string) error { return errors.New("serve: not built yet") }

// runKeyRotate re-wraps every volume's key under a new master key. (Issue 3.)
func runKeyRotate(args []string) error { return errors.New("key rotate: not built yet") }
