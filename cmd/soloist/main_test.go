package main

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(cleanup{m})
}

// cleanup removes the binary the tests built once they ran.
type cleanup struct{ m *testing.M }

func (c cleanup) Run() int {
	defer removeBinary()
	return c.m.Run()
}
