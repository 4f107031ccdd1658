-- wrk script for bench/run: POSTs remote_console requests, rotating over a token file and a
-- range of server ids. Requests are formatted once in init(), so the load generator spends its
-- core sending, not building strings.
--
-- wrk ... -s bench/wrk.lua URL -- TOKENS_FILE PROJECT SERVERS
-- Prints one line "BENCH-JSON {...}" with throughput, latency percentiles and error counts.

local requests = {}
local next_index = 0

function init(args)
  local tokens_file, project, servers = args[1], args[2], tonumber(args[3])
  local body = '{"remote_console":{"protocol":"serial","type":"serial"}}'
  local i = 0
  for token in io.lines(tokens_file) do
    -- Each token gets a server from a stride over the range, so users spread over servers.
    local server = string.format("00000000-0000-4000-8000-%012d", (i * 7919) % servers)
    requests[#requests + 1] = wrk.format("POST",
      "/v1/" .. project .. "/baremetalservers/" .. server .. "/remote_console",
      { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" },
      body)
    i = i + 1
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

function done(summary, latency, requests_done)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect, e.read, e.write, e.status, e.timeout))
end
