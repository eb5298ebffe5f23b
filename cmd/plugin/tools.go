package main

import "errors"

func runKey(args []string) error   { return errors.New("todo") }
func runInit(args []string) error  { return errors.New("todo") }
func runMount(args []string) error { return errors.New("todo") }
func runFsck(args []string) error  { return errors.New("todo") }
