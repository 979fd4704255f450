-- POST /log with or without an event_id: one event per request, a body built per request
-- in both modes (so wrk does the same work either way), user_id cycling over N users.
-- wrk ... -s post_log_ids.lua http://host:port/log -- <users> <id|none> <run tag>
-- With "id", every request carries a new event_id ("<tag>-<n>"), so every event is
-- stored (the dedupe check runs and misses, as for a client's first attempt).
-- done() prints one line "BENCHJSON {...}" like post_log.lua.

local users = 100
local with_id = false
local tag = "run"
local n = 0
local ts = os.time()
local headers = {["Content-Type"] = "application/json"}

function init(args)
  users = tonumber(args[1] or "100")
  with_id = (args[2] == "id")
  tag = args[3] or tag
end

function request()
  n = n + 1
  local body
  if with_id then
    body = string.format(
      '{"user_id":"user_%03d","event":"visited","timestamp":%d,"event_id":"%s-%d"}',
      n % users, ts, tag, n)
  else
    body = string.format(
      '{"user_id":"user_%03d","event":"visited","timestamp":%d,"seq":"%s-%d"}',
      n % users, ts, tag, n)
  end
  return wrk.format("POST", nil, headers, body)
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
