package benchsvc

import (
	"math"
	"slices"
	"time"
)

// Sample is a set of durations with nearest-rank percentiles.
type Sample []time.Duration

// Percentile returns the nearest-rank q-quantile (0 < q <= 1): the smallest
// value with at least q of the sample at or below it; 0 for an empty sample.
// With fewer than 100 values, p99 is the maximum.
func (s Sample) Percentile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Mean is the arithmetic mean; 0 for an empty sample.
func (s Sample) Mean() time.Duration {
	if len(s) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return sum / time.Duration(len(s))
}

// Max is the largest value; 0 for an empty sample.
func (s Sample) Max() time.Duration {
	if len(s) == 0 {
		return 0
	}
	return slices.Max(s)
}
