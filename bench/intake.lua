-- wrk script: each request is the next pre-signed webhook from the file in REQUESTS_FILE.
-- Each thread reads its own share of lines so no message id is sent twice.
local requests = {}
local index = 0
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("share", counter)
end

function init(args)
  local path = os.getenv("REQUESTS_FILE")
  local shares = tonumber(os.getenv("THREADS") or "1")
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    if (n % shares) == (share - 1) then
      local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", "/webhooks/codat", {
        ["webhook-id"] = id,
        ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sig,
        ["content-type"] = "application/json",
      }, body)
    end
  end
end

function request()
  index = index + 1
  if index > #requests then index = 1 end
  return requests[index]
end

-- With DELAY_MS set, each connection waits that long between requests: a steady offered rate
-- (connections x 1000 / (DELAY_MS + latency)) for latency at a given load, where wrk2's -R is
-- not available.
local delay_ms = tonumber(os.getenv("DELAY_MS") or "")
if delay_ms then
  function delay()
    return delay_ms
  end
end
