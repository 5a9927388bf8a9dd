package docs

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeIsAFrontPage keeps README.md a front page: under 300 lines,
// with the two set-up commands, the rest of the documentation in docs/.
func TestReadmeIsAFrontPage(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if n := strings.Count(text, "\n"); n >= 300 {
		t.Errorf("README.md has %d lines; a front page has under 300: move the detail to docs/ and link it", n)
	}
	for _, cmd := range []string{"go run ./cmd/soloist serve", "go test "} {
		if !strings.Contains(text, cmd) {
			t.Errorf("README.md lacks the set-up command %q", cmd)
		}
	}
}
