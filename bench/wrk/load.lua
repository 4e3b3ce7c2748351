-- The benchmark's wrk script. Prints one line, `BENCH_WRK {json}`, from done().
-- Options come as `key=value` script arguments (after `--` on wrk's command line):
--   method=POST         the request method
--   body=TEXT           a JSON request body (sets Content-Type: application/json)
--   statuses=1          count responses by status code in response()
--   window_ms=N         graceful end: a connection sends nothing new once a response arrives
--                       after N ms, so every request sent is answered before wrk stops (-d must
--                       leave a tail); `in_window` counts the responses received within N ms.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local threads = {}
statuses = {}
in_window = 0
local deadline = nil
local stopping = false

function setup(thread)
  table.insert(threads, thread)
end

local function count(status)
  statuses[status] = (statuses[status] or 0) + 1
  if deadline ~= nil then
    if now_ms() < deadline then
      in_window = in_window + 1
    else
      stopping = true
    end
  end
end

function init(args)
  local opts = {}
  for _, arg in ipairs(args) do
    local key, value = arg:match("^([%w_]+)=(.*)$")
    if key then
      opts[key] = value
    end
  end
  if opts.method then
    wrk.method = opts.method
  end
  if opts.body then
    wrk.body = opts.body
    wrk.headers["Content-Type"] = "application/json"
  end
  if opts.window_ms then
    deadline = now_ms() + tonumber(opts.window_ms)
    -- An hour: longer than any run, so a stopped connection stays quiet until wrk ends.
    delay = function()
      if stopping then
        return 3600000
      end
      return 0
    end
  end
  if opts.statuses == "1" or opts.window_ms then
    response = function(status, headers, body)
      count(status)
    end
  end
end

function done(summary, latency, requests)
  local total, window = {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
    window = window + thread:get("in_window")
  end
  local parts = {}
  for status, n in pairs(total) do
    parts[#parts + 1] = string.format('"%d":%d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_WRK {"requests":%d,"duration_us":%d,"bytes":%d,"in_window":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d},'
      .. '"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes, window,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, table.concat(parts, ",")
  ))
end
