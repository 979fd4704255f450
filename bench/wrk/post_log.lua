-- POST /log: one valid 63-byte event per request, user_id cycling over N users.
-- wrk ... -s post_log.lua http://host:port/log -- <users> [<bearer token>]
-- done() prints one line "BENCHJSON {...}" for bench/wrkrun.py to parse.

local reqs = {}
local n = 0
local i = 0

function init(args)
  local users = tonumber(args[1] or "100")
  local headers = {["Content-Type"] = "application/json"}
  if args[2] then
    headers["Authorization"] = "Bearer " .. args[2]
  end
  local ts = os.time()
  for u = 0, users - 1 do
    local body = string.format(
      '{"user_id":"user_%03d","event":"visited","timestamp":%d}', u, ts)
    reqs[u + 1] = wrk.format("POST", nil, headers, body)
  end
  n = users
  i = math.random(0, n - 1)
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
