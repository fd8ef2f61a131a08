-- W8 under wrk: deposits into the accounts named on the command line, or GET /healthz.
--
--   wrk -t1 -c32 -d10s -s benchmarks/w8.lua http://127.0.0.1:PORT -- deposit ID1 ID2 ...
--   wrk -t1 -c32 -d10s -s benchmarks/w8.lua http://127.0.0.1:PORT -- noop
--
-- Deposits go round-robin over the accounts (as many as connections, so two
-- requests in flight rarely meet on one account; when they do, the server's
-- repository retries the loser). The last line is the result as JSON.

local mode = "noop"
local accounts = {}
local counter = 0

function init(args)
  mode = args[1] or "noop"
  for i = 2, #args do
    accounts[#accounts + 1] = args[i]
  end
  if mode == "deposit" and #accounts == 0 then
    error("deposit mode needs account ids")
  end
end

function request()
  if mode ~= "deposit" then
    return wrk.format("GET", "/healthz")
  end
  counter = counter + 1
  local account = accounts[(counter % #accounts) + 1]
  local body = string.format(
    '{"amount":"%d.%02d","description":"wrk %d"}', 10 + counter % 90, counter % 100, counter
  )
  return wrk.format(
    "POST",
    "/api/command/accounts/" .. account .. "/deposit",
    { ["Content-Type"] = "application/json" },
    body
  )
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'W8_WRK_RESULT {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, '
      .. '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)
  ))
end
