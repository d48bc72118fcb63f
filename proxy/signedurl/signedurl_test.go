package signedurl

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	s := New([]byte("secret"))
	now := time.Unix(1_800_000_000, 0)
	q := s.Sign("GET", "/api/view", "filename=a.png&type=output&subfolder=", now.Add(5*time.Minute))
	orig, err := s.Verify("GET", "/api/view", q, now)
	if err != nil || orig != "filename=a.png&type=output&subfolder=" {
		t.Fatalf("Verify = %q, %v", orig, err)
	}
	empty := s.Sign("GET", "/api/view", "", now.Add(time.Minute))
	if orig, err := s.Verify("GET", "/api/view", empty, now); err != nil || orig != "" {
		t.Fatalf("empty query: %q, %v", orig, err)
	}

	cases := []struct {
		name, method, path, query string
		at                        time.Time
		want                      error
	}{
		{"expired", "GET", "/api/view", q, now.Add(5 * time.Minute), ErrExpired},
		{"other file", "GET", "/api/view", strings.Replace(q, "a.png", "b.png", 1), now, ErrInvalid},
		{"longer expiry", "GET", "/api/view", strings.Replace(q, "expires=18000003", "expires=19000003", 1), now, ErrInvalid},
		{"other path", "GET", "/view", q, now, ErrInvalid},
		{"other method", "POST", "/api/view", q, now, ErrInvalid},
		{"parameter appended", "GET", "/api/view", q + "&type=input", now, ErrInvalid},
		{"no signature", "GET", "/api/view", "filename=a.png", now, ErrInvalid},
		{"garbage signature", "GET", "/api/view", "filename=a.png&expires=1&signature=!!", now, ErrInvalid},
		{"other secret", "GET", "/api/view", New([]byte("other")).Sign("GET", "/api/view", "filename=a.png", now.Add(time.Hour)), now, ErrInvalid},
	}
	for _, c := range cases {
		if _, err := s.Verify(c.method, c.path, c.query, c.at); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	if !Signed(q) || Signed("filename=signature.png") {
		t.Error("Signed misreads queries")
	}
}

func FuzzVerify(f *testing.F) {
	// Only the exact URL Sign made verifies: no mutation of it does.
	s := New([]byte("k"))
	valid := s.Sign("GET", "/api/view", "a=b", time.Unix(2e9, 0))
	f.Add("filename=a&expires=1&signature=xx")
	f.Add(valid)
	f.Fuzz(func(t *testing.T, q string) {
		orig, err := s.Verify("GET", "/api/view", q, time.Unix(1e9, 0))
		if err == nil && (q != valid || orig != "a=b") {
			t.Fatalf("accepted %q as %q", q, orig)
		}
	})
}
