-- wrk script for bench/load.py.
-- BENCH_BODIES set: POST /webhooks/calcom with one pre-signed unique body per request
-- (file lines "<hex HMAC-SHA256> <body>"); past the end of the file bodies repeat and count
-- as "wrapped" (those would be duplicates). Unset: plain GET of the URL (the baseline route).
-- done() prints one JSON line. Requests are formatted once, in init(), so that the client
-- (which shares the machine's cores with the server) spends as little per POST as per GET.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local path = os.getenv("BENCH_BODIES")
if path and path ~= "" then
  function init(args)
    reqs, i = {}, 0
    for line in io.lines(path) do
      local sp = line:find(" ", 1, true)
      reqs[#reqs + 1] = wrk.format("POST", "/webhooks/calcom",
        {["Content-Type"] = "application/json", ["X-Cal-Signature-256"] = line:sub(1, sp - 1)},
        line:sub(sp + 1))
    end
    wrapped, bad = 0, 0
  end

  function request()
    local k = i % #reqs + 1
    if i >= #reqs then wrapped = wrapped + 1 end
    i = i + 1
    return reqs[k]
  end
else
  function init(args)
    wrapped, bad = 0, 0
  end
end

function response(status, headers, body)
  if status ~= 200 and status ~= 202 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local wrapped_all, bad_all = 0, 0
  for _, t in ipairs(threads) do
    wrapped_all = wrapped_all + t:get("wrapped")
    bad_all = bad_all + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f, ' ..
    '"socket_errors": %d, "non_2xx": %d, "wrapped": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.connect + e.read + e.write + e.timeout, bad_all, wrapped_all))
end
