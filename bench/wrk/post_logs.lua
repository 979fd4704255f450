-- POST /logs: NDJSON batches of B valid 63-byte events spread over N users (enough
-- distinct bodies, at least 4, that every user gets events).
-- wrk ... -s post_logs.lua http://host:port/logs -- <events per batch> <users>
-- done() prints one line "BENCHJSON {...}" for bench/wrkrun.py to parse.

local reqs = {}
local n = 4
local i = 0

function init(args)
  local batch = tonumber(args[1] or "1000")
  local users = tonumber(args[2] or "100")
  local ts = os.time()
  n = math.max(4, math.ceil(users / batch))
  for r = 1, n do
    local lines = {}
    for k = 0, batch - 1 do
      lines[k + 1] = string.format(
        '{"user_id":"user_%03d","event":"visited","timestamp":%d}',
        ((r - 1) * batch + k) % users, ts - r)
    end
    local body = table.concat(lines, "\n") .. "\n"
    reqs[r] = wrk.format("POST", nil, {["Content-Type"] = "application/x-ndjson"}, body)
  end
end

function request()
  i = i % n + 1
  return reqs[i]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
