package main

import (
	"context"
	"fmt"

	"github.com/soloist-dev/soloist/orchestrator"
)

// demoFunction is the orchestration --demo registers.
const demoFunction = "HelloCities"

// helloCities greets three cities. Its output is
// ["Hello Tokyo!","Hello Seattle!","Hello London!"], the classic Durable
// Functions sample.
func helloCities(octx *orchestrator.OrchestrationContext) (any, error) {
	var out []string
	for _, city := range []string{"Tokyo", "Seattle", "London"} {
		if err := octx.Context().Err(); err != nil {
			return nil, context.Cause(octx.Context())
		}
		out = append(out, fmt.Sprintf("Hello %s!", city))
	}
	return out, nil
}
