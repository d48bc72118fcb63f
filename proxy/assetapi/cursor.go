package assetapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strconv"

	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// A cursor is opaque to clients: base64url of a small JSON object naming the
// sort, its direction, the last asset's sort value and its id.
type cursorJSON struct {
	Sort  string `json:"s"`
	Order string `json:"o"`
	Value string `json:"v"`
	ID    string `json:"id"`
}

// maxCursor bounds what a client-supplied cursor may cost to decode.
const maxCursor = 4096

func encodeCursor(m assets.Mark) string {
	c := cursorJSON{Sort: m.Key, Order: "asc", Value: m.Str, ID: m.ID}
	if m.Desc {
		c.Order = "desc"
	}
	if m.Key != "name" {
		c.Value = strconv.FormatInt(m.Num, 10)
	}
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (assets.Mark, error) {
	var m assets.Mark
	if len(s) > maxCursor {
		return m, errors.New("the cursor is too long")
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return m, errors.New("the cursor is not one this server made")
	}
	var c cursorJSON
	if json.Unmarshal(raw, &c) != nil || c.ID == "" || !slices.Contains(assets.SortKeys, c.Sort) || (c.Order != "asc" && c.Order != "desc") {
		return m, errors.New("the cursor is not one this server made")
	}
	m = assets.Mark{Key: c.Sort, Desc: c.Order == "desc", ID: c.ID, Str: c.Value}
	if c.Sort != "name" {
		n, err := strconv.ParseInt(c.Value, 10, 64)
		if err != nil {
			return assets.Mark{}, errors.New("the cursor's value is not a number")
		}
		m.Num, m.Str = n, ""
	}
	return m, nil
}
