package stamp

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestMillisMatchesFormat(t *testing.T) {
	cases := []time.Time{
		{},
		time.Unix(0, 0),
		time.Date(2026, 11, 29, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(2024, 2, 29, 0, 0, 0, 1_000_000, time.FixedZone("x", -7*3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		cases = append(cases, time.Unix(0, r.Int64N(1<<62)-1<<61))
	}
	for _, tc := range cases {
		if got, want := Millis(tc), tc.UTC().Format(layout); got != want {
			t.Fatalf("Millis(%v) = %s, want %s", tc, got, want)
		}
	}
}
