#!/usr/bin/env python3
"""The measurement behind threshold_from_normal_scores (include/skipganomaly/metrics.hpp).

For n held-out normal scores drawn from a known distribution, compares the false-positive
rate (the exact probability that a fresh normal score lies at or above the threshold) of
  plain: the empirical 0.99 quantile (numpy's linear interpolation), and
  rule:  our default rule, a numpy transcription of threshold_from_normal_scores,
over many validation sets, and prints the mean and the 10th/90th percentiles per n.
Needs numpy only: /usr/bin/python3 eval/simulate_threshold_rule.py
"""
import math

import numpy as np

LEVEL = 0.99


def rule(scores, level=LEVEL):
    x = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(x)
    if x[0] == x[-1]:
        return np.nextafter(np.float32(x[-1]), np.float32(np.inf))
    if level >= 1:
        return x[-1]
    empirical = np.quantile(x, level)
    expected_above = n * (1 - level)
    weight = min(1.0, expected_above / 10)
    tail = max(3, int(round(0.25 * n)))
    if weight >= 1 or n < 8 or tail <= expected_above:
        return empirical

    def tail_quantile(values):
        u = values[n - tail - 1]
        return u + np.mean(values[n - tail:] - u) * math.log(tail / expected_above)

    extrapolated = tail_quantile(x)
    if x[0] > 0:
        extrapolated = math.sqrt(extrapolated * math.exp(tail_quantile(np.log(x))))
    return weight * empirical + (1 - weight) * extrapolated

def gamma_integer_survival(shape):
    return lambda t: 1.0 if t <= 0 else math.exp(-t) * sum(t ** k / math.factorial(k) for k in range(shape))


DISTRIBUTIONS = {
    "log-normal(0, 0.5)": (lambda r, n: r.lognormal(0, 0.5, n), lambda t: 0.5 * math.erfc(math.log(t) / (0.5 * math.sqrt(2)))),
    "log-normal(0, 1)": (lambda r, n: r.lognormal(0, 1.0, n), lambda t: 0.5 * math.erfc(math.log(t) / math.sqrt(2))),
    "gamma(2)": (lambda r, n: r.gamma(2, 1, n), gamma_integer_survival(2)),
    "gamma(8)": (lambda r, n: r.gamma(8, 1, n), gamma_integer_survival(8)),
    "chi-square(1)": (lambda r, n: r.chisquare(1, n), lambda t: math.erfc(math.sqrt(max(t, 0) / 2))),
    "1 + |normal|": (lambda r, n: 1 + np.abs(r.normal(0, 1, n)), lambda t: 1.0 if t <= 1 else math.erfc((t - 1) / math.sqrt(2))),
}


def main():
    rng = np.random.default_rng(0)
    for name, (draw, survival) in DISTRIBUTIONS.items():
        print(name)
        for n in (20, 40, 100, 300, 2000, 20000):
            sets = 1000 if n <= 300 else 50
            rates = {"plain": [], "rule": []}
            for _ in range(sets):
                s = draw(rng, n).astype(np.float32)
                rates["plain"].append(survival(float(np.quantile(s.astype(np.float64), LEVEL))))
                rates["rule"].append(survival(float(rule(s))))
            cells = [f"{k} mean {100 * np.mean(v):5.2f}% p10 {100 * np.quantile(v, 0.1):5.2f}% "
                     f"p90 {100 * np.quantile(v, 0.9):5.2f}%" for k, v in rates.items()]
            print(f"  n {n:6d}  " + "  |  ".join(cells))


if __name__ == "__main__":
    main()
