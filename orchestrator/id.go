package orchestrator

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxInstanceIDLength is the longest instance ID, in characters.
const MaxInstanceIDLength = 256

// ValidateInstanceID checks the rules of the contract (docs, section 3): 1
// to 256 characters of UTF-8, no control characters, none of / \ # ?, not
// starting with @, and not "." or ".." (a URL path and the CLI cannot
// address them). The error says which rule was broken.
func ValidateInstanceID(id string) error {
	bad := func(reason string) error {
		return &ValidationError{Field: "instance ID", Value: id, Reason: reason}
	}
	switch {
	case id == "":
		return bad("it is empty; use 1 to 256 characters")
	case !utf8.ValidString(id):
		return bad("it is not valid UTF-8")
	case utf8.RuneCountInString(id) > MaxInstanceIDLength:
		return bad("it is longer than 256 characters")
	case strings.HasPrefix(id, "@"):
		return bad("it starts with '@', which is reserved; choose an ID that does not")
	case id == "." || id == "..":
		return bad("'.' and '..' are path segments, which no URL can address; choose another ID")
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return bad("it contains a control character; use printable characters only")
		}
		if strings.ContainsRune(`/\#?`, r) {
			return bad("it contains '" + string(r) + "'; the characters / \\ # ? are not allowed")
		}
	}
	return nil
}

// NewID returns 32 random hex characters, the form of generated instance IDs
// and of execution IDs.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
