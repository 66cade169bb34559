-- GET through an HTTP proxy with absolute-form request lines (wrk connects to the proxy port).
--
-- wrk -s absolute_get.lua http://127.0.0.1:PROXY/ -- URLS [close] [check]
--   URLS   comma-separated absolute URLs; with more than one, each request picks one at random,
--          so every keep-alive connection keeps switching origins.
--   close  send "Connection: close" (a new connection per request).
--   check  compare each response with what was asked: the origin echoes ?o= in X-Want and its
--          body starts with "origin <port>"; a difference is a mismatch.
-- done() prints one line "WRK_JSON {...}" that the harness parses.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

local requests = {}

local function headers_for(url, close)
   local headers = { Host = url:match("^http://([^/]+)") }
   if close then
      headers["Connection"] = "close"
   end
   return headers
end

mismatches = 0
checked = 0

local function check(status, headers, body)
   checked = checked + 1
   local want = headers["X-Want"]
   if status ~= 200 or want == nil or body:sub(1, 8 + #want) ~= ("origin " .. want .. "\n") then
      mismatches = mismatches + 1
   end
end

local function pick()
   return requests[math.random(#requests)]
end

function init(args)
   local close, want_check = false, false
   for i = 2, #args do
      if args[i] == "close" then close = true end
      if args[i] == "check" then want_check = true end
   end
   local urls = {}
   for url in args[1]:gmatch("[^,]+") do
      table.insert(urls, url)
   end
   if #urls == 1 then
      -- A fixed request with no request() global: wrk sends pre-built bytes, no Lua per request.
      wrk.path = urls[1]
      for name, value in pairs(headers_for(urls[1], close)) do
         wrk.headers[name] = value
      end
   else
      for _, url in ipairs(urls) do
         table.insert(requests, wrk.format("GET", url, headers_for(url, close)))
      end
      request = pick
   end
   if want_check then
      response = check
   end
end

function done(summary, latency, _)
   local total_mismatches, total_checked = 0, 0
   for _, thread in ipairs(threads) do
      total_mismatches = total_mismatches + (thread:get("mismatches") or 0)
      total_checked = total_checked + (thread:get("checked") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
      '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, ' ..
      '"timeouts": %d, "mismatches": %d, "checked": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.connect, e.read, e.write, e.status, e.timeout, total_mismatches, total_checked))
end
