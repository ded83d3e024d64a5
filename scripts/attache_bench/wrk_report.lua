-- wrk script for scripts/bench.py: prints wrk's results as one JSON line
-- that starts with BENCH_JSON, so the harness need not parse wrk's text.

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "errors": %d, "status_errors": %d}\n',
    summary.requests, summary.duration,
    errors.connect + errors.read + errors.write + errors.timeout, errors.status))
end
