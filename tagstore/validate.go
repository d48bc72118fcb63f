package tagstore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits on tags, shared by the file parser and the request validators.
const (
	MaxTagLen         = 128 // characters, after trimming
	MaxTagsPerRequest = 256
	// MaxTagsPerAsset bounds one asset's tag list, and with it the memory
	// and work a single asset can cost.
	MaxTagsPerAsset = 256
)

// ErrInvalidTags reports a tag list a caller must not store; the message says why.
var ErrInvalidTags = errors.New("invalid tags")

// ErrInvalidID reports an asset id that is not a UUID.
var ErrInvalidID = errors.New("invalid asset id")

// CanonicalID checks that id is a UUID in its 36-character text form and
// returns it in lower case, the form the sidecar uses as a key.
func CanonicalID(id string) (string, error) {
	if len(id) != 36 {
		return "", fmt.Errorf("%w: %q is not a UUID", ErrInvalidID, id)
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return "", fmt.Errorf("%w: %q is not a UUID", ErrInvalidID, id)
	}
	return u.String(), nil
}

// CheckTag reports why an already trimmed tag cannot be stored, or nil.
func CheckTag(t string) error {
	if t == "" {
		return errors.New("tag is empty")
	}
	if !utf8.ValidString(t) {
		return fmt.Errorf("tag %q is not valid UTF-8", t)
	}
	if n := utf8.RuneCountInString(t); n > MaxTagLen {
		return fmt.Errorf("tag %.20q... is %d characters; the limit is %d", t, n, MaxTagLen)
	}
	if i := strings.IndexFunc(t, unicode.IsControl); i >= 0 {
		return fmt.Errorf("tag %q contains a control character", t)
	}
	if strings.TrimSpace(t) != t {
		return fmt.Errorf("tag %q has surrounding spaces", t)
	}
	return nil
}

// NormalizeTags prepares tags from a request as OSS ComfyUI does: each is
// trimmed, case is kept, blank items are dropped and exact duplicates removed
// (first occurrence kept). The result must hold at least one tag.
func NormalizeTags(in []string) ([]string, error) {
	if len(in) > MaxTagsPerRequest {
		return nil, fmt.Errorf("%w: %d tags; at most %d per request", ErrInvalidTags, len(in), MaxTagsPerRequest)
	}
	out := make([]string, 0, len(in))
	seen := make(map[string]struct{}, len(in))
	for _, t := range in {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if err := CheckTag(t); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidTags, err)
		}
		if _, dup := seen[t]; dup {
			continue
		}
		seen[t] = struct{}{}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: at least one non-empty tag is required", ErrInvalidTags)
	}
	return out, nil
}

// sortedUnique returns tags sorted by code point without duplicates, in a
// new slice.
func sortedUnique(tags []string) []string {
	out := slices.Clone(tags)
	slices.Sort(out) // Go compares strings bytewise: UTF-8 order is code point order
	return slices.Compact(out)
}
