package pipeline

import "testing"

func TestSequenceRanges(t *testing.T) {
	for _, tc := range []struct {
		seqs []uint64
		want string
	}{
		{nil, ""},
		{[]uint64{7}, "7"},
		{[]uint64{3, 4, 5, 6, 7}, "3-7"},
		{[]uint64{3, 4, 5, 6, 7, 9, 12, 13}, "3-7,9,12-13"},
		{[]uint64{1, 3, 5}, "1,3,5"},
	} {
		if got := SequenceRanges(tc.seqs); got != tc.want {
			t.Errorf("SequenceRanges(%v) = %q, want %q", tc.seqs, got, tc.want)
		}
	}
}
